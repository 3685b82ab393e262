"""Fixtures shared by the suite: real brokers, real workers, unique queue names."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from tests.support.brokers import BROKERS, Queues, producer_app, require_broker
from tests.support.workers import Fleet


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
