"""A user's Agent subclass, written as cwod's README shows, named in a test config."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from celery_ondemand import Agent, QueueStatus, WorkerStatus
from celery_ondemand.act import Capacity, DownWorker, Scaler, UpWorker


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


class FileCountScaler(Scaler):
    """A user's Scaler subclass whose count lives in a JSON file, so that every new Ticker
    (a cold Lambda) reads the count the last one set, as with a real service."""

    path: ClassVar[str] = ""

    def _read(self, workers: Sequence[WorkerStatus]) -> Capacity:
        count = json.loads(Path(self.path).read_text()) if Path(self.path).exists() else 0
        return Capacity(count, count)

    def _set_desired(self, desired: int, current: int, workers: Sequence[WorkerStatus]) -> None:
        Path(self.path).write_text(json.dumps(desired))


class BrokenScaler(Scaler):
    """A user's scaler with a bug: every call raises."""

    def _read(self, workers: Sequence[WorkerStatus]) -> Capacity:
        raise KeyError("oops")

    def _set_desired(self, desired: int, current: int, workers: Sequence[WorkerStatus]) -> None:
        raise KeyError("oops")


class BrokenWhenScaling(Scaler):
    """A user's scaler that reads its count (0) but raises when asked to change it."""

    def _read(self, workers: Sequence[WorkerStatus]) -> Capacity:
        return Capacity(0, 0)

    def _set_desired(self, desired: int, current: int, workers: Sequence[WorkerStatus]) -> None:
        raise KeyError("oops")
