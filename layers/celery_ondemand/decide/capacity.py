"""The default policy: size the target to its work and its measured throughput.

- Work is every unfinished task of the target's queues: ready in the broker plus hidden
  on workers (reserved and running).
- With no history, one worker per ``concurrency`` tasks of work (every task gets a slot).
- With a measured service rate μ (tasks one busy worker finishes per second) and arrival
  rate λ, the target needs λ/μ workers to keep up plus ready/(μ·T) to drain what waits within
  the wait target T — never more than the work can keep busy.
- An oldest task older than T adds a worker even when the numbers say enough.
- Up fast (at once, capped per tick), down slow (to the highest recommendation of the
  stabilization window, and to the minimum only after ``scale_down_delay_seconds`` idle),
  and a tolerance band in which small changes do nothing.
"""

from __future__ import annotations

import math

from .agent import Agent
from .decision import Recommendation
from .view import TargetView


class CapacityAgent(Agent):
    """Sizes the target; ``needed_workers`` is the hook for a subclass with its own model."""

    def recommend(self, view: TargetView) -> Recommendation:
        config = self.target
        if view.work == 0 and view.busy == 0:
            return self._idle(view)
        needed, rule, reason = self.needed_workers(view)
        age = view.oldest_age
        if age is not None and age > config.target_wait_seconds and view.ready > 0 \
                and needed <= view.current:
            needed, rule = view.current + 1, "age"
            reason = f"oldest task waited {age:.0f}s > {config.target_wait_seconds:.0f}s"
        needed = max(needed, 1)
        if view.current == 0:
            return Recommendation(needed, "from-zero", f"{reason}; starting from zero")
        if needed > view.current:
            return self._up(view, needed, rule, reason)
        if abs(needed - view.current) <= config.tolerance * view.current:
            return Recommendation(view.current, "tolerance", f"{reason}: within "
                                  f"{config.tolerance:.0%} of {view.current}", needed)
        return self._down(view, needed, rule, reason)

    def needed_workers(self, view: TargetView) -> tuple[int, str, str]:
        """Workers the work needs now: (count, rule, reason)."""
        slots = view.concurrency
        by_slots = math.ceil(view.work / slots)
        memory, wait = view.memory, self.target.target_wait_seconds
        if memory.service_rate and memory.arrival_rate is not None:
            rate = memory.service_rate
            demand = memory.arrival_rate / rate + view.ready / (rate * wait)
            needed = min(by_slots, math.ceil(demand - 1e-9))
            return needed, "throughput", (
                f"{view.work} tasks, {memory.arrival_rate:.2f}/s arriving, "
                f"{rate:.2f}/s per worker: {needed} workers keep waits under {wait:.0f}s")
        return by_slots, "backlog", f"{view.work} tasks / {slots} per worker"

    def _up(self, view: TargetView, needed: int, rule: str, reason: str) -> Recommendation:
        config = self.target
        step = max(config.scale_up_max_step,
                   math.ceil(view.current * config.scale_up_max_percent / 100))
        if needed > view.current + step:
            return Recommendation(view.current + step, "step-cap",
                                  f"{reason}; capped at +{step} this tick (wanted {needed})",
                                  needed)
        return Recommendation(needed, rule, reason)

    def _down(self, view: TargetView, needed: int, rule: str, reason: str) -> Recommendation:
        window = self.target.stabilization_seconds
        recent = [int(n) for t, n in view.memory.recommendations if view.now - t < window]
        highest = max(recent, default=needed)
        if highest > needed:
            held = min(highest, view.current)
            return Recommendation(held, "stabilizing",
                                  f"{reason}; holding {held}, the highest of the last "
                                  f"{window:.0f}s", needed)
        return Recommendation(needed, rule, reason)

    def _idle(self, view: TargetView) -> Recommendation:
        floor, delay = self.target.min_workers, self.target.scale_down_delay_seconds
        if view.current <= floor:
            return Recommendation(view.current, "idle", "no work", floor)
        idle_since = view.memory.idle_since
        idle_for = view.now - idle_since if idle_since is not None else 0.0
        if idle_for >= delay:
            return Recommendation(floor, "idle", f"no work for {idle_for:.0f}s ≥ {delay:.0f}s")
        return Recommendation(view.current, "idle-wait",
                              f"no work for {idle_for:.0f}s; scaling in after {delay:.0f}s",
                              floor)
