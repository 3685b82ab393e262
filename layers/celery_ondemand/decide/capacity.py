"""The default policy: size the target to its work and its measured throughput.

- Work is every unfinished task of the target's queues: ready in the broker plus hidden
  on workers (reserved and running).
- With no history, one worker per ``concurrency`` tasks of work (every task gets a slot).
- With a measured service rate μ (tasks one worker finishes per second) and arrival rate λ,
  the target needs λ/μ workers to keep up plus ready/(μ·T) to drain what waits within the
  wait target T. The work seen at one instant understates a steady load (a slot freed
  between ticks takes the next arrival), so λ/μ may hold the current count above it; but
  only visible work adds workers.
- An oldest task older than T adds a worker even when the numbers say enough, unless
  workers asked for are still starting (they will take it).
- Up fast (at once, capped per tick), down slow (to the highest recommendation of the
  stabilization window, and to the minimum only after ``scale_down_delay_seconds`` idle),
  and hysteresis: shrink only to a count the load fits with ``tolerance`` to spare.
"""

from __future__ import annotations

import math

from .agent import Agent
from .decision import Recommendation
from .view import TargetView


class CapacityAgent(Agent):
    """Sizes the target; ``demand`` is the hook for a subclass with its own model."""

    def recommend(self, view: TargetView) -> Recommendation:
        config = self.target
        nothing_now = view.work == 0 and view.busy == 0
        if (view.memory.idle_since is not None and nothing_now) or \
                (nothing_now and not view.complete):
            return self._idle(view)
        demand, rule, reason = self.demand(view)
        up_to = max(1, math.ceil(demand - 1e-9))
        # Hysteresis: shrink only to a count the load fits with ``tolerance`` to spare,
        # so a demand wobbling around a whole number does not flap.
        down_to = max(1, math.ceil(demand / (1 - config.tolerance) - 1e-9))
        age = view.oldest_age
        if age is not None and age > config.target_wait_seconds and view.ready > 0 \
                and up_to <= view.current:
            reason = f"oldest task waited {age:.0f}s > {config.target_wait_seconds:.0f}s"
            if view.starting:
                return Recommendation(view.current, "starting",
                                      f"{reason}; {view.starting} workers still starting")
            up_to, rule = view.current + 1, "age"
        if view.current == 0:
            return Recommendation(up_to, "from-zero", f"{reason}; starting from zero")
        if up_to > view.current:
            return self._up(view, up_to, rule, reason)
        if down_to < view.current:
            return self._down(view, down_to, rule, reason)
        return Recommendation(view.current, "tolerance",
                              f"{reason}: {view.current} fits within {config.tolerance:.0%}")

    def demand(self, view: TargetView) -> tuple[float, str, str]:
        """Workers the work needs now, as a fraction: (workers, rule, reason).

        The hook for a subclass with its own model of the work.
        """
        slots = view.concurrency
        by_slots = view.work / slots
        memory, wait = view.memory, self.target.target_wait_seconds
        if memory.service_rate and memory.arrival_rate is not None:
            rate = memory.service_rate
            demand = memory.arrival_rate / rate + view.ready / (rate * wait)
            # Throughput may hold workers the instant's work does not show (a freed slot
            # takes the next arrival), but only visible work adds workers: a rate measured
            # while long tasks are still running underestimates μ and would overshoot.
            demand = min(demand, max(by_slots, view.current))
            demand = max(demand, view.running / slots)  # running tasks hold their slots
            return demand, "throughput", (
                f"{view.work} tasks, {memory.arrival_rate:.2f}/s arriving, "
                f"{rate:.2f}/s per worker: {demand:.1f} workers keep waits under {wait:.0f}s")
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
