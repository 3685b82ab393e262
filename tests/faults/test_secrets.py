"""The broker password never leaves the process: a full run against a real redis-server
that demands it, with a real worker — the command line (status, tick, the Celery
sub-command), the Lambda (summary, stdout, stderr, our logs and the kombu, Celery,
redis-py and botocore loggers, metrics), the status URL, the state in DynamoDB, and the
errors after the broker goes away — and every output is searched, for a plain password
and for one full of the characters a URL gives meaning to."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import boto3
import pytest
import yaml
from aws_lambda_powertools.utilities import parameters

from celery_ondemand import aws_lambda
from celery_ondemand.remember import DynamoDBStateStore
from celery_ondemand.remember.dynamodb import create_table
from tests.support.aws import SCHEDULER_EVENT, LambdaContext, ecs_service_with_tasks
from tests.support.brokers import private_redis, producer_app, unique
from tests.support.cli import SECRET, ondemand
from tests.support.faults import lambda_logs
from tests.support.workers import ROOT, Fleet

pytestmark = pytest.mark.broker


SPECIAL = "Tr0ub4d0r@:/%#?&+h0rs3St4ple"
"""A password full of the characters a URL gives meaning to: it must be percent-encoded in
the URL, and a leak could show it raw, encoded, or cut at any of them."""

LIBRARY_LOG_LEVELS = {"kombu": logging.DEBUG, "celery": logging.DEBUG, "amqp": logging.DEBUG,
                      "redis": logging.DEBUG, "botocore": logging.INFO, "boto3": logging.INFO,
                      "urllib3": logging.INFO}
"""Every library on the broker's path is heard at DEBUG. The AWS SDK is heard at INFO:
its DEBUG wire log prints every response body by design, the secret's value included (an
operator who turns it on opts into that)."""


def forms(password: str) -> set[str]:
    """Every way the password could appear: raw, percent-encoded (as in a path or a query),
    and its long runs of letters and digits (a mask that stops at a special character)."""
    found = {password, quote(password, safe=""), quote(password), quote_plus(password)}
    return found | {run for run in re.findall(r"[A-Za-z0-9]+", password) if len(run) >= 8}


def every_log_line(caplog: pytest.LogCaptureFixture) -> str:
    """Every record any logger emitted — ours, and kombu's, Celery's, redis-py's and
    botocore's — with its arguments and any traceback."""
    lines = []
    for record in caplog.records:
        lines.append(f"{record.name} {record.levelname} {record.getMessage()}")
        if record.exc_info and record.exc_info[1] is not None:
            lines.append("".join(traceback.format_exception(*record.exc_info)))
    return "\n".join(lines)


def lambda_run(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
               ) -> dict[str, str]:
    """One scheduled invocation and one status request, and everything they printed or
    logged: stdout, stderr, our JSON logs and every library's log records."""
    capsys.readouterr()
    caplog.clear()
    summary = aws_lambda.autoscaler_handler(SCHEDULER_EVENT, LambdaContext())
    status = aws_lambda.status_handler({"requestContext": {}}, LambdaContext())
    printed = capsys.readouterr()
    return {"summary": json.dumps(summary), "stdout": printed.out, "stderr": printed.err,
            "logs": json.dumps(lambda_logs(caplog)), "library logs": every_log_line(caplog),
            "status URL": json.dumps(status)}


@pytest.mark.parametrize("password", [SECRET, SPECIAL], ids=["plain", "url-special"])
def test_the_broker_password_is_in_no_output_of_a_full_run(
        password: str, moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    for name, level in LIBRARY_LOG_LEVELS.items():
        caplog.set_level(level, logger=name)
    caplog.set_level(logging.DEBUG, logger="celery-ondemand")
    aws = {n: boto3.client(n, region_name="us-east-1")
           for n in ("ecs", "ec2", "dynamodb", "ssm", "secretsmanager")}
    ecs_service_with_tasks(aws["ecs"], aws["ec2"], tasks=0)
    create_table(aws["dynamodb"], "ondemand")
    served, waiting = unique("ondemand-secret-served"), unique("ondemand-secret-waiting")
    target = {"name": "emails", "queues": [served, waiting], "scaler": "ecs",
              "cluster": "prod", "service": "workers", "worker_concurrency": 2,
              "max_workers": 4}
    outputs: dict[str, str] = {}

    def run(label: str, *args: str, ok: bool = True) -> None:
        result = ondemand(*args)
        assert (result.returncode == 0) == ok, result.stderr
        outputs[label] = result.stdout + result.stderr

    with private_redis("--requirepass", password, "--appendonly", "no") as port:
        url = f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"
        config = tmp_path / "ondemand.yaml"
        config.write_text(yaml.safe_dump({"broker_url": url, "state_table": "ondemand",
                                          "deployment": "cli", "targets": [target]}))
        fleet, producer = Fleet(url), producer_app(url)
        try:
            fleet.start([served], name="secret", events=True)
            for _ in range(4):
                producer.send_task("tests.sleep", args=(0,), queue=waiting)
            run("status", "status", "--broker", url, "--queue", served, "--queue", waiting)
            run("status --json", "status", "--broker", url, "--queue", waiting, "--json")
            run("tick --json", "tick", "--config", str(config), "--json")
            run("tick", "tick", "--config", str(config))
            celery = subprocess.run(
                [sys.executable, "-m", "celery", "-A", "tests.support.proj", "ondemand",
                 "status"], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
                env={**os.environ, "ONDEMAND_TEST_BROKER": url, "PYTHONPATH": str(ROOT)})
            assert celery.returncode == 0, celery.stderr
            outputs["celery ondemand status"] = celery.stdout + celery.stderr

            aws["secretsmanager"].create_secret(Name="ondemand/broker", SecretString=url)
            aws["ssm"].put_parameter(Name="/ondemand/config", Type="String",
                                     Value=yaml.safe_dump({"targets": [target]}))
            for name, value in {"ONDEMAND_CONFIG_PARAMETER": "/ondemand/config",
                                "ONDEMAND_BROKER_SECRET": "ondemand/broker",
                                "ONDEMAND_STATE_TABLE": "ondemand",
                                "ONDEMAND_DEPLOYMENT": "prod",
                                "ONDEMAND_SCHEDULE_SECONDS": "2",
                                "POWERTOOLS_TRACE_DISABLED": "true"}.items():
                monkeypatch.setenv(name, value)
            monkeypatch.setattr(aws_lambda, "_warm", None)
            parameters.clear_caches()
            healthy = lambda_run(capsys, caplog)
            assert json.loads(healthy["summary"])["ok"], healthy["summary"]
            outputs.update({f"lambda {k}": v for k, v in healthy.items()})
        finally:
            fleet.stop()
            producer.close()

    # The broker is gone: every error names it, masked.
    run("status, broker gone", "status", "--broker", url, "--connect-timeout", "2", ok=False)
    run("tick, broker gone", "tick", "--config", str(config), ok=False)
    outage = lambda_run(capsys, caplog)
    assert not json.loads(outage["summary"])["ok"]
    assert "127.0.0.1" in outage["logs"], "the error names the broker, without its password"
    outputs.update({f"lambda, broker gone, {k}": v for k, v in outage.items()})
    if aws_lambda._warm is not None:
        aws_lambda._warm.ticker.close()
    items: list[dict[str, Any]] = aws["dynamodb"].scan(TableName="ondemand")["Items"]
    assert len(items) >= 4, "state, history and status were written"
    outputs["DynamoDB table"] = json.dumps(items, default=str)
    store = DynamoDBStateStore("ondemand", aws["dynamodb"])  # the status item is compressed
    for deployment in ("cli", "prod"):
        outputs[f"stored status, {deployment}"] = json.dumps(store.load_status(deployment))
        outputs[f"stored memory, {deployment}"] = json.dumps(
            {k: m.to_dict() for k, m in store.load_memory(deployment).items()})

    # Every output searched holds something (stderr may rightly be empty).
    assert all(v or "stderr" in k for k, v in outputs.items()), \
        [k for k, v in outputs.items() if not v]
    assert "botocore" in outputs["lambda library logs"], "the library loggers were heard"
    for label, text in outputs.items():
        for form in forms(password):
            assert form not in text, f"the password leaked into: {label} (as {form!r})"
