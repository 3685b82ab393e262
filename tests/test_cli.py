"""The ``ondemand status`` command as a user runs it: a real process, real brokers.

Every bad input must end in one clear line on stderr and exit status 2, without a
traceback, within the connect timeout, and without ever printing the password.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from tests.support.brokers import Queues, private_redis, producer_app
from tests.support.cli import SECRET, assert_clean_failure, closed_port, ondemand
from tests.support.workers import Fleet


@pytest.mark.parametrize("scheme", ["amqp", "redis"])
def test_unreachable_broker(scheme: str) -> None:
    result = ondemand("status", "--broker", f"{scheme}://user:{SECRET}@127.0.0.1:{closed_port()}/")
    assert_clean_failure(result, "refused")


@pytest.mark.parametrize("scheme", ["amqp", "redis"])
def test_a_broker_name_that_does_not_resolve(scheme: str) -> None:
    result = ondemand("status", "--connect-timeout", "2", "--broker",
                      f"{scheme}://user:{SECRET}@broker.invalid:5672/")
    assert_clean_failure(result, "broker.invalid")


@pytest.mark.parametrize("scheme", ["amqp", "redis"])
def test_a_broker_that_never_answers_fails_within_the_connect_timeout(
        scheme: str, silent_server: int) -> None:
    started = time.monotonic()
    result = ondemand("status", "--connect-timeout", "1", "--broker",
                      f"{scheme}://user:{SECRET}@127.0.0.1:{silent_server}/")
    assert_clean_failure(result, "timed out")
    assert time.monotonic() - started < 20, "an unanswered connect must not hang"


@pytest.mark.broker
def test_refused_credentials_on_rabbitmq(rabbitmq_url: str) -> None:
    result = ondemand("status", "--broker", f"amqp://guest:{SECRET}@127.0.0.1:5672//")
    assert_clean_failure(result, "credentials refused")


@pytest.fixture
def redis_with_password() -> Iterator[int]:
    """A real redis-server of our own that demands a password."""
    with private_redis("--requirepass", "the-right-one", "--appendonly", "no") as port:
        yield port


def test_refused_credentials_on_redis(redis_with_password: int) -> None:
    result = ondemand("status", "--broker", f"redis://:{SECRET}@127.0.0.1:{redis_with_password}/0")
    assert_clean_failure(result, "credentials refused")


def test_unknown_scheme() -> None:
    result = ondemand("status", "--broker", f"rabbit://guest:{SECRET}@127.0.0.1//")
    assert_clean_failure(result, "unknown scheme", "expected one of")


def test_no_broker_at_all() -> None:
    result = subprocess.run([sys.executable, "-m", "celery_ondemand.cli", "status"],
                            capture_output=True, text=True, timeout=30, check=False,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "--broker" in result.stderr


@pytest.mark.broker
def test_status_json_has_cwod_shape_and_our_keys(broker_url: str, fleet: Fleet) -> None:
    queues = Queues(broker_url)
    name = queues.new("cli")
    producer = producer_app(broker_url)
    try:
        worker = fleet.start([name], name="cli")
        result = ondemand("status", "--broker", broker_url, "--json")
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert set(status) >= {"queues", "workers"}
        queue = status["queues"][name]
        assert {"name", "size", "workers", "many_workers", "has_worker"} <= set(queue)
        assert queue["workers"] == [worker.hostname] and queue["has_worker"] is True
        assert {"ready", "hidden", "oldest_age", "consumers", "missing"} <= set(queue)
        me = status["workers"][worker.hostname]
        assert {"hostname", "last_heartbeat_at", "last_task_received_at",
                "last_task_started_at", "last_task_succeeded_at"} <= set(me)
        assert me["alive"] is True and me["queues"] == [name]

        producer.send_task("tests.sleep", args=(0,), queue=queues.new("idle"))
        # The table names the broker: with its password masked. Redis here demands none
        # and ignores one sent, so the Redis run sends one to be masked too.
        url = broker_url if urlparse(broker_url).password else \
            broker_url.replace("redis://", f"redis://:{SECRET}@")
        table = ondemand("status", "--broker", url, "--queue", queues.names[-1])
        assert table.returncode == 0, table.stderr
        assert queues.names[-1] in table.stdout and "READY" in table.stdout
        assert ":**@127.0.0.1" in table.stdout, "the table shows the broker, masked"
        password = urlparse(url).password
        assert password and f":{password}@" not in table.stdout + table.stderr
    finally:
        queues.delete_all()
        producer.close()
