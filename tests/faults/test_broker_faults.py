"""Broker faults on the wire, through a TCP proxy to the real Redis: a slow broker, and a
connection dropped between two observations. Each ends within its budget, says what went
wrong, never shrinks a target, and the next healthy observation recovers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from celery_ondemand import Observer
from celery_ondemand.tick import Ticker
from tests.support.agents import FileCountScaler
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


def test_a_dropped_connection_fails_clearly_holds_and_recovers(
        redis_url: str, proxy: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick whose connection is cut fails within its budget, naming the broker, and
    holds a target that has been idle far past scale_down_delay_seconds (only the blind
    rule stands between it and zero); the next tick reconnects by itself and scales in."""
    monkeypatch.setattr(FileCountScaler, "path", str(tmp_path / "count.json"))
    Path(FileCountScaler.path).write_text("3")
    queues = Queues(redis_url)
    name = queues.new("drop")
    # The file says 3 workers run and none is started: a day's startup grace keeps the
    # platform-liveness check (running but unheard) out of this test's way.
    config = settings(queues=[name], scaler="tests.support.agents:FileCountScaler",
                      command=None, worker_concurrency=1, startup_grace_seconds=86400)
    ticker = Ticker(config, observer=Observer(through(proxy, redis_url), connect_timeout=2))
    try:
        first = ticker.tick(now=1000.0)
        assert first.ok and first.observation is not None
        assert first.observation.queues[name].size == 0
        assert first.decisions[0].rule == "idle-wait", "the idle clock starts"
        proxy.cut()
        started = time.monotonic()
        cut = ticker.tick(now=1000.0 + 3600)
        assert time.monotonic() - started < 10
        assert cut.observation is None and "127.0.0.1" in (cut.error or "")
        assert (cut.decisions[0].desired, cut.decisions[0].rule) == (3, "blind"), \
            "a failed read never scales down"
        assert Path(FileCountScaler.path).read_text() == "3"
        proxy.heal()
        again = ticker.tick(now=1015.0 + 3600)  # a fresh connection, opened by itself
        assert again.ok and again.observation is not None
        assert again.observation.queues[name].size == 0 and "broker" in again.observation.sources
        assert (again.decisions[0].desired, again.decisions[0].rule) == (0, "idle")
    finally:
        ticker.close()
        queues.delete_all()
