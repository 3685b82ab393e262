"""Broker faults on the wire, through a TCP proxy to the real Redis: a slow broker, and a
connection dropped between two observations. Each ends within its budget, says what went
wrong, never shrinks a target, and the next healthy observation recovers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from celery_ondemand import BrokerUnavailable, Observer
from celery_ondemand.tick import Ticker
from tests.support.agents import FileCountScaler
from tests.support.brokers import Queues, private_redis
from tests.support.cli import SECRET
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


@pytest.mark.parametrize("scheme", ["amqp", "redis"])
def test_a_silent_broker_fails_after_the_connect_timeout_given(scheme: str,
                                                               silent_server: int) -> None:
    """A server that accepts the connection and never answers is given up on after the
    connect timeout asked for — ours, not a library's default (Celery's is 4 s), so the
    one given here is longer: the failure cannot come before it."""
    url = f"{scheme}://user:{SECRET}@127.0.0.1:{silent_server}/"
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="timed out") as failure, \
            Observer(url, connect_timeout=6) as observer:
        observer.observe(["q"])
    elapsed = time.monotonic() - started
    assert 6 <= elapsed < 60, f"gave up after {elapsed:.1f}s"
    assert SECRET not in str(failure.value)


def test_a_worker_that_beats_rarely_is_heard_through_a_slow_link() -> None:
    """The burst must not rely on the worker's own periodic heartbeat (here every 30 s):
    it is heard because it is asked to beat now, and the burst listens long enough.

    - 0.1 s on every chunk each way: setting up the subscription and sending the wake-up
      takes longer than the whole 1.5 s burst, which therefore counts only the time it
      listens;
    - our SUBSCRIBE reaches Redis 0.1 s after the first wake-up, so the worker's answer to
      it is lost (Redis keeps no message nobody subscribed to): the burst, hearing nobody
      for its 0.25 s quiet period, asks once more.

    A private redis-server: on the shared one other workers would answer our wake-up.
    """
    with private_redis("--appendonly", "no") as port:
        fleet = Fleet(f"redis://127.0.0.1:{port}/0")
        proxy = Proxy(port, delay=0.1)
        proxy.hold_until = {b"SUBSCRIBE": (b"celery.pidbox", 0.1)}  # live 0.1 s late
        try:
            worker = fleet.start(["rare"], name="rare", options=["--heartbeat-interval", "30"])
            with Observer(f"redis://127.0.0.1:{proxy.port}/0", burst_seconds=1.5) as observer:
                status = observer.observe(["rare"])
            assert worker.hostname in status.live_workers, status.sources
            assert status.live_workers[worker.hostname].heard_by == "events"
            assert "ping" not in status.sources, "heard by its beat, not found by a ping"
        finally:
            proxy.close()
            fleet.stop()


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
