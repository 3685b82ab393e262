"""The engine's accounting in continuous time, on tiny traces computed by hand."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from celery_ondemand.simulate import service_times
from celery_ondemand.simulate.engine import (
    Fleet,
    SimConfig,
    Snapshot,
    arrivals_from,
    busy_bound_minutes,
    simulate,
)


@dataclass
class Fixed:
    """A policy that always asks for the same count: the accounting is then by hand."""

    count: int
    name: str = "fixed"

    def desired(self, snapshot: Snapshot) -> int:
        return self.count


class UpUntil:
    """``count`` workers until ``until``, then none."""

    name = "up-until"

    def __init__(self, until: int, count: int = 1) -> None:
        self.until, self.count = until, count

    def desired(self, snapshot: Snapshot) -> int:
        return self.count if snapshot.now < self.until else 0


def test_sub_second_and_fractional_service_by_hand() -> None:
    config = SimConfig(concurrency=1, startup_seconds=0, tick_seconds=1, wait_target=60)
    tasks = [(0.0, 0.3), (0.0, 0.3), (0.5, 1.25), (1.0, 0.1)]
    result = simulate(tasks, Fixed(1), config, horizon=3)
    # One slot from t=0: 0→0.3, 0.3→0.6, then the 0.5 arrival 0.6→1.85, then the 1.0
    # arrival 1.85→1.95. Whole-second service would have ended the second task at 2.
    assert result.waits == pytest.approx([0.0, 0.3, 0.1, 0.85])
    assert result.worker_seconds == pytest.approx(3.0), "billed until the horizon"
    assert busy_bound_minutes(tasks, 1) * 60 == pytest.approx(1.95)


def test_two_slots_share_the_queue_first_come_first_served() -> None:
    config = SimConfig(concurrency=2, startup_seconds=0, tick_seconds=1, wait_target=60)
    tasks = [(0.0, 0.7), (0.0, 0.2), (0.1, 0.4), (0.15, 0.05)]
    result = simulate(tasks, Fixed(1), config, horizon=1)
    # slots: A 0→0.7, B 0→0.2; the 0.1 arrival waits for B (0.2→0.6); the 0.15 arrival
    # waits for the next slot free, B again at 0.6 (A frees at 0.7).
    assert result.waits == pytest.approx([0.0, 0.0, 0.1, 0.45])
    assert busy_bound_minutes(tasks, 2) * 60 == pytest.approx(1.35 / 2)


def test_waits_billing_and_startup_by_hand() -> None:
    config = SimConfig(concurrency=1, startup_seconds=10, tick_seconds=5, wait_target=60)
    # Two 3 s tasks at t=0. The decision at t=0 (after that instant's arrivals) asks for a
    # worker, which serves from t=10: task one waits 10 s and ends at 13, task two waits 13.
    result = simulate([(0.0, 3.0), (0.0, 3.0)], UpUntil(20), config, horizon=30)
    assert sorted(result.waits) == [10, 13]
    assert result.worker_seconds == 20, "billed from the call at 0 to the stop at 20"
    assert result.actions == 2
    assert (result.started, result.cancelled, result.startup_seconds) == (1, 0, 10)


def test_a_worker_asked_away_finishes_its_task_first() -> None:
    config = SimConfig(concurrency=1, startup_seconds=0, tick_seconds=1, wait_target=60)
    result = simulate([(0.0, 5.5)], UpUntil(1), config, horizon=1)
    assert result.waits == [0.0], "asked for at 0 with no startup: serves the task at once"
    assert result.worker_seconds == pytest.approx(5.5), "asked away at 1 while busy: " \
        "drains, and stops at the instant its task ends"


def test_scale_in_takes_starting_then_idle_then_the_busy_one_finishing_first() -> None:
    config = SimConfig(concurrency=1, startup_seconds=5, tick_seconds=5, wait_target=60,
                       max_workers=10)
    fleet = Fleet([(0.0, 9.0), (0.0, 4.0)], config)
    fleet.advance(0)
    fleet.scale(3)
    fleet.advance(5)  # ready: w1 takes the 9 s task (ends 14), w2 the 4 s one (ends 9)
    fleet.scale(5)  # w4, w5 starting until 10
    assert [w.name for w in fleet.removal_order()] == ["w5", "w4", "w3", "w2", "w1"]
    fleet.scale(1)
    assert [w.name for w in fleet.active] == ["w1"]
    assert fleet.workers[2].draining, "w2 (busy until 9) drains rather than stopping"
    fleet.advance(12)
    assert set(fleet.workers) == {1}
    # w3 billed 0→5, w4 and w5 5→5 (cancelled while starting), w2 0→9 (its task's end)
    assert fleet.worker_seconds == pytest.approx(14.0)
    assert (fleet.started, fleet.cancelled) == (5, 2)
    assert fleet.startup_seconds == pytest.approx(10.0), \
        "w2 and w3 starting 0→5 (w1's counts when it stops)"


def test_a_minimum_charge_bills_a_start_taken_back_a_whole_minimum() -> None:
    config = SimConfig(concurrency=1, startup_seconds=5, tick_seconds=5, wait_target=60,
                       max_workers=10, minimum_billed_seconds=8.0)
    fleet = Fleet([(0.0, 9.0)], config)
    fleet.advance(0)
    fleet.scale(3)  # w1, w2, w3 starting until 5
    fleet.advance(2)
    fleet.scale(1)  # w3 and w2 cancelled while starting, after 2 s: charged 8 s each
    fleet.advance(20)  # w1 ready at 5 takes the 9 s task
    fleet.close(20.0)
    assert fleet.worker_seconds == pytest.approx(20.0 + 8.0 + 8.0)
    assert (fleet.started, fleet.cancelled) == (3, 2)
    assert fleet.startup_seconds == pytest.approx(5.0 + 2.0 + 2.0), \
        "startup counts the seconds spent starting, not the minimum's top-up"
    assert fleet.minimum_seconds == pytest.approx(6.0 + 6.0), "each topped up 2 → 8 s"


def test_the_minimum_charge_is_not_billed_for_a_worker_started_in_the_warm_up() -> None:
    config = SimConfig(concurrency=1, startup_seconds=0, tick_seconds=5, wait_target=60,
                       minimum_billed_seconds=60.0)
    result = simulate([(0.0, 1.0)], UpUntil(15), config, horizon=20, measure_from=10)
    assert result.worker_seconds == pytest.approx(5.0), \
        "started at 0, in the warm-up: its minimum is charged to its start, not billed"


def test_the_warm_up_is_neither_billed_nor_counted() -> None:
    config = SimConfig(concurrency=1, startup_seconds=0, tick_seconds=5, wait_target=60)
    tasks = [(0.0, 1.0), (12.0, 2.0)]
    result = simulate(tasks, Fixed(1), config, horizon=20, measure_from=10)
    assert result.waits == [0.0], "only the task arriving after the warm-up"
    assert result.worker_seconds == pytest.approx(10.0), "billed from 10 to 20"
    assert result.actions == 0, "the one action, at 0, was in the warm-up"


def test_a_policy_that_never_serves_stops_and_counts_what_is_left() -> None:
    config = SimConfig(concurrency=1, startup_seconds=0, tick_seconds=5, wait_target=60)
    result = simulate([(0.0, 1.0), (3.0, 1.0)], Fixed(0), config, horizon=10)
    assert result.unserved == 2
    assert not result.meets(60)


def test_arrivals_fall_within_their_second_and_a_seed_repeats_them() -> None:
    sampler, _ = service_times("exp:5")
    first = arrivals_from([3, 0, 2, 5], 1.0, sampler, seed=4)
    assert first == arrivals_from([3, 0, 2, 5], 1.0, sampler, seed=4)
    assert first != arrivals_from([3, 0, 2, 5], 1.0, sampler, seed=5)
    assert [int(a) for a, _ in first] == [0, 0, 0, 2, 2, 3, 3, 3, 3, 3]
    assert [a for a, _ in first] == sorted(a for a, _ in first)


def test_fractional_scale_carries_over() -> None:
    sampler, _ = service_times("fixed:1")
    assert len(arrivals_from([1] * 10, 0.25, sampler)) == 2


@pytest.mark.parametrize("spec", ["fixed", "exp:1:2", "gamma:3", "exp:-2", "fixed:x"])
def test_bad_service_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="expected fixed:S"):
        service_times(spec)
