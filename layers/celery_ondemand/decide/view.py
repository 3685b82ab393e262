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

    @property
    def complete(self) -> bool:
        return not self.problems

    @property
    def ready(self) -> int:
        return sum(q.size for q in self.queues)

    @property
    def hidden(self) -> int:
        return sum(q.hidden for q in self.queues)

    @property
    def work(self) -> int:
        """Tasks not finished: waiting in the broker plus held by workers."""
        return self.ready + self.hidden

    @property
    def busy(self) -> int:
        """Live workers running at least one task: the floor for any scale-in."""
        return sum(1 for w in self.workers if w.busy)

    @property
    def running(self) -> int:
        return sum(w.active for w in self.workers)

    @property
    def live(self) -> int:
        return len(self.workers)

    @property
    def oldest_age(self) -> float | None:
        ages = [q.oldest_age for q in self.queues if q.oldest_age is not None]
        return max(ages, default=None)

    @property
    def concurrency(self) -> int:
        """Slots per worker: configured, else what the workers report, else 1."""
        if self.config.worker_concurrency:
            return self.config.worker_concurrency
        reported = [w.concurrency for w in self.workers if w.concurrency]
        return int(statistics.median(reported)) if reported else 1

    def inputs(self) -> dict[str, object]:
        """The numbers a decision used, for its record."""
        return {"ready": self.ready, "hidden": self.hidden, "running": self.running,
                "live": self.live, "busy": self.busy, "oldest_age": self.oldest_age,
                "concurrency": self.concurrency, "service_rate": self.memory.service_rate,
                "arrival_rate": self.memory.arrival_rate, "problems": list(self.problems)}
