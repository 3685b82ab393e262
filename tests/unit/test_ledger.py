"""The soak test's judge of second runs (tests.support.ledger): which repeats a broker
restart or a SIGKILL explains, and which it does not. Pure: records written by hand, on
the timeline of a real failure (a task delivered before a RabbitMQ restart, run after the
worker reconnected, its ack refused: "Couldn't ack … connection already closed")."""

from __future__ import annotations

from tests.support.ledger import Ledger

DOWN, UP = 100.0, 112.0


def runs(*spans: tuple[str, float, float]) -> Ledger:
    records = []
    for worker, start, end in spans:
        records += [{"event": "started", "task": "t1", "worker": worker, "at": start},
                    {"event": "finished", "task": "t1", "worker": worker, "at": end}]
    return Ledger([{"event": "started", "task": "t0", "worker": "old", "at": 90.0},
                   *records])


def test_a_run_across_the_outage_is_explained() -> None:
    assert runs(("old", 98.0, 101.0), ("new", 130.0, 132.0)).repeats_unexplained(
        set(), (DOWN, UP)) == []


def test_a_prefetched_task_run_just_after_the_reconnect_is_explained() -> None:
    assert runs(("old", 114.0, 116.0), ("new", 300.0, 302.0)).repeats_unexplained(
        set(), (DOWN, UP)) == []


def test_a_run_long_after_the_restart_is_not() -> None:
    found = runs(("old", 150.0, 152.0), ("new", 300.0, 302.0)).repeats_unexplained(
        set(), (DOWN, UP))
    assert found == ["t1 completed on old (150.000-152.000) and again later"]


def test_a_worker_started_after_the_outage_held_nothing_from_before_it() -> None:
    found = runs(("young", 114.0, 116.0), ("new", 300.0, 302.0)).repeats_unexplained(
        set(), (DOWN, UP))
    assert len(found) == 1


def test_a_killed_workers_run_is_explained() -> None:
    assert runs(("young", 150.0, 152.0), ("new", 300.0, 302.0)).repeats_unexplained(
        {"young"}, (DOWN, UP)) == []
