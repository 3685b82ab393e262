"""The scheduled Lambda never scales down on a failed read.

The target starts from the memory an earlier invocation left in DynamoDB: idle for an
hour, far past ``scale_down_delay_seconds`` (300 s). A healthy read would take it to zero,
so when the broker refuses the connection only the blind rule stands between the ECS
service and a scale-down. The handler is invoked in-process (no Docker engine for
``sam local``); AWS is a moto server reached through ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import yaml
from aws_lambda_powertools.utilities import parameters

from celery_ondemand import TargetMemory, aws_lambda
from celery_ondemand.remember import DynamoDBStateStore
from celery_ondemand.remember.dynamodb import create_table
from tests.support.aws import SCHEDULER_EVENT, LambdaContext, ecs_service_with_tasks
from tests.support.brokers import unique
from tests.support.cli import closed_port

pytestmark = pytest.mark.broker
FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
DEPLOYMENT = "prod"


def autoscaler() -> ModuleType:
    """The deployed handler module, functions/autoscaler/app.py."""
    spec = importlib.util.spec_from_file_location("autoscaler_app",
                                                  FUNCTIONS / "autoscaler" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {"POWERTOOLS_TRACE_DISABLED": "true",
                        "POWERTOOLS_METRICS_NAMESPACE": "TestOnDemand",
                        "ONDEMAND_CONFIG_PARAMETER": "/ondemand/config",
                        "ONDEMAND_BROKER_SECRET": "ondemand/broker",
                        "ONDEMAND_STATE_TABLE": "ondemand",
                        "ONDEMAND_DEPLOYMENT": DEPLOYMENT,
                        "ONDEMAND_SCHEDULE_SECONDS": "2",
                        # each invocation reads the secret the test just set
                        "ONDEMAND_CONFIG_MAX_AGE": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(aws_lambda, "_warm", None)  # a cold container
    parameters.clear_caches()
    clients = {n: boto3.client(n, region_name="us-east-1")
               for n in ("ssm", "secretsmanager", "dynamodb", "ecs", "ec2")}
    create_table(clients["dynamodb"], "ondemand")
    ecs_service_with_tasks(clients["ecs"], clients["ec2"], tasks=2)
    yield clients
    if aws_lambda._warm is not None:
        aws_lambda._warm.ticker.close()


def desired_count(aws: dict[str, Any]) -> int:
    service = aws["ecs"].describe_services(cluster="prod", services=["workers"])
    return int(service["services"][0]["desiredCount"])


def leave_memory(aws: dict[str, Any], memory: TargetMemory) -> None:
    """Write the target's memory as an earlier invocation would have left it."""
    store = DynamoDBStateStore("ondemand", aws["dynamodb"])
    now = time.time()
    assert store.acquire_lease(DEPLOYMENT, "an-earlier-invocation", now, 60)
    store.save_memory(DEPLOYMENT, "an-earlier-invocation", now, {"emails": memory})
    store.release_lease(DEPLOYMENT, "an-earlier-invocation")


def point_at(aws: dict[str, Any], broker_url: str) -> None:
    """The stack's secret holds the broker URL; a changed secret is read afresh."""
    try:
        aws["secretsmanager"].create_secret(Name="ondemand/broker", SecretString=broker_url)
    except aws["secretsmanager"].exceptions.ResourceExistsException:
        aws["secretsmanager"].put_secret_value(SecretId="ondemand/broker",
                                               SecretString=broker_url)
    parameters.clear_caches()


def test_a_failed_read_never_scales_down_a_long_idle_target(
        aws: dict[str, Any], redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    queue = unique("ondemand-blind")  # never published to: nothing to delete afterwards
    aws["ssm"].put_parameter(Name="/ondemand/config", Type="String", Value=yaml.safe_dump({
        "targets": [{"name": "emails", "queues": [queue], "scaler": "ecs", "cluster": "prod",
                     "service": "workers", "worker_concurrency": 2, "max_workers": 6,
                     "scale_down_delay_seconds": 300}]}))
    leave_memory(aws, TargetMemory(idle_since=time.time() - 3600, last_desired=2))
    assert desired_count(aws) == 2

    point_at(aws, f"redis://127.0.0.1:{closed_port()}/0")
    outage = autoscaler().handler(SCHEDULER_EVENT, LambdaContext())
    assert not outage["ok"] and any("refused" in e for e in outage["errors"]), outage
    decision = outage["decisions"][0]
    assert (decision["desired"], decision["rule"]) == (2, "blind"), decision
    assert desired_count(aws) == 2, "a failed read must never scale down"
    memory = DynamoDBStateStore("ondemand", aws["dynamodb"]).load_memory(DEPLOYMENT)
    assert memory["emails"].failed_reads >= 1 and memory["emails"].idle_since is not None

    # The same memory read through a healthy broker scales in: the hold above was the
    # blind rule's, not the idle delay's.
    point_at(aws, redis_url)
    healthy = autoscaler().handler(SCHEDULER_EVENT, LambdaContext())
    assert healthy["ok"], healthy
    assert (healthy["decisions"][0]["desired"], healthy["decisions"][0]["rule"]) == (0, "idle")
    assert desired_count(aws) == 0
    capsys.readouterr()
