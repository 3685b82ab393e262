"""cwod's README, with only the import changed, running against a real broker.

The user's classes are written the way cwod's README and its example program write them: an
Agent whose ``flag_up`` reads ``self.cwod``, an UpWorker that starts a real ``celery worker``
process and waits ``while not self.queue.has_worker``, a DownWorker that stops the worker it
is handed (by PID), ``add_queue`` on a running service, and the API server asked over HTTP.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from celery import Celery
from kombu import Queue

from celery_ondemand import Agent, CeleryWorkerOnDemand, DownWorker, UpWorker
from tests.support.brokers import Queues, producer_app
from tests.support.workers import Fleet, Worker

pytestmark = pytest.mark.broker


class MyAgent(Agent):
    """cwod style: the rules read the service (``self.cwod``)."""

    def flag_up(self, queue: Any) -> Any:
        return queue.name not in self.cwod.paused and super().flag_up(queue)


class MyUpWorker(UpWorker):
    """Starts a real worker for its queue and waits until the service hears it, as cwod's
    example does; for the queue named in ``blocking`` it blocks instead, as a user's
    ``run()`` may (a container that never comes up)."""

    fleet: ClassVar[Fleet]
    blocking: ClassVar[str] = ""
    release = threading.Event()
    entered: ClassVar[list[str]] = []
    started: ClassVar[dict[str, Worker]] = {}
    returned: ClassVar[dict[str, dict[str, Any]]] = {}

    def run(self) -> None:
        MyUpWorker.entered.append(self.queue.name)
        if self.queue.name == self.blocking:
            MyUpWorker.release.wait(120)
            return
        MyUpWorker.started[self.queue.name] = self.fleet.start([self.queue.name],
                                                               name="cwod", wait=False)
        deadline = time.monotonic() + 90  # cwod's example waits forever; a test may not
        while not self.queue.has_worker and time.monotonic() < deadline:
            time.sleep(1)
        MyUpWorker.returned[self.queue.name] = {
            "has_worker": self.queue.has_worker,
            "workers": [w.hostname for w in self.queue.workers],
            "live": self.queue is self.cwod.queues[self.queue.name]}


class MyDownWorker(DownWorker):
    """Stops the worker it is handed, by PID (SIGTERM: warm shutdown)."""

    handed: ClassVar[list[tuple[str, bool]]] = []

    def run(self) -> None:
        assert self.worker is not None
        MyDownWorker.handed.append((self.worker.hostname, self.worker.busy))
        for worker in MyUpWorker.fleet.workers:
            if worker.hostname == self.worker.hostname:
                worker.stop()


class MyDemand(CeleryWorkerOnDemand):
    Agent = MyAgent
    UpWorker = MyUpWorker
    DownWorker = MyDownWorker
    paused: ClassVar[set[str]] = set()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def get_status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        decoded: dict[str, Any] = json.loads(response.read())
        return decoded


def test_cwod_readme_service_scales_a_real_worker_up_and_down(broker_url: str,
                                                                fleet: Fleet) -> None:
    queues = Queues(broker_url)
    blocked, paused, added = queues.new("blocked"), queues.new("paused"), queues.new("added")
    celery_app = Celery("user-app", broker=broker_url, set_as_current=False)
    celery_app.conf.task_queues = [Queue(blocked), Queue(paused)]
    producer = producer_app(broker_url)
    MyUpWorker.fleet, MyUpWorker.blocking = fleet, blocked
    MyUpWorker.release.clear()
    for record in (MyUpWorker.entered, MyUpWorker.started, MyUpWorker.returned,
                   MyDownWorker.handed):
        record.clear()

    demand = MyDemand(celery_app, queue_updater_fill_rate=2,
                      api_server_address=("127.0.0.1", 0))
    demand.paused = {paused}
    runner = threading.Thread(target=demand.run, name="cwod-run")
    runner.start()
    try:
        assert demand.api_server is not None
        wait_for(lambda: demand.api_server.httpd is not None, "the API server")  # type: ignore[union-attr]
        host, port = demand.api_server.server_address
        url = f"http://{host}:{port}/"

        # A queue with a task and no worker: its UpWorker runs, and blocks.
        producer.send_task("tests.sleep", args=(0,), queue=blocked)
        producer.send_task("tests.sleep", args=(0,), queue=paused)
        wait_for(lambda: blocked in MyUpWorker.entered, "the blocking UpWorker")

        # Meanwhile a queue added to the running service gets its worker: the blocked
        # run() stalls nobody else's tick.
        demand.add_queue(added)
        producer.send_task("tests.sleep", args=(0.5,), queue=added)
        returned = wait_for(lambda: MyUpWorker.returned.get(added), "UpWorker.run() to return")
        worker = MyUpWorker.started[added]
        assert returned == {"has_worker": True, "workers": [worker.hostname], "live": True}, \
            "run() returned once the live queue status had the new worker"

        status = get_status(url)
        assert status["queues"][added]["workers"] == [worker.hostname]
        assert status["workers"][worker.hostname]["queues"] == [added]
        assert status["queues"][paused]["size"] == 1
        # cwod's connection and channel, for the user's own reads, as cwod's updater did.
        channel = demand.channel
        assert channel is demand.channel and demand.connection.heartbeat == 0
        size = channel._size(paused) if broker_url.startswith("redis") else \
            channel.queue_declare(queue=paused, passive=True).message_count
        assert size == 1

        # The task done and the queue empty, the idle worker is handed to DownWorker.
        wait_for(lambda: worker.process.poll() is not None, "DownWorker to stop the worker")
        assert MyDownWorker.handed == [(worker.hostname, False)]
        assert "succeeded" in worker.log.read_text(errors="replace"), "the task ran first"
        wait_for(lambda: worker.hostname not in get_status(url)["workers"],
                 "the stopped worker to leave the status")

        assert paused not in MyUpWorker.entered, "MyAgent's rule, read from self.cwod, held"
        assert MyUpWorker.entered.count(blocked) == 1, "one UpWorker per queue at a time"
        assert runner.is_alive()
    finally:
        MyUpWorker.release.set()
        demand.stop()
        runner.join(60)
        producer.close()
        queues.delete_all()
    assert not runner.is_alive(), "run() returned after stop()"
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)
