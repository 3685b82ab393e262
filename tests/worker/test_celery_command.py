"""``celery -A proj ondemand status|tick``, found by Celery through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.brokers import Queues, producer_app
from tests.support.workers import ROOT, Fleet

pytestmark = pytest.mark.broker


def celery(broker_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ONDEMAND_TEST_BROKER=broker_url, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "celery", "-A", "tests.support.proj",
                           "ondemand", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60, check=False)


def test_status_and_tick_use_the_apps_own_broker(broker_url: str, fleet: Fleet) -> None:
    queues = Queues(broker_url)
    name = queues.new("cmd")
    producer = producer_app(broker_url)
    try:
        worker = fleet.start([name], name="cmd")
        for _ in range(3):
            producer.send_task("tests.sleep", args=(0,), queue=queues.new("waiting"))
        status = celery(broker_url, "status", "--queue", name, "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["queues"][name]["workers"] == [worker.hostname]

        tick = celery(broker_url, "tick", "--json")
        assert tick.returncode == 0, tick.stderr
        decisions = json.loads(tick.stdout)["decisions"]
        assert decisions and all(d["dry_run"] for d in decisions)
        assert [d["target"] for d in decisions] == ["celery"], "the app's default queue"
    finally:
        producer.close()
        queues.delete_all()
