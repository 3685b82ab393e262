"""``CeleryWorkerOnDemand``: cwod's service, running our tick.

A cwod user keeps their code and changes one import::

    class MyDemand(CeleryWorkerOnDemand):
        Agent = MyAgent            # flag_up / flag_down, may read self.cwod
        UpWorker = MyUpWorker      # run(): start one worker for self.queue
        DownWorker = MyDownWorker  # run(): stop self.worker (an idle one)

    MyDemand(celery_app, queue_updater_fill_rate=2, api_server_address=("", 8000)).run()

Each queue of ``celery_app`` (``task_queues``, else the default queue; more with
:meth:`CeleryWorkerOnDemand.add_queue`) is a target of its own. :meth:`~CeleryWorkerOnDemand.run`
starts cwod's threads:

- ``queue_updater`` reads every queue and worker in one burst (our observation), up to
  ``queue_updater_fill_rate`` times a second, as one burst allows; cwod's
  ``worker_monitor`` and ``queue_size_updater`` are this same thread;
- ``agent`` ticks on each fresh read: it refreshes ``queues`` (cwod's live
  :class:`QueueStatus` objects) and the cached :class:`WorkerStatus` objects in place, asks
  ``flag_up`` / ``flag_down``, applies the rails (bounds, busy floor, blind hold) and starts
  ``UpWorker`` / ``DownWorker`` threads, never waiting for them;
- ``api_server`` serves :meth:`~CeleryWorkerOnDemand.serializer` as JSON.

:meth:`~CeleryWorkerOnDemand.stop` (or Ctrl-C, or SIGTERM) ends them all.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from functools import cached_property
from typing import Any, cast

from celery import Celery
from kombu import Connection
from kombu.utils.limits import TokenBucket

from .act import CwodScaler, DownWorker, Scaler, UpWorker, scaler_for
from .api_server import APIHandler, APIServer
from .config import Settings, TargetConfig
from .decide import Agent, build_agents
from .errors import BrokerUnavailable, ConfigError
from .model import WORKERS, Observation, QueueStatus, WorkerStatus
from .observe import Observer
from .remember import StateStore
from .tick import Ticker, TickResult

logger = logging.getLogger("CeleryWorkerOnDemand")

READ_PATIENCE = 30.0
"""Seconds the agent waits for a read before ticking blind: longer than the slowest
observation (connect timeout, burst, control rounds), so only a stuck updater trips it."""


class LatestRead:
    """The queue updater's newest read, handed to the agent's tick; the Ticker's observer.

    The updater :meth:`put` s each read (or the error it met); the tick's :meth:`observe`
    takes it, turned into cwod's live objects. A read not yet taken is replaced by a newer
    one: the agent always decides on the latest.
    """

    def __init__(self, cwod: CeleryWorkerOnDemand) -> None:
        self.cwod = cwod
        self._ready = threading.Condition()
        self._read: Observation | Exception | None = None

    @property
    def url(self) -> str:
        return self.cwod.observer.url

    def put(self, read: Observation | Exception) -> None:
        with self._ready:
            self._read = read
            self._ready.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait for a read not yet taken (or for the service to stop); True if one is in."""
        with self._ready:
            return self._ready.wait_for(
                lambda: self._read is not None or self.cwod.stopping, timeout)

    def wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def observe(self, queues: Any = None, previous: Any = None) -> Observation:
        with self._ready:
            read, self._read = self._read, None
        if read is None:
            raise BrokerUnavailable(f"no read of the broker in {READ_PATIENCE:.0f}s: the queue "
                                    "updater is stuck")
        if isinstance(read, Exception):
            raise read
        return self.cwod.refresh(read)

    def close(self, failed: bool = False) -> None:
        """The queue updater owns the connection: nothing to release here."""


class QueueUpdater(threading.Thread):
    """Reads every queue and worker, ``queue_updater_fill_rate`` times a second at most."""

    def __init__(self, cwod: CeleryWorkerOnDemand) -> None:
        super().__init__(name="QueueUpdater", daemon=True)
        self.cwod = cwod
        self.previous: Observation | None = None

    def run(self) -> None:
        limiter = TokenBucket(self.cwod.queue_updater_fill_rate)
        while not self.cwod.stopping:
            if limiter.can_consume(1):
                self.update()
            else:
                self.cwod.stopped.wait(limiter.expected_time(1))

    def update(self) -> None:
        """Read once and hand the read (or what went wrong) to the agent."""
        observer = self.cwod.observer
        read: Observation | Exception
        try:
            read = observer.observe(self.cwod.ticker.settings.queues, previous=self.previous)
            self.previous = read
        except BrokerUnavailable as exc:
            read = exc
        except Exception as exc:  # the Ticker reports it and holds; start afresh
            with suppress(Exception):
                observer.close()
            read = exc
        self.cwod.reads.put(read)


class CeleryWorkerOnDemand:
    """Scales workers for a Celery app, cwod style; :meth:`run` serves until stopped.

    cwod's arguments come first, in cwod's order; ours are keyword-only: ``settings`` to
    describe the targets yourself, ``state`` for a lease and a memory across restarts,
    ``max_workers`` per generated target.
    """

    QueueStatus = QueueStatus
    WorkerStatus = WorkerStatus
    QueueUpdater = QueueUpdater
    APIServer = APIServer
    APIHandler = APIHandler
    Agent = Agent
    UpWorker = UpWorker
    DownWorker = DownWorker

    def __init__(self, celery_app: Celery, queue_updater_fill_rate: float = 2,
                 api_server_address: tuple[str, int] | None = ("", 8000),
                 api_basic_authorization: str | None = None, *,
                 settings: Settings | None = None, state: StateStore | None = None,
                 max_workers: int = 10) -> None:
        rate = queue_updater_fill_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise ConfigError("queue_updater_fill_rate: must be a number of reads per second "
                              f"above 0, got {rate!r}")
        self.celery_app = celery_app
        self.queue_updater_fill_rate = queue_updater_fill_rate
        self.api_server_address = api_server_address
        self.api_basic_authorization = api_basic_authorization
        self.max_workers = max_workers
        self.stopped = threading.Event()
        self.queues: dict[str, QueueStatus] = {}
        self.workers: dict[str, WorkerStatus] = {}
        self.last_result: TickResult | None = None
        self._live = threading.RLock()  # the live objects, against a half-refreshed read
        self._ticking = threading.RLock()  # a tick, against add_queue changing targets
        self.observer = Observer(app=celery_app)
        self.reads = LatestRead(self)
        self.settings = settings or Settings(
            targets=(), broker_url=self.broker_url,
            tick_interval_seconds=1 / queue_updater_fill_rate)
        self.agent = self.Agent(self)
        agents = build_agents(self.settings)
        agents.update({t.name: self.agent for t in self.settings.targets
                       if t.policy == "cwod"})
        for agent in agents.values():
            agent.cwod = self  # what an UpWorker's self.cwod finds through its agent
        self.ticker = Ticker(self.settings, observer=cast(Observer, self.reads), store=state,
                             agents=agents, scalers={t.name: self._scaler(t, agents[t.name])
                                                     for t in self.settings.targets})
        for name in self.settings.queues if settings else self.queue_names():
            self.add_queue(name)
        self.queue_updater = self.QueueUpdater(self)
        self.queue_size_updater = self.worker_monitor = self.queue_updater
        self.api_server = self.APIServer(self) if api_server_address is not None else None

    @property
    def broker_url(self) -> str:
        return str(self.celery_app.conf.broker_url or "")

    @property
    def stopping(self) -> bool:
        return self.stopped.is_set()

    @cached_property
    def connection(self) -> Connection:
        """cwod: a broker connection without heartbeats, for your own use. The reads use
        one of their own (a kombu connection is not safe to share across threads)."""
        connection: Connection = self.celery_app.connection_for_write(heartbeat=0)
        return connection

    @cached_property
    def channel(self) -> Any:
        """cwod: the default channel of :attr:`connection`."""
        return self.connection.default_channel

    def queue_names(self) -> list[str]:
        """The app's queues: ``task_queues`` if declared, else the default queue."""
        return self.queue_names_of(self.celery_app)

    @staticmethod
    def queue_names_of(app: Celery) -> list[str]:
        """An app's queues: ``task_queues`` if declared, else the default queue."""
        declared = app.conf.task_queues or []
        names = [q.name for q in declared if getattr(q, "name", None)]
        return names or [str(app.conf.task_default_queue)]

    def add_queue(self, queue_name: str) -> None:
        """cwod: watch ``queue_name`` too, from the next read on: a target of its own
        (unless a target of ``settings`` serves it), scaled by this class's UpWorker and
        DownWorker. A queue already watched keeps its live status."""
        with self._ticking, self._live:
            self.queues.setdefault(queue_name, self.QueueStatus(queue_name))
            if queue_name not in self.ticker.settings.queues:
                target = TargetConfig(
                    name=queue_name, queues=(queue_name,), policy="cwod",
                    max_workers=self.max_workers,
                    scaler=f"{type(self).__module__}:{type(self).__qualname__}")
                self.ticker.agents[target.name] = self.agent
                self.ticker.scalers[target.name] = CwodScaler(
                    target, self.agent, self.UpWorker, self.DownWorker, self.queues)
                self.settings = replace(self.settings,
                                        targets=(*self.settings.targets, target))
                self.ticker.settings = self.settings
        logger.info("Queue %s added!", queue_name)

    def _scaler(self, target: TargetConfig, agent: Any) -> Scaler:
        """A target of the given ``settings``: its own scaler; a cwod one sees live queues."""
        scaler = scaler_for(target, agent)
        if isinstance(scaler, CwodScaler):
            scaler.queues, scaler.own_queues = self.queues, False
        return scaler

    def refresh(self, read: Observation) -> Observation:
        """Bring cwod's live objects up to ``read`` and return it made of them.

        Workers are the cached :meth:`WorkerStatus.get` objects; a worker no longer heard
        is dropped (cwod kept every worker it ever saw).
        """
        with self._live:
            workers = {}
            for hostname, seen in read.workers.items():
                cached = self.WorkerStatus.get(hostname)
                cached.refresh(seen)
                workers[hostname] = cached
            for gone in set(self.workers) - set(workers):
                WORKERS.pop(gone, None)
            self.workers = workers
            for name, queue in read.queues.items():
                live = self.queues.setdefault(name, self.QueueStatus(name))
                live.refresh(queue, [workers[w.hostname] for w in queue.workers
                                     if w.hostname in workers])
            return replace(read, workers=dict(workers),
                           queues={name: self.queues[name] for name in read.queues})

    def tick(self, now: float | None = None) -> TickResult:
        """Read and tick once, here and now (scripts and tests; not while :meth:`run` runs)."""
        if self.queue_updater.is_alive():
            raise RuntimeError("tick() while run() runs: the agent thread is ticking")
        self.queue_updater.update()
        return self._tick(now)

    def _tick(self, now: float | None = None) -> TickResult:
        with self._ticking:
            result = self.ticker.tick(now=now)
        self.last_result = result
        for decision in result.decisions:
            if decision.action != "hold":
                logger.info("%s: %s %d → %d (%s)", decision.target, decision.action,
                            decision.current, decision.desired, decision.reason)
        for error in result.target_errors.values():
            logger.error("%s", error)
        if result.error:
            logger.warning("%s; holding every queue", result.error)
        return result

    def watch(self) -> None:
        """The agent's loop: a tick on every fresh read, until the service stops."""
        patience = READ_PATIENCE + 1 / self.queue_updater_fill_rate
        while not self.stopping:
            self.reads.wait(patience)
            if self.stopping:
                break
            try:
                self._tick()
            except Exception:  # a bug must not end the service: the next read ticks again
                logger.exception("tick failed")

    def run(self) -> None:
        """cwod: start the service and serve until :meth:`stop`, Ctrl-C or SIGTERM.

        Raises if the API server cannot listen, or a thread of the service dies.
        """
        logger.info("Running CeleryWorkerOnDemand on %s...", self.observer.url)
        if self.api_server is not None:
            self.api_server.bind()
        threads = [t for t in (self.queue_updater, self.api_server, self.agent) if t]
        for thread in threads:
            thread.start()
        dead: list[str] = []
        try:
            with _stop_on_sigterm(self):
                while not self.stopped.wait(0.5) and not dead:
                    dead = [t.name for t in threads if not t.is_alive()]
        except KeyboardInterrupt:
            pass
        finally:
            self._shut_down(threads)
        if dead:
            raise RuntimeError(f"CeleryWorkerOnDemand stopped: thread {', '.join(dead)} died "
                               "(its traceback is logged above)")

    def stop(self) -> None:
        """Ask :meth:`run` to return; safe from any thread and from a signal handler."""
        self.stopped.set()
        self.reads.wake()

    def _shut_down(self, threads: list[Any]) -> None:
        self.stop()
        if self.api_server is not None:
            self.api_server.stop()
        for thread in threads:
            thread.join(READ_PATIENCE)
        self.ticker.close()
        self.observer.close()
        if "connection" in self.__dict__:
            with suppress(Exception):
                self.connection.release()
        logger.info("CeleryWorkerOnDemand stopped")

    def serializer(self) -> dict[str, Any]:
        """cwod's status JSON, ``{"queues": ..., "workers": ...}``, of the latest read,
        plus when it was read, its gaps and oddities, and the last tick's decisions."""
        with self._live:
            status: dict[str, Any] = {
                "queues": {name: q.serializer() for name, q in self.queues.items()},
                "workers": {name: w.serializer() for name, w in self.workers.items()}}
        result = self.last_result
        observation = result.observation if result else None
        status["observed_at"] = observation.observed_at if observation else None
        status["problems"] = list(observation.problems) if observation else []
        status["warnings"] = result.warnings() if result else []
        status["decisions"] = result.serializer()["decisions"] if result else []
        status["error"] = result.error if result else None
        return status


@contextmanager
def _stop_on_sigterm(cwod: CeleryWorkerOnDemand) -> Iterator[None]:
    """SIGTERM (``docker stop``, systemd) stops the service as Ctrl-C does, in the main
    thread; elsewhere signals are not ours to take."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: cwod.stop())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
