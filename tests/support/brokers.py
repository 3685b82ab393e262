"""Real brokers for the tests: where they are, whether they answer, and clean queue names.

Broker-backed tests run against RabbitMQ and Redis on 127.0.0.1 (override with
``ONDEMAND_TEST_RABBITMQ`` / ``ONDEMAND_TEST_REDIS``). A broker that does not answer skips
its tests on a laptop, and fails them when ``CI=true``: on CI every broker is mandatory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection

from celery_ondemand import stamp_publish_time


def _redis_database() -> int:
    """Database 1, or under pytest-xdist one per test process (gw0: 1, gw1: 2, ...): Redis
    keeps the unacknowledged-task hash per database and kombu prefixes its fanout channels
    with the database, so two processes never read each other's workers' held tasks."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) + 1 if worker[2:].isdigit() else 1


BROKERS = {
    "rabbitmq": os.environ.get("ONDEMAND_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//"),
    "redis": os.environ.get("ONDEMAND_TEST_REDIS", f"redis://127.0.0.1:6379/{_redis_database()}"),
}
ON_CI = os.environ.get("CI", "").lower() == "true"
_reachable: dict[str, str | None] = {}


def require_broker(url: str) -> str:
    """Return ``url`` if the broker answers; otherwise skip (laptop) or fail (CI)."""
    if url not in _reachable:
        try:
            with Connection(url, connect_timeout=3) as connection:
                connection.ensure_connection(max_retries=0)
                connection.default_channel  # noqa: B018 - Redis pings here
            _reachable[url] = None
        except Exception as exc:
            _reachable[url] = f"{type(exc).__name__}: {exc}"
    problem = _reachable[url]
    if problem is not None:
        message = f"broker {url} is not reachable ({problem})"
        if ON_CI:
            pytest.fail(f"{message}; on CI every broker is mandatory", pytrace=False)
        pytest.skip(message)
    return url


def unique(prefix: str) -> str:
    """A queue or node name no other test (or earlier run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Queues:
    """Hands out unique queue names and deletes those queues from the broker at the end."""

    def __init__(self, broker_url: str,
                 transport_options: dict[str, Any] | None = None) -> None:
        self.broker_url = broker_url
        self.transport_options = transport_options or {}
        self.names: list[str] = []

    def new(self, prefix: str = "q") -> str:
        name = unique(f"ondemand-{prefix}")
        self.names.append(name)
        return name

    def delete_all(self) -> None:
        with Connection(self.broker_url, connect_timeout=3,
                        transport_options=self.transport_options) as connection:
            channel = connection.default_channel
            for name in self.names:
                try:
                    if self.broker_url.startswith("redis"):
                        client = channel.client  # kombu's: it prefixes DEL itself
                        client.delete(*[channel._q_for_pri(name, p)
                                        for p in channel.priority_steps])
                        _forget_unacked(channel, name)
                    else:
                        channel.queue_delete(name)
                except Exception:
                    channel = connection.channel()


def _forget_unacked(channel: Any, queue: str) -> None:
    """Drop what a killed worker left unacknowledged for ``queue`` (Redis keeps it)."""
    import json

    import redis

    client = redis.Redis(connection_pool=channel.pool)  # keys named in full, prefix included
    prefix = channel.global_keyprefix or ""
    unacked, index = prefix + channel.unacked_key, prefix + channel.unacked_index_key
    for tag, entry in client.hgetall(unacked).items():
        _, exchange, routing_key = json.loads(entry)
        if queue in (exchange, routing_key):
            client.hdel(unacked, tag)
            client.zrem(index, tag)


def producer_app(broker_url: str, transport_options: dict[str, Any] | None = None) -> Celery:
    """A producer-side app that stamps publish times, as a user's would with our helper."""
    stamp_publish_time()
    app = Celery("ondemand-test-producer", broker=broker_url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    if transport_options:
        app.conf.broker_transport_options = dict(transport_options)
    return app


@contextmanager
def private_redis(*options: str, port: int | None = None,
                  workdir: Path | None = None) -> Iterator[int]:
    """A redis-server of our own (``options`` such as ``--requirepass``), on ``port`` (a
    free one by default); yields the port and stops the server at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        if ON_CI:
            pytest.fail("redis-server is not installed", pytrace=False)
        pytest.skip("redis-server is not installed")
    if port is None:
        from tests.support.cli import closed_port

        port = closed_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", *options], cwd=workdir,
                               stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
