"""cwod's API as its README documents it, item by item, without a broker.

The broker-backed behaviour (real workers started and stopped, the service running) is in
``tests/test_cwod_service.py`` and ``tests/test_cwod_example.py``.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from celery import Celery
from kombu import Queue

from celery_ondemand import (
    Agent,
    CeleryWorkerOnDemand,
    ConfigError,
    DownWorker,
    QueueStatus,
    UpWorker,
    WorkerStatus,
)
from celery_ondemand.model import WORKERS
from celery_ondemand.tick import Ticker
from tests.support.observations import ScriptedObserver, observation, settings, worker

BROKER = "redis://127.0.0.1:6379/1"  # never connected to here: construction is offline


def app(*queues: str) -> Celery:
    celery_app = Celery("user-app", broker=BROKER, set_as_current=False)
    if queues:
        celery_app.conf.task_queues = [Queue(name) for name in queues]
    return celery_app


def test_queue_status_constructor_and_properties_are_cwods() -> None:
    assert (QueueStatus("q").size, QueueStatus("q").workers) == (0, [])
    status = QueueStatus("emails", 3, [WorkerStatus("celery@a"), WorkerStatus("celery@b")])
    assert (status.name, status.size, status.has_worker, status.many_workers) == (
        "emails", 3, True, 2)
    assert status.serializer() | {} == {**status.serializer(), "name": "emails", "size": 3,
                                        "workers": ["celery@a", "celery@b"],
                                        "many_workers": 2, "has_worker": True}
    assert QueueStatus("a").workers is not QueueStatus("b").workers, "no shared default list"


def test_worker_status_get_returns_one_cached_instance_per_hostname() -> None:
    hostname = "celery@get-test"
    WORKERS.pop(hostname, None)
    first = WorkerStatus.get(hostname, last_heartbeat_at=5.0)
    assert first.last_heartbeat_at == 5.0, "arguments go to the constructor"
    assert WorkerStatus.get(hostname) is first
    assert WorkerStatus.get(hostname, last_heartbeat_at=9.0).last_heartbeat_at == 5.0, \
        "a cached instance is returned as it is, as in cwod"

    class MyWorkerStatus(WorkerStatus):
        pass

    other = MyWorkerStatus.get("celery@get-test-2", 1.0, 2.0, 3.0, 4.0)
    assert type(other) is MyWorkerStatus
    assert list(other.serializer().values())[:5] == ["celery@get-test-2", 1.0, 2.0, 3.0, 4.0]
    WORKERS.pop(hostname), WORKERS.pop("celery@get-test-2")


def test_the_service_has_cwods_constructor_attributes_and_methods() -> None:
    celery_app = app("add", "diff")
    cwod = CeleryWorkerOnDemand(celery_app, queue_updater_fill_rate=4,
                                api_server_address=("127.0.0.1", 0),
                                api_basic_authorization="dXNlcjpwYXNz")
    assert cwod.celery_app is celery_app
    assert (cwod.queue_updater_fill_rate, cwod.api_server_address,
            cwod.api_basic_authorization) == (4, ("127.0.0.1", 0), "dXNlcjpwYXNz")
    assert list(cwod.queues) == ["add", "diff"]
    assert all(isinstance(q, QueueStatus) for q in cwod.queues.values())
    for thread in (cwod.queue_updater, cwod.worker_monitor, cwod.api_server, cwod.agent):
        assert isinstance(thread, threading.Thread) and not thread.is_alive()
    assert isinstance(cwod.agent, Agent) and cwod.agent.cwod is cwod
    assert [t.name for t in cwod.settings.targets] == ["add", "diff"]

    cwod.add_queue("more")
    assert list(cwod.queues) == ["add", "diff", "more"]
    assert "more" in cwod.ticker.settings.queues and "more" in cwod.ticker.scalers
    assert cwod.serializer()["queues"]["more"]["has_worker"] is False
    assert set(cwod.serializer()) >= {"queues", "workers"}
    assert cwod.connection.heartbeat == 0 and cwod.connection is cwod.connection
    cwod.connection.release()


def test_defaults_are_cwods() -> None:
    cwod = CeleryWorkerOnDemand(app())
    assert (cwod.queue_updater_fill_rate, cwod.api_server_address,
            cwod.api_basic_authorization) == (2, ("", 8000), None)
    assert list(cwod.queues) == ["celery"], "no task_queues: the default queue"


@pytest.mark.parametrize("rate", [0, -1, "2", True, None])
def test_a_bad_fill_rate_is_refused(rate: Any) -> None:
    with pytest.raises(ConfigError, match="queue_updater_fill_rate: must be a number"):
        CeleryWorkerOnDemand(app(), queue_updater_fill_rate=rate)


def test_up_and_down_workers_take_cwods_arguments_and_reach_the_service() -> None:
    cwod = CeleryWorkerOnDemand(app("q"))
    up = UpWorker(cwod.agent, cwod.queues["q"])
    down = DownWorker(cwod.agent, cwod.queues["q"])
    assert (up.agent, up.queue, up.cwod) == (cwod.agent, cwod.queues["q"], cwod)
    assert (down.agent, down.queue, down.cwod, down.worker) == (
        cwod.agent, cwod.queues["q"], cwod, None)
    assert isinstance(up, threading.Thread) and isinstance(down, threading.Thread)


@pytest.fixture
def served() -> Iterator[tuple[CeleryWorkerOnDemand, str]]:
    cwod = CeleryWorkerOnDemand(app("q"), api_server_address=("127.0.0.1", 0),
                                api_basic_authorization=base64.b64encode(b"me:pw").decode())
    assert cwod.api_server is not None
    cwod.api_server.bind()
    cwod.api_server.start()
    host, port = cwod.api_server.server_address
    yield cwod, f"http://{host}:{port}/"
    cwod.api_server.stop()
    cwod.api_server.join(10)


def test_the_api_asks_for_cwods_basic_authorization(
        served: tuple[CeleryWorkerOnDemand, str]) -> None:
    cwod, url = served
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"] == "Basic"
    wrong = urllib.request.Request(url, headers={"Authorization": "Basic bm86bm8="})
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(wrong, timeout=10)
    right = urllib.request.Request(url, headers={
        "Authorization": f"Basic {cwod.api_basic_authorization}"})
    with urllib.request.urlopen(right, timeout=10) as response:
        assert response.headers["Content-type"] == "application/json"
        assert json.loads(response.read()) == json.loads(json.dumps(cwod.serializer()))


def test_an_address_in_use_is_a_clear_error(served: tuple[CeleryWorkerOnDemand, str]) -> None:
    cwod, _ = served
    assert cwod.api_server is not None
    taken = cwod.api_server.server_address
    second = CeleryWorkerOnDemand(app("q"), api_server_address=taken)
    with pytest.raises(ConfigError, match=r"api_server_address .* cannot listen"):
        second.run()
    assert not second.queue_updater.is_alive(), "nothing started"


class Gate(UpWorker):
    """An UpWorker that blocks until the test opens its gate (or 30 s pass)."""

    opened = threading.Event()
    entered: ClassVar[list[str]] = []

    def run(self) -> None:
        Gate.entered.append(self.queue.name)
        Gate.opened.wait(30)


class Failing(UpWorker):
    def run(self) -> None:
        raise RuntimeError("the container did not start")


def cwod_ticker(up: type[UpWorker], **target: Any) -> Ticker:
    config = settings(scaler="tests.support.agents:RecordingDemand", command=None,
                      policy="cwod", **target)
    ticker = Ticker(config, observer=ScriptedObserver(observation({"q": (5, 0)})))  # type: ignore[arg-type]
    ticker.scalers["t"].up = up  # type: ignore[attr-defined]
    return ticker


def test_a_blocking_up_worker_does_not_hold_the_tick_and_runs_once_at_a_time() -> None:
    Gate.opened.clear()
    Gate.entered.clear()
    ticker = cwod_ticker(Gate)
    first = ticker.tick(now=1000.0)
    assert (first.decisions[0].action, first.applied) == ("up", ["t"])
    for now in (1001.0, 1002.0):  # the tick came back while run() blocks; ticks go on
        again = ticker.tick(now=now).decisions[0]
        assert (again.current, again.desired, again.rule) == (1, 1, "starting"), \
            "the start in flight counts as a worker on its way"
    assert Gate.entered == ["q"], "one UpWorker per queue at a time"
    Gate.opened.set()
    assert ticker.scalers["t"].join(10)  # type: ignore[attr-defined]


def test_a_start_counts_until_its_worker_is_heard_then_no_longer() -> None:
    Gate.opened.set()
    ticker = cwod_ticker(Gate, startup_grace_seconds=600)
    ticker.tick(now=1000.0)
    assert ticker.scalers["t"].join(10)  # type: ignore[attr-defined]
    assert ticker.tick(now=1001.0).decisions[0].rule == "starting", \
        "run() returned, but no new worker is heard yet"
    ticker.observer = ScriptedObserver(  # type: ignore[assignment]
        observation({"q": (5, 0)}, [worker("celery@new", ["q"])]))
    heard = ticker.tick(now=1002.0).decisions[0]
    assert (heard.current, heard.desired, heard.rule) == (1, 1, "no-flag")


def test_a_start_whose_worker_came_and_went_is_no_longer_on_its_way() -> None:
    """The worker started was heard, did its task and was stopped before the UpWorker's
    last sleep ended: the next flag up starts a worker again, without waiting for grace."""
    Gate.opened.clear()
    Gate.entered.clear()
    ticker = cwod_ticker(Gate, startup_grace_seconds=600)
    ticker.tick(now=1000.0)
    ticker.observer = ScriptedObserver(  # type: ignore[assignment]
        observation({"q": (0, 0)}, [worker("celery@new", ["q"])]))
    heard = ticker.tick(now=1001.0).decisions[0]
    assert heard.current == 1, "heard: the start is no longer counted on top of it"
    Gate.opened.set()
    assert ticker.scalers["t"].join(10)  # type: ignore[attr-defined]
    ticker.observer = ScriptedObserver(observation({"q": (5, 0)}))  # type: ignore[assignment]
    again = ticker.tick(now=1002.0).decisions[0]
    assert (again.current, again.rule) == (0, "flag_up")
    assert ticker.scalers["t"].join(10)  # type: ignore[attr-defined]
    assert Gate.entered == ["q", "q"]


class Holds(UpWorker):
    """Keeps the queue status it was handed, and waits until the test lets it go."""

    held: ClassVar[list[QueueStatus]] = []

    def run(self) -> None:
        Holds.held.append(self.queue)
        Gate.opened.wait(30)


def test_a_configured_cwod_target_hands_its_thread_a_queue_kept_live() -> None:
    """``scaler: package.module:MyDemand`` in a config (``ondemand run``, the Lambda): the
    queue status an UpWorker holds is refreshed by every later tick, as in cwod."""
    Gate.opened.clear()
    Holds.held.clear()
    ticker = cwod_ticker(Holds)
    ticker.tick(now=1000.0)
    ticker.observer = ScriptedObserver(  # type: ignore[assignment]
        observation({"q": (2, 0)}, [worker("celery@new", ["q"])]))
    ticker.tick(now=1001.0)
    (queue,) = Holds.held
    assert (queue.size, queue.has_worker, [w.hostname for w in queue.workers]) == (
        2, True, ["celery@new"])
    Gate.opened.set()
    assert ticker.scalers["t"].join(10)  # type: ignore[attr-defined]


def test_an_up_worker_that_raises_is_the_targets_error_once() -> None:
    ticker = cwod_ticker(Failing)
    ticker.tick(now=1000.0)
    assert ticker.scalers["t"].join(10)  # type: ignore[attr-defined]
    failed = ticker.tick(now=1001.0)
    assert "Failing(q).run() failed: RuntimeError: the container did not start" in \
        failed.target_errors["t"]
    retried = ticker.tick(now=1002.0)
    assert retried.ok and retried.decisions[0].rule == "flag_up", "the next tick tries again"
    assert ticker.scalers["t"].join(10)  # type: ignore[attr-defined]


class Stops(DownWorker):
    handed: ClassVar[list[str]] = []

    def run(self) -> None:
        assert self.worker is not None
        Stops.handed.append(self.worker.hostname)


def test_a_worker_handed_to_down_worker_counts_as_gone_and_is_not_handed_twice() -> None:
    Stops.handed.clear()
    config = settings(scaler="tests.support.agents:RecordingDemand", command=None,
                      policy="cwod")
    idle = observation({"q": (0, 0)}, [worker("celery@a", ["q"]), worker("celery@b", ["q"])])
    ticker = Ticker(config, observer=ScriptedObserver(idle))  # type: ignore[arg-type]
    ticker.scalers["t"].down = Stops  # type: ignore[attr-defined]
    for now in (1000.0, 1001.0, 1002.0):
        ticker.tick(now=now)
        assert ticker.scalers["t"].join(10)  # type: ignore[attr-defined]
    assert Stops.handed == ["celery@a", "celery@b"], "each idle worker once, one at a time"
    last = ticker.tick(now=1003.0).decisions[0]
    assert (last.current, last.action) == (0, "hold"), "both are on their way out"


class RaisingAgent(Agent):
    def flag_up(self, queue: QueueStatus) -> bool:
        if queue.name == "bad":
            raise KeyError("no such container")
        return bool(super().flag_up(queue))


def test_a_flag_that_raises_holds_its_target_only() -> None:
    from celery_ondemand.config import settings_from_mapping
    from celery_ondemand.decide import decide

    config = settings_from_mapping({"broker_url": BROKER, "targets": [
        {"name": name, "queues": [name], "scaler": "local", "command": "w", "policy": "cwod"}
        for name in ("bad", "good")]})
    agent = RaisingAgent()
    decisions, _ = decide(observation({"bad": (3, 0), "good": (3, 0)}), config, {}, 1000.0,
                          agents={"bad": agent, "good": agent})
    assert [(d.target, d.rule) for d in decisions] == [("bad", "flag-error"),
                                                       ("good", "flag_up")]
    assert "flag_up(bad) raised KeyError" in decisions[0].reason
