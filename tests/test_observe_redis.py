"""Redis only: the oldest task's age, read by peeking without consuming."""

from __future__ import annotations

import time

import pytest
from celery import Celery

from celery_ondemand import Observer
from tests.support.brokers import Queues, producer_app

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
