"""The Lambda's sub-minute loop on a fake clock: which ticks one scheduled invocation runs.

Each tick is a real one (a real Redis read, a SQLite state file); only time is simulated:
the fake clock advances by what each tick is told to take, and by every sleep. So the
arithmetic — the schedule's grid, a cold start's late first tick, the cut-off before the
next invocation and before the Lambda's timeout, the lease released whatever happens — is
checked exactly, without waiting a minute or depending on this machine's speed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from celery_ondemand import aws_lambda
from tests.support.brokers import Queues

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


@pytest.fixture
def configured(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[Path]:
    """A deployment read from a config file, its state in SQLite, one empty queue."""
    queues = Queues(redis_url)
    state = tmp_path / "state.db"
    config = tmp_path / "ondemand.yaml"
    config.write_text(yaml.safe_dump({
        "broker_url": redis_url, "state_file": str(state), "tick_interval_seconds": 15,
        "targets": [{"name": "t", "queues": [queues.new("loop")], "scaler": "local",
                     "command": "true", "state_dir": str(tmp_path / "workers")}]}))
    for name in ("ONDEMAND_CONFIG_PARAMETER", "ONDEMAND_STATE_TABLE",
                 "ONDEMAND_BROKER_SECRET", "ONDEMAND_SCHEDULE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ONDEMAND_CONFIG_FILE", str(config))
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setattr(aws_lambda, "_warm", None)
    yield state
    if aws_lambda._warm is not None:
        aws_lambda._warm.ticker.close()
    queues.delete_all()


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
