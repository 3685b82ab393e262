"""A RabbitMQ that blocks or stalls, on a private node (never the shared one): a real memory
alarm, and a node whose VM is stopped mid-connection. The tick must end, say why, and never
scale down over what it could not see.

Each tick runs in a thread with a generous deadline: a tick that hangs fails the test
instead of hanging the suite. Durations are printed, not asserted (``make bench`` measures),
except the stalled read's: one read timeout, not the closing handshake's two more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_ondemand import BrokerUnavailable, Observer
from celery_ondemand.tick import Ticker
from tests.support.agents import FileCountScaler
from tests.support.brokers import Queues, producer_app
from tests.support.faults import Reported, reported_tick
from tests.support.observations import settings
from tests.support.rabbitmq_node import PrivateNode, private_rabbitmq
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker

HANG_DEADLINE = 90.0
"""Far beyond any tick's budget: only a tick that hangs gets near it."""


@pytest.fixture(scope="module")
def node() -> Iterator[PrivateNode]:
    with private_rabbitmq() as started:
        yield started


def within_deadline(call: Callable[[], Any]) -> tuple[Any, float]:
    """``call()``'s result (or the exception it raised) and its duration; fails the test if
    it has not returned by :data:`HANG_DEADLINE`."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    began = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_DEADLINE)
    assert not thread.is_alive(), f"still blocked after {HANG_DEADLINE:.0f}s: it hangs"
    return outcome[0], time.monotonic() - began


def test_a_memory_alarm_is_named_holds_scale_in_and_lets_the_backlog_scale_out(
        node: PrivateNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    queues, fleet, producer = Queues(node.url), Fleet(node.url), producer_app(node.url)
    name = queues.new("alarm")
    monkeypatch.setattr(FileCountScaler, "path", str(tmp_path / "count.json"))
    (tmp_path / "count.json").write_text("1")
    config = settings(queues=[name], scaler="tests.support.agents:FileCountScaler",
                      command=None, worker_concurrency=1, max_workers=5,
                      scale_down_delay_seconds=0, stabilization_seconds=0)
    ticker = Ticker(config, observer=Observer(node.url))
    try:
        worker = fleet.start([name], name="alarmed", concurrency=1)
        producer.send_task("tests.sleep", args=(120,), queue=name)
        for _ in range(4):  # published before the alarm: a blocked producer would wait
            producer.send_task("tests.sleep", args=(0,), queue=name)
        deadline = time.monotonic() + 30  # looking only: the count stays at 1
        while ticker.tick(dry_run=True).observation.workers.get(  # type: ignore[union-attr]
                worker.hostname) is None:
            assert time.monotonic() < deadline, "the worker was never heard"
        node.memory_alarm(True)
        try:
            reported: Reported
            reported, seconds = within_deadline(lambda: reported_tick(ticker, capsys, caplog))
            print(f"tick under a memory alarm: {seconds:.2f}s")
            result = reported.result
            assert result.observation is not None, result.error
            assert any("RabbitMQ blocks publishing" in p for p in result.observation.problems)
            decision = result.decisions[0]
            assert decision.desired > decision.current, "the backlog was read: scale out"
            assert reported.logged("WARNING", "RabbitMQ blocks publishing")
            assert reported.metric("IncompleteReads", target="t") == 1
        finally:
            node.memory_alarm(False)
        deadline = time.monotonic() + 60
        while True:  # the alarm over, the next ticks hear the worker and say nothing of it
            healthy = ticker.tick()
            problems = healthy.observation.problems if healthy.observation else ["unread"]
            if worker.hostname in healthy.observation.live_workers and not any(  # type: ignore[union-attr]
                    "blocks publishing" in p for p in problems):
                break
            assert time.monotonic() < deadline, problems
    finally:
        ticker.close()
        fleet.stop()
        queues.delete_all()
        producer.close()


def test_a_stalled_broker_fails_the_read_within_its_timeouts(node: PrivateNode) -> None:
    """The node's VM stopped (SIGSTOP) under a warm connection: the kernel keeps the socket
    open, nobody answers. Without read timeouts the next AMQP call waits forever.

    The dead connection is dropped without the closing handshake: a handshake would wait
    out the read timeout twice more (channel close, connection close; 3.0 s then 9.0 s
    here, 2026-11-29), so the failure must come within two read timeouts."""
    timeout = 3.0
    observer = Observer(node.url, connect_timeout=timeout)
    observer.observe(["ondemand-stalled"])  # warm: the connection is open
    node.pause()
    try:
        outcome, seconds = within_deadline(lambda: observer.observe(["ondemand-stalled"]))
        print(f"observation of a stalled broker: {seconds:.2f}s")
    finally:
        node.resume()
        observer.close()
    assert isinstance(outcome, BrokerUnavailable), outcome
    assert str(outcome).startswith("timed out") and "guest:guest" not in str(outcome)
    assert seconds < 2 * timeout, f"{seconds:.1f}s: a closing handshake was waited for"
