"""The stored status fits one DynamoDB item at scale (moto): 1,000 queues and 2,000 workers
whole; a larger estate trimmed step by step, least useful first (the queues' lists of
worker names, then the workers' detail, then the workers' records), never refused."""

from __future__ import annotations

import random
import uuid
from typing import Any

import boto3
import pytest
from moto import mock_aws

from celery_ondemand.config import settings_from_mapping
from celery_ondemand.decide import decide
from celery_ondemand.model import Observation, QueueStatus, WorkerStatus
from celery_ondemand.remember import DynamoDBStateStore
from celery_ondemand.remember.base import encode_status
from celery_ondemand.remember.dynamodb import STATUS_BUDGET, create_table
from celery_ondemand.tick import TickResult

ITEM_LIMIT = 400 * 1024


def estate_status(workers: int, queues: int, now: float = 1_700_000_000.0) -> dict[str, Any]:
    """The status a tick stores for ``workers`` busy workers over ``queues`` queues (three
    queues a worker, 20 queues a target), with random names: the worst case for zlib."""
    rng = random.Random(workers * 7919 + queues)
    names = [f"orders-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}" for _ in range(queues)]
    observation = Observation(broker="redis://broker:6379/0", observed_at=now, duration=1.2,
                              sources=["broker", "events", "control"])
    for name in names:
        observation.queues[name] = QueueStatus(name=name, size=rng.randrange(500),
                                               consumers=None, oldest_age=rng.random() * 60)
    for i in range(workers):
        hostname = f"celery@ip-10-0-{i % 250}-{i // 250}.{uuid.UUID(int=rng.getrandbits(128))}"
        served = [names[(i * 3 + j) % queues] for j in range(3)]
        worker = WorkerStatus(hostname=hostname, last_heartbeat_at=now - rng.random(),
                              alive=True, active=2, reserved=2, processed=rng.randrange(10**6),
                              concurrency=2, queues=served, heartbeat_interval=2.0,
                              machine=f"arn:aws:ecs:us-east-1:123456789012:task/prod/"
                                      f"{uuid.UUID(int=rng.getrandbits(128)).hex}")
        observation.workers[hostname] = worker
        for name in served:
            observation.queues[name].workers.append(worker)
            observation.queues[name].running = (observation.queues[name].running or 0) + 1
    settings = settings_from_mapping({"broker_url": "redis://broker:6379/0", "targets": [
        {"name": f"t{start}", "queues": names[start:start + 20], "scaler": "local",
         "command": "-", "max_workers": workers} for start in range(0, queues, 20)]})
    decisions, _ = decide(observation, settings, {}, now)
    return TickResult(observation, decisions, started_at=now).status()


@pytest.fixture()
def store(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "t")
        yield DynamoDBStateStore("t", client)


def _stored_bytes(store: DynamoDBStateStore) -> int:
    item = store.client.get_item(TableName="t", Key={"pk": {"S": "deployment#prod"},
                                                     "sk": {"S": "status"}})["Item"]
    return len(item["record"]["B"])


@pytest.mark.parametrize("workers, queues", [(1000, 1000), (2000, 200)])
def test_a_large_estate_status_is_stored_whole(store: DynamoDBStateStore, workers: int,
                                               queues: int) -> None:
    status = estate_status(workers, queues)
    store.save_status("prod", status, 1.0)
    loaded = store.load_status("prod")
    assert loaded is not None and "trimmed" not in loaded
    assert len(loaded["workers"]) == workers and len(loaded["queues"]) == queues
    assert len(loaded["decisions"]) == len(status["decisions"]) == -(-queues // 20)
    assert _stored_bytes(store) < ITEM_LIMIT


def _assert_every_queue_and_decision_kept(status: dict[str, Any],
                                          loaded: dict[str, Any]) -> None:
    assert loaded["queues"].keys() == status["queues"].keys()
    for name, queue in status["queues"].items():  # every queue's figures
        assert {**loaded["queues"][name], "workers": []} == {**queue, "workers": []}
    assert loaded["decisions"] == status["decisions"]


def test_a_status_just_over_the_limit_keeps_every_workers_record(
        store: DynamoDBStateStore) -> None:
    status = estate_status(3000, 1000)
    assert len(encode_status(status, 1.0)) > STATUS_BUDGET  # whole, it would not fit
    store.save_status("prod", status, 1.0)
    loaded = store.load_status("prod")
    assert loaded is not None
    assert loaded["trimmed"] == "left out to fit the stored item: each queue's list of " \
                                "worker names"
    assert loaded["workers"] == status["workers"]  # every record, every detail
    assert all(queue["workers"] == [] and queue["many_workers"] == 9
               for queue in loaded["queues"].values())  # the count stays
    _assert_every_queue_and_decision_kept(status, loaded)
    assert _stored_bytes(store) < ITEM_LIMIT


def test_further_over_every_worker_keeps_its_outline(store: DynamoDBStateStore) -> None:
    status = estate_status(4000, 1000)
    store.save_status("prod", status, 1.0)
    loaded = store.load_status("prod")
    assert loaded is not None and loaded["trimmed"].endswith(
        "; 4000 workers' detail beyond hostname, alive, busy, queues")
    assert loaded["workers"].keys() == status["workers"].keys()
    for hostname, worker in status["workers"].items():
        assert loaded["workers"][hostname] == {key: worker[key] for key in (
            "hostname", "alive", "busy", "queues")}
    _assert_every_queue_and_decision_kept(status, loaded)
    assert _stored_bytes(store) < ITEM_LIMIT


def test_far_over_every_queue_and_decision_is_kept(store: DynamoDBStateStore) -> None:
    status = estate_status(8000, 1000)
    assert len(encode_status(status, 1.0)) > 2 * ITEM_LIMIT
    store.save_status("prod", status, 1.0)
    loaded = store.load_status("prod")
    assert loaded is not None and loaded["trimmed"].endswith("; 8000 workers' records")
    assert loaded["workers"] == {}
    _assert_every_queue_and_decision_kept(status, loaded)
    assert len(loaded["decisions"]) == 50
    assert _stored_bytes(store) < ITEM_LIMIT
