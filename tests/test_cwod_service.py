"""cwod's own usage, unchanged: subclass CeleryWorkerOnDemand with UpWorker / DownWorker
that start and stop real ``celery worker`` processes, and tick it against a real broker."""

from __future__ import annotations

import time
from typing import ClassVar

import pytest
from celery import Celery
from kombu import Queue

from celery_ondemand import CeleryWorkerOnDemand, DownWorker, UpWorker
from tests.support.brokers import Queues, producer_app
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker


class StartWorker(UpWorker):
    fleet: ClassVar[Fleet]

    def run(self) -> None:
        self.fleet.start([self.queue.name], name="cwod")


class StopWorker(DownWorker):
    stopped: ClassVar[list[str]] = []

    def run(self) -> None:
        assert self.worker is not None
        for worker in StartWorker.fleet.workers:
            if worker.hostname == self.worker.hostname:
                StopWorker.stopped.append(worker.hostname)
                worker.stop()


class MyDemand(CeleryWorkerOnDemand):
    UpWorker = StartWorker
    DownWorker = StopWorker


def test_cwod_subclass_starts_a_worker_for_work_and_stops_it_when_idle(
        broker_url: str, fleet: Fleet) -> None:
    queues = Queues(broker_url)
    name = queues.new("cwod")
    app = Celery("user-app", broker=broker_url, set_as_current=False)
    app.conf.task_queues = [Queue(name)]
    producer = producer_app(broker_url)
    StartWorker.fleet, StopWorker.stopped = fleet, []
    demand = MyDemand(app)
    try:
        assert [t.name for t in demand.settings.targets] == [name]
        producer.send_task("tests.sleep", args=(0,), queue=name)

        up = demand.tick()
        assert (up.decisions[0].action, up.decisions[0].rule) == ("up", "flag_up")
        assert len(fleet.workers) == 1

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the new worker drains the queue, then idles
            down = demand.tick()
            if down.decisions[0].action == "down":
                break
            time.sleep(0.5)
        assert down.decisions[0].rule == "flag_down"
        assert StopWorker.stopped == [fleet.workers[0].hostname]
        assert fleet.workers[0].process.poll() is not None, "the worker was stopped"
        status = demand.serializer()
        assert status["queues"][name]["size"] == 0
    finally:
        demand.ticker.close()
        producer.close()
        queues.delete_all()
