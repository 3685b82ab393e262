"""The workers' own broker settings, read as the workers use them, on real Redis with real
workers: Celery's documented priority setup, and a global key prefix.

Each test also reads the same broker without the settings, to show what goes wrong without
them (every task missed): the settings, not luck, are what make the read right.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_ondemand import Observation, Observer, aws_lambda
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.tick import Ticker
from tests.support.brokers import Queues, producer_app
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker

CELERY_PRIORITY_SETUP = {"queue_order_strategy": "priority", "sep": ":",
                         "priority_steps": list(range(10))}
"""Celery's documented Redis priority setup ("Redis Message Priorities")."""


@pytest.fixture
def prefixed() -> dict[str, Any]:
    """A key prefix of this test's own: nothing it writes can meet another test's keys."""
    return {"global_keyprefix": f"ondemand-test-{uuid.uuid4().hex[:8]}:"}


@pytest.fixture(params=["priority-setup", "key-prefix"])
def options(request: pytest.FixtureRequest, prefixed: dict[str, Any]) -> dict[str, Any]:
    """The priority setup under a key prefix of its own too: kombu writes its exchange
    bindings with ``sep``, so a database whose ``_kombu.binding.reply.celery.pidbox`` also
    holds entries of apps with the default ``sep`` (other tests, killed mid-round) fails
    the worker's reply publish. One database, one ``sep``: as in production."""
    if request.param == "priority-setup":
        return {**CELERY_PRIORITY_SETUP, **prefixed}
    return prefixed


@pytest.fixture
def deployment(redis_url: str, options: dict[str, Any]) -> Iterator[tuple[Queues, Fleet]]:
    queues, fleet = Queues(redis_url, options), Fleet(redis_url)
    yield queues, fleet
    fleet.stop()
    queues.delete_all()


def observe_until(observer: Observer, queue: str, done: Any,
                  timeout: float = 30.0) -> Observation:
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        status = observer.observe([queue], previous=previous)
        if done(status):
            return status
        assert time.monotonic() < deadline, f"never reached: {status.serializer()}"
        previous = status


def test_every_task_counted_under_the_workers_own_settings(
        redis_url: str, options: dict[str, Any], deployment: tuple[Queues, Fleet]) -> None:
    queues, fleet = deployment
    name = queues.new("settings")
    worker = fleet.start([name], name="prio", concurrency=1,
                         env={"ONDEMAND_TEST_TRANSPORT_OPTIONS": json.dumps(options)})
    producer = producer_app(redis_url, options)
    try:
        producer.send_task("tests.sleep", args=(60,), queue=name)
        with Observer(redis_url, transport_options=options) as observer:
            observe_until(observer, name, lambda s: s.queues[name].running == 1)
            for priority in (0, 1, 3, 5, 7, 9):
                producer.send_task("tests.sleep", args=(0,), queue=name, priority=priority)
            status = observer.observe([name])
        queue = status.queues[name]
        assert worker.hostname in status.live_workers, "the workers' events were not heard"
        assert (queue.size, queue.running, queue.hidden) == (6, 1, 1)
        assert queue.oldest_age is not None, "the oldest task was not peeked"

        with Observer(redis_url) as bare:  # the settings not given: the read goes wrong
            wrong = bare.observe([name])
        assert wrong.queues[name].size < 6
    finally:
        producer.close()


@pytest.mark.parametrize("built_by", ["tick", "lambda"])
def test_a_tick_reads_with_the_configs_transport_options(
        redis_url: str, options: dict[str, Any], deployment: tuple[Queues, Fleet],
        built_by: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Ticker as the CLI builds it, and as the Lambda's warm container builds it
    (its own Observer, handed the config's options)."""
    queues, _ = deployment
    name = queues.new("config")
    producer = producer_app(redis_url, options)
    try:
        for priority in (1, 4, 8):
            producer.send_task("tests.sleep", args=(0,), queue=name, priority=priority)
        config = settings_from_mapping({
            "broker_url": redis_url, "broker_transport_options": options,
            "state_file": str(tmp_path / "state.db"),
            "targets": [{"name": "t", "queues": [name], "scaler": "local",
                         "command": "celery worker", "worker_concurrency": 1}]})
        if built_by == "lambda":
            monkeypatch.setattr(aws_lambda, "_warm", None)
            ticker = aws_lambda._ticker(config)
        else:
            ticker = Ticker(config, scalers={})
        try:
            result = ticker.tick(dry_run=True)
        finally:
            ticker.close()
        assert result.observation is not None
        assert result.observation.queues[name].size == 3
        assert result.decisions[0].desired == 3
    finally:
        producer.close()


def test_a_killed_workers_tasks_are_found_under_a_key_prefix(
        redis_url: str, prefixed: dict[str, Any]) -> None:
    """kombu's unacknowledged hash is prefixed too: a task a SIGKILLed worker leaves there
    must still count as hidden work."""
    queues, fleet = Queues(redis_url, prefixed), Fleet(redis_url)
    producer = producer_app(redis_url, prefixed)
    name = queues.new("stranded")
    try:
        worker = fleet.start([name], name="doomed", concurrency=1,
                             env={"ONDEMAND_TEST_TRANSPORT_OPTIONS": json.dumps(prefixed)})
        producer.send_task("tests.sleep", args=(60,), queue=name)
        with Observer(redis_url, transport_options=prefixed) as observer:
            observe_until(observer, name, lambda s: s.queues[name].running == 1)
            worker.kill()
            status = observer.observe([name])
        queue = status.queues[name]
        assert (queue.size, queue.hidden, status.live_workers) == (0, 1, {})
    finally:
        fleet.stop()
        queues.delete_all()
        producer.close()
