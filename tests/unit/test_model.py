"""cwod's vocabulary: the attributes and JSON keys a cwod user already relies on."""

from __future__ import annotations

import json

from celery_ondemand import Observation, QueueStatus, WorkerStatus

CWOD_QUEUE_KEYS = ["name", "size", "workers", "many_workers", "has_worker"]
CWOD_WORKER_KEYS = ["hostname", "last_heartbeat_at", "last_task_received_at",
                    "last_task_started_at", "last_task_succeeded_at"]


def test_queue_status_speaks_cwod() -> None:
    worker = WorkerStatus("celery@a", alive=True)
    queue = QueueStatus("emails", size=3, workers=[worker])
    assert (queue.has_worker, queue.many_workers, queue.ready) == (True, 1, 3)
    serialized = queue.serializer()
    assert list(serialized)[:5] == CWOD_QUEUE_KEYS
    assert serialized["workers"] == ["celery@a"]
    assert not QueueStatus("idle").has_worker


def test_worker_status_speaks_cwod_and_busy_means_running() -> None:
    worker = WorkerStatus("celery@a", last_heartbeat_at=1.0, active=0, reserved=3)
    assert list(worker.serializer())[:5] == CWOD_WORKER_KEYS
    assert not worker.busy, "prefetched tasks alone do not make a worker busy"
    worker.active = 1
    assert worker.busy and worker.serializer()["busy"] is True


def test_cwods_rules_read_our_queue_status() -> None:
    """The library's Agent keeps cwod's two rules over a QueueStatus, and a user's subclass
    written as in cwod's README overrides them."""
    from celery_ondemand import Agent
    from tests.support.agents import BigQueueAgent
    from tests.support.observations import settings

    agent = Agent(settings().targets[0])
    served = [WorkerStatus("celery@a", alive=True)]
    assert agent.flag_up(QueueStatus("q", size=1))
    assert not agent.flag_up(QueueStatus("q", size=1, workers=served))
    assert not agent.flag_up(QueueStatus("q", size=0))
    assert agent.flag_down(QueueStatus("q", size=0, workers=served))
    assert not agent.flag_down(QueueStatus("q", size=1, workers=served))
    assert not agent.flag_down(QueueStatus("q", size=0))
    mine = BigQueueAgent(settings().targets[0])
    assert mine.flag_up(QueueStatus("q", size=11, workers=served))
    assert not mine.flag_up(QueueStatus("q", size=10, workers=served))


def test_observation_serializes_to_cwod_status_json() -> None:
    worker = WorkerStatus("celery@a", alive=True, queues=["q"])
    observation = Observation(broker="redis://h/0", observed_at=10.0,
                              queues={"q": QueueStatus("q", workers=[worker])},
                              workers={"celery@a": worker}, sources=["broker"])
    decoded = json.loads(json.dumps(observation.serializer()))
    assert decoded["queues"]["q"]["workers"] == ["celery@a"]
    assert decoded["workers"]["celery@a"]["queues"] == ["q"]
    assert list(observation.live_workers) == ["celery@a"]
