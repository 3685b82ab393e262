"""One contract, two stores: SQLite (a real file) and DynamoDB (moto, in-process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from celery_ondemand import Decision, TargetMemory
from celery_ondemand.errors import LeaseLost, StateError
from celery_ondemand.remember import DynamoDBStateStore, SQLiteStateStore, StateStore
from celery_ondemand.remember.dynamodb import create_table
from tests.support.aws import fake_credentials


def test_the_lease_admits_one_owner_until_it_expires(store: StateStore) -> None:
    assert store.acquire_lease("prod", "tick-a", now=100.0, seconds=60)
    assert not store.acquire_lease("prod", "tick-b", now=130.0, seconds=60)
    assert store.acquire_lease("prod", "tick-a", now=130.0, seconds=60), "renewal"
    assert store.acquire_lease("other", "tick-b", now=130.0, seconds=60), "per deployment"
    assert store.acquire_lease("prod", "tick-b", now=191.0, seconds=60), "after expiry"
    assert not store.acquire_lease("prod", "tick-a", now=192.0, seconds=60)


def test_only_the_owner_renews_and_a_lease_taken_meanwhile_is_not_ours(
        store: StateStore) -> None:
    assert store.acquire_lease("prod", "tick-a", now=100.0, seconds=60)
    assert store.renew_lease("prod", "tick-a", now=150.0, seconds=60)
    assert not store.acquire_lease("prod", "tick-b", now=200.0, seconds=60), "renewed to 210"
    assert store.acquire_lease("prod", "tick-b", now=211.0, seconds=60), "expired: taken"
    assert not store.renew_lease("prod", "tick-a", now=212.0, seconds=60)
    store.release_lease("prod", "tick-b")
    assert not store.renew_lease("prod", "tick-a", now=213.0, seconds=60), \
        "taken and released since: a tick acted in between, the lease is not ours to extend"
    assert store.acquire_lease("prod", "tick-c", now=214.0, seconds=60)


def test_released_leases_are_free_and_only_the_owner_releases(store: StateStore) -> None:
    assert store.acquire_lease("prod", "tick-a", now=0.0, seconds=60)
    store.release_lease("prod", "tick-b")
    assert not store.acquire_lease("prod", "tick-b", now=1.0, seconds=60)
    store.release_lease("prod", "tick-a")
    assert store.acquire_lease("prod", "tick-b", now=2.0, seconds=60)


def test_memory_round_trips_while_the_lease_is_held(store: StateStore) -> None:
    memory = {"emails": TargetMemory(recommendations=[[1.5, 3]], idle_since=9.25,
                                     processed={"celery@a": 10}, service_rate=0.75),
              "reports": TargetMemory(failed_reads=2)}
    assert store.load_memory("prod") == {}
    store.acquire_lease("prod", "tick-a", now=10.0, seconds=60)
    store.save_memory("prod", "tick-a", 11.0, memory)
    assert store.load_memory("prod") == memory
    assert store.load_memory("other") == {}


def test_a_tick_without_the_lease_writes_no_memory(store: StateStore) -> None:
    store.acquire_lease("prod", "tick-a", now=10.0, seconds=60)
    with pytest.raises(LeaseLost):
        store.save_memory("prod", "tick-b", 11.0, {"t": TargetMemory(failed_reads=1)})
    with pytest.raises(LeaseLost):
        store.save_memory("prod", "tick-a", 71.0, {"t": TargetMemory(failed_reads=1)})
    assert store.load_memory("prod") == {}


def test_history_keeps_decisions_newest_first_with_an_expiry(store: StateStore) -> None:
    store.record("prod", [Decision("emails", 1, 3, "backlog", "9 tasks / 3 per worker")], 100.0)
    store.record("prod", [Decision("emails", 3, 3, "tolerance", "fits"),
                          Decision("reports", 0, 0, "idle", "no work")], 115.0)
    entries = store.history("prod")
    assert [(e["target"], e["at"]) for e in entries][:1] in ([("reports", 115.0)],
                                                              [("emails", 115.0)])
    assert {e["target"] for e in entries if e["at"] == 115.0} == {"emails", "reports"}
    oldest = entries[-1]
    assert (oldest["action"], oldest["desired"], oldest["at"]) == ("up", 3, 100.0)
    assert oldest["expires_at"] == 100 + 7 * 86400
    assert store.history("other") == []


def test_a_record_from_a_newer_version_is_refused(store: StateStore, tmp_path: Path) -> None:
    store.acquire_lease("prod", "a", 0.0, 60)
    store.save_memory("prod", "a", 1.0, {"t": TargetMemory()})
    future = json.dumps({"schema_version": 99, "memory": {}})
    overwrite_memory_record(store, "prod", "t", future)
    with pytest.raises(StateError, match="schema version 99"):
        store.load_memory("prod")


def overwrite_memory_record(store: StateStore, deployment: str, target: str,
                            record: str) -> None:
    """Plant a raw record, as a newer celery-ondemand would have written it."""
    if isinstance(store, SQLiteStateStore):
        import sqlite3

        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE memory SET record = ? WHERE deployment = ? AND target = ?",
                       (record, deployment, target))
        return
    assert isinstance(store, DynamoDBStateStore)
    client: Any = store.client
    client.update_item(TableName=store.table,
                       Key={"pk": {"S": f"deployment#{deployment}"},
                            "sk": {"S": f"target#{target}"}},
                       UpdateExpression="SET #r = :r", ExpressionAttributeNames={"#r": "record"},
                       ExpressionAttributeValues={":r": {"S": record}})


def test_dynamodb_history_items_carry_the_ttl_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "t")
        store = DynamoDBStateStore("t", client)
        store.history_days = 2
        store.record("prod", [Decision("emails", 0, 1, "from-zero", "1 task")], 1000.0)
        items = client.scan(TableName="t")["Items"]
        assert [int(i["ttl"]["N"]) for i in items] == [1000 + 2 * 86400]
        ttl = client.describe_time_to_live(TableName="t")["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "ttl" and ttl["TimeToLiveStatus"] == "ENABLED"


def test_dynamodb_errors_are_state_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        store = DynamoDBStateStore("no-such-table", boto3.client("dynamodb",
                                                                 region_name="us-east-1"))
        with pytest.raises(StateError, match="no-such-table"):
            store.load_memory("prod")


def test_the_last_status_is_kept_for_the_status_endpoint(store: StateStore) -> None:
    assert store.load_status("prod") is None
    big = {"queues": {f"q{i}": {"name": f"q{i}", "size": i, "workers": []}
                      for i in range(300)}, "workers": {}, "decisions": []}
    store.save_status("prod", big, 12.5)
    store.save_status("prod", {**big, "decisions": [{"target": "t"}]}, 13.5)
    status = store.load_status("prod")
    assert status is not None and status["saved_at"] == 13.5
    assert status["queues"]["q299"]["size"] == 299 and status["decisions"] == [{"target": "t"}]
    assert store.load_status("other") is None


def test_a_conflicting_or_throttled_save_is_a_state_error_not_a_lost_lease(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB cancels a transaction for a failed condition (the lease is another's) and
    also for a conflict with another write or throttling, with the reason per item: only
    the first is a lost lease. moto does not cancel for conflicts; that one answer is
    injected at the client boundary, after a real lease on moto."""
    from botocore.exceptions import ClientError

    fake_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "state")
        store = DynamoDBStateStore("state", client)
        assert store.acquire_lease("prod", "tick-a", now=10.0, seconds=60)
        with pytest.raises(LeaseLost):  # moto's own cancellation: the condition failed
            store.save_memory("prod", "tick-b", 11.0, {"t": TargetMemory()})

        def cancelled(**_: Any) -> None:
            raise ClientError({"Error": {"Code": "TransactionCanceledException",
                                         "Message": "Transaction cancelled"},
                               "CancellationReasons": [{"Code": "None"},
                                                       {"Code": "TransactionConflict"}]},
                              "TransactWriteItems")

        monkeypatch.setattr(client, "transact_write_items", cancelled)
        with pytest.raises(StateError, match="TransactionConflict") as raised:
            store.save_memory("prod", "tick-a", 11.0, {"t": TargetMemory()})
        assert not isinstance(raised.value, LeaseLost)
