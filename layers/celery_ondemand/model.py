"""What one observation says about a Celery deployment, in cwod's vocabulary.

:class:`QueueStatus` and :class:`WorkerStatus` keep celery-worker-on-demand's attributes and
``serializer()`` keys, so a cwod ``Agent.flag_up(queue)`` reads them unchanged; the extra
attributes are what cwod could not see. :class:`Observation` is the whole picture, and its
``serializer()`` is cwod's status JSON, ``{"queues": {...}, "workers": {...}}``, plus a few
top-level keys about the observation itself.

Times are seconds since the epoch on the observer's clock, never a worker's, so that clock
skew between machines cannot make a live worker look dead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

WORKERS: dict[str, WorkerStatus] = {}
"""cwod's cache of workers by hostname, filled by :meth:`WorkerStatus.get`. A running
``CeleryWorkerOnDemand`` keeps the entries of the workers it hears up to date in place and
drops those it no longer hears."""


@dataclass
class WorkerStatus:
    """One Celery worker as the observation saw it.

    cwod's attributes:

    - ``hostname``: the worker's node name (``celery@host``).
    - ``last_heartbeat_at``: when its last heartbeat reached the observer.
    - ``last_task_received_at`` / ``last_task_started_at`` / ``last_task_succeeded_at``: the
      latest ``task-*`` event of each kind (only workers started with ``-E`` send them);
      carried over from the previous observation when the burst saw none.

    Added by celery-ondemand:

    - ``alive``: heard from during this observation. A worker not heard from is not alive.
    - ``active``: tasks running on it now.
    - ``reserved``: tasks it has prefetched and not started (they left the broker's queue).
    - ``processed``: tasks it has finished since it started (its own counter).
    - ``concurrency``: how many tasks it can run at once (pool size), None if not reported.
    - ``queues``: names of the queues it consumes.
    - ``heartbeat_interval``: seconds between its heartbeats (Celery's ``freq``).
    - ``machine``: the ECS task ARN or EC2 instance id it runs on, as reported by the
      celery-ondemand bootstep; None without it.
    - ``scheduled``: tasks with an ETA or countdown it holds until they are due. They are
      not runnable work, but stopping the worker would hand them back late (or, on Redis,
      only after the visibility timeout): a worker holding them counts as busy.
    - ``heard_by``: ``events`` (it beat in the burst) or ``control`` (it sends no events —
      ``--without-heartbeat`` and no ``-E`` — and answered a ping).
    - ``rate_limited``: tasks it has taken and holds back under a task rate limit (reported
      by the celery-ondemand bootstep; 0 without it): it takes work, so it is no zombie.
    - ``draining``: the queues it stopped consuming when told to drain (the bootstep's
      ``ondemand_drain``: it finishes its tasks, then exits), None if it was not told.
      It consumes none of them now, yet it still runs on its target's platform.
    """

    hostname: str
    last_heartbeat_at: float | None = None
    last_task_received_at: float | None = None
    last_task_started_at: float | None = None
    last_task_succeeded_at: float | None = None
    alive: bool = False
    active: int = 0
    reserved: int = 0
    processed: int = 0
    concurrency: int | None = None
    queues: list[str] = field(default_factory=list)
    heartbeat_interval: float | None = None
    machine: str | None = None
    scheduled: int = 0
    heard_by: str = "events"
    rate_limited: int = 0
    draining: list[str] | None = None

    @classmethod
    def get(cls, hostname: str, *args: Any, **kwargs: Any) -> WorkerStatus:
        """cwod: the cached instance for ``hostname``, created from the arguments (as by the
        constructor) on first use. Every caller gets the same object, which a running
        ``CeleryWorkerOnDemand`` refreshes with each read."""
        cached = WORKERS.get(hostname)
        if cached is None:
            cached = WORKERS.setdefault(hostname, cls(hostname, *args, **kwargs))
        return cached

    def refresh(self, seen: WorkerStatus) -> None:
        """Take every attribute of ``seen``, a newer read of this worker, in place: whoever
        holds this object (a user's thread, cwod style) sees the news."""
        for name in _WORKER_FIELDS:
            setattr(self, name, getattr(seen, name))

    @property
    def busy(self) -> bool:
        """True while a task runs on the worker or it holds ETA tasks: stopping it would
        cut or delay work."""
        return self.active > 0 or self.scheduled > 0

    def serializer(self) -> dict[str, Any]:
        """cwod's worker keys, then ours."""
        return {
            "hostname": self.hostname,
            "last_heartbeat_at": self.last_heartbeat_at,
            "last_task_received_at": self.last_task_received_at,
            "last_task_started_at": self.last_task_started_at,
            "last_task_succeeded_at": self.last_task_succeeded_at,
            "alive": self.alive,
            "busy": self.busy,
            "active": self.active,
            "reserved": self.reserved,
            "processed": self.processed,
            "concurrency": self.concurrency,
            "queues": list(self.queues),
            "heartbeat_interval": self.heartbeat_interval,
            "machine": self.machine,
            "scheduled": self.scheduled,
            "heard_by": self.heard_by,
            "rate_limited": self.rate_limited,
            "draining": None if self.draining is None else list(self.draining),
        }


@dataclass
class QueueStatus:
    """One queue: what waits in the broker, what workers hold, and who serves it.

    cwod's attributes:

    - ``name``: the queue's name.
    - ``size``: messages waiting in the broker, ready to be delivered (all priorities).
    - ``workers``: the live workers consuming the queue.
    - ``has_worker`` / ``many_workers``: whether any, and how many, workers serve it.

    Added by celery-ondemand:

    - ``ready``: the same count as ``size``, named for what it counts.
    - ``hidden``: tasks taken from the queue but not finished, which the broker no longer
      shows as ready: ``running`` plus ``reserved`` (from the workers' own replies,
      attributed to the queue by routing key), or SQS's in-flight count.
    - ``running`` / ``reserved``: the two parts of ``hidden``; None where the broker gives
      no worker replies (SQS).
    - ``delayed``: messages not yet deliverable: SQS delay, or ETA/countdown tasks
      workers hold until due; None where unknown. Not runnable work: they never add
      workers, but their holders are never stopped.
    - ``oldest_age``: seconds the oldest ready task has waited, where the producer stamped a
      publish time and the broker lets us peek (Redis); None otherwise.
    - ``consumers``: the broker's own consumer count (RabbitMQ), None where it keeps none.
    - ``missing``: the broker says the queue does not exist (RabbitMQ, SQS).
    """

    name: str
    size: int = 0
    workers: list[WorkerStatus] = field(default_factory=list)
    hidden: int = 0
    running: int | None = 0
    reserved: int | None = 0
    delayed: int | None = None
    oldest_age: float | None = None
    consumers: int | None = None
    missing: bool = False
    running_ages: list[float] = field(default_factory=list)
    """Seconds each task running from this queue has run, on the observer's clock."""

    def refresh(self, seen: QueueStatus, workers: list[WorkerStatus]) -> None:
        """Take every attribute of ``seen``, a newer read of this queue, in place, with
        ``workers`` as its workers: whoever holds this object (an ``UpWorker`` waiting on
        ``has_worker``) sees the news."""
        for name in _QUEUE_FIELDS:
            setattr(self, name, getattr(seen, name))
        self.workers = workers

    @property
    def ready(self) -> int:
        """Messages ready in the broker; the same number as cwod's ``size``."""
        return self.size

    @property
    def has_worker(self) -> bool:
        """cwod: at least one live worker consumes this queue."""
        return self.many_workers > 0

    @property
    def many_workers(self) -> int:
        """cwod: how many live workers consume this queue."""
        return len(self.workers)

    def serializer(self) -> dict[str, Any]:
        """cwod's queue keys, then ours."""
        return {
            "name": self.name,
            "size": self.size,
            "workers": [worker.hostname for worker in self.workers],
            "many_workers": self.many_workers,
            "has_worker": self.has_worker,
            "ready": self.ready,
            "hidden": self.hidden,
            "running": self.running,
            "reserved": self.reserved,
            "delayed": self.delayed,
            "oldest_age": self.oldest_age,
            "consumers": self.consumers,
            "missing": self.missing,
            "longest_running": max(self.running_ages, default=None),
        }


_WORKER_FIELDS = [f.name for f in fields(WorkerStatus) if f.name != "hostname"]
_QUEUE_FIELDS = [f.name for f in fields(QueueStatus) if f.name not in ("name", "workers")]


@dataclass
class Observation:
    """Every queue and every worker at one moment, and how that was learned.

    - ``broker``: the broker URL with its password masked.
    - ``observed_at``: when the observation started.
    - ``duration``: seconds it took.
    - ``sources``: what was heard: ``broker`` (queue depths), ``events`` (heartbeats),
      ``control`` (worker replies). A source missing here was not available.
    - ``problems``: gaps in this observation that touch every target (the broker blocks
      publishing, a worker heard but silent to control whose queues are unknown, ...).
      A decision over an observation with problems never scales down.
    - ``queue_problems``: gaps that touch only some queues, by queue name (a worker silent
      to control that consumes them, more consumers than workers heard): they hold only
      the targets serving those queues.
    - ``warnings``: odd things seen that leave the read complete (a foreign message in a
      queue, ...): reported, not held on.
    """

    broker: str
    observed_at: float
    duration: float = 0.0
    queues: dict[str, QueueStatus] = field(default_factory=dict)
    workers: dict[str, WorkerStatus] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    queue_problems: dict[str, list[str]] = field(default_factory=dict)

    def add_problem(self, problem: str, queues: Iterable[str] | None = None) -> None:
        """Note a gap in the read: for ``queues`` only, or for every target (None)."""
        if queues is None:
            self.problems.append(problem)
            return
        for queue in queues:
            self.queue_problems.setdefault(queue, []).append(problem)

    def problems_for(self, queues: Iterable[str]) -> list[str]:
        """The gaps that touch a target serving ``queues``: every target's, then theirs."""
        found = list(self.problems)
        for queue in queues:
            found += [p for p in self.queue_problems.get(queue, []) if p not in found]
        return found

    @property
    def live_workers(self) -> dict[str, WorkerStatus]:
        """The workers heard from in this observation, by hostname."""
        return {name: worker for name, worker in self.workers.items() if worker.alive}

    def workers_for(self, queues: Iterable[str]) -> list[WorkerStatus]:
        """The live workers consuming any of ``queues``."""
        wanted = set(queues)
        return [w for w in self.live_workers.values() if wanted.intersection(w.queues)]

    def draining_from(self, queues: Iterable[str]) -> list[str]:
        """The live workers draining any of ``queues`` and consuming none of them (told to
        finish and exit, see :attr:`WorkerStatus.draining`), by hostname."""
        wanted = set(queues)
        return sorted(w.hostname for w in self.live_workers.values()
                      if wanted.intersection(w.draining or ())
                      and not wanted.intersection(w.queues))

    def serializer(self) -> dict[str, Any]:
        """cwod's status JSON, ``{"queues": ..., "workers": ...}``, plus our own keys."""
        return {
            "queues": {name: queue.serializer() for name, queue in self.queues.items()},
            "workers": {name: worker.serializer() for name, worker in self.workers.items()},
            "broker": self.broker,
            "observed_at": self.observed_at,
            "duration": self.duration,
            "sources": list(self.sources),
            "problems": list(self.problems),
            "queue_problems": {name: list(found) for name, found in self.queue_problems.items()},
            "warnings": list(self.warnings),
        }
