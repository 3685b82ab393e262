"""``CeleryWorkerOnDemand``: cwod's entry point, running our tick.

A cwod user keeps their code::

    class MyDemand(CeleryWorkerOnDemand):
        Agent = MyAgent            # flag_up / flag_down
        UpWorker = MyUpWorker      # run(): start one worker for self.queue
        DownWorker = MyDownWorker  # run(): stop self.worker (an idle one)

    MyDemand(celery_app).run()

and gets one target per queue of ``celery_app`` (``task_queues``, else the default queue),
observed in one burst per tick, the rails (bounds, busy floor, blind hold) and, with a
``state``, a lease and a memory. Pass ``settings`` to describe the targets yourself.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery

from .act import CwodScaler, DownWorker, UpWorker
from .config import Settings, TargetConfig
from .decide import Agent
from .model import QueueStatus, WorkerStatus
from .observe import Observer
from .remember import StateStore
from .tick import Ticker, TickResult

logger = logging.getLogger("CeleryWorkerOnDemand")


class CeleryWorkerOnDemand:
    """Scales workers for a Celery app, cwod style; :meth:`run` ticks until stopped."""

    QueueStatus = QueueStatus
    WorkerStatus = WorkerStatus
    Agent = Agent
    UpWorker = UpWorker
    DownWorker = DownWorker

    def __init__(self, celery_app: Celery, settings: Settings | None = None, *,
                 state: StateStore | None = None, interval: float = 15.0,
                 max_workers: int = 10) -> None:
        self.celery_app = celery_app
        self.settings = settings or Settings(targets=tuple(
            TargetConfig(name=queue, queues=(queue,), policy="cwod", max_workers=max_workers,
                         scaler=f"{type(self).__module__}:{type(self).__qualname__}")
            for queue in self.queue_names()), broker_url=self.broker_url,
            tick_interval_seconds=interval)
        agents = {t.name: self.Agent(t) for t in self.settings.targets}
        self.ticker = Ticker(
            self.settings, observer=Observer(app=celery_app), store=state, agents=agents,
            scalers={t.name: CwodScaler(t, agents[t.name], self.UpWorker, self.DownWorker)
                     for t in self.settings.targets})

    @property
    def broker_url(self) -> str:
        return str(self.celery_app.conf.broker_url or "")

    def queue_names(self) -> list[str]:
        """The app's queues: ``task_queues`` if declared, else the default queue."""
        return self.queue_names_of(self.celery_app)

    @staticmethod
    def queue_names_of(app: Celery) -> list[str]:
        """An app's queues: ``task_queues`` if declared, else the default queue."""
        declared = app.conf.task_queues or []
        names = [q.name for q in declared if getattr(q, "name", None)]
        return names or [str(app.conf.task_default_queue)]

    def tick(self, now: float | None = None) -> TickResult:
        """Observe, decide and act once."""
        result = self.ticker.tick(now=now)
        for decision in result.decisions:
            if decision.action != "hold":
                logger.info("%s: %s %d → %d (%s)", decision.target, decision.action,
                            decision.current, decision.desired, decision.reason)
        if result.error:
            logger.warning("%s; holding every queue", result.error)
        return result

    def run(self) -> None:
        """Tick every ``tick_interval_seconds`` until interrupted."""
        interval = self.settings.tick_interval_seconds
        logger.info("Running CeleryWorkerOnDemand on %s...", self.ticker.observer.url)
        try:
            while True:
                started = time.monotonic()
                self.tick()
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
        finally:
            self.ticker.close()

    def serializer(self) -> dict[str, Any]:
        """cwod's status JSON of the last observation."""
        previous = self.ticker.previous
        return previous.serializer() if previous else {"queues": {}, "workers": {}}
