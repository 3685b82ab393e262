"""Tasks parked in kombu's unacknowledged hash, as a worker leaves them there.

A Redis worker keeps every message it has taken and not yet acknowledged — running,
prefetched, and ETA/countdown tasks waiting for their time, for hours — in one hash for
all queues (``unacked``, ``[message, exchange, routing_key]`` by delivery tag) with a
delivery-time index (``unacked_index``): kombu's ``QoS.append``. A worker that dies leaves
them there until a live consumer restores them. :func:`park` writes entries in that form,
with the raw message of a real task published by Celery.
"""

from __future__ import annotations

import json
import time
import uuid

import redis

from tests.support.brokers import producer_app


def real_message(url: str, queue: str) -> bytes:
    """The raw message Celery publishes for a countdown task on ``queue`` (left queued)."""
    producer = producer_app(url)
    try:
        producer.send_task("tests.sleep", args=(0,), queue=queue, countdown=3600)
    finally:
        producer.close()
    raw = redis.Redis.from_url(url).lindex(queue, -1)
    assert raw is not None
    return bytes(raw)


def park(url: str, queue: str, count: int, *, batch: int = 1000) -> None:
    """Leave ``count`` messages of ``queue`` unacknowledged, as a dead worker would."""
    client = redis.Redis.from_url(url)
    raw = real_message(url, queue).decode()
    entry = json.dumps([raw, queue, queue])
    now = time.time()
    for start in range(0, count, batch):
        tags = [str(uuid.uuid4()) for _ in range(min(batch, count - start))]
        with client.pipeline(transaction=False) as pipe:
            pipe.hset("unacked", mapping=dict.fromkeys(tags, entry))
            pipe.zadd("unacked_index", dict.fromkeys(tags, now))
            pipe.execute()
