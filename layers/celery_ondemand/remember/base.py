"""The one interface every state store implements, and the records it keeps.

A store keeps, per deployment:

- a **lease**, so two overlapping ticks never both act: a conditional write that succeeds
  only when the lease is free, expired, or already ours;
- each target's **memory** (:class:`~celery_ondemand.decide.TargetMemory`), written only
  while we still hold the lease;
- a **history** of decisions, each with an expiry time (a TTL, 7 days by default);
- each target's **load**, minute by minute (:class:`~celery_ondemand.decide.load.LoadMinute`:
  arrivals, completions, busy slot-seconds, desired and live counts), each minute expiring
  after ``load_days`` (28 by default): what the forecast learns from and
  ``ondemand simulate --history`` replays. Each tick *adds* its sample to its minute, so
  writing it costs one write and no read;
- the last tick's **status**, for the status endpoint.

Every record carries :data:`SCHEMA_VERSION`; a record written by a newer version is refused
with a clear error instead of being misread.
"""

from __future__ import annotations

import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from ..decide import Decision, TargetMemory
from ..decide.load import LoadMinute
from ..errors import StateError

SCHEMA_VERSION = 1
DEFAULT_HISTORY_DAYS = 7.0
DEFAULT_LOAD_DAYS = 28.0
"""Four weeks: a weekly shape is learnt as the median of four same weekdays."""


class StateStore(ABC):
    """Lease, memory and decision history for deployments."""

    history_days: float = DEFAULT_HISTORY_DAYS
    load_days: float = DEFAULT_LOAD_DAYS

    @abstractmethod
    def acquire_lease(self, deployment: str, owner: str, now: float, seconds: float) -> bool:
        """Take or renew the lease until ``now + seconds``; False if another owner holds it."""

    @abstractmethod
    def renew_lease(self, deployment: str, owner: str, now: float, seconds: float) -> bool:
        """Extend the lease ``owner`` holds to ``now + seconds``; False if it is not still
        ``owner``'s (another took it, or took and released it, since)."""

    @abstractmethod
    def release_lease(self, deployment: str, owner: str) -> None:
        """Give the lease up early, if we hold it."""

    @abstractmethod
    def load_memory(self, deployment: str) -> dict[str, TargetMemory]:
        """Every target's memory, by target name (empty for a new deployment)."""

    @abstractmethod
    def save_memory(self, deployment: str, owner: str, now: float,
                    memory: Mapping[str, TargetMemory]) -> None:
        """Write the memory, only while ``owner`` holds an unexpired lease (else LeaseLost)."""

    @abstractmethod
    def record(self, deployment: str, decisions: list[Decision], at: float) -> None:
        """Append the decisions to the history, each expiring after ``history_days``."""

    @abstractmethod
    def history(self, deployment: str, limit: int = 100) -> list[dict[str, Any]]:
        """The newest decisions first, as dicts with ``at`` and ``expires_at`` added."""

    @abstractmethod
    def add_load(self, deployment: str, loads: Mapping[str, LoadMinute]) -> None:
        """Add each target's sample to its minute (created on first use), which expires
        ``load_days`` after it began."""

    @abstractmethod
    def load_history(self, deployment: str, target: str, since: float,
                     until: float) -> list[LoadMinute]:
        """The target's minutes that began between ``since`` (its minute included) and
        ``until``, oldest first; minutes nothing measured are absent."""

    def load_expiry(self, minute: int) -> int:
        """A day past ``load_days``: the forecast reads the same hour ``load_days`` days
        back, which must not come and go as the TTL deletes minutes of it."""
        return int(minute + (self.load_days + 1) * 86400)

    @abstractmethod
    def save_status(self, deployment: str, status: dict[str, Any], at: float) -> None:
        """Keep the last tick's status (cwod's JSON plus decisions) for the status endpoint."""

    @abstractmethod
    def load_status(self, deployment: str) -> dict[str, Any] | None:
        """The last status saved, with ``saved_at`` added; None before the first tick."""

    def expiry(self, at: float) -> int:
        return int(at + self.history_days * 86400)


def encode_status(status: dict[str, Any], at: float) -> bytes:
    """Compressed JSON: 1,000 queues and 2,000 workers take about 100 KB (see
    :func:`fit_status` for a larger one)."""
    record = {"schema_version": SCHEMA_VERSION, "saved_at": at, "status": status}
    return zlib.compress(json.dumps(record, separators=(",", ":")).encode())


WORKER_OUTLINE = ("hostname", "alive", "busy", "queues")
"""What a worker's record keeps once its detail is left out: who it is, whether it is
alive and busy, what it serves."""


def _without_queue_workers(status: dict[str, Any]) -> tuple[dict[str, Any], str]:
    queues = {name: {**queue, "workers": []} if isinstance(queue, dict) else queue
              for name, queue in (status.get("queues") or {}).items()}
    return {**status, "queues": queues}, "each queue's list of worker names"


def _worker_outlines(status: dict[str, Any]) -> tuple[dict[str, Any], str]:
    workers = {name: {key: record[key] for key in WORKER_OUTLINE if key in record}
               if isinstance(record, dict) else record
               for name, record in (status.get("workers") or {}).items()}
    return ({**status, "workers": workers},
            f"{len(workers)} workers' detail beyond {', '.join(WORKER_OUTLINE)}")


def _without_workers(status: dict[str, Any]) -> tuple[dict[str, Any], str]:
    return {**status, "workers": {}}, f"{len(status.get('workers') or {})} workers' records"


TRIM_STEPS = (_without_queue_workers, _worker_outlines, _without_workers)
"""What gives way, least useful first, when the status outgrows its item: the queues'
lists of worker names (each queue keeps ``many_workers``, and each worker its queues),
then the workers' detail, then the workers' records. Every queue's figures and every
decision are always kept: they are what the endpoint is read for."""


def fit_status(status: dict[str, Any], at: float, budget: int) -> tuple[bytes, str | None]:
    """The status compressed into at most ``budget`` bytes if it can be: whole, or with
    the :data:`TRIM_STEPS` applied one after another until it fits, ``trimmed`` saying
    what was left out (for whoever reads the status endpoint). Returns the bytes and that
    note (None if whole); the bytes may still exceed ``budget`` with every step taken."""
    blob, note = encode_status(status, at), None
    dropped: list[str] = []
    for step in TRIM_STEPS:
        if len(blob) <= budget:
            break
        status, what = step(status)
        dropped.append(what)
        note = f"left out to fit the stored item: {'; '.join(dropped)}"
        blob = encode_status({**status, "trimmed": note}, at)
    return blob, note


def decode_status(blob: bytes) -> dict[str, Any]:
    try:
        record = json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as exc:
        raise StateError(f"unreadable status record: {exc}") from exc
    check_version(record.get("schema_version"), "status")
    return {**record["status"], "saved_at": record["saved_at"]}


def encode_memory(memory: TargetMemory) -> str:
    return json.dumps({"schema_version": SCHEMA_VERSION, "memory": memory.to_dict()})


def decode_memory(text: str, where: str) -> TargetMemory:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(f"{where}: unreadable memory record: {exc}") from exc
    check_version(data.get("schema_version"), where)
    return TargetMemory.from_dict(data.get("memory"))


def check_version(version: Any, where: str) -> None:
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StateError(f"{where}: record has schema version {version!r}; this "
                         f"celery-ondemand reads up to {SCHEMA_VERSION} (upgrade it)")
