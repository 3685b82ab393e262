"""A cwod program built as cwod's own example is (see :mod:`tests.support.cwod_example`),
moved over by one import, run as cwod's example README runs it.

``python -m tests.support.cwod_example`` is the agent service; ``python -m
tests.support.cwod_example.run_task_add`` publishes ``add(2, 1)`` and waits for the result.
With no worker serving the queue, the result can only come if the service starts one; the
service must then stop it once idle, and start the same box again for the next task.
Boxes are real ``celery worker`` processes (see :mod:`tests.support.cwod_example.boxes`),
stopped by PID at the end whatever happened.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.brokers import Queues, unique
from tests.support.workers import ROOT

pytestmark = pytest.mark.broker

EXAMPLE = "tests.support.cwod_example"


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def get_status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        decoded: dict[str, Any] = json.loads(response.read())
        return decoded


def pids(folder: Path) -> dict[str, int]:
    """Every worker process the example started: ``<box id>.<start n>`` → PID."""
    return {path.stem: int(path.read_text()) for path in folder.glob("*.pid")}


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[-1].startswith("Z"))


@pytest.fixture
def example_env(broker_url: str, redis_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    prefix = unique("ondemand-cwod-example") + "-"
    queues = Queues(broker_url)
    queues.names += [prefix + "add", prefix + "diff"]
    folder = tmp_path / "boxes"
    folder.mkdir()
    # As cwod's docker-compose: the result backend is the Redis broker itself; on RabbitMQ,
    # Celery 5's rpc backend replaces the amqp one cwod's RabbitMQ example used.
    backend = broker_url if broker_url.startswith("redis") else "rpc://"
    env = {**os.environ, "BROKER": broker_url, "BACKEND": backend, "QUEUE_PREFIX": prefix,
           "CWOD_EXAMPLE_DIR": str(folder), "API_ADDRESS": "127.0.0.1:0",
           "PYTHONPATH": str(ROOT)}
    yield env
    for pid in pids(folder).values():  # whatever the example left running
        if running(pid):
            os.kill(pid, signal.SIGKILL)
    queues.delete_all()


def test_cwods_example_program_runs_unchanged_but_for_the_import(
        example_env: dict[str, str], tmp_path: Path) -> None:
    folder = Path(example_env["CWOD_EXAMPLE_DIR"])
    add_queue = example_env["QUEUE_PREFIX"] + "add"
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        agent = subprocess.Popen([sys.executable, "-m", EXAMPLE], cwd=ROOT, env=example_env,
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        port = wait_for(lambda: re.findall(r"Running API HTTP server in 127\.0\.0\.1:(\d+)",
                                           log.read_text(errors="replace")),
                        "the example's API server", timeout=60)[0]
        url = f"http://127.0.0.1:{port}/"

        for start in (1, 2):  # the first task creates the box, the second starts it again
            task = subprocess.run([sys.executable, "-m", f"{EXAMPLE}.run_task_add"], cwd=ROOT,
                                  env=example_env, capture_output=True, text=True, timeout=120)
            assert task.returncode == 0, task.stderr + log.read_text(errors="replace")
            assert task.stdout.strip() == "3", "add(2, 1) ran on a worker the service started"
            started = pids(folder)
            assert len(started) == start, f"one box, started {start} time(s): {started}"
            (name, pid), = [(n, p) for n, p in started.items() if n.endswith(f".{start}")]
            wait_for(lambda pid=pid: not running(pid),  # type: ignore[misc]
                     "StopBox to stop the idle worker")
            hostname = f"celery@{name.split('.')[0]}"
            status = wait_for(lambda hostname=hostname: (  # type: ignore[misc]
                lambda s: s if hostname not in s["workers"] else None)(get_status(url)),
                "the stopped worker to leave the API's status")
            assert status["queues"][add_queue] | {"size": 0, "has_worker": False} == \
                status["queues"][add_queue]
        assert set(status["queues"]) == {add_queue, example_env["QUEUE_PREFIX"] + "diff"}
        assert len({name.split(".")[0] for name in pids(folder)}) == 1, \
            "no box for diff, whose queue never held a task"

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0, log.read_text(errors="replace")
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=5)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
