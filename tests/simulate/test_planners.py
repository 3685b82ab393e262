"""The clairvoyant planners: exact replays, minimal counts, feasible plans, and the oracle
as the cheapest of them."""

from __future__ import annotations

import random

import pytest

from celery_ondemand.simulate import SimConfig, compare, service_times
from celery_ondemand.simulate.engine import Fleet, Snapshot, arrivals_from, simulate
from celery_ondemand.simulate.planners import (
    PLANNERS,
    GreedyPlanner,
    LazyPlanner,
    lateness,
    oracle_of,
    plan_all,
    smallest,
)


def bursty_counts(seconds: int, seed: int) -> list[int]:
    """Quiet spells, steady load and bursts: what makes planning hard."""
    rng = random.Random(seed)
    counts = []
    for second in range(seconds):
        base = 2 if (second // 600) % 2 else 0
        counts.append(base + (rng.choice([0, 0, 0, 30]) if rng.random() < 0.01 else 0)
                      + rng.choice([0, 1]))
    return counts


@pytest.mark.parametrize("guess", [0, 1, 3, 7, 9, 12])
def test_smallest_finds_the_least_passing_count_from_any_guess(guess: int) -> None:
    calls: list[int] = []

    def ok(n: int) -> bool:
        calls.append(n)
        return n >= 7

    assert smallest(ok, guess, 12) == 7
    assert smallest(lambda n: n >= 13, guess, 12) is None
    assert smallest(lambda n: True, guess, 12) == 0


def test_the_replay_is_first_come_first_served_over_the_real_slot_state() -> None:
    config = SimConfig(concurrency=2, startup_seconds=10, tick_seconds=5, wait_target=5)
    fleet = Fleet([(0.0, 8.0), (0.0, 8.0), (1.0, 1.0), (2.0, 1.0), (20.0, 1.0)], config)
    fleet.advance(0)
    fleet.scale(1)  # one worker, serving from 10
    fleet.advance(10)  # the two 8 s tasks start at 10 (waited 10 s: late by 5)
    # Held at 1 worker: the 1.0 and 2.0 arrivals start at 18 (late by 12 and 11).
    assert lateness(fleet, 1, until=4) == pytest.approx(12.0)
    # Two workers: the second serves from 10 + 10 = 20: starts at 18 either way.
    assert lateness(fleet, 2, until=4) == pytest.approx(12.0)
    # The 20.0 arrival (index 4) finds a slot free at 19: on time, the worst is unchanged.
    assert lateness(fleet, 1, until=5) == pytest.approx(12.0)
    assert lateness(fleet, 1, until=4, allowed=0.0) > 0, "stops at the first late task"
    assert lateness(fleet, 0, until=4) == float("inf"), "no slot at all"


def test_the_lazy_plan_waits_as_long_as_it_may_and_no_longer() -> None:
    config = SimConfig(concurrency=2, startup_seconds=10, tick_seconds=5, wait_target=5)
    tasks = [(12.0, 3.0), (12.0, 3.0), (13.0, 1.0), (40.0, 2.0)]
    result = simulate(tasks, LazyPlanner(config), config, horizon=60)
    # Deadlines 17, 17, 18 and 45. The tick at 0 answers for deadlines before 15: none.
    # The tick at 5 answers for those before 20: one 2-slot worker, serving from 15, starts
    # both 12.0 tasks at 15 and the 13.0 one at 18 (= its deadline).
    assert result.waits[:3] == pytest.approx([3.0, 3.0, 5.0])
    assert result.max_wait <= config.wait_target


def test_the_greedy_plan_asks_for_what_the_next_arrivals_need_early() -> None:
    config = SimConfig(concurrency=2, startup_seconds=10, tick_seconds=5, wait_target=5)
    tasks = [(12.0, 3.0), (12.0, 3.0), (13.0, 1.0), (40.0, 2.0)]
    result = simulate(tasks, GreedyPlanner(config), config, horizon=60)
    # The tick at 0 answers for arrivals before 15: one worker asked at 0 serves from 10.
    assert result.waits[:3] == pytest.approx([0.0, 0.0, 2.0])
    assert result.max_wait <= config.wait_target


@pytest.mark.parametrize("name", sorted(PLANNERS))
@pytest.mark.parametrize("service", ["fixed:0.4", "exp:8"])
def test_every_planner_keeps_every_wait_within_the_target_with_the_least_count(
        name: str, service: str) -> None:
    config = SimConfig(concurrency=3, startup_seconds=30, tick_seconds=15, wait_target=40)
    sampler, _ = service_times(service)
    tasks = arrivals_from(bursty_counts(2400, seed=5), 1.0, sampler, seed=5)
    planner = PLANNERS[name](config)
    answers = []

    class Checked:
        """The planner, with each answer checked one worker short against a replay."""

        name = planner.name

        def desired(self, snapshot: Snapshot) -> int:
            count = planner.desired(snapshot)
            fleet = snapshot.fleet
            if count > 0 and fleet is not None:
                until = sum(1 for a, _ in fleet.tasks if a < planner.horizon(fleet.now))
                answers.append(lateness(fleet, count - 1, until) > 1e-9)
            return count

    result = simulate(tasks, Checked(), config, horizon=2400)
    assert result.unserved == 0
    assert result.max_wait <= config.wait_target + 1e-9
    assert answers and all(answers), "one worker fewer would have made a task late"


def test_when_no_count_is_on_time_the_planner_is_no_later_than_the_most_workers() -> None:
    # Startup 30 s > wait target 10 s: the first tasks cannot be on time.
    config = SimConfig(concurrency=1, startup_seconds=30, tick_seconds=5, wait_target=10,
                       max_workers=4)
    tasks = [(0.0, 1.0)] * 6 + [(60.0, 1.0)]
    result = simulate(tasks, GreedyPlanner(config), config, horizon=90)
    # Four workers from 30 would start four at 30 and two at 31: worst wait 31 s. Three
    # workers keep that worst (30, 30, 30, 31, 31, 31); two would not (32).
    assert result.waits[:6] == pytest.approx([30, 30, 30, 31, 31, 31])
    assert result.waits[6] <= 10


def test_the_oracle_is_the_cheapest_plan_on_time() -> None:
    config = SimConfig(concurrency=4, startup_seconds=45, tick_seconds=15, wait_target=60)
    counts = bursty_counts(3600, seed=8)
    comparison = compare(counts, config, "exp:6", 1.0, policies=["capacity", "oracle"])
    plans = comparison.plans
    assert set(plans) == {"lazy", "greedy"}
    for plan in plans.values():
        assert plan.unserved == 0 and plan.max_wait <= config.wait_target + 1e-9
    cheapest = min(plans.values(), key=lambda r: r.worker_seconds)
    assert comparison.oracle.worker_seconds == cheapest.worker_seconds
    assert comparison.oracle.policy == f"oracle ({cheapest.policy})"
    assert comparison.oracle.worker_minutes >= comparison.bound_minutes


def test_a_late_plan_is_no_oracle_while_an_on_time_one_exists() -> None:
    config = SimConfig(concurrency=1, startup_seconds=5, tick_seconds=5, wait_target=10)
    tasks = [(float(i), 0.5) for i in range(30)]
    plans = plan_all(tasks, config, 40)
    late = simulate(tasks, type("Late", (), {"name": "late", "desired":
                                             lambda self, s: 0 if s.now < 20 else 1})(),
                    config, 40)
    assert late.max_wait > config.wait_target
    late.worker_seconds = 0.0  # cheapest of all, but late
    oracle = oracle_of({**plans, "late": late}, config.wait_target)
    assert oracle.policy != "oracle (late)"
