"""celery-ondemand: queue-driven autoscaling for Celery workers.

The flow, one sub-package each: observe (brokers, worker events) → decide → act → remember.
The names a celery-worker-on-demand user knows are importable from here.
"""

from .act import DownWorker, Scaler, UpWorker
from .api_server import APIHandler, APIServer
from .decide import Agent, CapacityAgent, Decision, TargetMemory
from .errors import (
    BrokerAuthFailed,
    BrokerUnavailable,
    ConfigError,
    LeaseLost,
    OnDemandError,
    ScalerError,
    StateError,
    UnknownBroker,
)
from .model import Observation, QueueStatus, WorkerStatus
from .observe import Observer
from .service import CeleryWorkerOnDemand, QueueUpdater
from .stamping import PUBLISHED_AT_HEADER, stamp_publish_time

__all__ = [
    "PUBLISHED_AT_HEADER",
    "APIHandler",
    "APIServer",
    "Agent",
    "BrokerAuthFailed",
    "BrokerUnavailable",
    "CapacityAgent",
    "CeleryWorkerOnDemand",
    "ConfigError",
    "Decision",
    "DownWorker",
    "LeaseLost",
    "Observation",
    "Observer",
    "OnDemandError",
    "QueueStatus",
    "QueueUpdater",
    "Scaler",
    "ScalerError",
    "StateError",
    "TargetMemory",
    "UnknownBroker",
    "UpWorker",
    "WorkerStatus",
    "stamp_publish_time",
]
