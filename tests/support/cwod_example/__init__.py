"""A program written for celery-worker-on-demand, moved to celery-ondemand by one import.

It follows the pattern of cwod's own example program (``example_docker`` in
bothub-it/celery-worker-on-demand), the way its users build on cwod: one worker box per
queue, started when tasks wait and nobody serves the queue (started again if it ran
before), given until the queue reports a worker to come up, and stopped once the queue is
empty and its worker idle: ``flag_down`` combined with the program's own state, and
``self.queue.has_worker`` polled while a worker starts. A box is a local ``celery worker``
process (:mod:`.boxes`) where cwod's example used Docker.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery_ondemand import Agent, CeleryWorkerOnDemand, DownWorker, UpWorker

from . import tasks  # noqa: F401 - the workers find the tasks through this package
from .boxes import Box
from .celery_app import BACKEND, BROKER, celery_app

__all__ = ["BOXES", "ExampleOnDemand", "celery_app"]

log = logging.getLogger(__name__)
BOXES: dict[str, Box] = {}
"""Queue name → the box this program started for it."""


class OwnBoxesOnly(Agent):
    """Scales a queue down only if this program started its box."""

    def flag_down(self, queue: Any) -> Any:
        return super().flag_down(queue) and BOXES.get(queue.name)


class StartBox(UpWorker):
    def run(self) -> None:
        box = BOXES.get(self.queue.name)
        if box is None:
            box = BOXES[self.queue.name] = Box(
                f"celery -A {__name__} worker -l INFO -Q {self.queue.name} -E",
                {"BROKER": BROKER, "BACKEND": BACKEND})
        box.start()
        while not self.queue.has_worker:
            log.debug("box %s for %s: running=%s, no worker heard yet", box.id,
                      self.queue.name, box.running)
            time.sleep(1)


class StopBox(DownWorker):
    def run(self) -> None:
        BOXES[self.queue.name].stop()


class ExampleOnDemand(CeleryWorkerOnDemand):
    Agent = OwnBoxesOnly
    UpWorker = StartBox
    DownWorker = StopBox
