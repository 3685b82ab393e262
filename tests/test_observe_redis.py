"""Redis only: the oldest task's age, read by peeking without consuming, and the tasks a
dead worker left unacknowledged."""

from __future__ import annotations

import time

import pytest
from celery import Celery

from celery_ondemand import Observer
from celery_ondemand.decide import decide
from tests.support.brokers import Queues, producer_app
from tests.support.observations import settings
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker


def test_oldest_task_age_comes_from_the_publish_stamp(redis_url: str) -> None:
    queues = Queues(redis_url)
    producer = producer_app(redis_url)
    name = queues.new("age")
    try:
        producer.send_task("tests.sleep", args=(0,), queue=name)
        time.sleep(1.0)
        producer.send_task("tests.sleep", args=(0,), queue=name, priority=9)
        producer.send_task("tests.sleep", args=(0,), queue=name)
        with Observer(redis_url) as observer:
            status = observer.observe([name])
            again = observer.observe([name])
        queue = status.queues[name]
        assert queue.size == 3
        assert queue.oldest_age is not None and 1.0 <= queue.oldest_age < 30
        assert again.queues[name].size == 3, "peeking must not consume"
    finally:
        queues.delete_all()
        producer.close()


def test_unstamped_or_foreign_messages_have_no_age(redis_url: str) -> None:
    queues = Queues(redis_url)
    name = queues.new("noage")
    plain = Celery("unstamped", broker=redis_url, set_as_current=False)
    try:
        with plain.connection_for_write() as connection:
            client = connection.default_channel.client
            client.lpush(name, b"not json at all")
            client.lpush(name, b'{"headers": {"ondemand_published_at": "yesterday"}}')
        with Observer(redis_url) as observer:
            status = observer.observe([name])
        assert status.queues[name].size == 2
        assert status.queues[name].oldest_age is None
    finally:
        queues.delete_all()
        plain.close()


def test_tasks_stranded_by_a_killed_worker_are_hidden_work(redis_url: str) -> None:
    """A worker SIGKILLed mid-task (acks_late) leaves it in kombu's ``unacked`` hash, out
    of the queue; only a running consumer restores it, after the visibility timeout. It
    must count as work, or the target would scale to zero and strand it."""
    queues, fleet, producer = Queues(redis_url), Fleet(redis_url), producer_app(redis_url)
    name = queues.new("stranded")
    try:
        worker = fleet.start([name], name="doomed", concurrency=1)
        producer.send_task("tests.sleep", args=(120,), queue=name)  # killed long before
        with Observer(redis_url) as observer:
            deadline = time.monotonic() + 60
            while observer.observe([name]).queues[name].running != 1:
                assert time.monotonic() < deadline, "the task never started"
            worker.kill()
            status = observer.observe([name])
        queue = status.queues[name]
        assert (queue.size, queue.hidden, queue.workers) == (0, 1, [])  # nobody serves it
        decisions, _ = decide(status, settings(queues=[name], worker_concurrency=1,
                                               scale_down_delay_seconds=0), {}, 1000.0,
                              current={"t": 0})
        assert decisions[0].desired == 1, "a worker must come to restore and run it"
    finally:
        fleet.stop()
        queues.delete_all()
        producer.close()
