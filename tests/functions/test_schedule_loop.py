"""The Lambda's sub-minute ticks on a fake clock: which ticks one scheduled invocation
runs or queues, which a queued one runs, and when a deployment at rest stops at one.

Each tick is a real one (a real Redis read, a SQLite state file); only time is simulated:
the fake clock advances by what each tick is told to take, and by every sleep. So the
arithmetic — the schedule's grid, a cold start's late first tick, the cut-off before the
next invocation and before the Lambda's timeout, the lease released whatever happens — is
checked exactly, without waiting a minute or depending on this machine's speed. The tick
queue is SQS on moto (in-process), read back as Lambda's event source mapping would.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from celery_ondemand import aws_lambda
from tests.support.agents import FileCountScaler
from tests.support.aws import fake_credentials
from tests.support.brokers import Queues, producer_app

pytestmark = pytest.mark.broker
SCHEDULED = datetime(2026, 11, 28, 17, 0, tzinfo=UTC).timestamp()


class FakeTime:
    """A clock, a sleep that advances it, and a Lambda context reading it."""

    def __init__(self, now: float, timeout_seconds: float = 90.0) -> None:
        self.now = now
        self.deadline = now + timeout_seconds
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - self.now) * 1000)


@dataclass
class Deployment:
    """A deployment read from a config file, its state in SQLite, its count in a file."""

    state: Path
    config: Path
    queue: str
    redis_url: str

    def configure(self, **top: Any) -> None:
        self.config.write_text(yaml.safe_dump({
            "broker_url": self.redis_url, "state_file": str(self.state),
            "tick_interval_seconds": 15, **top, "targets": [{
                "name": "t", "queues": [self.queue], "worker_concurrency": 1,
                "scaler": "tests.support.agents:FileCountScaler"}]}))

    def publish(self, tasks: int) -> None:
        with producer_app(self.redis_url) as producer:
            for _ in range(tasks):
                producer.send_task("tests.sleep", args=(0,), queue=self.queue)


@pytest.fixture
def deployment(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[Deployment]:
    queues = Queues(redis_url)
    made = Deployment(tmp_path / "state.db", tmp_path / "ondemand.yaml", queues.new("loop"),
                      redis_url)
    monkeypatch.setattr(FileCountScaler, "path", str(tmp_path / "count.json"))
    for name in ("ONDEMAND_CONFIG_PARAMETER", "ONDEMAND_STATE_TABLE", "ONDEMAND_BROKER_SECRET",
                 "ONDEMAND_SCHEDULE_SECONDS", "ONDEMAND_TICK_QUEUE_URL",
                 "ONDEMAND_IDLE_RETURN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ONDEMAND_CONFIG_FILE", str(made.config))
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setattr(aws_lambda, "_warm", None)
    yield made
    if aws_lambda._warm is not None:
        aws_lambda._warm.ticker.close()
    queues.delete_all()


@pytest.fixture
def configured(deployment: Deployment) -> Path:
    """A deployment that ticks through the minute whatever it holds (idle_return off), with
    no tick queue: the ticks run in the invocation, sleeping between."""
    deployment.configure(idle_return=False)
    return deployment.state


def run(fake: FakeTime, tick_seconds: float | list[float], event: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], list[float]]:
    """One invocation; each real tick advances the fake clock by ``tick_seconds``.
    Returns the summary and each tick's start, in seconds after the scheduled time."""
    durations = iter(tick_seconds if isinstance(tick_seconds, list) else [tick_seconds] * 99)
    starts: list[float] = []
    real_tick = aws_lambda.Ticker.tick

    def timed_tick(self: Any, now: float | None = None, dry_run: bool = False) -> Any:
        starts.append(round(fake.now - SCHEDULED, 3))
        result = real_tick(self, now=now, dry_run=dry_run)
        fake.now += next(durations)
        return result

    monkeypatch.setattr(aws_lambda.Ticker, "tick", timed_tick)
    summary = aws_lambda.run_schedule(fake, event, clock=fake.clock, sleep=fake.sleep)
    return summary, starts


def scheduled_event(period: float = 60) -> dict[str, Any]:
    return {"source": "celery-ondemand.schedule", "period_seconds": period,
            "scheduled_time": datetime.fromtimestamp(SCHEDULED, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ")}


def test_a_minute_holds_four_ticks_on_the_schedules_grid(
        configured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime(SCHEDULED + 0.2)
    summary, starts = run(fake, 2.0, scheduled_event(), monkeypatch)
    assert summary["ok"] and summary["ticks"] == 4
    assert starts == [0.2, 15.0, 30.0, 45.0]
    assert fake.now - SCHEDULED < 60 - aws_lambda.NEXT_SCHEDULE_MARGIN_SECONDS


def test_a_cold_start_counts_against_the_minute_not_beyond_it(
        configured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Init took 7 s: the ticks keep the schedule's grid, and the last still ends before
    the next invocation (counting from the handler's start would overrun it by 7 s)."""
    fake = FakeTime(SCHEDULED + 7.0)
    summary, starts = run(fake, 3.0, scheduled_event(), monkeypatch)
    assert starts == [7.0, 15.0, 30.0, 45.0]
    assert summary["ticks"] == 4 and fake.now - SCHEDULED <= 59


def test_a_tick_that_could_not_end_before_the_next_invocation_is_not_started(
        configured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 14 s tick at 45 s ends at 59 s, within the 1 s margin; a 15 s one would not."""
    fake = FakeTime(SCHEDULED)
    _, starts = run(fake, 14.0, scheduled_event(), monkeypatch)
    assert starts == [0.0, 15.0, 30.0, 45.0]
    fake = FakeTime(SCHEDULED)
    _, starts = run(fake, [2.0, 14.5, 2.0, 2.0], scheduled_event(), monkeypatch)
    assert starts == [0.0, 15.0, 30.0], "the slowest tick so far would overrun at 45 s"


def test_a_slow_tick_skips_the_slots_it_overran(
        configured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 20 s tick overruns the 15 s slot: the next starts at 30 s; none at 45 s, which,
    as slow, would end after the next invocation is due."""
    fake = FakeTime(SCHEDULED)
    _, starts = run(fake, [20.0, 1.0, 1.0], scheduled_event(), monkeypatch)
    assert starts == [0.0, 30.0]


def test_no_tick_starts_inside_the_timeout_reserve(
        configured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime(SCHEDULED, timeout_seconds=30)
    _, starts = run(fake, 3.0, scheduled_event(), monkeypatch)
    assert starts == [0.0, 15.0], "a tick at 30 s would run into the last 10 s"
    assert fake.now - SCHEDULED <= 30 - aws_lambda.TIMEOUT_RESERVE_SECONDS


def test_without_a_scheduled_time_the_minute_counts_from_the_handlers_start(
        configured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime(SCHEDULED + 5)
    summary, starts = run(fake, 1.0, {"source": "a manual test"}, monkeypatch)
    assert starts == [5.0, 20.0, 35.0, 50.0] and summary["ticks"] == 4


def test_a_late_invocation_ticks_once(configured: Path, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    """Delivered 59.5 s after its time, one tick still runs (the lease keeps it from
    acting beside the next invocation)."""
    fake = FakeTime(SCHEDULED + 59.5)
    summary, starts = run(fake, 1.0, scheduled_event(), monkeypatch)
    assert starts == [59.5] and summary["ticks"] == 1


def test_the_lease_is_released_even_when_a_tick_fails(
        configured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        leases = sqlite3.connect(configured).execute("SELECT owner FROM lease").fetchall()
        assert len(leases) == 1, "the tick holds the lease while it reports"
        raise RuntimeError("reporting failed")

    monkeypatch.setattr(aws_lambda, "report_tick", boom)
    with pytest.raises(RuntimeError, match="reporting failed"):
        run(FakeTime(SCHEDULED), 1.0, scheduled_event(), monkeypatch)
    assert sqlite3.connect(configured).execute("SELECT * FROM lease").fetchall() == []


@pytest.mark.parametrize("value", ["<aws.scheduler.scheduled-time>", "yesterday", None, 7])
def test_a_scheduled_time_that_is_not_one_is_ignored(value: Any) -> None:
    assert aws_lambda.scheduled_time({"scheduled_time": value}) is None


def test_the_schedulers_time_format_is_read() -> None:
    assert aws_lambda.scheduled_time(scheduled_event()) == SCHEDULED


def test_a_deployment_at_rest_ticks_once_and_returns(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment.configure()  # idle_return: true, the default
    fake = FakeTime(SCHEDULED)
    summary, starts = run(fake, 1.0, scheduled_event(), monkeypatch)
    assert starts == [0.0] and summary["ok"], "nothing waits, nothing runs: the next " \
                                              "schedule wakes it"


def test_a_deployment_with_work_keeps_ticking(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment.configure()
    deployment.publish(2)
    fake = FakeTime(SCHEDULED)
    summary, starts = run(fake, 1.0, scheduled_event(), monkeypatch)
    assert starts == [0.0, 15.0, 30.0, 45.0], "two tasks wait and no worker takes them"
    assert summary["decisions"][0]["desired"] == 2


@pytest.fixture
def tick_queue(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The stack's tick queue, on moto."""
    import boto3
    from moto import mock_aws

    fake_credentials(monkeypatch)
    with mock_aws():
        url = boto3.client("sqs").create_queue(QueueName="ticks")["QueueUrl"]
        monkeypatch.setenv("ONDEMAND_TICK_QUEUE_URL", url)
        yield url


def queued(url: str) -> list[tuple[float, float]]:
    """The (slot, delay in seconds) of each message on the tick queue, delays included
    (moto's queue read directly: a delayed message cannot be received yet)."""
    from moto.sqs.models import sqs_backends

    queue = sqs_backends["123456789012"]["us-east-1"].queues[url.rsplit("/", 1)[1]]
    return sorted((json.loads(m.body)["slot"] - SCHEDULED,
                   round((m.delayed_until - m.sent_timestamp) / 1000)) for m in queue._messages)


def test_a_busy_scheduled_invocation_queues_the_minutes_ticks_delayed_to_their_slots(
        deployment: Deployment, tick_queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment.configure()
    deployment.publish(2)
    fake = FakeTime(SCHEDULED + 3.0)  # a cold start: the first tick 3 s late
    summary, starts = run(fake, 1.0, scheduled_event(), monkeypatch)
    assert starts == [3.0] and fake.sleeps == [], "one tick here, no billed waiting"
    assert [slot - SCHEDULED for slot in summary["queued"]] == [15.0, 30.0, 45.0]
    assert queued(tick_queue) == [(15.0, 11.0), (30.0, 26.0), (45.0, 41.0)]


def test_queued_ticks_are_not_bounded_by_the_scheduled_invocations_timeout(
        deployment: Deployment, tick_queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack's 30 s timeout bounds the scheduled invocation's own tick, not the ticks it
    queues: each of those is an invocation with a timeout of its own."""
    deployment.configure()
    deployment.publish(2)
    summary, _ = run(FakeTime(SCHEDULED, timeout_seconds=30), 1.0, scheduled_event(),
                     monkeypatch)
    assert [slot - SCHEDULED for slot in summary["queued"]] == [15.0, 30.0, 45.0]


def test_a_scheduled_invocation_at_rest_queues_nothing(
        deployment: Deployment, tick_queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment.configure()
    summary, _ = run(FakeTime(SCHEDULED), 1.0, scheduled_event(), monkeypatch)
    assert summary["queued"] == [] and queued(tick_queue) == []


def sqs_event(slot: float) -> dict[str, Any]:
    """What Lambda's event source mapping hands the function for one queued tick."""
    body = {"source": "celery-ondemand.tick", "deployment": "default", "slot": slot}
    return {"Records": [{"messageId": "m-1", "eventSource": "aws:sqs",
                         "body": json.dumps(body)}]}


def test_a_queued_tick_runs_once_in_its_slot_and_never_late(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment.configure()
    deployment.publish(2)
    ticks: list[float] = []
    real_tick = aws_lambda.Ticker.tick

    def counted(self: Any, now: float | None = None, dry_run: bool = False) -> Any:
        ticks.append(now or 0)
        return real_tick(self, now=now, dry_run=dry_run)

    monkeypatch.setattr(aws_lambda.Ticker, "tick", counted)
    slot = SCHEDULED + 15
    on_time = aws_lambda.run_queued(None, sqs_event(slot), clock=lambda: slot + 0.4)
    assert on_time["ticks"] == 1 and on_time["ok"] and ticks == [slot + 0.4]
    late = aws_lambda.run_queued(None, sqs_event(slot), clock=lambda: slot + 15.5)
    assert late["ticks"] == 0 and late["skipped"] == "stale" and len(ticks) == 1, \
        "redelivered after the next slot began: that slot's tick does the work"
    for body in ("not json", json.dumps({"slot": "soon"})):
        odd = aws_lambda.run_queued(None, {"Records": [{"body": body}]}, clock=lambda: slot)
        assert odd["ticks"] == 0 and len(ticks) == 1
