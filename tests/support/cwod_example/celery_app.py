"""The example's Celery app: its broker and result backend from the environment, as
cwod's example reads them, and two queues (prefixed, so runs on a shared broker differ)."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

BROKER = os.environ.get("BROKER", "redis://localhost:6379/0")
BACKEND = os.environ.get("BACKEND", BROKER)
ADD_QUEUE = os.environ.get("QUEUE_PREFIX", "") + "add"
DIFF_QUEUE = os.environ.get("QUEUE_PREFIX", "") + "diff"

celery_app = Celery("tasks", broker=BROKER, backend=BACKEND)
celery_app.conf.task_queues = [Queue(ADD_QUEUE), Queue(DIFF_QUEUE)]
celery_app.conf.broker_connection_retry_on_startup = True
