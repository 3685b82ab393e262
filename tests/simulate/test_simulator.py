"""The simulator's accounting on tiny traces computed by hand, its determinism, each
baseline's documented rules, and the oracle's place."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from celery_ondemand.simulate import compare, service_times
from celery_ondemand.simulate.engine import (
    SimConfig,
    Snapshot,
    arrivals_from,
    busy_bound_minutes,
    simulate,
)
from celery_ondemand.simulate.policies import KedaPolicy, OraclePolicy, TargetTrackingPolicy


@dataclass
class Fixed:
    """A policy that always asks for the same count: the accounting is then by hand."""

    count: int
    name: str = "fixed"

    def desired(self, snapshot: Snapshot) -> int:
        return self.count


class UpUntil:
    """One worker until ``until``, then none."""

    name = "up-until"

    def __init__(self, until: int) -> None:
        self.until = until

    def desired(self, snapshot: Snapshot) -> int:
        return 1 if snapshot.now < self.until else 0


def test_waits_billing_and_startup_by_hand() -> None:
    config = SimConfig(concurrency=1, startup_seconds=10, tick_seconds=5, wait_target=60)
    # Two 3 s tasks at t=0. The decision at t=0 (after that second's service) asks for a
    # worker, which serves from t=10: task one waits 10 s and ends at 13, task two waits 13.
    result = simulate([(0, 3.0), (0, 3.0)], UpUntil(20), config, horizon=30)
    assert sorted(result.waits) == [10, 13]
    assert result.worker_seconds == 20, "billed from the call at 0 to the stop at 20"
    assert result.actions == 2


def test_a_worker_asked_away_finishes_its_task_first() -> None:
    config = SimConfig(concurrency=1, startup_seconds=0, tick_seconds=1, wait_target=60)
    result = simulate([(0, 5.0)], UpUntil(1), config, horizon=1)
    assert result.waits == [1], "asked for at the end of second 0, serving from second 1"
    assert result.worker_seconds == 6, "asked away at 1 while busy: billed until 6"


def test_busy_bound_is_total_slot_time() -> None:
    assert busy_bound_minutes([(0, 30.0), (5, 90.0)], concurrency=2) == pytest.approx(1.0)


def test_a_seed_makes_runs_repeatable() -> None:
    sampler, _ = service_times("exp:5")
    first = arrivals_from([3, 0, 2, 5], 1.0, sampler, seed=4)
    assert first == arrivals_from([3, 0, 2, 5], 1.0, sampler, seed=4)
    assert first != arrivals_from([3, 0, 2, 5], 1.0, sampler, seed=5)
    assert [a for a, _ in first] == [0, 0, 0, 2, 2, 3, 3, 3, 3, 3]


def test_fractional_scale_carries_over() -> None:
    sampler, _ = service_times("fixed:1")
    assert len(arrivals_from([1] * 10, 0.25, sampler)) == 2


@pytest.mark.parametrize("spec", ["fixed", "exp:1:2", "gamma:3"])
def test_bad_service_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="expected fixed:S"):
        service_times(spec)


def snap(now: int, ready: int, current: int, running: int = 0) -> Snapshot:
    from celery_ondemand.simulate.engine import SimWorker

    workers = [SimWorker(f"w{i}", 0, 0, running=[1.0] * running) for i in range(current)]
    return Snapshot(now, ready, None, workers, current)


def test_keda_rules() -> None:
    keda = KedaPolicy(SimConfig(concurrency=2))
    assert keda.desired(snap(0, 5, 0)) == 1, "activation: 0 → 1 on any message"
    assert keda.desired(snap(15, 50, 1)) == 1, "polls every 30 s: keeps its last answer"
    assert keda.desired(snap(30, 50, 1)) == 5, "scale-up limit: max(4 pods, 100 %)"
    assert keda.desired(snap(60, 50, 5)) == 10
    assert keda.desired(snap(90, 2, 10)) == 10, "down only to the 300 s window's highest"
    assert keda.desired(snap(420, 2, 10)) == 1, "the window has passed"


def test_target_tracking_rules() -> None:
    tt = TargetTrackingPolicy(SimConfig(concurrency=1, wait_target=60), mean_service=10)
    assert tt.target == 6, "backlog per instance = wait target / mean service time"
    assert tt.desired(snap(0, 3, 0)) == 1
    for minute in (1, 2):
        assert tt.desired(snap(60 * minute, 30, 1)) == 1, "needs 3 minutes above target"
    assert tt.desired(snap(180, 30, 1)) == 5, "ceil(1 * 30 / 6)"


def test_the_oracle_waits_as_long_as_it_may_and_no_longer() -> None:
    config = SimConfig(concurrency=2, startup_seconds=10, tick_seconds=5, wait_target=5)
    oracle = OraclePolicy([(12, 3.0), (12, 3.0), (13, 1.0), (40, 2.0)], config)
    # tick 0 covers [10, 15): no deadline (arrival + 5) falls in it, so nothing is needed
    assert oracle.desired(snap(0, 0, 0)) == 0
    # tick 1 covers [15, 20): deadlines 17, 17, 18. One slot would start the second task at
    # 18 (> 17); two slots start both at 15 and the third at 18: one 2-slot worker.
    assert oracle.desired(snap(5, 0, 0)) == 1
    assert oracle.plan[1] == 2


def test_no_policy_meeting_the_target_beats_the_oracle() -> None:
    rng = random.Random(3)
    counts = [rng.choice([0, 0, 1, 2, 5]) for _ in range(3600)]
    config = SimConfig(concurrency=2, startup_seconds=30, tick_seconds=15, wait_target=60)
    rows, bound = compare(counts, config, "exp:8", 1.0)
    by = {row.result.policy: row for row in rows}
    oracle = by["oracle"].result.worker_minutes
    assert oracle >= bound
    for row in rows:
        if row.result.unserved == 0 and row.result.percentile(0.95) <= config.wait_target:
            assert row.result.worker_minutes >= oracle * 0.999, row.as_dict()
    assert by["capacity"].result.percentile(0.95) <= config.wait_target
