"""cwod's example program (``example_docker`` in bothub-it/celery-worker-on-demand), written
for celery-ondemand the way a cwod user ports it: the one import changed.

Each queue gets a "container" running a Celery worker when tasks wait and none serves it
(started, or restarted if it exists), and the container is stopped once the queue is empty
and its worker idle. The Docker client is the stand-in in :mod:`.containers`.
"""

from __future__ import annotations

import logging
from time import sleep
from typing import Any

from celery_ondemand import Agent, CeleryWorkerOnDemand, DownWorker, UpWorker

from . import tasks  # noqa: F401 - the workers find the tasks through this package
from .celery_app import BACKEND, BROKER, celery_app
from .containers import Container, DockerClient

__all__ = ["MyCeleryWorkerOnDemand", "celery_app"]

logger = logging.getLogger("test-docker")

docker_client = DockerClient(base_url="unix://var/run/docker.sock")
CONTAINERS: dict[str, Container] = {}


class MyAgent(Agent):
    def flag_down(self, queue: Any) -> Any:
        # Only a queue whose container this program started is scaled down.
        return super().flag_down(queue) and CONTAINERS.get(queue.name)


class MyUpWorker(UpWorker):
    def run(self) -> None:
        container = CONTAINERS.get(self.queue.name)
        if container:
            container.start()
        else:
            container = docker_client.containers.run(
                "cwod-example-docker:latest",
                entrypoint=f"celery -A tests.support.cwod_example worker -l INFO "
                           f"-Q {self.queue.name} -E",
                environment={"BROKER": BROKER, "BACKEND": BACKEND},
                network="cwod-example-docker",
                detach=True,
            )
            CONTAINERS[self.queue.name] = container
        while not self.queue.has_worker:
            container.reload()
            logger.debug("container.status is: %s", container.status)
            sleep(1)


class MyDownWorker(DownWorker):
    def run(self) -> None:
        CONTAINERS[self.queue.name].stop()


class MyCeleryWorkerOnDemand(CeleryWorkerOnDemand):
    Agent = MyAgent
    UpWorker = MyUpWorker
    DownWorker = MyDownWorker
