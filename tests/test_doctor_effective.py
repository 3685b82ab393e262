"""``ondemand doctor`` reads what each worker runs with, not what its configuration says:
the prefetch multiplier given on the command line, an embedded beat on a scaled target,
and ETA tasks due beyond the visibility timeout. Real workers, real brokers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery import Celery

from celery_ondemand import Observer
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.doctor import Finding, examine
from tests.support.brokers import Queues
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker


def findings_for(broker_url: str, queue: str, **target: object) -> list[Finding]:
    settings = settings_from_mapping({"broker_url": broker_url, "targets": [
        {"name": "t", "queues": [queue], "scaler": "local", "command": "celery worker",
         **target}]})
    with Observer(broker_url) as observer:
        return examine(settings, observer, aws=False)


def about(findings: list[Finding], hostname: str) -> list[Finding]:
    return [f for f in findings if hostname in f.subject]


def test_a_prefetch_multiplier_from_the_command_line_is_found(
        broker_url: str, queues: Queues, fleet: Fleet) -> None:
    name = queues.new("prefetch")
    worker = fleet.start([name], name="greedy", concurrency=2, prefetch=1,  # configured: 1
                         options=["--prefetch-multiplier", "8"])
    mine = about(findings_for(broker_url, name), worker.hostname)
    assert any("effective prefetch multiplier is 8" in f.problem for f in mine), mine


def test_an_embedded_beat_on_a_target_that_scales_to_zero_is_an_error(
        broker_url: str, queues: Queues, fleet: Fleet, tmp_path: Path) -> None:
    name = queues.new("beat")
    worker = fleet.start([name], name="beat", env={"ONDEMAND_TEST_BOOTSTEP": "1"},
                         options=["-B", "-s", str(tmp_path / "beat-schedule")])
    mine = about(findings_for(broker_url, name, min_workers=0, max_workers=1),
                 worker.hostname)
    assert any(f.severity == "error" and "embedded beat (-B)" in f.problem
               and "scale to zero" in f.problem for f in mine), mine
    several = about(findings_for(broker_url, name, min_workers=1, max_workers=4),
                    worker.hostname)
    assert any("runs once per worker" in f.problem for f in several), several


def hand_a_far_eta_task(producer: Celery, broker_url: str, queue: str, hostname: str) -> None:
    """Send a task due in ten minutes, and wait until the worker holds it."""
    producer.send_task("tests.sleep", args=(0,), queue=queue, countdown=600)
    with Observer(broker_url) as observer:
        deadline = time.monotonic() + 30
        while True:
            seen = observer.observe([queue]).workers.get(hostname)
            if seen is not None and seen.scheduled:
                return
            assert time.monotonic() < deadline, "the worker never took the ETA task"


def test_an_eta_beyond_the_visibility_timeout_is_an_error(redis_url: str) -> None:
    queues, fleet = Queues(redis_url), Fleet(redis_url)
    name = queues.new("far")
    worker = fleet.start([name], name="far", env={"ONDEMAND_TEST_VISIBILITY": "60"})
    producer = Celery("p", broker=redis_url, set_as_current=False)
    try:
        hand_a_far_eta_task(producer, redis_url, name, worker.hostname)
        near = findings_for(redis_url, name)
        mine = about(near, worker.hostname)
        assert any(f.severity == "error" and "visibility_timeout of 60s" in f.problem
                   and "runs twice" in f.problem and "ETA" in f.problem for f in mine), mine
    finally:
        fleet.stop()
        producer.close()
        queues.delete_all()


def test_an_eta_past_rabbitmqs_consumer_timeout_is_an_error(rabbitmq_url: str) -> None:
    """RabbitMQ closes the channel of a worker holding a delivery unacknowledged past its
    consumer_timeout, and everything the worker holds runs again; a worker holds an ETA
    task until it is due. The broker's value is given as redelivery_timeout_seconds."""
    queues, fleet = Queues(rabbitmq_url), Fleet(rabbitmq_url)
    name = queues.new("far")
    worker = fleet.start([name], name="far-amqp")
    producer = Celery("p", broker=rabbitmq_url, set_as_current=False)
    try:
        hand_a_far_eta_task(producer, rabbitmq_url, name, worker.hostname)
        short = about(findings_for(rabbitmq_url, name, redelivery_timeout_seconds=60),
                      worker.hostname)
        assert any(f.severity == "error" and "consumer_timeout of 60s" in f.problem
                   and "ETA" in f.problem for f in short), short
        default = about(findings_for(rabbitmq_url, name), worker.hostname)
        assert not any("consumer_timeout" in f.problem for f in default), \
            "due in 10 minutes: inside the default 30"
    finally:
        fleet.stop()
        producer.close()
        queues.delete_all()
