"""Broker faults on the wire, through a TCP proxy to the real Redis: a slow broker, and a
connection dropped between two observations. Each ends within its budget, says what went
wrong, never shrinks a target, and the next healthy observation recovers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from celery_ondemand import BrokerUnavailable, Observer
from celery_ondemand.decide import decide
from tests.support.brokers import Queues
from tests.support.observations import settings
from tests.support.proxy import Proxy
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker


@pytest.fixture
def proxy(redis_url: str) -> Iterator[Proxy]:
    parsed = urlparse(redis_url)
    proxy = Proxy(parsed.port or 6379)
    yield proxy
    proxy.close()


def through(proxy: Proxy, redis_url: str) -> str:
    parsed = urlparse(redis_url)
    return f"redis://127.0.0.1:{proxy.port}{parsed.path}"


def test_a_slow_broker_is_observed_within_the_budget(redis_url: str, proxy: Proxy) -> None:
    queues, fleet = Queues(redis_url), Fleet(redis_url)
    try:
        name = queues.new("slow")
        worker = fleet.start([name], name="slow")  # the worker talks to Redis directly
        proxy.delay = 0.02  # 20 ms on every chunk each way: a 40 ms round trip
        started = time.monotonic()
        with Observer(through(proxy, redis_url)) as observer:
            status = observer.observe([name])
        assert worker.hostname in status.live_workers
        assert time.monotonic() - started < 15, "within one tick interval"
    finally:
        fleet.stop()
        queues.delete_all()


def test_a_dropped_connection_fails_clearly_holds_and_recovers(redis_url: str,
                                                               proxy: Proxy) -> None:
    queues = Queues(redis_url)
    name = queues.new("drop")
    config = settings(queues=[name], worker_concurrency=1)
    with Observer(through(proxy, redis_url), connect_timeout=2) as observer:
        first = observer.observe([name])
        assert first.queues[name].size == 0
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as failure:
            observer.observe([name])
        assert time.monotonic() - started < 10
        assert "127.0.0.1" in str(failure.value)
        decisions, _ = decide(None, config, {}, 1000.0, current={"t": 3})
        assert decisions[0].desired == 3, "a failed read never scales down"
        proxy.heal()
        again = observer.observe([name])  # a fresh connection, opened by itself
        assert again.queues[name].size == 0 and "broker" in again.sources
    queues.delete_all()
