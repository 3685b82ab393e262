"""One tick run and reported the way the Lambda does, with what it reported collected:
the result, its wall-clock duration, its metrics (EMF) and its log lines. The fault tests
assert on all four; the Lambda tests read EMF and logs with the same helpers."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest

from celery_ondemand import aws_lambda, metrics
from celery_ondemand.tick import Ticker, TickResult

TICK_BUDGET_SECONDS = 15.0
"""A tick must end within one default tick interval, whatever goes wrong."""


@dataclass
class Reported:
    result: TickResult
    seconds: float
    blobs: list[dict[str, Any]]
    logs: list[dict[str, Any]]

    def metric(self, name: str, **dimensions: str) -> float:
        """The value of metric ``name`` in the blob with exactly these dimensions; zero for
        one printed only when not zero (:data:`metrics.WHEN_NOT_ZERO`) and absent."""
        for blob in self.blobs:
            declared = blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
            if name in blob and set(declared) == {"deployment", *dimensions} and all(
                    blob[k] == v for k, v in dimensions.items()):
                value = blob[name]
                return float(value[0] if isinstance(value, list) else value)
        if name in metrics.WHEN_NOT_ZERO:
            return 0.0
        raise AssertionError(f"no metric {name} {dimensions} in {self.blobs}")

    def logged(self, level: str, *words: str) -> bool:
        """Whether a log line at ``level`` holds every one of ``words``."""
        return any(log["level"] == level and all(w in log["message"] for w in words)
                   for log in self.logs)


def reported_tick(ticker: Ticker, capsys: pytest.CaptureFixture[str],
                  caplog: pytest.LogCaptureFixture, now: float | None = None) -> Reported:
    capsys.readouterr()
    caplog.clear()
    began = time.monotonic()
    result = ticker.tick(now=now)
    seconds = time.monotonic() - began
    aws_lambda.report_tick(result, ticker.settings, seconds)
    return Reported(result, seconds, emf(capsys.readouterr().out), lambda_logs(caplog))


def emf(output: str) -> list[dict[str, Any]]:
    """The EMF blobs (CloudWatch metrics) among printed lines."""
    return [json.loads(line) for line in output.splitlines()
            if line.startswith("{") and '"_aws"' in line]


def lambda_logs(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The Lambda logger's records, formatted as Powertools prints them."""
    formatter = aws_lambda.logger.registered_formatter
    return [json.loads(formatter.format(record)) for record in caplog.records
            if record.name == "celery-ondemand"]
