"""A scaler that picks the workers to stop (local processes, cwod's DownWorker) stops idle
ones only: proven from the workers' side.

Three real workers of one slot each; two run a task that lasts until the test releases
it. The scaler is asked for one worker — fewer than the busy ones, which the decision's
busy floor never asks for, so nothing but the scaler's own choice stands between a busy
worker and a stop. Each worker records in the ledger (tests.support.ledger) whether it
was running a task when it was told to stop.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import redis
from celery import Celery

from celery_ondemand import Observation, Observer, WorkerStatus
from celery_ondemand.act import DownWorker, UpWorker
from celery_ondemand.act.cwod import CwodScaler
from celery_ondemand.act.local import LocalScaler
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.decide import Agent
from tests.support.brokers import BROKERS, Queues, require_broker, unique
from tests.support.ledger import Ledger
from tests.support.waiting import wait_until
from tests.support.workers import Fleet, local_worker_env, worker_command

pytestmark = pytest.mark.broker


@dataclass
class Run:
    """One test's names in the counter Redis: its ledger and the key releasing its tasks."""

    counter_url: str
    ledger: str
    release: str

    def read(self) -> Ledger:
        return Ledger.read(self.counter_url, self.ledger)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    counter_url = require_broker(BROKERS["redis"])
    this = Run(counter_url, unique("ondemand-ledger"), unique("ondemand-release"))
    monkeypatch.setenv("ONDEMAND_TEST_LEDGER", this.ledger)
    yield this
    client = redis.Redis.from_url(counter_url)
    client.set(this.release, 1, ex=300)  # any task still holding lets go
    client.delete(this.ledger)


def two_busy_one_idle(broker_url: str, queue: str, producer: Celery, run: Run,
                      hostnames: set[str]) -> Observation:
    """Send two held tasks and observe until two of the three workers run one each."""
    for _ in range(2):
        producer.send_task("tests.hold", args=(run.release,), queue=queue)

    def settled(o: Observation) -> bool:
        mine = [w for w in o.workers_for([queue]) if w.hostname in hostnames]
        return len(mine) == 3 and sum(1 for w in mine if w.busy) == 2

    with Observer(broker_url) as observer:
        return wait_until(lambda: observer.observe([queue]), settled,
                          what="three workers heard, two of them busy")


def assert_only_idle_workers_stopped(run: Run, observed: list[WorkerStatus],
                                     told: int) -> None:
    """``told`` workers were signalled: wait for their records, then judge them."""
    ledger = wait_until(run.read, lambda led: len(led.stops()) >= told,
                        what=f"{told} 'told to stop' records")
    assert ledger.stopped_while_running() == [], "a worker was stopped while running a task"
    idle = {w.hostname for w in observed if not w.busy}
    assert {r["worker"] for r in ledger.stops()} == idle


def test_local_scale_in_stops_idle_workers_only(
        broker_url: str, queues: Queues, producer: Celery, run: Run, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    queue = queues.new("local-busy")
    local_worker_env(monkeypatch, broker_url, run.counter_url,
                     ONDEMAND_TEST_LEDGER=run.ledger)
    config = settings_from_mapping({"broker_url": broker_url, "targets": [{
        "name": "busy", "queues": [queue], "scaler": "local",
        "command": worker_command(queue), "state_dir": str(tmp_path / "workers")}]})
    scaler = LocalScaler(config.targets[0])
    try:
        started = {scaler.start().hostname for _ in range(3)}
        observed = two_busy_one_idle(broker_url, queue, producer, run, started)
        workers = observed.workers_for([queue])
        scaler.apply(1, 3, workers)
        told = sum(1 for w in scaler.workers() if w.stopping)
        assert_only_idle_workers_stopped(run, workers, told)
        assert told == 1, "one idle worker to stop; the two busy ones are kept"
        redis.Redis.from_url(run.counter_url).set(run.release, 1, ex=300)
        wait_until(lambda: len(run.read().finished()), lambda n: n == 2,
                   what="both held tasks finished")
    finally:
        for worker in scaler.workers():
            os.kill(worker.pid, signal.SIGTERM)


class Start(UpWorker):
    def run(self) -> None:
        raise AssertionError("this test only scales in")


class StopFleetWorker(DownWorker):
    """A cwod user's DownWorker: SIGTERM to the worker it is handed."""

    fleet: ClassVar[Fleet]
    handed: ClassVar[list[str]] = []

    def run(self) -> None:
        assert self.worker is not None
        StopFleetWorker.handed.append(self.worker.hostname)
        for worker in self.fleet.workers:
            if worker.hostname == self.worker.hostname:
                worker.process.send_signal(signal.SIGTERM)


def test_cwod_down_worker_is_handed_idle_workers_only(
        broker_url: str, queues: Queues, producer: Celery, run: Run, fleet: Fleet) -> None:
    queue = queues.new("cwod-busy")
    env = {"ONDEMAND_TEST_COUNTER": run.counter_url, "ONDEMAND_TEST_LEDGER": run.ledger}
    started = [fleet.start([queue], name="cwod-busy", concurrency=1, env=env, wait=False)
               for _ in range(3)]
    fleet.wait_ready(started)
    config = settings_from_mapping({"broker_url": broker_url, "targets": [{
        "name": "busy", "queues": [queue], "scaler": "local", "command": "unused"}]})
    target = config.targets[0]
    StopFleetWorker.fleet, StopFleetWorker.handed = fleet, []
    scaler = CwodScaler(target, Agent(target), Start, StopFleetWorker)
    observed = two_busy_one_idle(broker_url, queue, producer, run,
                                 {w.hostname for w in started})
    workers = observed.workers_for([queue])
    scaler.apply(1, 3, workers)
    assert_only_idle_workers_stopped(run, workers, len(StopFleetWorker.handed))
    assert len(StopFleetWorker.handed) == 1, "one idle worker to hand over"
    redis.Redis.from_url(run.counter_url).set(run.release, 1, ex=300)
    wait_until(lambda: len(run.read().finished()), lambda n: n == 2,
               what="both held tasks finished")

