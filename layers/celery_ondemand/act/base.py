"""The one interface every scaling target implements: read the count, set the count.

Setting is absolute and idempotent (a repeated tick sets the same number, never adds
twice). Before any scale-in, :meth:`Scaler.apply` hands the busy and idle workers to
:meth:`Scaler._before_scale_in`, so a target that cannot choose which worker stops (ECS, an
Auto Scaling group) can shield the busy ones first. Every failure becomes a
:class:`~celery_ondemand.errors.ScalerError` naming the target.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..config import TargetConfig
from ..errors import OnDemandError, ScalerError
from ..model import Observation, WorkerStatus

AWS_CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 3},
                           connect_timeout=3, read_timeout=10)
"""Retries and timeouts that keep one tick well inside its interval: two retries with
backoff (at most ~3 s) absorb a short throttling burst; a longer one fails this target's
tick and the next tick tries again (five attempts could back off for ~15 s)."""

PROTECTION_MINUTES = 60
"""How long scale-in protection set by the tick lasts if nobody lifts it."""


@dataclass(frozen=True)
class Capacity:
    """What a target has: the count asked for, and how many of those run or are starting."""

    desired: int
    running: int
    pending: int = 0
    rollout: str | None = None
    """Why a rollout is under way (an ECS deployment), None when there is none: scale-in
    waits for it to end, scale-out does not."""


class Scaler(ABC):
    """Reads and sets one target's worker count."""

    def __init__(self, target: TargetConfig) -> None:
        self.target = target

    def observed(self, observation: Observation | None) -> None:
        """Sees each tick's observation (None: the broker was not read) before
        :meth:`current`. Most targets need nothing from it; cwod's keeps the queues it
        hands to user code live."""
        return None

    def current(self, workers: Sequence[WorkerStatus] = ()) -> Capacity:
        """The target's capacity now; ``workers`` are its live workers, for targets that
        count by observation."""
        with self.errors("reading"):
            return self._read(workers)

    def apply(self, desired: int, current: int, workers: Sequence[WorkerStatus]) -> None:
        """Move the target from ``current`` to ``desired`` workers.

        ``workers`` are its live workers as just observed: the busy ones are shielded
        before a scale-in and never stopped.
        """
        with self.errors("scaling"):
            if desired < current:
                self._before_scale_in([w for w in workers if w.busy],
                                      [w for w in workers if not w.busy])
            self._set_desired(desired, current, workers)

    def replace(self, zombies: Sequence[WorkerStatus]) -> list[str]:
        """Stop ``zombies`` and put a fresh worker in the place of each, keeping the count.
        Returns the hostnames replaced; a target that cannot replace returns none."""
        with self.errors("replacing zombie workers"):
            return self._replace(zombies) if zombies else []

    def _replace(self, zombies: Sequence[WorkerStatus]) -> list[str]:
        return []

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except OnDemandError:
            raise
        except (BotoCoreError, ClientError, OSError) as exc:
            raise ScalerError(f"target {self.target.name}: {doing} failed: {exc}") from exc

    @abstractmethod
    def _read(self, workers: Sequence[WorkerStatus]) -> Capacity:
        """Read the capacity."""

    @abstractmethod
    def _set_desired(self, desired: int, current: int, workers: Sequence[WorkerStatus]) -> None:
        """Set the count (idempotent: an unchanged count may be set again)."""

    def _before_scale_in(self, busy: list[WorkerStatus], idle: list[WorkerStatus]) -> None:
        """Shield busy workers from a scale-in this target carries out itself.

        Nothing to do where the scaler picks the workers to stop itself (local, cwod).
        """
        return None


def identities(*names: str | None) -> set[str]:
    """Lower-cased forms under which a machine may appear in a Celery hostname.

    A private IP ``10.0.1.23`` also appears as ``ip-10-0-1-23`` (the EC2 host name).
    """
    found = set()
    for name in names:
        if not name:
            continue
        name = name.lower()
        found.add(name)
        found.add(name.split(".")[0])
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
            found.add("ip-" + name.replace(".", "-"))
    return {n for n in found if len(n) >= 6}


def owners(workers: Iterable[WorkerStatus],
           machines: Mapping[str, set[str]]) -> dict[str, str]:
    """Worker hostname → machine id (ECS task ARN, EC2 instance id), where one matches.

    A worker matches a machine it reported itself (the bootstep's task ARN or instance id),
    or one whose identities appear in its node name (``celery@ip-10-0-1-23``,
    ``celery@<task id>``, ...).
    """
    found = {}
    for worker in workers:
        if worker.machine in machines:  # reported by the worker's bootstep: exact
            found[worker.hostname] = str(worker.machine)
            continue
        host = worker.hostname.lower().split("@")[-1]
        for machine, names in machines.items():
            if any(name in host for name in names):
                found[worker.hostname] = machine
                break
    return found
