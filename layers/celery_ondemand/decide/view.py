"""What a policy sees of one target: its queues, its live workers, its count, and gaps."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ..config import TargetConfig
from ..model import QueueStatus, WorkerStatus
from .memory import TargetMemory


@dataclass(frozen=True)
class TargetView:
    """One target at one tick.

    ``current`` is the count the scaler reports (desired, including workers still
    starting), or the live workers where no scaler was asked. ``problems`` lists every
    gap in the read; a view with problems is *blind* and never shrinks the target.
    """

    config: TargetConfig
    queues: list[QueueStatus]
    workers: list[WorkerStatus]
    current: int
    now: float
    memory: TargetMemory
    problems: list[str] = field(default_factory=list)
    redelivery_timeout: float = 3600.0
    """Seconds after which the broker hands a running task out again (see config)."""
    platform_running: int | None = None
    """What the platform says runs (ECS tasks, InService instances), where known."""
    draining: list[str] = field(default_factory=list)
    """Live workers draining this target's queues (see :attr:`WorkerStatus.draining`):
    they consume none of them, yet the platform still runs them."""
    workers_audible: bool = True
    """Whether the broker lets workers be heard (False on SQS: no events, no control)."""
    tick_seconds: float = 15.0
    """The deployment's ``tick_interval_seconds``: when the next tick comes."""

    @property
    def complete(self) -> bool:
        return not self.problems

    @property
    def zombies(self) -> list[WorkerStatus]:
        """Live workers stalled for ``zombie_after_seconds``: alive, consuming queues with
        ready work, yet running and finishing nothing (Celery's consumer can stay dead
        after a broker reconnect while the worker still answers)."""
        after = self.config.zombie_after_seconds
        if not after or not self.complete:
            # A read with a gap leaves the memory as the last whole read left it: a
            # worker stalled then may be running tasks now.
            return []
        stalled = self.memory.stalled_since
        return [w for w in self.workers if w.hostname in stalled
                and self.now - stalled[w.hostname] >= after]

    @property
    def ready(self) -> int:
        """Ready tasks, less the copies the broker put back of tasks still running past
        its redelivery timeout: those are no new demand."""
        return max(0, sum(q.size for q in self.queues) - self.overdue)

    @property
    def overdue(self) -> int:
        """Running tasks past the redelivery timeout (the broker has handed out a copy)."""
        return sum(1 for q in self.queues for age in q.running_ages
                   if age > self.redelivery_timeout)

    @property
    def nearing_redelivery(self) -> int:
        """Running tasks past 80 % of the redelivery timeout, those past it included."""
        return sum(1 for q in self.queues for age in q.running_ages
                   if age > 0.8 * self.redelivery_timeout)

    @property
    def hidden(self) -> int:
        return sum(q.hidden for q in self.queues)

    @property
    def work(self) -> int:
        """Tasks not finished: waiting in the broker plus held by workers."""
        return self.ready + self.hidden

    @property
    def busy(self) -> int:
        """Live workers running at least one task: the floor for any scale-in.

        Where workers cannot be heard (SQS), each message in flight (received, not yet
        deleted: reserved or running under ``task_acks_late``) may keep one worker busy,
        up to the workers that run: the floor errs towards keeping workers.
        """
        heard = sum(1 for w in self.workers if w.busy)
        if self.workers_audible:
            return heard
        return max(heard, min(self.hidden, self.live))

    @property
    def live(self) -> int:
        """Live workers: those heard, or where none can be heard (SQS) what the platform
        runs (else the current count)."""
        if self.workers_audible:
            return len(self.workers)
        running = self.platform_running if self.platform_running is not None \
            else self.current
        return max(len(self.workers), running)

    @property
    def running(self) -> int:
        return sum(w.active for w in self.workers)

    @property
    def oldest_age(self) -> float | None:
        ages = [q.oldest_age for q in self.queues if q.oldest_age is not None]
        return max(ages, default=None)

    @property
    def reported_concurrency(self) -> int | None:
        """Slots per worker as the live workers report them (the median), if any does."""
        reported = [w.concurrency for w in self.workers if w.concurrency]
        return int(statistics.median(reported)) if reported else None

    @property
    def concurrency(self) -> int:
        """Slots per worker: configured, else what the workers report, else what they
        last reported (remembered: from zero none is live to say), else 1."""
        if self.config.worker_concurrency:
            return self.config.worker_concurrency
        return self.reported_concurrency or self.memory.concurrency or 1

    @property
    def starting(self) -> int:
        """Workers asked for within ``startup_grace_seconds`` and not live yet: the count
        set, less those heard (or, where none can be heard, less what the platform
        runs). Past the grace a missing worker is not "starting" any more."""
        asked = self.memory.last_up_at
        if asked is None or self.now - asked >= self.config.startup_grace_seconds:
            return 0
        return max(0, self.current - self.live)

    def inputs(self) -> dict[str, object]:
        """The numbers a decision used, for its record."""
        return {"ready": self.ready, "hidden": self.hidden, "running": self.running,
                "live": self.live, "busy": self.busy, "oldest_age": self.oldest_age,
                "concurrency": self.concurrency, "service_rate": self.memory.service_rate,
                "arrival_rate": self.memory.arrival_rate, "problems": list(self.problems),
                "near_redelivery": self.nearing_redelivery,
                "redelivery_timeout": self.redelivery_timeout, "draining": len(self.draining)}
