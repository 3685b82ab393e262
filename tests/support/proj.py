"""The Celery app the tests' real workers run.

Workers are started with ``celery -A tests.support.proj worker``; the broker comes from
``ONDEMAND_TEST_BROKER`` so one app serves every broker under test.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery
from celery.worker.control import control_command

from celery_ondemand import stamp_publish_time

app = Celery("ondemand-tests", broker=os.environ.get("ONDEMAND_TEST_BROKER", "memory://"))
app.conf.update(
    task_acks_late=os.environ.get("ONDEMAND_TEST_ACKS_LATE", "1") == "1",
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=int(os.environ.get("ONDEMAND_TEST_PREFETCH", "1")),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
if os.environ.get("ONDEMAND_TEST_VISIBILITY"):
    # Redis redelivers an unacknowledged task after the visibility timeout, on a running
    # consumer's restore cycle (kombu: every 10th call, every 10 s). The soak test shortens
    # both so a killed worker's tasks come back within the run; and the restore's lock: a
    # worker SIGKILLed while restoring holds it for ``unacked_mutex_expire`` (300 s by
    # default), and nobody restores anything meanwhile (seen: 4 tasks stranded 270 s).
    app.conf.broker_transport_options = {
        "visibility_timeout": float(os.environ["ONDEMAND_TEST_VISIBILITY"]),
        "unacked_restore_interval": 2, "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 15}
if os.environ.get("ONDEMAND_TEST_TRANSPORT_OPTIONS"):
    # A deployment's own broker settings (priority steps, key prefix, SQS queue prefix).
    app.conf.broker_transport_options = {
        **(app.conf.broker_transport_options or {}),
        **json.loads(os.environ["ONDEMAND_TEST_TRANSPORT_OPTIONS"])}
if os.environ.get("ONDEMAND_TEST_CONTROL_EXCHANGE"):
    # Another app on the same broker: its events reach us, our control commands not it.
    app.conf.control_exchange = os.environ["ONDEMAND_TEST_CONTROL_EXCHANGE"]
stamp_publish_time()
if os.environ.get("ONDEMAND_TEST_BOOTSTEP"):
    from celery_ondemand.worker import OnDemandStep

    app.steps["worker"].add(OnDemandStep)


if os.environ.get("ONDEMAND_TEST_LEDGER"):
    from tests.support.ledger import keep_ledger

    keep_ledger(os.environ["ONDEMAND_TEST_COUNTER"], os.environ["ONDEMAND_TEST_LEDGER"])


@app.task(name="tests.sleep")
def sleep(seconds: float) -> float:
    """Hold a worker slot for ``seconds``: the stand-in for real work."""
    time.sleep(seconds)
    return seconds


@app.task(name="tests.limited", rate_limit="2/m")
def limited() -> None:
    """A task Celery starts at most twice a minute per worker: the rest wait in the
    worker's rate-limit bucket, taken from the broker but neither running nor reserved."""


@app.task(name="tests.count")
def count(seconds: float, key: str) -> None:
    """Work for ``seconds``, then count one completion under ``key`` in Redis.

    The count lets a test prove every published task completed, exactly once.
    """
    import redis

    time.sleep(seconds)
    redis.Redis.from_url(os.environ["ONDEMAND_TEST_COUNTER"]).incr(key)


@app.task(name="tests.hold")
def hold(release: str, key: str | None = None, limit: float = 120.0) -> None:
    """Run until the test sets the Redis key ``release`` (or ``limit`` seconds pass), then
    count one completion under ``key``: a task exactly as long as the test needs."""
    import redis

    client = redis.Redis.from_url(os.environ["ONDEMAND_TEST_COUNTER"])
    deadline = time.monotonic() + limit
    while not client.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    if key is not None:
        client.incr(key)


@control_command()
def ondemand_test_stall(state: Any) -> dict[str, str]:
    """Make this worker a zombie for a test: its task consumer is cancelled at the broker,
    while it still lists its queues and answers control — as after Celery's known failure
    to resume consuming after a broker reconnect.

    It stays one: a consumer restart (the worker's connection lost on a loaded machine)
    would otherwise consume again and heal it, so every task consumer of this worker from
    now on — this one and any a restart makes — consumes nothing, and says so in the log.
    """
    consumer = state.consumer
    consumer.task_consumer.cancel()
    amqp = consumer.app.amqp
    make_consumer = amqp.TaskConsumer

    def stalled(task_consumer: Any) -> Any:
        def consume(*args: Any, **kwargs: Any) -> None:
            print("ondemand_test_stall: a task consumer started again; it stays stalled",
                  flush=True)
        task_consumer.consume = consume
        return task_consumer

    amqp.TaskConsumer = lambda *args, **kwargs: stalled(make_consumer(*args, **kwargs))
    stalled(consumer.task_consumer)
    return {"ok": "stalled"}


@control_command()
def ondemand_test_deaf(state: Any) -> dict[str, str]:
    """Stop answering control commands (after answering this one) while still beating:
    a worker whose control consumer died."""
    consumer = state.consumer
    control = next(step for step in consumer.blueprint.steps.values()
                   if type(step).__name__ == "Control")
    consumer.call_soon(control.box.consumer.cancel)
    return {"ok": "deaf"}
