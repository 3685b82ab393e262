"""A worker whose tasks wait on a Celery rate limit runs nothing while its queue holds
ready tasks, like a zombie; it is taking work at the pace it was told, and must not be
replaced. Real workers on both brokers, with the celery-ondemand bootstep, which reports
the tasks held in the worker's rate-limit buckets."""

from __future__ import annotations

import time

import pytest
from celery import Celery

from celery_ondemand import Observer
from celery_ondemand.decide import TargetMemory, decide
from tests.support.brokers import Queues
from tests.support.observations import settings
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker


def test_a_rate_limited_worker_is_not_a_zombie(
        broker_url: str, queues: Queues, fleet: Fleet, producer: Celery) -> None:
    name = queues.new("limited")
    worker = fleet.start([name], name="limited", concurrency=1,
                         env={"ONDEMAND_TEST_BOOTSTEP": "1"})
    for _ in range(4):  # the first runs at once; the next waits 30 s for its token
        producer.send_task("tests.limited", queue=name)
    config = settings(queues=[name], worker_concurrency=1, zombie_after_seconds=3)
    memory: dict[str, TargetMemory] = {}
    held = []
    with Observer(broker_url) as observer:
        previous = None
        watch_until = time.monotonic() + 12  # four times zombie_after_seconds
        while time.monotonic() < watch_until:
            status = observer.observe([name], previous=previous)
            previous = status
            decisions, memory = decide(status, config, memory, time.time(),
                                       current={"t": 1})
            assert decisions[0].zombies == (), status.serializer()
            if worker.hostname in status.live_workers:
                held.append(status.live_workers[worker.hostname].rate_limited)
    assert max(held) >= 1, "the task held by the rate limit was reported"
    assert status.queues[name].size >= 1 and status.live_workers[worker.hostname].active == 0
