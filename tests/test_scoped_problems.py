"""A gap in the read holds only the targets it touches, with real workers on both brokers:
a worker of ours that stops answering control holds its own target only, and another app's
worker on the same broker (its own control exchange) holds none of ours for good."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from celery import Celery

from celery_ondemand import Observation, Observer
from celery_ondemand.observe import observer as observer_module
from tests.support.brokers import Queues
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker


def observe_until(observer: Observer, queues: list[str], done: Callable[[Observation], bool],
                  timeout: float = 45.0) -> Observation:
    deadline, previous = time.monotonic() + timeout, None
    while True:
        status = observer.observe(queues, previous=previous)
        if done(status):
            return status
        assert time.monotonic() < deadline, status.serializer()
        previous = status


def test_another_apps_worker_holds_none_of_our_targets(
        broker_url: str, queues: Queues, fleet: Fleet,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observer_module, "FOREIGN_AFTER_SECONDS", 3.0)
    ours, theirs = queues.new("ours"), queues.new("theirs")
    mine = fleet.start([ours], name="mine", concurrency=1)
    other = fleet.start([theirs], name="other", concurrency=1, env={
        "ONDEMAND_TEST_CONTROL_EXCHANGE": f"otherapp-{uuid.uuid4().hex[:8]}"})
    with Observer(broker_url) as observer:
        first = observe_until(observer, [ours], lambda s: {mine.hostname, other.hostname}
                              <= s.workers.keys())
        assert not first.workers[other.hostname].queues, "its control replies never come"
        if broker_url.startswith("redis"):  # no consumer counts: unknown is held, at first
            assert any(other.hostname in p for p in first.problems_for([ours]))
        else:  # the consumer counts would show an unheard consumer of ours: a warning only
            assert first.problems_for([ours]) == [], first.problems
            assert any(other.hostname in w for w in first.warnings), first.warnings
        settled = observe_until(observer, [ours], lambda s: not s.problems_for([ours])
                                and other.hostname in s.workers)
    assert any(other.hostname in w for w in settled.warnings)


def test_a_worker_deaf_to_control_holds_only_its_own_target(
        broker_url: str, queues: Queues, fleet: Fleet, producer: Celery) -> None:
    deaf_queue, fine_queue = queues.new("deaf"), queues.new("fine")
    deaf = fleet.start([deaf_queue], name="deaf", concurrency=1)
    fleet.start([fine_queue], name="fine", concurrency=1)
    names = [deaf_queue, fine_queue]
    with Observer(broker_url) as observer:
        observe_until(observer, names, lambda s: all(s.queues[q].many_workers == 1
                                                     for q in names))
        producer.control.broadcast("ondemand_test_deaf", destination=[deaf.hostname])
        status = observe_until(observer, names, lambda s: deaf.hostname in s.workers
                               and not s.workers[deaf.hostname].queues)
    assert any(f"{deaf.hostname} did not answer control" in p
               for p in status.problems_for([deaf_queue])), (status.problems, status.queue_problems,
                                                        status.warnings)
    assert status.problems_for([fine_queue]) == [], "the other target's read is whole"
    assert status.problems == []
