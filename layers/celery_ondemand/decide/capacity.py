"""The default policy: size the target to its work, its measured rates and the wait target.

- Work is every unfinished task of the target's queues: ready in the broker plus hidden
  on workers (reserved and running).
- With no history, one worker per ``concurrency`` tasks of work (every task gets a slot).
- With measured rates — arrivals λ (tasks per second) and μ (tasks one busy worker finishes
  per second) — it asks for the fewest workers N with which every task arriving within the
  next T seconds (T = ``target_wait_seconds``) starts within the goal G = 3/4 of T, if
  arrivals go on at λ, plus s: one standard deviation of the arrivals over T, from the
  per-tick counts. A task arriving at h finds the ready queue Q plus what arrived since,
  less what N workers finished: it waits (Q + λh + s - Nμh) / Nμ. That is linear in h, so
  checking h = 0 and h = T is enough:

      N >= Q / (μ G)     and     N >= (Q + λ T + s) / (μ (G + T))

  The policy therefore spends the wait budget: under a steady load the queue settles where
  a task waits about G, the fleet runs full, and a load between two counts alternates
  between them (n while a queue builds, n + 1 while it drains) as a clairvoyant plan does.
  The quarter of T held back absorbs what the rates cannot see coming while new workers
  start; the standard deviation s, measured per target, holds more back where arrivals come
  in bursts. Only visible work adds workers; running tasks always keep their slots.
- An oldest task older than T adds a worker even when the numbers say enough, unless
  workers asked for are still starting (they will take it).
- With ``forecast: true`` and enough load history, raised ahead of a rise the past days
  and weeks say is coming (see :mod:`.forecast`): never below what this policy wants.
- Up fast (at once, capped per tick); down with hysteresis: only to a count that keeps the
  projected wait within (1 - ``tolerance``) of the goal, not below the highest need of the
  ``stabilization_seconds`` window, and to the minimum only after
  ``scale_down_delay_seconds`` idle.
"""

from __future__ import annotations

import math

from . import forecast
from .agent import Agent
from .decision import Recommendation
from .view import TargetView

GOAL_SHARE = 0.75
"""Share of the wait target a task is planned to wait at most; the rest is held back."""

SURGE_DEVIATIONS = 1.0
"""Arrivals planned for beyond the measured rate, in standard deviations over the horizon."""


class CapacityAgent(Agent):
    """Sizes the target; ``demand`` is the hook for a subclass with its own model."""

    def recommend(self, view: TargetView) -> Recommendation:
        """The reactive recommendation, raised ahead of a forecast rise where one is on."""
        return forecast.pre_scale(self, view, self.react(view))

    @property
    def goal(self) -> float:
        """Seconds a task is planned to wait at most."""
        return GOAL_SHARE * self.target.target_wait_seconds

    def react(self, view: TargetView) -> Recommendation:
        """What the work seen now and the measured rates need."""
        config = self.target
        nothing_now = view.work == 0 and view.busy == 0
        if (view.memory.idle_since is not None and nothing_now) or \
                (nothing_now and not view.complete):
            return self._idle(view)
        demand, rule, reason = self.demand(view)
        up_to = max(1, math.ceil(demand - 1e-9))
        # Hysteresis: shrink only to a count that would still do with ``tolerance`` to
        # spare, so a demand wobbling around a whole number does not flap.
        down_to = max(1, math.ceil(self.shrink_to(view, demand) - 1e-9))
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
            return self.step_up(view, up_to, rule, reason)
        if down_to < view.current:
            return self._down(view, down_to, rule, reason)
        return Recommendation(view.current, "tolerance",
                              f"{reason}: {view.current} fits within {config.tolerance:.0%}")

    def demand(self, view: TargetView) -> tuple[float, str, str]:
        """Workers the work needs now, as a fraction: (workers, rule, reason).

        The hook for a subclass with its own model of the work.
        """
        memory, goal = view.memory, GOAL_SHARE * self.target.target_wait_seconds
        if memory.service_rate and memory.arrival_rate is not None:
            demand = self.workers_for(view, goal)
            return demand, "throughput", (
                f"{view.ready} ready, {memory.arrival_rate:.2f}/s arriving, "
                f"{memory.service_rate:.2f}/s per worker: {demand:.1f} workers start "
                f"tasks within {goal:.0f}s")
        slots = view.concurrency
        return view.work / slots, "backlog", f"{view.work} tasks / {slots} per worker"

    def workers_for(self, view: TargetView, goal: float) -> float:
        """The fewest workers with which the ready tasks and every task arriving within
        the wait target start within ``goal`` seconds (see the module's docstring)."""
        needed = self.workers_at(view, goal, view.memory.arrival_rate or 0.0)
        # Only visible work adds workers: rates measured while long tasks still run
        # underestimate μ and would overshoot; but a fleet already larger may stay.
        needed = min(needed, max(view.work / view.concurrency, view.current))
        return max(needed, view.running / view.concurrency)  # running tasks hold slots

    def workers_at(self, view: TargetView, goal: float, arriving: float) -> float:
        """The formula of the module's docstring, for arrivals at ``arriving`` a second."""
        memory, horizon = view.memory, self.target.target_wait_seconds
        rate = memory.service_rate or 1e-9
        surge = SURGE_DEVIATIONS * memory.arrival_deviation(horizon)
        return max(view.ready / (rate * goal),
                   (view.ready + arriving * horizon + surge) / (rate * (goal + horizon)))

    def shrink_to(self, view: TargetView, demand: float) -> float:
        """The least count a scale-down may go to, ``tolerance`` to spare.

        With measured rates, the count that keeps the projected wait within
        (1 - tolerance) of the goal. Without them, or for a subclass's own ``demand``,
        the demand with ``tolerance`` of spare capacity.
        """
        memory, tolerance = view.memory, self.target.tolerance
        own_model = type(self).demand is not CapacityAgent.demand
        if own_model or not (memory.service_rate and memory.arrival_rate is not None):
            return demand / (1 - tolerance)
        goal = GOAL_SHARE * self.target.target_wait_seconds * (1 - tolerance)
        return self.workers_for(view, goal)

    def step_up(self, view: TargetView, needed: int, rule: str,
                reason: str) -> Recommendation:
        """Up to ``needed``, at most the larger of the step and the percentage a tick."""
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
