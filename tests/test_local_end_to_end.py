"""The local target end to end: real broker, real worker processes, real ticks.

Two long tasks and four short ones arrive; the tick scales up from zero; as the short
tasks finish the load drops and it scales in while the long ones still run (they last
until the test has seen that scale-in: no guessed duration); at the end it scales to zero.
Every task must complete exactly once, and — from the workers' own ledger, not from the
observation the scaler chose with — no worker was told to stop while it ran a task it had
started before the tick looked.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import redis

from celery_ondemand import Observer
from celery_ondemand.act.local import LocalScaler
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.remember import SQLiteStateStore
from celery_ondemand.tick import Ticker
from tests.support.brokers import BROKERS, Queues, producer_app, require_broker, unique
from tests.support.ledger import Ledger
from tests.support.workers import local_worker_env, worker_command

pytestmark = pytest.mark.broker


@pytest.mark.timeout(300)
def test_scale_up_then_in_while_long_tasks_run_losing_nothing(
        broker_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter_url = require_broker(BROKERS["redis"])
    ledger, release = unique("ondemand-ledger"), unique("ondemand-release")
    local_worker_env(monkeypatch, broker_url, counter_url, ONDEMAND_TEST_LEDGER=ledger)
    queues = Queues(broker_url)
    queue = queues.new("local")
    key = f"ondemand-test-count-{uuid.uuid4().hex}"
    counter = redis.Redis.from_url(counter_url)
    config = settings_from_mapping({"broker_url": broker_url, "targets": [{
        "name": "local", "queues": [queue], "scaler": "local",
        "command": worker_command(queue),
        "state_dir": str(tmp_path / "workers"), "worker_concurrency": 1, "max_workers": 4,
        "scale_down_delay_seconds": 0, "stabilization_seconds": 0, "tolerance": 0}]})
    producer = producer_app(broker_url)
    ticker = Ticker(config, store=SQLiteStateStore(tmp_path / "state.db"),
                    observer=Observer(broker_url, burst_seconds=2.5))
    scaler = ticker.scalers["local"]
    assert isinstance(scaler, LocalScaler)
    published, tick_starts, peak = 0, [], 0
    stops_while_long_ran: int | None = None
    try:
        for _ in range(2):
            producer.send_task("tests.hold", args=(release, key), queue=queue)
        for _ in range(4):
            producer.send_task("tests.count", args=(1, key), queue=queue)
        published = 6
        began = time.monotonic()
        while time.monotonic() < began + 240:
            tick_starts.append(time.time())
            result = ticker.tick()
            assert result.ok, (result.error, result.target_errors)
            decision = result.decisions[0]
            peak = max(peak, decision.desired)
            if stops_while_long_ran is None:
                stops = len(Ledger.read(counter_url, ledger).stops())
                if stops or time.monotonic() > began + 120:  # seen, or never going to be
                    stops_while_long_ran = stops
                    counter.set(release, 1, ex=600)  # the long tasks may end now
            elif int(counter.get(key) or 0) == published and decision.desired == 0 \
                    and not scaler.workers():
                break
            time.sleep(1.0)
        seen = Ledger.read(counter_url, ledger)
        assert int(counter.get(key) or 0) == published, "a task was lost or ran twice"
        assert seen.stopped_busy(tick_starts) == [], "busy workers were told to stop"
        assert seen.unfinished_at_stop() == []
        assert peak == 4, "scaled up to max_workers for six waiting tasks"
        assert stops_while_long_ran, "scale-in should happen while long tasks still run"
        assert scaler.workers() == [], "every worker stopped once the work was done"
    finally:
        counter.set(release, 1, ex=600)
        for worker in scaler.workers():
            os.kill(worker.pid, 15)
        ticker.close()
        producer.close()
        counter.delete(key, ledger)
        queues.delete_all()
