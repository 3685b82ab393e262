"""A rotated broker secret: the tick the broker refuses makes the next read the secret
afresh, instead of waiting out its five-minute cache blind (a real redis-server that
demands a password, Secrets Manager on a moto server)."""

from __future__ import annotations

import boto3
import pytest
import yaml
from aws_lambda_powertools.utilities import parameters

from celery_ondemand import aws_lambda
from celery_ondemand.remember.dynamodb import create_table
from tests.support.aws import LambdaContext, function_handler, scheduler_event
from tests.support.brokers import private_redis

pytestmark = pytest.mark.broker


def test_a_refused_secret_is_read_again_at_the_next_tick(
        moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"POWERTOOLS_TRACE_DISABLED": "true",
                        "ONDEMAND_CONFIG_PARAMETER": "/ondemand/config",
                        "ONDEMAND_BROKER_SECRET": "ondemand/broker",
                        "ONDEMAND_STATE_TABLE": "ondemand"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ONDEMAND_CONFIG_MAX_AGE", raising=False)  # the 300 s cache
    monkeypatch.delenv("ONDEMAND_TICK_QUEUE_URL", raising=False)
    monkeypatch.setattr(aws_lambda, "_warm", None)
    parameters.clear_caches()
    clients = {n: boto3.client(n, region_name="us-east-1")
               for n in ("ssm", "secretsmanager", "dynamodb")}
    create_table(clients["dynamodb"], "ondemand")
    clients["ssm"].put_parameter(Name="/ondemand/config", Type="String", Value=yaml.safe_dump({
        "tick_interval_seconds": 60, "targets": [
            {"name": "t", "queues": ["rotated"], "scaler": "local", "command": "true"}]}))
    with private_redis("--requirepass", "new-password") as port:
        clients["secretsmanager"].create_secret(
            Name="ondemand/broker", SecretString=f"redis://:old-password@127.0.0.1:{port}/0")
        handler = function_handler("autoscaler")
        refused = handler(scheduler_event(), LambdaContext())
        assert not refused["ok"] and "credentials refused" in refused["errors"][0]
        clients["secretsmanager"].put_secret_value(
            SecretId="ondemand/broker", SecretString=f"redis://:new-password@127.0.0.1:{port}/0")
        rotated = handler(scheduler_event(), LambdaContext())
        assert rotated["ok"], rotated
    if aws_lambda._warm is not None:
        aws_lambda._warm.ticker.close()
