"""Nothing lost, end to end: the local target scales real workers up and down under a
changing load while workers are SIGKILLed at random and the broker restarts once.

The settings promise at-least-once (``task_acks_late`` with ``task_reject_on_worker_lost``
and a 10 s Redis visibility timeout): every published task must complete at least once,
a second run may happen only to a task whose worker was killed or whose acknowledgement
was lost in the broker restart, no busy worker may be stopped by the autoscaler, no tick
may shrink a target blind, and the run must end at zero workers. The figures are printed.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from celery_ondemand import Observer
from celery_ondemand.act.local import LocalScaler
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.remember import SQLiteStateStore
from celery_ondemand.tick import Ticker
from tests.support.brokers import BROKERS, private_redis, producer_app, require_broker
from tests.support.cli import closed_port
from tests.support.workers import local_worker_env, tick_watching_stops, worker_command

pytestmark = pytest.mark.broker

CONCURRENCY = 2
LOAD = [(0.0, 40), (24.0, 24)]  # (seconds into the run, tasks published over 6 s)
KILLS_AT = [6.0, 14.0, 28.0, 34.0]
RESTART_AT = 10.0


class RestartableBroker:
    """Our own persistent redis-server (append-only file, fsync always): a restart keeps
    every message, as a production broker's does."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir, self.stack = closed_port(), workdir, ExitStack()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.stack.enter_context(private_redis(
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
            port=self.port))

    def stop(self) -> None:
        self.stack.close()


@pytest.mark.timeout(300)
def test_nothing_is_lost_through_scaling_kills_and_a_broker_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter_url = require_broker(BROKERS["redis"])  # counts live outside the broker
    broker = RestartableBroker(tmp_path)
    broker.start()
    local_worker_env(monkeypatch, broker.url, counter_url, ONDEMAND_TEST_VISIBILITY="10")
    run = uuid.uuid4().hex[:8]
    counter = redis.Redis.from_url(counter_url)
    config = settings_from_mapping({"broker_url": broker.url, "targets": [{
        "name": "soak", "queues": ["soak"], "scaler": "local",
        "command": worker_command("soak", CONCURRENCY),
        "state_dir": str(tmp_path / "workers"), "worker_concurrency": CONCURRENCY,
        "max_workers": 4, "target_wait_seconds": 10, "scale_down_delay_seconds": 4,
        "stabilization_seconds": 4}]})
    ticker = Ticker(config, store=SQLiteStateStore(tmp_path / "state.db"),
                    observer=Observer(broker.url, connect_timeout=2))
    scaler = ticker.scalers["soak"]
    assert isinstance(scaler, LocalScaler)
    rng = random.Random(7)
    published: list[str] = []
    killed: list[str] = []
    started = time.monotonic()

    def publish() -> None:
        producer = producer_app(broker.url)
        for at, count in LOAD:
            time.sleep(max(0.0, started + at - time.monotonic()))
            for _ in range(count):
                key = f"ondemand-soak-{run}-{len(published)}"
                producer.send_task("tests.count", args=(rng.uniform(0.5, 2.0), key),
                                   queue="soak")
                published.append(key)
                time.sleep(6.0 / count)
        producer.close()

    def chaos() -> None:
        events = sorted([(t, "kill") for t in KILLS_AT] + [(RESTART_AT, "restart")])
        for at, what in events:
            time.sleep(max(0.0, started + at - time.monotonic()))
            if what == "restart":
                broker.stop()
                time.sleep(2.0)
                broker.start()
                continue
            victims = [w for w in scaler.workers() if not w.stopping]
            if victims:
                victim = rng.choice(victims)
                os.kill(victim.pid, signal.SIGKILL)
                killed.append(victim.hostname)

    threads = [threading.Thread(target=publish), threading.Thread(target=chaos)]
    for thread in threads:
        thread.start()
    stopped_busy: list[str] = []
    blind_shrinks, outages, peak, ticks = 0, 0, 0, 0
    trace: list[str] = []
    try:
        deadline = started + 240
        while time.monotonic() < deadline:
            result, stopped = tick_watching_stops(ticker, scaler)
            ticks += 1
            stopped_busy += stopped
            observation = result.observation
            decision = result.decisions[0]
            outages += int(observation is None)
            blind = observation is None or bool(decision.inputs.get("problems"))
            blind_shrinks += int(blind and decision.action == "down" and
                                 decision.target in result.applied)
            peak = max(peak, decision.desired)
            completed = sum(1 for k in published if int(counter.get(k) or 0) >= 1)
            queue = observation.queues["soak"] if observation else None
            trace.append(f"{time.monotonic() - started:5.1f}s {decision.current}->"
                         f"{decision.desired} {decision.rule:12} ready="
                         f"{queue.size if queue else '-'} hidden="
                         f"{queue.hidden if queue else '-'} done={completed}/{len(published)}"
                         + (f" error: {result.error}" if result.error else ""))
            done = not any(t.is_alive() for t in threads) and completed == len(published)
            if done and decision.desired == 0 and not scaler.workers():
                break
            time.sleep(2.0)
        counts = [int(counter.get(k) or 0) for k in published]
        lost = sum(1 for c in counts if c == 0)
        doubled = sum(c - 1 for c in counts if c > 1)
        print("\n" + "\n".join(trace))
        print(f"soak: {len(published)} published, {len(published) - lost} completed, "
              f"{lost} lost, {doubled} run twice; {len(killed)} workers SIGKILLed, "
              f"1 broker restart ({outages} ticks saw it down); {ticks} ticks, peak "
              f"{peak} workers, {len(stopped_busy)} busy workers stopped, "
              f"{blind_shrinks} blind scale-downs; {time.monotonic() - started:.0f}s")
        assert len(published) == sum(count for _, count in LOAD)
        assert lost == 0, "a published task never completed"
        assert doubled <= (len(killed) + 1) * CONCURRENCY, \
            "a second run beyond what kills and the restart can explain"
        assert len(killed) >= 3, "the chaos found workers to kill"
        assert stopped_busy == [] and blind_shrinks == 0
        assert outages >= 1, "a tick ran while the broker was down"
        assert peak == 4 and scaler.workers() == [], "scaled up, and ended at zero"
    finally:
        for thread in threads:
            thread.join(timeout=30)
        for worker in scaler.workers():
            os.kill(worker.pid, signal.SIGKILL)
        ticker.close()
        broker.stop()
        if published:
            counter.delete(*published)
