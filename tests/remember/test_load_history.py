"""The load history on both stores: minutes summed from tick samples, read back by range,
expiring after ``load_days``; and a tick writing it."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from celery_ondemand.cost import item_bytes
from celery_ondemand.decide.load import LoadMinute
from celery_ondemand.remember import DynamoDBStateStore, SQLiteStateStore, StateStore
from celery_ondemand.remember.dynamodb import create_table

DAY = 86400


def sample(minute: int, arrivals: float, busy: float = 0.0, desired: int = 2) -> LoadMinute:
    return LoadMinute(minute, seconds=15.0, arrivals=arrivals, completions=arrivals - 1,
                      busy_seconds=busy, desired_sum=desired, live_sum=desired - 1, ticks=1)


def test_tick_samples_add_up_to_their_minute_and_read_back_by_range(
        store: StateStore) -> None:
    start = 1_700_000_040  # a minute's first second
    for tick in range(4):  # four 15 s ticks of one minute, then one of the next
        store.add_load("prod", {"emails": sample(start, 10 + tick, busy=30.5),
                                "reports": sample(start, 1)})
    store.add_load("prod", {"emails": sample(start + 60, 7, desired=4)})
    minutes = store.load_history("prod", "emails", start + 30, start + 60)
    assert [m.minute for m in minutes] == [start, start + 60], "since's own minute included"
    first, second = minutes
    assert (first.seconds, first.arrivals, first.completions, first.busy_seconds,
            first.ticks) == (60.0, 46.0, 42.0, 122.0, 4)
    assert first.arrival_rate == pytest.approx(46 / 60)
    assert (first.desired, first.live) == (2.0, 1.0)
    assert (second.arrivals, second.desired) == (7.0, 4.0)
    assert store.load_history("prod", "emails", start + 120, start + 3600) == []
    assert [m.arrivals for m in store.load_history("prod", "reports", 0, 2e9)] == [4.0]
    assert store.load_history("other", "emails", 0, 2e9) == []


def test_two_weeks_of_minutes_are_kept_and_read_in_order(store: StateStore) -> None:
    """A forecast's reads: a few minutes of each of 14 past days, all there."""
    now = 1_700_000_040
    for day in range(14, 0, -1):
        store.add_load("prod", {"emails": sample(now - day * DAY, day)})
    found = [store.load_history("prod", "emails", now - d * DAY - 120, now - d * DAY + 120)
             for d in range(1, 15)]
    assert [[m.arrivals for m in f] for f in found] == [[d] for d in range(1, 15)]


def test_dynamodb_minutes_expire_after_load_days(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client: Any = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "t")
        store = DynamoDBStateStore("t", client)
        store.load_days = 14
        store.add_load("prod", {"emails": sample(6000, 3)})
        store.add_load("prod", {"emails": sample(6000, 2)})
        items = client.scan(TableName="t")["Items"]
        assert len(items) == 1
        assert int(items[0]["ttl"]["N"]) == 6000 + 15 * DAY, "a day to spare"
        assert item_bytes(items[0]) < 1024, "one write unit per tick"


def test_sqlite_deletes_expired_minutes_once_an_hour(tmp_path: Any) -> None:
    """Minutes expire a day after load_days (the forecast's oldest day never flickers);
    the DELETE runs at the first write and then at most once an hour, at any minute."""
    store = SQLiteStateStore(tmp_path / "state.db")
    store.load_days, clock = 1, [0.0]
    store.clock = lambda: clock[0]
    store.add_load("prod", {"emails": sample(3600, 5)})
    store.add_load("prod", {"emails": sample(3600 + 2 * DAY - 60, 5)})
    assert len(store.load_history("prod", "emails", 0, 10 * DAY)) == 2, "not yet expired"
    store.add_load("prod", {"emails": sample(3600 + 2 * DAY + 120, 5)})
    assert len(store.load_history("prod", "emails", 0, 10 * DAY)) == 3, "within the hour"
    clock[0] = 3600.0
    store.add_load("prod", {"emails": sample(3600 + 2 * DAY + 180, 5)})  # not an hh:00
    assert [m.minute for m in store.load_history("prod", "emails", 0, 10 * DAY)] == [
        3600 + 2 * DAY - 60, 3600 + 2 * DAY + 120, 3600 + 2 * DAY + 180]
