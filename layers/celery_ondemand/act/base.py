"""The one interface every scaling target implements: read the count, set the count.

Setting is absolute and idempotent (a repeated tick sets the same number, never adds
twice). Before any scale-in, :meth:`Scaler.apply` hands the busy and idle workers to
:meth:`Scaler._before_scale_in`, so a target that cannot choose which worker stops (ECS, an
Auto Scaling group) can shield the busy ones first; when it cannot shield one, it raises
:class:`~celery_ondemand.errors.ScaleInHeld` and the count is left as it is. Every failure
becomes a :class:`~celery_ondemand.errors.ScalerError` naming the target.

Workers are matched to their tasks or instances exactly (:func:`owners`): by the machine
the worker's bootstep reports, else by the host part of its node name, equal to one of the
machine's names. Never by substring: ``ip-10-0-1-2`` is not ``ip-10-0-1-23``.
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
from ..errors import OnDemandError, ScaleInHeld, ScalerError
from ..model import Observation, WorkerStatus

AWS_CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 3},
                           connect_timeout=3, read_timeout=5)
"""Retries and timeouts that keep one tick well inside its interval and the function's
timeout: two retries with backoff (at most ~3 s) absorb a short throttling burst; a longer
one fails this target's tick and the next tick tries again (five attempts could back off for
~15 s). An AWS API answers in milliseconds: 5 s without a byte is a failure, not a wait."""

PROTECTION_MINUTES = 60
"""How long scale-in protection set by the tick lasts if nobody lifts it."""


@dataclass(frozen=True)
class Capacity:
    """What a target has: the count asked for, and how many of those run or are starting."""

    desired: int
    running: int
    pending: int = 0
    rollout: str | None = None
    """Why a rollout is under way (an ECS deployment, an instance refresh), or why one
    cannot be ruled out (the refreshes could not be read); None when there is none:
    scale-in waits for it to end, scale-out does not."""
    bounds: tuple[int, int] | None = None
    """The smallest and largest count the platform itself accepts (an Auto Scaling group's
    MinSize and MaxSize), where it has any: decisions stay within them."""


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
        with self.errors("scaling"):  # a scale-in held here changes nothing
            if desired < current:
                self._before_scale_in([w for w in workers if w.busy],
                                      [w for w in workers if not w.busy])
            self._set_desired(desired, current, workers)

    def keep_shielded(self, workers: Sequence[WorkerStatus]) -> None:
        """Shield the busy workers again and unshield the idle, as before a scale-in, while
        the platform still runs more than asked for: protection the tick set expires (ECS,
        in an hour) or never does (an instance), and the platform goes on choosing.

        Only workers without the bootstep (none reported its machine): a worker with it
        holds and renews its own protection, and its calls are not repeated here."""
        unmanaged = [w for w in workers if not w.machine]
        if not unmanaged:
            return
        with self.errors("shielding"):
            self._before_scale_in([w for w in unmanaged if w.busy],
                                  [w for w in unmanaged if not w.busy])

    def replace(self, zombies: Sequence[WorkerStatus],
                workers: Sequence[WorkerStatus] = ()) -> list[str]:
        """Stop ``zombies`` and put a fresh worker in the place of each, keeping the count.

        ``workers`` are the target's live workers: a machine a zombie shares with another
        of them is left alone. Returns the hostnames replaced; a target that cannot
        replace returns none.
        """
        with self.errors("replacing zombie workers"):
            return self._replace(zombies, workers) if zombies else []

    def _replace(self, zombies: Sequence[WorkerStatus],
                 workers: Sequence[WorkerStatus]) -> list[str]:
        return []

    def outgoing(self, workers: Sequence[WorkerStatus],
                 quiet: Sequence[WorkerStatus]) -> list[str]:
        """The hostnames of ``workers`` to drain now, on machines a rollout under way is
        replacing. ``quiet`` are the live workers consuming none of the target's queues:
        those on the target's own machines are draining (told before, by the tick or by
        hand), and count against how many may drain at a time.

        A busy worker's bootstep holds its machine's scale-in protection, which deployments
        honour too: under steady load the old workers never go idle and the rollout never
        ends. The tick drains these (``ondemand_drain``: finish, then exit). None by
        default; only workers running tasks whose bootstep reported their machine are named
        (they hold protection and answer the drain; an idle one, or one holding only ETA
        tasks, is unprotected: the platform's to stop)."""
        with self.errors("reading the rollout of"):
            return self._outgoing(workers, quiet)

    def _outgoing(self, workers: Sequence[WorkerStatus],
                  quiet: Sequence[WorkerStatus]) -> list[str]:
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
    """Lower-cased host names a machine's worker may carry after the ``@`` of its node name.

    A DNS name also counts by its first label (``ip-10-0-1-23.ec2.internal`` →
    ``ip-10-0-1-23``); a private IP ``10.0.1.23`` appears as ``ip-10-0-1-23`` (the EC2 host
    name). Each is compared whole, never as a part of a longer name.
    """
    found = set()
    for name in names:
        if not name:
            continue
        name = name.lower()
        found.add(name)
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
            found.add("ip-" + name.replace(".", "-"))
        else:
            found.add(name.split(".")[0])
    return found


def host_names(hostname: str) -> set[str]:
    """The names a worker's node name gives its host: the part after ``@``, in the same
    forms as :func:`identities` (``celery@ip-10-0-1-23.ec2.internal`` → ``ip-10-0-1-23``)."""
    host = hostname.lower().rsplit("@", 1)[-1]
    return identities(host)


def owners(workers: Iterable[WorkerStatus],
           machines: Mapping[str, set[str]]) -> dict[str, str]:
    """Worker hostname → machine id (ECS task ARN, EC2 instance id), where exactly one
    machine matches.

    A worker that reported its machine (the bootstep's task ARN or instance id) matches
    that machine only. Otherwise its host name must equal one of a machine's names; a
    worker matching none, or more than one, is left out (the caller decides what an
    unmatched worker means).
    """
    found = {}
    for worker in workers:
        if worker.machine:
            if worker.machine in machines:
                found[worker.hostname] = str(worker.machine)
            continue
        names = host_names(worker.hostname)
        matches = [machine for machine, known in machines.items() if names & known]
        if len(matches) == 1:
            found[worker.hostname] = matches[0]
    return found


def shield_plan(target: str, busy: Sequence[WorkerStatus], idle: Sequence[WorkerStatus],
                machines: Mapping[str, set[str]], kind: str) -> tuple[list[str], list[str]]:
    """The machines to protect (a busy worker's) and to unprotect (only idle workers'),
    before a scale-in. A busy worker not matched to a machine holds the scale-in: the
    platform could stop it.

    An idle worker that reported its machine runs the bootstep, which holds and lifts its
    own protection as its tasks start and end: lifting it here would race with a task it
    has just taken (our observation is seconds old), so it is left to the bootstep."""
    busy_owned = owners(busy, machines)
    unmatched = sorted(w.hostname for w in busy if w.hostname not in busy_owned)
    if unmatched:
        raise ScaleInHeld(
            f"target {target}: holding scale-in: busy workers not matched to their {kind}: "
            f"{', '.join(unmatched)} (name workers celery@$HOSTNAME, or add the "
            "celery_ondemand bootstep so they report it)")
    protect = sorted(set(busy_owned.values()))
    self_managed = [w for w in idle if w.machine]
    unprotect = sorted(set(owners([w for w in idle if w not in self_managed],
                                  machines).values()) - set(protect))
    return protect, unprotect


def replaceable(zombies: Sequence[WorkerStatus], workers: Sequence[WorkerStatus],
           machines: Mapping[str, set[str]]) -> dict[str, str]:
    """Zombie hostname → machine, leaving out machines another live worker runs on:
    stopping such a machine would stop that worker too."""
    zombie_names = {z.hostname for z in zombies}
    others = owners([w for w in workers if w.hostname not in zombie_names], machines)
    shared = set(others.values())
    return {name: machine for name, machine in owners(zombies, machines).items()
            if machine not in shared}
