"""A small deterministic queue driven by the real decision code, for convergence tests.

Whole tasks arrive at a constant rate (no randomness: a test must be repeatable), each
takes ``service_seconds`` in one slot, workers start at once, and scale-in removes idle
workers only. Every tick observes it exactly as a burst would: ready, running, per-worker
counters.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from celery_ondemand import TargetMemory
from celery_ondemand.config import Settings
from celery_ondemand.decide import decide
from tests.support.observations import observation, worker


@dataclass
class ToyWorker:
    name: str
    running: list[int] = field(default_factory=list)  # seconds left per task
    processed: int = 0


def run_toy_queue(config: Settings, arrivals_per_second: float, service_seconds: int,
                  ticks: int, tick_seconds: int = 15,
                  waits: list[tuple[int, int]] | None = None) -> list[int]:
    """Run ``ticks`` ticks; returns the worker count decided at each. ``waits``, if given,
    receives (arrival second, seconds waited) for every task started."""
    slots = config.targets[0].worker_concurrency or 1
    waiting: deque[int] = deque()
    workers: list[ToyWorker] = []
    memory: dict[str, TargetMemory] = {}
    history, serial, second = [], 0, 0
    for _ in range(ticks):
        for _second in range(tick_seconds):
            arrived = (math.floor(arrivals_per_second * (second + 1))
                       - math.floor(arrivals_per_second * second))
            waiting.extend([second] * arrived)
            second += 1
            for w in workers:
                w.running = [left - 1 for left in w.running]
                w.processed += sum(1 for left in w.running if left <= 0)
                w.running = [left for left in w.running if left > 0]
                while waiting and len(w.running) < slots:
                    arrived_at = waiting.popleft()
                    if waits is not None:
                        waits.append((arrived_at, second - arrived_at))
                    w.running.append(service_seconds)
        observed = observation(
            {"q": (len(waiting), sum(len(w.running) for w in workers))},
            [worker(w.name, ["q"], active=len(w.running), processed=w.processed,
                    concurrency=slots) for w in workers],
            at=float(second))
        decisions, memory = decide(observed, config, memory, float(second),
                                   current={"t": len(workers)})
        desired = decisions[0].desired
        while len(workers) < desired:
            serial += 1
            workers.append(ToyWorker(f"w{serial}"))
        idle = [w for w in workers if not w.running]
        for w in idle[:max(0, len(workers) - desired)]:
            workers.remove(w)
        history.append(desired)
    return history
