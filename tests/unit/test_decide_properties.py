"""Properties of the decision over random observations and histories (hypothesis)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hypothesis import assume, given
from hypothesis import settings as run_settings
from hypothesis import strategies as st

from celery_ondemand import Observation, TargetMemory
from celery_ondemand.config import Settings
from celery_ondemand.decide import Agent, decide
from celery_ondemand.decide.engine import target_view
from tests.support.observations import observation, settings, worker
from tests.support.toy_queue import run_toy_queue

QUEUES = ["q1", "q2"]
NOW = 50_000.0


@dataclass
class Scenario:
    """One tick's raw inputs, drawn consistent with each other, and the gaps put in them.

    The gaps are what the tick could not read — the broker, a queue, a queue the broker
    cannot find while workers run, a worker that was there last tick, a worker that did not
    answer control — recorded as drawn, so a
    property about blind reads is judged on them and not on the code's own
    ``view.complete``.
    """

    config: Settings
    observed: Observation | None
    memory: TargetMemory
    current: int
    broker_unread: bool
    queue_unread: str | None
    queues_missing: list[str]
    unheard: list[str]
    problems: list[str]
    busy: int
    work: int

    @property
    def blind(self) -> bool:
        # None of the target's queues found while workers run: looked for in the wrong place.
        all_missing = sorted(self.queues_missing) == sorted(QUEUES)
        return self.broker_unread or self.queue_unread is not None or bool(self.unheard) \
            or bool(self.problems) or (all_missing and self.current > 0)

    def run(self) -> tuple[Any, Any]:
        decisions, _ = decide(self.observed, self.config, {"t": self.memory}, NOW,
                              current={"t": self.current})
        view = target_view(self.config.targets[0], self.observed, self.memory, NOW,
                           {"t": self.current})
        return decisions[0], view


@st.composite
def scenarios(draw: st.DrawFn, policy: str | None = None, gaps: bool = True,
              running: bool = True) -> Scenario:
    min_workers = draw(st.integers(0, 4))
    config = settings(
        queues=QUEUES,
        policy=policy or draw(st.sampled_from(["capacity", "cwod"])),
        min_workers=min_workers,
        max_workers=draw(st.integers(max(min_workers, 1), 30)),
        worker_concurrency=draw(st.none() | st.integers(1, 8)),
        tolerance=draw(st.floats(0, 0.5)),
        stabilization_seconds=draw(st.floats(0, 600)),
        scale_down_delay_seconds=draw(st.floats(0, 600)),
        scale_up_max_step=draw(st.integers(1, 10)),
    )
    # A queue the broker says does not exist holds no task, ready or running.
    missing = draw(st.sampled_from([[], *([q] for q in QUEUES), QUEUES])) if gaps else []
    # Workers: each runs at most its slots; a running task belongs to one of its queues,
    # and those tasks are the queues' hidden work (nothing is prefetched here).
    workers, hidden = [], dict.fromkeys(QUEUES, 0)
    for i in range(draw(st.integers(0, 8))):
        slots = draw(st.integers(1, 8))
        queues = draw(st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True))
        existing = [q for q in queues if q not in missing]
        active = draw(st.integers(0, slots)) if running and existing else 0
        for _ in range(active):
            hidden[draw(st.sampled_from(existing))] += 1
        workers.append(worker(f"w{i}", queues, active=active, concurrency=slots,
                              processed=draw(st.integers(0, 500))))
    ready = {q: 0 if q in missing else draw(st.integers(0, 200)) for q in QUEUES}
    ages = {q: draw(st.floats(0, 600)) for q in QUEUES if ready[q] > 0}  # only with work

    broker_unread = gaps and draw(st.booleans()) and draw(st.booleans())
    queue_unread = draw(st.none() | st.sampled_from(QUEUES)) if gaps else None
    problems = draw(st.lists(st.sampled_from(["w9 did not answer control"]), max_size=1)) \
        if gaps else []
    unheard = draw(st.lists(st.sampled_from(["gone"]), max_size=1)) if gaps else []
    observed: Observation | None = None
    if not broker_unread:
        observed = observation({q: (ready[q], hidden[q]) for q in QUEUES}, workers,
                               problems=list(problems), ages=ages)
        for name in missing:
            observed.queues[name].missing = True
        if queue_unread is not None:
            del observed.queues[queue_unread]
    hostnames = [w.hostname for w in workers]
    memory = TargetMemory(
        recommendations=[[NOW - draw(st.floats(0, 900)), draw(st.integers(0, 40))]
                         for _ in range(draw(st.integers(0, 4)))],
        idle_since=draw(st.none() | st.floats(NOW - 1000, NOW)),
        workers_seen=sorted(draw(st.lists(st.sampled_from(hostnames), unique=True))
                            + unheard) if hostnames else list(unheard),
        service_rate=draw(st.none() | st.floats(0.01, 10)),
        arrival_rate=draw(st.none() | st.floats(0, 50)),
        failed_reads=draw(st.integers(0, 5)),
    )
    # The scaler's count: the live workers plus those it started that are not up yet (a
    # broker not read shows no workers: any count may stand).
    current = draw(st.integers(0, 12)) if broker_unread \
        else len(workers) + draw(st.integers(0, 3))
    read = [q for q in QUEUES if q != queue_unread] if not broker_unread else []
    busy = 0 if broker_unread else sum(1 for w in workers if w.active)
    work = sum(ready[q] + hidden[q] for q in read)
    return Scenario(config, observed, memory, current, broker_unread, queue_unread,
                    missing, unheard, problems, busy, work)


@given(scenarios())
def test_bounds_always_hold(s: Scenario) -> None:
    """Within [min, max]; blind, a ceiling below the running count waits for a read."""
    decision, view = s.run()
    target = s.config.targets[0]
    ceiling = target.max_workers if view.complete else max(target.max_workers, s.current)
    assert target.min_workers <= decision.desired <= ceiling


@given(scenarios())
def test_never_below_the_busy_workers(s: Scenario) -> None:
    decision, _ = s.run()
    assert decision.desired >= min(s.busy, s.config.targets[0].max_workers)


@given(scenarios())
def test_no_scale_down_on_a_failed_or_partial_read(s: Scenario) -> None:
    decision, view = s.run()
    assert view.complete is not s.blind, "every gap drawn is a gap in the read, and only they"
    if s.blind:
        assert decision.desired >= s.current, "not even down to a lowered max_workers"


@given(scenarios(policy="capacity"))
def test_capacity_never_drops_to_zero_with_work_waiting(s: Scenario) -> None:
    decision, _ = s.run()
    if s.work > 0 or s.busy > 0:
        assert decision.desired >= 1


@given(scenarios(policy="capacity"))
def test_from_zero_the_first_task_scales_up_in_one_tick(s: Scenario) -> None:
    s.current = 0
    decision, _ = s.run()
    if s.work > 0:
        assert decision.desired >= 1 and decision.action == "up"


@given(scenarios(policy="cwod", gaps=False, running=False))
def test_cwod_policy_follows_cwods_rules(s: Scenario) -> None:
    """A complete read of idle workers (cwod's rules know nothing of busy workers, and no
    rail interferes), every worker up: one more or one fewer, as cwod's flags say."""
    assert s.observed is not None
    s.memory.workers_seen = list(s.observed.workers)
    s.current = len(s.observed.workers)
    decision, view = s.run()
    agent, target = Agent(s.config.targets[0]), s.config.targets[0]
    up = any(agent.flag_up(q) for q in view.queues)
    served = [q for q in view.queues if q.has_worker]
    down = not up and bool(served) and all(agent.flag_down(q) for q in served)
    expected = view.live + 1 if up else view.live - 1 if down else view.live
    assert decision.desired == min(max(expected, target.min_workers), target.max_workers)


@run_settings(max_examples=30, deadline=None)
@given(arrivals=st.floats(0.05, 10), service_seconds=st.integers(1, 60),
       slots=st.integers(1, 8))
def test_constant_load_settles_around_it_within_the_wait_target(
        arrivals: float, service_seconds: int, slots: int) -> None:
    """Under a constant load the count settles around the load and every task starts
    within the wait target.

    A load between two counts (1.5 workers' worth) is served as a clairvoyant plan serves
    it: the lower count while a queue builds within the wait goal, more while it drains.
    So the count may alternate, but never wanders: between the whole count below the load
    and one above the count above it.
    """
    assume(arrivals * service_seconds / slots <= 150)  # fits max_workers with headroom
    config = settings(worker_concurrency=slots, max_workers=200, scale_up_max_step=10,
                      target_wait_seconds=60)
    waits: list[tuple[int, int]] = []
    history = run_toy_queue(config, arrivals, service_seconds, ticks=160, waits=waits)
    settled = history[-60:]  # the last 15 minutes
    load = arrivals * service_seconds / slots
    assert max(1, math.floor(load)) <= min(settled), (load, history)
    assert max(settled) <= math.ceil(load) + 1, (load, history)
    late = [wait for arrived, wait in waits if arrived >= 100 * 15 and wait > 60]
    assert not late, (load, max(late), history)
