"""Fixtures shared by the suite: real brokers, real workers, unique queue names."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from celery import Celery
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from moto import mock_aws
from moto.server import ThreadedMotoServer

from celery_ondemand.remember import DynamoDBStateStore, SQLiteStateStore, StateStore
from celery_ondemand.remember.dynamodb import create_table
from tests.support.aws import InstanceRefreshes, fake_credentials, reset_moto_server
from tests.support.brokers import BROKERS, ON_CI, Queues, producer_app, require_broker
from tests.support.workers import Fleet

# Property tests: on CI the same examples every run (derandomized: a red build is the
# code's, never the draw's), more of them, and no per-example deadline (a loaded 2-core
# machine is no bug). On a laptop, fresh random examples each run. HYPOTHESIS_PROFILE
# picks one by name.
hypothesis_settings.register_profile(
    "ci", max_examples=300, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.register_profile("dev", max_examples=100, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                                 or ("ci" if ON_CI else "dev"))


@pytest.fixture(autouse=True)
def instance_refreshes() -> Iterator[type[InstanceRefreshes]]:
    """moto lacks DescribeInstanceRefreshes; see :class:`InstanceRefreshes`."""
    InstanceRefreshes.install()
    InstanceRefreshes.refreshes = []
    yield InstanceRefreshes
    InstanceRefreshes.refreshes = []


@pytest.fixture(params=sorted(BROKERS), scope="module")
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each broker-backed test runs once per broker."""
    return require_broker(BROKERS[request.param])


@pytest.fixture(scope="module")
def redis_url() -> str:
    return require_broker(BROKERS["redis"])


@pytest.fixture(scope="module")
def rabbitmq_url() -> str:
    return require_broker(BROKERS["rabbitmq"])


@pytest.fixture(scope="module")
def module_queues(broker_url: str) -> Iterator[Queues]:
    queues = Queues(broker_url)
    yield queues
    queues.delete_all()


@pytest.fixture
def queues(broker_url: str) -> Iterator[Queues]:
    queues = Queues(broker_url)
    yield queues
    queues.delete_all()


@pytest.fixture
def fleet(broker_url: str) -> Iterator[Fleet]:
    """Workers for one test, stopped by PID at its end."""
    workers = Fleet(broker_url)
    yield workers
    workers.stop()


@pytest.fixture(scope="module")
def producer(broker_url: str) -> Iterator[Celery]:
    app = producer_app(broker_url)
    yield app
    app.close()


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[StateStore]:
    """Each state test runs on both stores: a SQLite file, and DynamoDB on moto."""
    if request.param == "sqlite":
        yield SQLiteStateStore(tmp_path / "state.db")
        return
    fake_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "ondemand-state")
        yield DynamoDBStateStore("ondemand-state", client)


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AWS on a moto server, reached only through boto3's standard ``AWS_ENDPOINT_URL``."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    reset_moto_server(endpoint)
    yield endpoint
    server.stop()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()
