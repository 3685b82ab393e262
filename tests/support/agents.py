"""A user's Agent subclass, written as cwod's README shows, named in a test config."""

from __future__ import annotations

from typing import ClassVar

from celery_ondemand import Agent, QueueStatus
from celery_ondemand.act import DownWorker, UpWorker


class BigQueueAgent(Agent):
    """Adds a worker whenever more than ten tasks wait, even if the queue has workers."""

    def flag_up(self, queue: QueueStatus) -> bool:
        return queue.size > 10 or super().flag_up(queue)

    def flag_down(self, queue: QueueStatus) -> bool:
        return False


class NotAnAgent:
    """Named in a config to prove a policy must subclass Agent."""


class RecordingUp(UpWorker):
    """cwod style: 'starts' a worker by writing down which queue asked for one."""

    started: ClassVar[list[str]] = []

    def run(self) -> None:
        RecordingUp.started.append(self.queue.name)


class RecordingDown(DownWorker):
    """cwod style: 'stops' the worker it is handed by writing down its name."""

    stopped: ClassVar[list[str]] = []

    def run(self) -> None:
        assert self.worker is not None and not self.worker.busy
        RecordingDown.stopped.append(self.worker.hostname)


class RecordingDemand:
    """Names the UpWorker / DownWorker pair, as a cwod CeleryWorkerOnDemand subclass does."""

    UpWorker = RecordingUp
    DownWorker = RecordingDown
