"""The Lambda handlers invoked in-process (no Docker engine for ``sam local``), with a
real broker and real workers, and AWS (SSM, Secrets Manager, DynamoDB, ECS) on a moto
server reached through ``AWS_ENDPOINT_URL``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import yaml
from aws_lambda_powertools.utilities import parameters
from moto.server import ThreadedMotoServer

from celery_ondemand import aws_lambda
from celery_ondemand.remember.dynamodb import create_table
from tests.support.aws import (
    LambdaContext,
    ecs_service_with_tasks,
    function_handler,
    reset_moto_server,
    scheduler_event,
)
from tests.support.brokers import Queues, producer_app
from tests.support.cli import SECRET, closed_port
from tests.support.faults import TICK_BUDGET_SECONDS, emf, lambda_logs
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    reset_moto_server(endpoint)
    for name, value in {
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "TestOnDemand",
            "ONDEMAND_CONFIG_PARAMETER": "/ondemand/config",
            "ONDEMAND_BROKER_SECRET": "ondemand/broker", "ONDEMAND_STATE_TABLE": "ondemand",
            "ONDEMAND_SCHEDULE_SECONDS": "3"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(aws_lambda, "_warm", None)  # every test starts cold
    parameters.clear_caches()
    clients = {n: boto3.client(n, region_name="us-east-1")
               for n in ("ssm", "secretsmanager", "dynamodb", "ecs", "ec2")}
    create_table(clients["dynamodb"], "ondemand")
    ecs_service_with_tasks(clients["ecs"], clients["ec2"], tasks=1)
    yield clients
    if aws_lambda._warm is not None:
        aws_lambda._warm.ticker.close()
    server.stop()


def configure(aws: dict[str, Any], broker_url: str, queue: str) -> None:
    aws["secretsmanager"].create_secret(Name="ondemand/broker", SecretString=broker_url)
    aws["ssm"].put_parameter(Name="/ondemand/config", Type="String", Value=yaml.safe_dump({
        "deployment": "prod",  # the broker comes from the stack's secret
        "tick_interval_seconds": 1, "targets": [{
            "name": "emails", "queues": [queue], "scaler": "ecs", "cluster": "prod",
            "service": "workers", "worker_concurrency": 2, "max_workers": 6}]}))


def desired_count(aws: dict[str, Any]) -> int:
    service = aws["ecs"].describe_services(cluster="prod", services=["workers"])
    return int(service["services"][0]["desiredCount"])


def test_a_scheduled_invocation_ticks_scales_remembers_and_reports(
        redis_url: str, aws: dict[str, Any], capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    broker = redis_url.replace("redis://", f"redis://:{SECRET}@")  # the server ignores it
    queues, fleet, producer = Queues(redis_url), Fleet(redis_url), producer_app(redis_url)
    try:
        name = queues.new("lambda")
        fleet.start([queues.new("elsewhere")], name="lambda")
        for _ in range(5):
            producer.send_task("tests.sleep", args=(0,), queue=name)
        configure(aws, broker, name)

        started = time.monotonic()
        summary = function_handler("autoscaler")(scheduler_event(period_seconds=4),
                                             LambdaContext())
        elapsed = time.monotonic() - started
        output = capsys.readouterr().out

        assert summary["ok"] and summary["errors"] == []
        assert aws_lambda._warm is not None and aws_lambda._warm.ticker.observer._probe is None, \
            "the broker connection is closed at the end of each invocation (Lambda may " \
            "freeze the container and never come back)"
        # The loop's arithmetic is exact in test_schedule_loop.py; in real time, only that
        # the invocation ticked and ended within the period plus one tick's budget (the
        # first tick always runs, however long a loaded machine makes it).
        assert summary["ticks"] >= 1
        assert elapsed < 4 + TICK_BUDGET_SECONDS
        assert desired_count(aws) == 3  # 5 waiting tasks, 2 per worker
        assert summary["decisions"][0]["desired"] == 3
        blobs = emf(output)
        names = {m["Name"] for b in blobs for d in b["_aws"]["CloudWatchMetrics"]
                 for m in d["Metrics"]}
        assert {"Ready", "DesiredWorkers", "LiveWorkers", "BusyWorkers",
                "TickDuration", "SuccessfulTicks"} <= names
        assert all(d["Namespace"] == "TestOnDemand" for b in blobs
                   for d in b["_aws"]["CloudWatchMetrics"])
        ready = [b for b in blobs if "Ready" in b]
        assert ready[0]["Ready"] == [5.0] and "queue" not in ready[0], "per target by default"
        assert ready[0]["target"] == "emails" and ready[0]["deployment"] == "prod"
        assert sum(b.get("SuccessfulTicks", [0])[0] for b in blobs) == summary["ticks"]
        logs = lambda_logs(caplog)
        assert [log["message"] for log in logs] == ["tick"] * summary["ticks"]
        assert all(log["function_request_id"] == "req-1" for log in logs)
        assert logs[0]["decisions"][0]["action"] == "up"
        assert SECRET not in json.dumps(logs)
        assert SECRET not in output

        status = function_handler("status")({"requestContext": {}}, LambdaContext())
        assert status["statusCode"] == 200
        body = json.loads(status["body"])
        assert body["queues"][name]["size"] == 5 and "workers" in body
        assert body["decisions"][0]["target"] == "emails"
        items = aws["dynamodb"].scan(TableName="ondemand")["Items"]
        assert {i["sk"]["S"].split("#")[0] for i in items} >= {"target", "status"}
    finally:
        fleet.stop()
        queues.delete_all()
        producer.close()


def test_a_broker_outage_returns_in_time_with_an_error_metric(
        aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    configure(aws, f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0", "emails")
    aws["ecs"].update_service(cluster="prod", service="workers", desiredCount=2)

    started = time.monotonic()
    summary = function_handler("autoscaler")(scheduler_event(period_seconds=3),
                                         LambdaContext(timeout_seconds=90))
    elapsed = time.monotonic() - started
    output = capsys.readouterr().out

    assert elapsed < 4 and not summary["ok"]
    assert any("refused" in error for error in summary["errors"])
    # That a failed read never scales down is proven in test_blind_lambda.py, from a memory
    # where only the blind rule stands between the target and a scale-down.
    blobs = emf(output)
    assert [b["BrokerUnavailable"] for b in blobs if "BrokerUnavailable" in b] == [[1.0]] * \
        summary["ticks"]
    assert all(b["Errors"] == [1.0] for b in blobs if "Errors" in b)
    assert SECRET not in output


@pytest.mark.parametrize("problem", ["missing", "invalid"])
def test_a_missing_or_invalid_config_is_an_error_metric_not_a_crash(
        aws: dict[str, Any], problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    if problem == "invalid":
        aws["ssm"].put_parameter(Name="/ondemand/config", Type="String",
                                 Value="targets: [{name: t, queues: [q], scaler: warp}]")
    summary = function_handler("autoscaler")(scheduler_event(), LambdaContext())
    assert summary["ok"] is False and summary["ticks"] == 0
    expected = "/ondemand/config" if problem == "missing" else "targets[0]"
    assert expected in summary["errors"][0]
    blobs = emf(capsys.readouterr().out)
    assert [b["Errors"] for b in blobs] == [[1.0]] and blobs[0]["deployment"] == "default"


def test_a_bad_config_push_leaves_a_warm_container_ticking_on_the_last_valid_one(
        redis_url: str, aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """An operator's bad edit of the parameter must not freeze every target: a backlog
    that arrives after it still scales out, while the error is counted until it is fixed.
    (A container that never read a valid configuration has none to keep: see above.)"""
    queues, fleet, producer = Queues(redis_url), Fleet(redis_url), producer_app(redis_url)
    try:
        name = queues.new("lambda")
        fleet.start([queues.new("elsewhere")], name="lambda")
        configure(aws, redis_url, name)
        good = function_handler("autoscaler")(scheduler_event(period_seconds=1),
                                              LambdaContext())
        assert good["ok"] and desired_count(aws) == 1
        aws["ssm"].put_parameter(Name="/ondemand/config", Type="String", Overwrite=True,
                                 Value="targets: [{name: t, queues: [q], scaler: warp}]")
        aws_lambda._clients().parameter.clear_cache()  # the cached value has expired
        for _ in range(5):
            producer.send_task("tests.sleep", args=(0,), queue=name)
        capsys.readouterr()
        summary = function_handler("autoscaler")(scheduler_event(period_seconds=1),
                                                 LambdaContext())
        assert summary["ticks"] >= 1 and not summary["ok"]
        assert any("targets[0]" in e and "last valid configuration" in e
                   for e in summary["errors"])
        assert desired_count(aws) == 3, "the backlog was not scaled out"
        blobs = emf(capsys.readouterr().out)
        assert sum(b.get("Errors", [0])[0] for b in blobs) >= 1, "the bad push went unseen"
    finally:
        fleet.stop()
        queues.delete_all()
        producer.close()
