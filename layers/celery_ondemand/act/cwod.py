"""cwod's ``UpWorker`` / ``DownWorker``: a user's own way to start and stop one worker.

As in celery-worker-on-demand, a subclass overrides ``run()``; ``self.agent`` is the
target's Agent and ``self.queue`` the :class:`~celery_ondemand.QueueStatus` it acts for.
:class:`CwodScaler` turns an absolute desired count into that many ``run()`` calls, and
gives each ``DownWorker`` the idle worker it should stop as ``self.worker`` (cwod could
not know which workers were busy; here a busy worker is never handed over).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..config import TargetConfig
from ..model import QueueStatus, WorkerStatus
from .base import Capacity, Scaler


class UpWorker(threading.Thread):
    """Starts one worker for ``self.queue``: override :meth:`run`."""

    def __init__(self, agent: Any, queue: QueueStatus) -> None:
        super().__init__(daemon=True)
        self.agent = agent
        self.queue = queue

    def run(self) -> None:
        raise NotImplementedError("UpWorker.run() must start one worker for self.queue")


class DownWorker(threading.Thread):
    """Stops one worker serving ``self.queue`` (``self.worker``, an idle one): override
    :meth:`run`."""

    def __init__(self, agent: Any, queue: QueueStatus, worker: WorkerStatus | None = None
                 ) -> None:
        super().__init__(daemon=True)
        self.agent = agent
        self.queue = queue
        self.worker = worker

    def run(self) -> None:
        raise NotImplementedError("DownWorker.run() must stop self.worker")


class CwodScaler(Scaler):
    """A target scaled by a user's UpWorker / DownWorker classes, counted by observation."""

    def __init__(self, target: TargetConfig, agent: Any, up: type[UpWorker],
                 down: type[DownWorker]) -> None:
        super().__init__(target)
        self.agent, self.up, self.down = agent, up, down

    def _read(self, workers: Sequence[WorkerStatus]) -> Capacity:
        return Capacity(len(workers), len(workers))

    def _set_desired(self, desired: int, current: int, workers: Sequence[WorkerStatus]) -> None:
        queue = QueueStatus(self.target.queues[0],
                            workers=[w for w in workers if self.target.queues[0] in w.queues])
        for _ in range(desired - current):
            self.up(self.agent, queue).run()
        idle = [w for w in workers if not w.busy]
        for worker in idle[:max(0, current - desired)]:
            self.down(self.agent, queue, worker).run()
