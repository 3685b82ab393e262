"""Clairvoyant planners, and the oracle: the cheapest of their plans.

A planner knows every future arrival and service time and obeys the same rules as every
policy: it decides at the same ticks, a worker it adds serves ``startup`` seconds after the
call and is billed from it, a scale-in takes workers in the engine's order and cuts no task,
tasks are served first come, first served. Its plan is run by the same engine as the
policies, so its cost and waits are measured, not claimed.

Each planner asks, at every tick t, for the smallest count N such that, if N stayed on from
now, every task it is responsible for starts within the wait target. Workers added now
serve from t + startup and the next tick's can serve only from t + tick + startup, so N must
carry everything until then. Start times under first-come-first-served are monotone in N
(another slot never delays a task), so N is found by bisection over exact replays of the
real slot state: the end instants of the tasks running now, the workers still starting,
the queue and the future arrivals.

- ``lazy``: responsible for every task whose deadline (arrival + wait target) falls before
  t + tick + startup — exactly the tasks no later decision can still help. It spends the
  whole wait budget and adds capacity at the last moment.
- ``greedy``: responsible for every task arriving before t + tick + startup, which is what
  the workers added now will see before the next tick's arrive. It adds capacity earlier
  and in smaller steps, so it builds no backlog that must later be drained at once.

Neither is a lower bound (no tractable exact optimum is known for this problem); the oracle
is whichever of their plans costs less while keeping every wait within the target. Where
even ``max_workers`` cannot keep every task within the target (a startup longer than the
wait target, say), a planner asks for the least count whose worst lateness is no worse
than ``max_workers``'s.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable
from dataclasses import replace
from itertools import chain

from .engine import Fleet, SimConfig, SimResult, Snapshot, Task, simulate


def slot_times(fleet: Fleet, count: int) -> list[float]:
    """When each slot of the fleet is next free, had the count been set to ``count`` now:
    a running slot at its task's end, an idle one now, a starting worker's at its
    readiness, a worker added now's at now + startup; removed and draining workers' none."""
    config, now = fleet.config, fleet.now
    active = fleet.active
    removed = {w.serial for w in fleet.removal_order()[:max(0, len(active) - count)]}
    slots: list[float] = []
    for worker in active:
        if worker.serial in removed:
            continue
        if worker.ready_at > now:
            slots += [worker.ready_at] * config.concurrency
        else:
            slots += [*worker.ends, *[now] * (config.concurrency - len(worker.ends))]
    slots += [now + config.startup_seconds] * (config.concurrency * max(0, count - len(active)))
    return slots


def lateness(fleet: Fleet, count: int, until: int, allowed: float = math.inf) -> float:
    """The worst lateness (start - arrival - wait target) among the queued tasks and the
    future ones before index ``until``, replaying first-come-first-served service with
    ``count`` workers held from now; stops early once it exceeds ``allowed``."""
    slots = slot_times(fleet, count)
    if not slots:
        return math.inf if fleet.waiting or until > fleet.next_task else -math.inf
    heapq.heapify(slots)
    tasks, wait, worst = fleet.tasks, fleet.config.wait_target, -math.inf
    for index in chain(fleet.waiting, range(fleet.next_task, until)):
        arrival, service = tasks[index]
        start = max(arrival, slots[0])
        heapq.heapreplace(slots, start + service)
        worst = max(worst, start - arrival - wait)
        if worst > allowed:
            break
    return worst


def smallest(ok: Callable[[int], bool], guess: int, high: int) -> int | None:
    """The least n in [0, high] with ``ok(n)`` for a monotone ``ok``, searched outward
    from ``guess`` (the last answer: usually within a step or two); None if not even
    ``high``."""
    guess = max(0, min(high, guess))
    step = 1
    if ok(guess):
        good, bad = guess, -1
        while good - step >= 0:
            probe = good - step
            if not ok(probe):
                bad = probe
                break
            good, step = probe, step * 2
    else:
        bad = guess
        while True:
            if bad == high:
                return None
            probe = min(high, bad + step)
            if ok(probe):
                good = probe
                break
            bad, step = probe, step * 2
    while good - bad > 1:
        middle = (good + bad) // 2
        if ok(middle):
            good = middle
        else:
            bad = middle
    return good


class Planner:
    """A clairvoyant policy: the least count that keeps its tasks within the target."""

    name = "planner"

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.last = 0

    def horizon(self, now: float) -> float:
        """Tasks arriving before this instant are this tick's responsibility."""
        raise NotImplementedError

    def desired(self, snapshot: Snapshot) -> int:
        fleet = snapshot.fleet
        assert fleet is not None, "a planner needs the whole simulated state"
        until = bisect.bisect_left(fleet.tasks, self.horizon(fleet.now), lo=fleet.next_task,
                                   key=lambda task: task[0])
        high = self.config.max_workers
        found = smallest(lambda n: lateness(fleet, n, until, 0.0) <= 1e-9, self.last, high)
        if found is None:  # nobody can make it: no later than the most workers would
            allowed = lateness(fleet, high, until) + 1e-9
            found = smallest(lambda n: lateness(fleet, n, until, allowed) <= allowed,
                             self.last, high)
            found = high if found is None else found
        self.last = found
        return found


class LazyPlanner(Planner):
    """Keeps on time exactly the tasks no later decision could still help."""

    name = "lazy"

    def horizon(self, now: float) -> float:
        config = self.config
        return now + config.tick_seconds + config.startup_seconds - config.wait_target


class GreedyPlanner(Planner):
    """Keeps on time every task arriving before the next tick's workers could serve."""

    name = "greedy"

    def horizon(self, now: float) -> float:
        return now + self.config.tick_seconds + self.config.startup_seconds


PLANNERS: dict[str, Callable[[SimConfig], Planner]] = {
    "lazy": LazyPlanner, "greedy": GreedyPlanner}


def plan_all(tasks: list[Task], config: SimConfig, horizon: int,
             keep_timeline: bool = False, measure_from: int = 0) -> dict[str, SimResult]:
    """Every planner's plan, run by the engine."""
    return {name: simulate(tasks, build(config), config, horizon, keep_timeline, measure_from)
            for name, build in PLANNERS.items()}


def oracle_of(plans: dict[str, SimResult], wait_target: float) -> SimResult:
    """The cheapest plan that keeps every wait within the target (or, if none can, the
    cheapest of those with the smallest worst wait), named after its planner."""
    on_time = [r for r in plans.values() if r.unserved == 0 and r.max_wait <= wait_target + 1e-9]
    if on_time:
        best = min(on_time, key=lambda r: r.worker_seconds)
    else:
        best = min(plans.values(), key=lambda r: (r.unserved, r.max_wait, r.worker_seconds))
    return replace(best, policy=f"oracle ({best.policy})")
