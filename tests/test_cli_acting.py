"""``ondemand tick`` and ``ondemand run`` acting for real: a real broker, AWS on a moto
server (``ThreadedMotoServer``) reached only through boto3's standard ``AWS_ENDPOINT_URL``."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from celery_ondemand.remember.dynamodb import create_table
from tests.support.aws import ecs_service_with_tasks
from tests.support.brokers import Queues, producer_app
from tests.support.cli import interruptible, ondemand

pytestmark = pytest.mark.broker


def client(name: str) -> Any:
    return boto3.client(name, region_name="us-east-1")


def test_tick_scales_an_ecs_service_and_remembers_in_dynamodb(
        broker_url: str, moto_server: str, tmp_path: Path) -> None:
    ecs_service_with_tasks(client("ecs"), client("ec2"), tasks=0)
    create_table(client("dynamodb"), "ondemand")
    queues = Queues(broker_url)
    name = queues.new("ecs")
    producer = producer_app(broker_url)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"broker_url": broker_url, "state_table": "ondemand",
                                  "deployment": "prod", "targets": [{
                                      "name": "emails", "queues": [name], "scaler": "ecs",
                                      "cluster": "prod", "service": "workers",
                                      "worker_concurrency": 2, "max_workers": 8}]}))
    try:
        for _ in range(5):
            producer.send_task("tests.sleep", args=(0,), queue=name)
        first = ondemand("tick", "--config", str(config), "--json")
        assert first.returncode == 0, first.stderr
        decision = json.loads(first.stdout)["decisions"][0]
        assert (decision["current"], decision["desired"], decision["applied"]) == (0, 3, True)
        service = client("ecs").describe_services(cluster="prod", services=["workers"])
        assert service["services"][0]["desiredCount"] == 3

        again = ondemand("tick", "--config", str(config), "--json")  # a new process
        repeat = json.loads(again.stdout)["decisions"][0]
        assert (repeat["current"], repeat["desired"], repeat["action"]) == (3, 3, "hold")
        items = client("dynamodb").scan(TableName="ondemand")["Items"]
        kinds = sorted(i["sk"]["S"].split("#")[0] for i in items)
        assert kinds.count("target") == 1 and len([i for i in items if "ttl" in i]) == 2
    finally:
        producer.close()
        queues.delete_all()


def test_run_ticks_until_interrupted(broker_url: str, tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"broker_url": broker_url, "targets": [{
        "name": "t", "queues": ["ondemand-run-test"], "scaler": "local",
        "command": "celery worker", "state_dir": str(tmp_path / "w")}]}))
    process = subprocess.Popen(
        [sys.executable, "-m", "celery_ondemand.cli", "run", "--config", str(config),
         "--state", str(tmp_path / "state.db"), "--interval", "0.5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        preexec_fn=interruptible)
    assert process.stdout is not None
    printed: list[str] = []
    deadline = time.monotonic() + 90
    while "".join(printed).count('"decisions"') < 2:  # two ticks reported, however slow
        assert time.monotonic() < deadline and process.poll() is None, "".join(printed)
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            printed.append(process.stdout.readline())
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "".join([*printed, out]).count('"decisions"') >= 2
    assert "Traceback" not in err
