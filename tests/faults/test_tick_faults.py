"""The fault matrix, part two: faults met by a whole tick against a real broker and real
workers (or moto for AWS). Each test asserts that the tick ends within its budget, does
not scale down blind, reports the fault as a log line and a metric, and that the next
healthy tick recovers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from kombu import Connection, Producer
from moto import mock_aws
from moto.core.botocore_stubber import MockRawResponse

from celery_ondemand.act import scaler_for
from celery_ondemand.stamping import PUBLISHED_AT_HEADER
from celery_ondemand.tick import Ticker
from tests.support.agents import FileCountScaler
from tests.support.aws import ecs_service_with_tasks, fake_credentials
from tests.support.brokers import Queues, producer_app
from tests.support.faults import TICK_BUDGET_SECONDS, Reported, reported_tick
from tests.support.observations import ScriptedObserver, observation, settings
from tests.support.workers import ROOT, Fleet

Capture = tuple[pytest.CaptureFixture[str], pytest.LogCaptureFixture]


@pytest.fixture
def capture(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Capture:
    return capsys, caplog


@pytest.fixture
def counted_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FileCountScaler's count, standing in for a service whose count we can read back."""
    path = tmp_path / "count.json"
    monkeypatch.setattr(FileCountScaler, "path", str(path))
    return path


def tick(ticker: Ticker, capture: Capture, now: float) -> Reported:
    reported = reported_tick(ticker, *capture, now=now)
    assert reported.seconds < TICK_BUDGET_SECONDS, f"tick took {reported.seconds:.1f}s"
    return reported


@pytest.mark.broker
def test_a_worker_silent_for_one_tick_holds_the_target_then_recovers(
        broker_url: str, queues: Queues, fleet: Fleet, counted_at: Path,
        capture: Capture) -> None:
    name = queues.new("silent")
    steady, frozen = (fleet.start([name], name=n, concurrency=1) for n in ("steady", "frozen"))
    counted_at.write_text("2")
    config = settings(queues=[name], scaler="tests.support.agents:FileCountScaler",
                      command=None, worker_concurrency=1, scale_down_delay_seconds=1,
                      min_workers=0)
    ticker = Ticker(config, broker_url=broker_url)
    try:
        first = tick(ticker, capture, now=1000.0)
        assert first.result.decisions[0].desired == 2 and first.result.ok
        os.kill(frozen.pid, signal.SIGSTOP)  # no heartbeat, no reply: a missed beat
        try:
            silent = tick(ticker, capture, now=1002.0)  # idle long enough to scale in...
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        decision = silent.result.decisions[0]
        assert (decision.desired, decision.rule) == (2, "blind"), "...but not blind"
        assert counted_at.read_text() == "2"
        assert silent.metric("IncompleteReads", target="t") == 1
        assert silent.metric("IncompleteReads") == silent.metric("ScaleInHeld") == 1
        assert silent.metric("Warnings") == 1
        assert silent.logged("WARNING", "read incomplete", frozen.hostname)

        healthy = tick(ticker, capture, now=1004.0)
        assert healthy.metric("IncompleteReads", target="t") == 0
        assert healthy.metric("IncompleteReads") == healthy.metric("ScaleInHeld") == 0
        assert healthy.result.decisions[0].desired == 0, "heard again: idle, scaled in"
        assert counted_at.read_text() == "0"
        assert steady.hostname in healthy.result.observation.workers  # type: ignore[union-attr]
    finally:
        ticker.close()


SKEWED_CLOCK = '''import os, time
_offset = float(os.environ["ONDEMAND_TEST_CLOCK_OFFSET"])
_real = time.time
time.time = lambda: _real() + _offset
'''


@pytest.mark.broker
def test_workers_and_producers_with_skewed_clocks(broker_url: str, queues: Queues,
                                                  fleet: Fleet, tmp_path: Path,
                                                  capture: Capture) -> None:
    """Workers an hour ahead and an hour behind are alive and dated by our clock; a task
    stamped by a producer whose clock runs ahead is waiting for 0 s, never less."""
    (tmp_path / "sitecustomize.py").write_text(SKEWED_CLOCK)
    name = queues.new("skew")
    skewed = [fleet.start([name], name=f"skew{sign}", events=True, env={
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
        "ONDEMAND_TEST_CLOCK_OFFSET": f"{sign}3600"}) for sign in ("+", "-")]
    config = settings(queues=[name], worker_concurrency=2)
    ticker = Ticker(config, broker_url=broker_url)
    try:
        fleet.wait_ready()
        before = time.time()
        reported = tick(ticker, capture, now=before)
        observed = reported.result.observation
        assert observed is not None and reported.result.ok
        for worker in skewed:
            status = observed.workers[worker.hostname]
            assert status.alive and abs(status.last_heartbeat_at - before) < 30
        assert reported.metric("IncompleteReads", target="t") == 0

        # A running task's start, dated by the worker's clock, is read on ours: each skewed
        # worker runs one, and none has been running for anything like an hour.
        producer = producer_app(broker_url)
        # Tasks long enough that a tick on a loaded machine finds both workers at them.
        for _ in range(4):
            producer.send_task("tests.sleep", args=(30,), queue=name)
        producer.close()
        deadline = time.monotonic() + 60
        while True:
            running = tick(ticker, capture, now=time.time()).result.observation
            assert running is not None
            if all(running.workers[w.hostname].active for w in skewed):
                break
            assert time.monotonic() < deadline, "the skewed workers never ran the tasks"
        ages = running.queues[name].running_ages
        assert ages and all(0 <= age < 60 for age in ages), ages

        if broker_url.startswith("redis"):  # only Redis lets us peek at the oldest message
            waiting = queues.new("skew-waiting")  # no worker takes it
            producer = producer_app(broker_url)
            producer.send_task("tests.count", queue=waiting,
                               headers={PUBLISHED_AT_HEADER: time.time() + 3600})
            producer.close()
            ahead = Ticker(settings(queues=[waiting]), broker_url=broker_url)
            age = tick(ahead, capture, now=time.time()).result.observation.queues[waiting]  # type: ignore[union-attr]
            ahead.close()
            assert (age.size, age.oldest_age) == (1, 0.0)
    finally:
        ticker.close()


def publish_foreign(broker_url: str, queue: str) -> None:
    """Bytes no Celery producer wrote: a foreign client's, or a corrupted payload."""
    with Connection(broker_url) as connection:
        if broker_url.startswith("redis"):
            connection.default_channel.client.lpush(queue, b"\x00\xffnot a celery message")
        else:
            Producer(connection).publish(b"\x00\xffnot a celery message", routing_key=queue,
                                         exchange="", serializer=None,
                                         content_type="application/octet-stream",
                                         content_encoding="binary")


@pytest.mark.broker
def test_a_foreign_or_corrupt_message_is_counted_and_reported(
        broker_url: str, queues: Queues, counted_at: Path, capture: Capture) -> None:
    name = queues.new("foreign")
    with Connection(broker_url) as connection:  # the queue exists, as a worker makes it
        connection.default_channel.queue_declare(name, durable=True, auto_delete=False)
    config = settings(queues=[name], scaler="tests.support.agents:FileCountScaler",
                      command=None, worker_concurrency=1)
    ticker = Ticker(config, broker_url=broker_url)
    try:
        publish_foreign(broker_url, name)
        reported = tick(ticker, capture, now=1000.0)
        assert reported.result.ok
        assert reported.result.observation.queues[name].size == 1  # type: ignore[union-attr]
        assert reported.result.decisions[0].desired == 1, "it is work: a worker will see it"
        if broker_url.startswith("redis"):  # RabbitMQ cannot be peeked without consuming
            assert reported.logged("WARNING", name, "not a Celery task message")
            assert reported.metric("Warnings") == 1
        queues.delete_all()
        with Connection(broker_url) as connection:
            connection.default_channel.queue_declare(name, durable=True, auto_delete=False)
        healthy = tick(ticker, capture, now=1015.0)
        assert healthy.metric("Warnings") == 0 and healthy.result.ok
    finally:
        ticker.close()


@pytest.mark.broker
def test_a_queue_deleted_between_ticks_reads_as_empty_and_is_reported(
        rabbitmq_url: str, counted_at: Path, capture: Capture) -> None:
    """RabbitMQ and SQS say a queue does not exist; Redis cannot (an empty list is gone)."""
    queues = Queues(rabbitmq_url)
    name, other = queues.new("deleted"), queues.new("kept")
    with Connection(rabbitmq_url) as connection:
        for queue in (name, other):
            connection.default_channel.queue_declare(queue, durable=True, auto_delete=False)
    config = settings(queues=[name, other], scaler="tests.support.agents:FileCountScaler",
                      command=None, worker_concurrency=1)
    ticker = Ticker(config, broker_url=rabbitmq_url)
    try:
        assert tick(ticker, capture, now=1000.0).metric("QueueMissing", target="t") == 0
        with Connection(rabbitmq_url) as connection:
            connection.default_channel.queue_delete(name)
        gone = tick(ticker, capture, now=1015.0)
        assert gone.result.ok and gone.result.observation.queues[other].size == 0  # type: ignore[union-attr]
        assert gone.metric("QueueMissing", target="t") == 1
        assert gone.logged("WARNING", name, "does not exist")
        assert gone.result.decisions[0].rule != "blind", "a 404 is an answer, not a gap"
        with Connection(rabbitmq_url) as connection:
            connection.default_channel.queue_declare(name, durable=True, auto_delete=False)
        back = tick(ticker, capture, now=1030.0)
        assert back.metric("QueueMissing", target="t") == 0
        assert back.metric("Warnings") == 0
    finally:
        ticker.close()
        queues.delete_all()


class Throttle:
    """ECS's own throttling answer to ``UpdateService``, ``times`` times (or always).

    moto cannot throttle: this answers at the client boundary (``before-send``, ahead of
    moto's handler), so botocore parses and retries it exactly as a real 400 from ECS.
    botocore calls every ``before-send`` handler, so a throttled request is pointed at a
    host moto does not serve: moto leaves it alone and never applies it.
    """

    def __init__(self, times: int | None) -> None:
        self.left, self.attempts = times, 0

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        self.attempts += 1
        if self.left is not None and self.left <= 0:
            return None  # moto answers
        if self.left is not None:
            self.left -= 1
        request.url = "https://throttled.invalid/"  # not a URL moto serves
        body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
        return AWSResponse(request.url, 400, {"x-amzn-RequestId": "throttled"},
                           MockRawResponse(body))


@pytest.mark.parametrize("throttled", [1, None], ids=["once", "always"])
def test_ecs_throttling_is_retried_or_reported_and_recovers(
        throttled: int | None, monkeypatch: pytest.MonkeyPatch, capture: Capture) -> None:
    fake_credentials(monkeypatch)
    with mock_aws():
        ecs = boto3.client("ecs", region_name="us-east-1")
        ecs_service_with_tasks(ecs, boto3.client("ec2", region_name="us-east-1"), tasks=1)
        config = settings(scaler="ecs", cluster="prod", service="workers", command=None,
                          worker_concurrency=1, max_workers=6)
        scaler = scaler_for(config.targets[0])
        throttle = Throttle(throttled)
        scaler.client.meta.events.register_first(  # type: ignore[attr-defined]
            "before-send.ecs.UpdateService", throttle)
        ticker = Ticker(config, observer=ScriptedObserver(observation({"q": (3, 0)})),  # type: ignore[arg-type]
                        scalers={"t": scaler})
        reported = tick(ticker, capture, now=1000.0)
        desired = ecs.describe_services(cluster="prod", services=["workers"])
        if throttled is not None:  # boto3's standard retries absorb a short burst
            assert throttle.attempts == throttled + 1 and reported.result.applied == ["t"]
            assert desired["services"][0]["desiredCount"] == 3
            return
        assert throttle.attempts == 3, "three attempts, then this tick gives up"
        assert desired["services"][0]["desiredCount"] == 1, "nothing half-done"
        assert "ThrottlingException" in reported.result.target_errors["t"]
        assert reported.metric("TargetErrors", target="t") == 1
        assert reported.metric("Errors") == 1
        assert reported.logged("ERROR", "ThrottlingException")
        throttle.left = 0  # the burst is over
        healthy = tick(ticker, capture, now=1015.0)
        assert healthy.result.applied == ["t"] and healthy.metric("Errors") == 0
        desired = ecs.describe_services(cluster="prod", services=["workers"])
        assert desired["services"][0]["desiredCount"] == 3
