"""The broker URL from Secrets Manager (moto), plain or as JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from celery_ondemand import ConfigError
from celery_ondemand.tick import resolve_broker_url
from tests.support.observations import settings


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def with_secret(name: str) -> Any:
    base = settings()
    from dataclasses import replace

    return replace(base, broker_url=None, broker_url_secret=name)


def test_plain_and_json_secrets(secrets: Any) -> None:
    secrets.create_secret(Name="plain", SecretString="amqp://u:p@rabbit//")
    secrets.create_secret(Name="json", SecretString='{"broker_url": "redis://r:6379/0"}')
    assert resolve_broker_url(with_secret("plain")) == "amqp://u:p@rabbit//"
    assert resolve_broker_url(with_secret("json")) == "redis://r:6379/0"


def test_missing_or_empty_secrets_are_config_errors(secrets: Any) -> None:
    secrets.create_secret(Name="empty", SecretString='{"other": 1}')
    with pytest.raises(ConfigError, match="holds no broker URL"):
        resolve_broker_url(with_secret("empty"))
    with pytest.raises(ConfigError, match="cannot read secret 'absent'"):
        resolve_broker_url(with_secret("absent"))
