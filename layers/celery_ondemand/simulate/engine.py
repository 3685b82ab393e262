"""A queue and its workers, second by second, driven by a scaling policy.

Tasks arrive from a per-second trace; each waits in FIFO order for a free slot and holds
it for its service time. A worker serves ``concurrency`` tasks at once, starts serving
``startup_seconds`` after the scale-up call and is billed from that call until it stops.
Each second: arrivals, then service, then (every ``tick_seconds``) the decision: the
policy sees what a burst would (ready, running, workers with
their counters, the oldest task's age) and returns a worker count. Scale-in stops idle
workers first and cancels workers still starting; a busy worker asked to go drains: it
takes no new task and stops when its tasks are done (no task is ever cut).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SimConfig:
    concurrency: int = 4
    startup_seconds: int = 60
    tick_seconds: int = 15
    wait_target: float = 60.0
    max_workers: int = 200


@dataclass
class SimWorker:
    name: str
    billed_from: int
    ready_at: int
    running: list[float] = field(default_factory=list)
    processed: int = 0
    draining: bool = False


@dataclass(frozen=True)
class Snapshot:
    """What the policy sees at a tick."""

    now: int
    ready: int
    oldest_age: float | None
    workers: list[SimWorker]  # serving (ready, not draining)
    current: int  # asked for: serving + starting


class Policy(Protocol):
    name: str

    def desired(self, snapshot: Snapshot) -> int: ...


@dataclass
class SimResult:
    policy: str
    worker_seconds: float = 0.0
    waits: list[float] = field(default_factory=list)
    actions: int = 0
    unserved: int = 0
    timeline: list[tuple[int, int, int, int]] = field(default_factory=list)  # t, ready, busy, n

    @property
    def worker_minutes(self) -> float:
        return self.worker_seconds / 60

    def percentile(self, q: float) -> float:
        if not self.waits:
            return 0.0
        ordered = sorted(self.waits)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def share_over(self, target: float) -> float:
        return sum(1 for w in self.waits if w > target) / max(1, len(self.waits))


ServiceTimes = Callable[[random.Random], float]


def arrivals_from(counts: list[int], scale: float, service: ServiceTimes,
                  seed: int = 1) -> list[tuple[int, float]]:
    """(arrival second, service seconds) for every task; fractional counts carry over."""
    rng, carry, tasks = random.Random(seed), 0.0, []
    for second, count in enumerate(counts):
        carry += count * scale
        whole = int(carry)
        carry -= whole
        tasks += [(second, service(rng)) for _ in range(whole)]
    return tasks


def simulate(tasks: list[tuple[int, float]], policy: Policy, config: SimConfig,
             horizon: int, keep_timeline: bool = False) -> SimResult:
    """Run ``policy`` over ``tasks`` for ``horizon`` seconds, then until the queue drains."""
    result = SimResult(policy.name)
    waiting: deque[tuple[int, float]] = deque()
    workers: list[SimWorker] = []
    pending = deque(tasks)
    serial, t = 0, 0
    while t < horizon or waiting or any(w.running for w in workers) or workers:
        while pending and pending[0][0] <= t:
            waiting.append(pending.popleft())
        for worker in workers:
            if t < worker.ready_at:
                continue
            still = [left - 1 for left in worker.running]
            worker.processed += sum(1 for left in still if left <= 0)
            worker.running = [left for left in still if left > 0]
            while not worker.draining and waiting and len(worker.running) < config.concurrency:
                arrived, service = waiting.popleft()
                result.waits.append(t - arrived)
                worker.running.append(service)
        if t % config.tick_seconds == 0:
            serving = [w for w in workers if t >= w.ready_at and not w.draining]
            active = [w for w in workers if not w.draining]
            snapshot = Snapshot(t, len(waiting), (t - waiting[0][0]) if waiting else None,
                                serving, len(active))
            desired = max(0, min(config.max_workers, policy.desired(snapshot)))
            if desired != len(active):
                result.actions += 1
            for _ in range(desired - len(active)):
                serial += 1
                workers.append(SimWorker(f"w{serial}", t, t + config.startup_seconds))
            excess = len(active) - desired
            # cancel starting workers, then stop idle ones, then drain busy ones
            order = sorted(active, key=lambda w: (t >= w.ready_at, bool(w.running)))
            for worker in order[:max(0, excess)]:
                worker.draining = True
            if keep_timeline:
                result.timeline.append((t, len(waiting),
                                        sum(1 for w in serving if w.running), desired))
        for worker in [w for w in workers if w.draining and not w.running]:
            workers.remove(worker)  # an idle worker asked away stops at once
            result.worker_seconds += t - worker.billed_from
        t += 1
        if t > horizon * 2 + 3600:  # a policy that cannot keep up: stop, count what is left
            result.unserved = len(waiting) + len(pending)
            result.waits += [t - arrived for arrived, _ in [*waiting, *pending]]
            result.worker_seconds += sum(t - w.billed_from for w in workers)
            break
    return result


def busy_bound_minutes(tasks: list[tuple[int, float]], concurrency: int) -> float:
    """The physical floor: every slot-second of work, packed perfectly."""
    return sum(math.ceil(s) for _, s in tasks) / concurrency / 60
