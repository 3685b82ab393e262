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
from tests.support.proxy import Proxy

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
    process = start_run(broker_url, tmp_path)
    printed = read_ticks(process, 2)
    process.send_signal(signal.SIGINT)
    out, err = ended(process, within=30)
    assert process.returncode == 130, err
    assert "".join([*printed, out]).count('"decisions"') >= 2
    assert "Traceback" not in err


def test_sigterm_stops_run_as_ctrl_c_does_releasing_the_lease(
        redis_url: str, tmp_path: Path) -> None:
    """``docker stop`` and systemd send SIGTERM: the run must end by itself and give the
    lease back, so the next process ticks at once instead of after the lease expires."""
    import sqlite3

    process = start_run(redis_url, tmp_path)
    read_ticks(process, 2)
    process.send_signal(signal.SIGTERM)
    _, err = ended(process, within=30)
    assert process.returncode == 143, err
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT count(*) FROM lease").fetchone() == (0,)


def test_ctrl_c_while_the_broker_stalls_exits_without_waiting_on_it(
        rabbitmq_url: str, tmp_path: Path) -> None:
    """Ctrl-C lands mid-read on a broker that stopped answering: the run must end at once,
    not after a closing handshake the broker will not answer (one read timeout per
    channel and one for the connection, 5 s each) — nor hang on a frame cut in half."""
    port = int(rabbitmq_url.rsplit(":", 1)[1].split("/")[0])
    proxy = Proxy(port)
    try:
        process = start_run(rabbitmq_url.replace(f":{port}", f":{proxy.port}"), tmp_path)
        read_ticks(process, 2)
        proxy.delay = 600.0  # every byte from now on waits: the broker stalls
        time.sleep(1.0)  # the next tick is under way, waiting on the broker
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = ended(process, within=60)
        took = time.monotonic() - interrupted
    finally:
        proxy.close()
    assert process.returncode == 130, err
    assert took < 4.0, f"Ctrl-C took {took:.1f}s: the run waited on the stalled broker"


def start_run(broker_url: str, tmp_path: Path) -> subprocess.Popen[str]:
    """``ondemand run`` ticking every 0.5 s on one empty queue, stoppable by SIGINT."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"broker_url": broker_url, "targets": [{
        "name": "t", "queues": ["ondemand-run-test"], "scaler": "local",
        "command": "celery worker", "state_dir": str(tmp_path / "w")}]}))
    return subprocess.Popen(
        [sys.executable, "-m", "celery_ondemand.cli", "run", "--config", str(config),
         "--state", str(tmp_path / "state.db"), "--interval", "0.5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"}, preexec_fn=interruptible)


def read_ticks(process: subprocess.Popen[str], ticks: int) -> list[str]:
    """What the run printed until it reported ``ticks`` ticks, however slow."""
    assert process.stdout is not None
    printed: list[str] = []
    deadline = time.monotonic() + 90
    while "".join(printed).count('"decisions"') < ticks:
        assert time.monotonic() < deadline and process.poll() is None, "".join(printed)
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            printed.append(process.stdout.readline())
    return printed


def ended(process: subprocess.Popen[str], within: float) -> tuple[str, str]:
    """The process's output once it exits; if it has not within ``within`` seconds, fail
    with every thread's stack (SIGABRT, which ``PYTHONFAULTHANDLER`` makes print them)."""
    try:
        return process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _, err = process.communicate(timeout=30)
        pytest.fail(f"still running {within:.0f}s after SIGINT; its threads:\n{err[-6000:]}")
