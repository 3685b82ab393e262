"""Properties of the decision over random observations and histories (hypothesis)."""

from __future__ import annotations

import math
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


@st.composite
def scenarios(draw: st.DrawFn, policy: str | None = None) -> dict[str, Any]:
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
    hostnames = [f"w{i}" for i in range(draw(st.integers(0, 8)))]
    workers = [worker(name, draw(st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2,
                                          unique=True)),
                      active=draw(st.integers(0, 4)), processed=draw(st.integers(0, 500)),
                      concurrency=draw(st.integers(1, 8)))
               for name in hostnames]
    queues = {name: (draw(st.integers(0, 200)), draw(st.integers(0, 40))) for name in QUEUES}
    problems = draw(st.lists(st.sampled_from(["w9 did not answer control"]), max_size=1))
    observed: Observation | None = observation(
        queues, workers, problems=problems,
        ages={q: draw(st.floats(0, 600)) for q in QUEUES})
    if draw(st.booleans()) and draw(st.booleans()):
        observed = None
    ghosts = draw(st.lists(st.sampled_from(["ghost"]), max_size=1))
    memory = TargetMemory(
        recommendations=[[NOW - draw(st.floats(0, 900)), draw(st.integers(0, 40))]
                         for _ in range(draw(st.integers(0, 4)))],
        idle_since=draw(st.none() | st.floats(NOW - 1000, NOW)),
        workers_seen=sorted(draw(st.lists(st.sampled_from(hostnames), unique=True))
                            + ghosts) if hostnames else ghosts,
        service_rate=draw(st.none() | st.floats(0.01, 10)),
        arrival_rate=draw(st.none() | st.floats(0, 50)),
        failed_reads=draw(st.integers(0, 5)),
    )
    return {"config": config, "observed": observed, "memory": memory,
            "current": draw(st.integers(0, 40))}


def run(s: dict[str, Any]) -> tuple[Any, Any]:
    config: Settings = s["config"]
    decisions, _ = decide(s["observed"], config, {"t": s["memory"]}, NOW,
                          current={"t": s["current"]})
    view = target_view(config.targets[0], s["observed"], s["memory"], NOW,
                       {"t": s["current"]})
    return decisions[0], view


@given(scenarios())
def test_bounds_always_hold(s: dict[str, Any]) -> None:
    decision, _ = run(s)
    target = s["config"].targets[0]
    assert target.min_workers <= decision.desired <= target.max_workers


@given(scenarios())
def test_never_below_the_busy_workers(s: dict[str, Any]) -> None:
    decision, view = run(s)
    assert decision.desired >= min(view.busy, s["config"].targets[0].max_workers)


@given(scenarios())
def test_no_scale_down_on_a_failed_or_partial_read(s: dict[str, Any]) -> None:
    decision, view = run(s)
    if not view.complete:
        assert decision.desired >= min(s["current"], s["config"].targets[0].max_workers)


@given(scenarios(policy="capacity"))
def test_capacity_never_drops_to_zero_with_work_waiting(s: dict[str, Any]) -> None:
    decision, view = run(s)
    if view.work > 0 or view.busy > 0:
        assert decision.desired >= 1


@given(scenarios(policy="capacity"))
def test_from_zero_the_first_task_scales_up_in_one_tick(s: dict[str, Any]) -> None:
    s["current"] = 0
    decision, view = run(s)
    if view.work > 0:
        assert decision.desired >= 1 and decision.action == "up"


@given(scenarios(policy="cwod"))
def test_cwod_policy_follows_cwods_rules(s: dict[str, Any]) -> None:
    if s["observed"] is None:
        return
    s["observed"].problems.clear()
    for w in s["observed"].workers.values():
        w.active = 0  # cwod's rules know nothing of busy workers; no rail interferes here
    s["memory"].workers_seen = list(s["observed"].workers)
    decision, view = run(s)
    s["current"] = view.live
    decision, view = run(s)
    agent, queues = Agent(s["config"].targets[0]), view.queues
    target = s["config"].targets[0]
    up = any(agent.flag_up(q) for q in queues)
    served = [q for q in queues if q.has_worker]
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
