"""The bootstep on real workers, with a small HTTP server standing in for the documented
ECS agent endpoints (task protection, task metadata)."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from celery import Celery

from celery_ondemand import Observer
from tests.support.brokers import BROKERS, Queues, producer_app, require_broker, unique
from tests.support.waiting import wait_until
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker
TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/prod/0123456789abcdef"


class FakeEcsAgent(ThreadingHTTPServer):
    """Records every PUT to /task-protection/v1/state; serves /task metadata."""

    def __init__(self, task_arn: str = TASK_ARN) -> None:
        self.calls: list[tuple[float, dict[str, Any]]] = []
        self.task_arn = task_arn
        self.refusing = False
        """Answer every protection call as the agent relays an API failure (HTTP 200,
        ``failure`` in the body): a task role without ``ecs:UpdateTaskProtection``."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/task-protection/v1/state":
                    server.calls.append((time.monotonic(), body))
                if server.refusing:
                    self._reply({"failure": {"Arn": TASK_ARN, "Reason": "AccessDeniedException"}})
                    return
                self._reply({"protection": body})

            def do_GET(self) -> None:
                self._reply({"TaskARN": server.task_arn} if self.path == "/meta/task"
                            else {})

            def _reply(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def agent() -> Iterator[FakeEcsAgent]:
    server = FakeEcsAgent()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_protection_is_on_while_tasks_run_and_a_linger_after(broker_url: str, fleet: Fleet,
                                                  agent: FakeEcsAgent) -> None:
    counter_url = require_broker(BROKERS["redis"])
    release = unique("ondemand-release")
    queues = Queues(broker_url)
    name = queues.new("protect")
    producer = producer_app(broker_url)
    app = Celery("inspect", broker=broker_url, set_as_current=False)
    try:
        worker = fleet.start([name], name="ecs", env={
            "ONDEMAND_TEST_BOOTSTEP": "1", "ECS_AGENT_URI": agent.url,
            "ECS_CONTAINER_METADATA_URI_V4": f"{agent.url}/meta",
            "ONDEMAND_TEST_COUNTER": counter_url,
            "ONDEMAND_PROTECTION_POLL": "0.1", "ONDEMAND_PROTECTION_MINUTES": "5",
            "ONDEMAND_PROTECTION_LINGER": "2"})
        stats = app.control.inspect(destination=[worker.hostname], limit=1).stats() or {}
        assert stats[worker.hostname]["ondemand"] == {"platform": "ecs", "task_arn": TASK_ARN,
                                                      "protected": False, "rate_limited": 0,
                                                      "draining": None, "beat": False}
        assert [body for _, body in agent.calls] == [{"ProtectionEnabled": False}], \
            "at start, idle: whatever a crashed predecessor left is lifted, nothing set"
        with Observer(broker_url) as observer:
            seen = observer.observe([name]).workers[worker.hostname]
        assert seen.machine == TASK_ARN, "the tick maps this worker to its task exactly"

        producer.send_task("tests.hold", args=(release,), queue=name)  # runs until released
        wait_until(lambda: len(agent.calls), lambda n: n >= 2,
                   what="protection set when the task started")
        assert agent.calls[1][1] == {"ProtectionEnabled": True, "ExpiresInMinutes": 5}
        # The task still runs: at least a second of 0.1 s polls (a slow machine only makes
        # it longer), and the worker itself says it is protected.
        time.sleep(1.0)
        stats = app.control.inspect(destination=[worker.hostname], limit=1).stats() or {}
        assert stats[worker.hostname]["ondemand"]["protected"] is True
        assert len(agent.calls) == 2, "protection held, not lifted, while the task ran"

        released = time.monotonic()
        redis.Redis.from_url(counter_url).set(release, 1, ex=300)
        wait_until(lambda: len(agent.calls), lambda n: n >= 3,
                   what="protection lifted when the task ended")
        assert agent.calls[-1][1] == {"ProtectionEnabled": False}
        # The linger counts from the last 0.1 s poll that saw the task: within two polls.
        assert agent.calls[-1][0] >= released + 2 - 0.2, \
            "lifted only once the worker had been idle the linger (2 s) after its task"
    finally:
        redis.Redis.from_url(counter_url).set(release, 1, ex=300)
        app.close()
        producer.close()
        queues.delete_all()


def test_drain_finishes_running_work_then_exits(broker_url: str, fleet: Fleet) -> None:
    counter_url = require_broker(BROKERS["redis"])
    release = unique("ondemand-release")
    queues = Queues(broker_url)
    name = queues.new("drain")
    producer = producer_app(broker_url)
    app = Celery("control", broker=broker_url, set_as_current=False)
    try:
        worker = fleet.start([name], name="drain", concurrency=1, env={
            "ONDEMAND_TEST_BOOTSTEP": "1", "ONDEMAND_TEST_COUNTER": counter_url})
        producer.send_task("tests.hold", args=(release,), queue=name)  # runs until released
        wait_until(lambda: (app.control.inspect(destination=[worker.hostname], limit=1)
                            .active() or {}).get(worker.hostname), what="the task running")
        replies = app.control.broadcast("ondemand_drain", destination=[worker.hostname],
                                        reply=True, timeout=2, limit=1)
        assert replies and "draining" in json.dumps(replies)
        producer.send_task("tests.sleep", args=(0,), queue=name)  # must stay queued
        time.sleep(1.0)  # however long the running task takes, the worker waits for it
        stats = app.control.inspect(destination=[worker.hostname], limit=1).stats() or {}
        assert stats[worker.hostname]["ondemand"]["draining"] == [name], \
            "it says which queues it drains"
        assert worker.process.poll() is None, "a draining worker finishes its task first"
        redis.Redis.from_url(counter_url).set(release, 1, ex=300)
        assert worker.process.wait(timeout=60) == 0, "warm shutdown exits cleanly"
        log = worker.log.read_text()
        assert len(re.findall(r"Task tests\.hold\[[^\]]+\] succeeded", log)) == 1, log
        assert "Task tests.sleep" not in log, "nothing new was taken while draining"
        with Observer(broker_url) as observer:
            assert observer.observe([name]).queues[name].size == 1
    finally:
        redis.Redis.from_url(counter_url).set(release, 1, ex=300)
        app.close()
        producer.close()
        queues.delete_all()


def test_a_refused_protection_call_is_tried_again_less_and_less_often(
        broker_url: str, fleet: Fleet, agent: FakeEcsAgent) -> None:
    """Every busy worker retrying each 0.1 s poll would hammer the API (and the account's
    quota the autoscaler shares) and log as often; it backs off, and protects once the
    calls succeed again."""
    counter_url = require_broker(BROKERS["redis"])
    release = unique("ondemand-release")
    queues = Queues(broker_url)
    name = queues.new("refused")
    producer = producer_app(broker_url)
    try:
        agent.refusing = True
        worker = fleet.start([name], name="refused", env={
            "ONDEMAND_TEST_BOOTSTEP": "1", "ECS_AGENT_URI": agent.url,
            "ECS_CONTAINER_METADATA_URI_V4": f"{agent.url}/meta",
            "ONDEMAND_TEST_COUNTER": counter_url, "ONDEMAND_PROTECTION_POLL": "0.1"})
        assert worker.hostname
        producer.send_task("tests.hold", args=(release,), queue=name)
        wait_until(lambda: [b for _, b in agent.calls if b["ProtectionEnabled"]],
                   lambda sets: len(sets) >= 1, what="a first try to protect")
        first = next(t for t, b in agent.calls if b["ProtectionEnabled"])
        time.sleep(3.0)
        tries = [t for t, b in agent.calls if b["ProtectionEnabled"] and t <= first + 3.0]
        # Every 0.1 s poll would be ~30 tries; doubling from 0.1 s, about 5 (+1 for a slow
        # machine's late polls).
        assert len(tries) <= 7, f"{len(tries)} tries in 3 s: no backoff"
        agent.refusing = False
        wait_until(lambda: agent.calls[-1][1], lambda body: body["ProtectionEnabled"],
                   timeout=30, what="protection set once the agent accepts again")
    finally:
        redis.Redis.from_url(counter_url).set(release, 1, ex=300)
        producer.close()
        queues.delete_all()


@pytest.mark.parametrize("hash_seed", ["1", "3"])
@pytest.mark.parametrize("stop", ["drain", "sigterm"])
def test_a_busy_worker_told_to_stop_keeps_its_shield_until_its_task_ends(
        broker_url: str, fleet: Fleet, agent: FakeEcsAgent, stop: str, hash_seed: str) -> None:
    """A rollout drains busy workers; SIGTERM (systemd, a deploy) stops one warm: either
    way the task is finished first. Celery orders the worker's steps by a set, so under
    some hash seeds (1 here) it stops this step before the pool: a shutdown lifted
    protection while the pool still ran the task, and the platform could stop it
    mid-task. The shield outlasts the task, and is lifted once it is done (an instance's
    never expires)."""
    counter_url = require_broker(BROKERS["redis"])
    release = unique("ondemand-release")
    queues = Queues(broker_url)
    name = queues.new("stop-shield")
    producer = producer_app(broker_url)
    app = Celery("control", broker=broker_url, set_as_current=False)
    try:
        worker = fleet.start([name], name="stop-shield", concurrency=1, env={
            "ONDEMAND_TEST_BOOTSTEP": "1", "ECS_AGENT_URI": agent.url,
            "ECS_CONTAINER_METADATA_URI_V4": f"{agent.url}/meta",
            "ONDEMAND_TEST_COUNTER": counter_url, "ONDEMAND_PROTECTION_POLL": "0.1",
            "ONDEMAND_PROTECTION_LINGER": "0.5", "PYTHONHASHSEED": hash_seed})
        producer.send_task("tests.hold", args=(release,), queue=name)
        wait_until(lambda: [b for _, b in agent.calls if b["ProtectionEnabled"]],
                   what="protection set when the task started")
        if stop == "drain":
            app.control.broadcast("ondemand_drain", destination=[worker.hostname])
        else:
            worker.process.send_signal(signal.SIGTERM)
        time.sleep(2.0)  # four lingers: an early lift would have come by now
        assert worker.process.poll() is None, "still finishing its task"
        assert agent.calls[-1][1]["ProtectionEnabled"] is True, \
            "protection lifted while the stopping worker still ran its task"
        released = time.monotonic()
        redis.Redis.from_url(counter_url).set(release, 1, ex=300)
        assert worker.process.wait(timeout=60) == 0, "warm shutdown once the task ended"
        lifts = [t for t, body in agent.calls if not body["ProtectionEnabled"]]
        assert lifts and lifts[-1] >= released, "lifted only after the task ended"
    finally:
        redis.Redis.from_url(counter_url).set(release, 1, ex=300)
        app.close()
        producer.close()
        queues.delete_all()
