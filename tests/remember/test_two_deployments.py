"""Two deployments (a large estate split in two) share one DynamoDB table (moto) and one
broker: each keeps its own lease, memory, history, status and metrics, though both name
their target ``web``."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from celery_ondemand import Observer, metrics
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.remember import DynamoDBStateStore
from celery_ondemand.remember.dynamodb import create_table
from celery_ondemand.tick import Ticker
from tests.support.brokers import BROKERS, Queues, producer_app, require_broker
from tests.support.faults import emf


def test_two_deployments_share_a_table_without_touching_each_other(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = require_broker(BROKERS["redis"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    queues, producer = Queues(url), producer_app(url)
    busy, idle = queues.new("alpha"), queues.new("beta")
    tickers = {}
    try:
        for _ in range(5):
            producer.send_task("tests.sleep", args=(0,), queue=busy)
        with mock_aws():
            client = boto3.client("dynamodb", region_name="us-east-1")
            create_table(client, "shared")
            for deployment, queue in (("alpha", busy), ("beta", idle)):
                settings = settings_from_mapping({
                    "deployment": deployment, "broker_url": url, "targets": [
                        {"name": "web", "queues": [queue], "scaler": "local", "command": "-",
                         "worker_concurrency": 2, "max_workers": 10}]})
                observer = Observer(url, burst_seconds=0.5, control_timeout=0.5)  # quick
                tickers[deployment] = Ticker(settings, scalers={}, observer=observer,
                                             store=DynamoDBStateStore("shared", client))
            results = {name: ticker.tick(now=1000.0) for name, ticker in tickers.items()}
            for name, result in results.items():
                assert result.ok and not result.lease_lost, (name, result.error)
                metrics.publish(result, tickers[name].settings, 0.5, "Split")
            store = DynamoDBStateStore("shared", client)

            # Both leases held at once, each by its own ticker; a stranger gets neither.
            assert not store.acquire_lease("alpha", "stranger", 1001.0, 60)
            assert not store.acquire_lease("beta", "stranger", 1001.0, 60)
            assert tickers["alpha"].store.acquire_lease("alpha", tickers["alpha"].owner,
                                                        1002.0, 60)
            # Memory, history and status: each deployment reads back its own.
            alpha, beta = store.load_memory("alpha")["web"], store.load_memory("beta")["web"]
            assert alpha.to_dict() != beta.to_dict()
            assert [d["desired"] for d in store.history("alpha")] == [3]  # 5 tasks, 2 a worker
            assert [d["desired"] for d in store.history("beta")] == [0]
            alpha_status, beta_status = store.load_status("alpha"), store.load_status("beta")
            assert alpha_status is not None and beta_status is not None
            assert set(alpha_status["queues"]) == {busy} and set(beta_status["queues"]) == {idle}
            # A tick of beta saves nothing over alpha's memory, even ticking again.
            tickers["beta"].tick(now=1010.0)
            assert store.load_memory("alpha")["web"].to_dict() == alpha.to_dict()
    finally:
        for ticker in tickers.values():
            ticker.close()
        queues.delete_all()
        producer.close()
    desired = {(b["deployment"], b["target"]): b["DesiredWorkers"]
               for b in emf(capsys.readouterr().out) if "DesiredWorkers" in b}
    assert desired == {("alpha", "web"): [3.0], ("beta", "web"): [0.0]}
