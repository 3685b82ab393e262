"""The unacknowledged hash is read within bounds: whole messages, one hash for every queue,
on the production Redis. A private redis-server (the hash is shared by every queue of a
database: nothing here may touch the shared one's)."""

from __future__ import annotations

import pytest

from celery_ondemand import Observer
from celery_ondemand.decide import decide
from celery_ondemand.observe.brokers import redis as redis_probe
from tests.support.brokers import private_redis
from tests.support.observations import settings
from tests.support.unacked import park

pytestmark = pytest.mark.broker


def test_beyond_the_bound_the_rest_is_a_gap_and_what_was_read_brings_a_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_probe, "UNACKED_READ_LIMIT", 50)
    scans: list[int] = []
    real_scan = redis_probe._scan
    monkeypatch.setattr(redis_probe, "_scan", lambda *a: scans.append(1) or real_scan(*a))
    with private_redis() as port:
        url = f"redis://127.0.0.1:{port}/0"
        park(url, "stranded", 120)
        with Observer(url) as observer:
            status = observer.observe(["stranded"])
    queue = status.queues["stranded"]
    assert 1 <= queue.hidden <= 50, "only the bounded read is attributed"
    assert any("70 unacknowledged messages beyond the bounded read" in p
               for p in status.problems), status.problems
    decisions, _ = decide(status, settings(queues=["stranded"], worker_concurrency=4), {},
                          1000.0, current={"t": 0})
    assert decisions[0].desired >= 1, "a worker comes to restore the stranded tasks"
    assert scans == [1]


def test_unacked_messages_the_workers_account_for_are_not_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Held by live workers (here: as many as they say they hold), nothing is read."""
    scans: list[int] = []
    real_scan = redis_probe._scan
    monkeypatch.setattr(redis_probe, "_scan", lambda *a: scans.append(1) or real_scan(*a))
    with private_redis() as port:
        url = f"redis://127.0.0.1:{port}/0"
        park(url, "held", 30)
        with Observer(url) as observer:
            probe = observer.probe
            probe.check()
            explained = probe.depths(["held"], held_by_workers=30)
            unexplained = probe.depths(["held"], held_by_workers=29)
    assert scans == [1], "read only when the workers do not account for every message"
    assert explained["held"].in_flight == 0 and unexplained["held"].in_flight == 30
