"""The local target end to end: real broker, real worker processes, real ticks.

Long and short tasks arrive; the tick scales up from zero; as the short tasks finish the
load drops and it scales in while the long tasks still run; at the end it scales to zero.
Every task must complete exactly once, and no worker may be signalled while it was busy.
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
from tests.support.brokers import BROKERS, Queues, producer_app, require_broker
from tests.support.workers import local_worker_env, worker_command

pytestmark = pytest.mark.broker


def test_scale_up_then_in_while_long_tasks_run_losing_nothing(
        broker_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter_url = require_broker(BROKERS["redis"])
    local_worker_env(monkeypatch, broker_url, counter_url)
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
    published = 0
    try:
        for seconds in (10, 10, 1, 1, 1, 1):
            producer.send_task("tests.count", args=(seconds, key), queue=queue)
            published += 1
        peak, shrank_while_busy, stopped_busy = 0, False, []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            stopping_before = {w.hostname for w in scaler.workers() if w.stopping}
            result = ticker.tick()
            assert result.ok, (result.error, result.target_errors)
            stopped_now = {w.hostname for w in scaler.workers() if w.stopping} - stopping_before
            busy = {w.hostname for w in result.observation.workers.values() if w.busy} \
                if result.observation else set()
            stopped_busy += sorted(stopped_now & busy)
            shrank_while_busy |= bool(stopped_now) and bool(busy)
            decision = result.decisions[0]
            peak = max(peak, decision.desired)
            if int(counter.get(key) or 0) == published and decision.desired == 0 \
                    and not scaler.workers():
                break
            time.sleep(1.0)
        assert int(counter.get(key) or 0) == published, "a task was lost or ran twice"
        assert stopped_busy == [], f"busy workers were signalled: {stopped_busy}"
        assert peak == 4, "scaled up to max_workers for six waiting tasks"
        assert shrank_while_busy, "scale-in should happen while long tasks still run"
        assert scaler.workers() == [], "every worker stopped once the work was done"
    finally:
        for worker in scaler.workers():
            os.kill(worker.pid, 15)
        ticker.close()
        producer.close()
        counter.delete(key)
        queues.delete_all()
