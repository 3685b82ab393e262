"""cwod's ``UpWorker`` / ``DownWorker``: a user's own way to start and stop one worker.

As in celery-worker-on-demand, a subclass overrides ``run()``, and each runs as a thread:
``self.agent`` is the Agent, ``self.cwod`` the ``CeleryWorkerOnDemand`` it serves (when
there is one) and ``self.queue`` the :class:`~celery_ondemand.QueueStatus` it acts for — the
live one, refreshed by every read, so ``while not self.queue.has_worker: sleep(1)`` ends
once the new worker is heard.

:class:`CwodScaler` turns the tick's decisions into those threads, at most one of each per
target at a time, as cwod's Agent did per queue; the tick never waits for them, so a
``run()`` that blocks holds up nobody else. A start counts as a worker on its way until a
new worker is heard (or ``startup_grace_seconds`` pass); a worker handed to a
``DownWorker`` (as ``self.worker``, always an idle one: cwod could not tell) counts as gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import TargetConfig
from ..errors import ScalerError
from ..model import Observation, QueueStatus, WorkerStatus
from .base import Capacity, Scaler

logger = logging.getLogger("CeleryWorkerOnDemand")


class _UserThread(threading.Thread):
    """A thread whose ``run()`` a user writes; what it raises is logged and kept."""

    def __init__(self, agent: Any, queue: QueueStatus) -> None:
        super().__init__(name=f"{type(self).__name__}({queue.name})", daemon=True)
        self.agent = agent
        self.queue = queue
        self.raised: Exception | None = None
        user_run = self.run

        def run_and_keep_error() -> None:
            try:
                user_run()
            except Exception as exc:
                self.raised = exc
                logger.exception("%s failed", self.name)

        # The user overrides run(); Thread calls self.run(): wrap it where Thread finds it.
        self.run = run_and_keep_error  # type: ignore[method-assign]

    @property
    def cwod(self) -> Any:
        """The ``CeleryWorkerOnDemand`` this thread works for (None outside one)."""
        return getattr(self.agent, "cwod", None)


class UpWorker(_UserThread):
    """Starts one worker for ``self.queue``: override :meth:`run`."""

    def run(self) -> None:
        raise NotImplementedError("UpWorker.run() must start one worker for self.queue")


class DownWorker(_UserThread):
    """Stops one worker serving ``self.queue`` (``self.worker``, an idle one): override
    :meth:`run`."""

    def __init__(self, agent: Any, queue: QueueStatus, worker: WorkerStatus | None = None
                 ) -> None:
        super().__init__(agent, queue)
        self.worker = worker

    def run(self) -> None:
        raise NotImplementedError("DownWorker.run() must stop self.worker")


@dataclass
class _Start:
    """An UpWorker started at ``at`` while ``before`` served the target."""

    thread: UpWorker
    at: float
    before: frozenset[str]
    arrived: bool = False
    """A worker not serving at the start has been heard since (it may be gone again)."""


class CwodScaler(Scaler):
    """A target scaled by a user's UpWorker / DownWorker threads, counted by observation.

    ``queues`` are the live statuses handed to the threads, kept by a
    ``CeleryWorkerOnDemand``; without them the scaler keeps its own, refreshed by every
    observation it is shown.
    """

    def __init__(self, target: TargetConfig, agent: Any, up: type[UpWorker],
                 down: type[DownWorker], queues: Mapping[str, QueueStatus] | None = None,
                 ) -> None:
        super().__init__(target)
        self.agent, self.up, self.down = agent, up, down
        self.own_queues = queues is None
        self.queues: Mapping[str, QueueStatus] = queues if queues is not None else {
            name: QueueStatus(name) for name in target.queues}
        self.starting: _Start | None = None
        self.down_thread: DownWorker | None = None
        self.stopping: dict[str, float] = {}
        """Workers handed to a DownWorker, with when: gone for counting until unheard."""

    def observed(self, observation: Observation | None) -> None:
        if observation is None or not self.own_queues:
            return
        for name, status in self.queues.items():
            if name in observation.queues:
                seen = observation.queues[name]
                status.refresh(seen, list(seen.workers))

    def _read(self, workers: Sequence[WorkerStatus]) -> Capacity:
        heard = {w.hostname for w in workers}
        self._forget_done(heard, time.monotonic())
        starting = 1 if self.starting is not None and not self.starting.arrived else 0
        leaving = len(heard & set(self.stopping))
        return Capacity(len(workers) + starting - leaving, len(workers), pending=starting)

    def _forget_done(self, heard: set[str], now: float) -> None:
        """Settle finished threads; a thread's error is this tick's error for the target."""
        grace = self.target.startup_grace_seconds
        self.stopping = {host: at for host, at in self.stopping.items()
                         if host in heard and now - at < grace}
        failed: list[str] = []
        start = self.starting
        if start is not None:
            start.arrived = start.arrived or bool(heard - start.before)
        if start is not None and not start.thread.is_alive():
            if start.thread.raised is not None or start.arrived or now - start.at >= grace:
                self.starting = None
            if start.thread.raised is not None:
                failed.append(_failure(start.thread))
        down = self.down_thread
        if down is not None and not down.is_alive():
            self.down_thread = None
            if down.raised is not None:
                failed.append(_failure(down))
                if down.worker is not None:
                    self.stopping.pop(down.worker.hostname, None)
        if failed:
            raise ScalerError(f"target {self.target.name}: {'; '.join(failed)}")

    def _set_desired(self, desired: int, current: int, workers: Sequence[WorkerStatus]) -> None:
        now = time.monotonic()
        if desired > current and self.starting is None:
            thread = self.up(self.agent, self._queue(self.target.queues[0]))
            self.starting = _Start(thread, now, frozenset(w.hostname for w in workers))
            thread.start()
        elif desired < current and self.down_thread is None:
            idle = [w for w in workers if not w.busy and w.hostname not in self.stopping]
            if idle:
                worker = idle[0]
                queue = next((q for q in self.target.queues if q in worker.queues),
                             self.target.queues[0])
                self.down_thread = self.down(self.agent, self._queue(queue), worker)
                self.stopping[worker.hostname] = now
                self.down_thread.start()

    def _queue(self, name: str) -> QueueStatus:
        status = self.queues.get(name)
        return status if status is not None else QueueStatus(name)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the threads in flight; True if none is left."""
        deadline = time.monotonic() + timeout
        threads = [t for t in (self.starting.thread if self.starting else None,
                               self.down_thread) if t is not None]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)


def _failure(thread: UpWorker | DownWorker) -> str:
    return f"{thread.name}.run() failed: {type(thread.raised).__name__}: {thread.raised}"
