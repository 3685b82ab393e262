"""The Celery app the demo's workers run: tasks that take real time and record themselves.

Each task writes one row (id, publish, start and finish times, worker) into the demo's
SQLite file, so the demo can count completions, spot duplicates and measure waits on any
broker. Configured by ``ONDEMAND_DEMO_BROKER`` and ``ONDEMAND_DEMO_DB``.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time

from celery import Celery

app = Celery("ondemand-demo", broker=os.environ.get("ONDEMAND_DEMO_BROKER", "memory://"))
app.conf.update(
    task_acks_late=True,  # a worker lost mid-task returns the task to the queue
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,  # long tasks: take one at a time, leave the rest visible
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

SCHEMA = ("CREATE TABLE IF NOT EXISTS done (id TEXT, published REAL, started REAL, "
          "finished REAL, worker TEXT)")


@app.task(name="demo.work", bind=True)
def work(self: object, seconds: float, published: float) -> None:
    """Hold a worker slot for ``seconds`` and write down when it waited and ran."""
    started = time.time()
    time.sleep(seconds)
    with sqlite3.connect(os.environ["ONDEMAND_DEMO_DB"], timeout=30) as db:
        db.execute(SCHEMA)
        db.execute("INSERT INTO done VALUES (?, ?, ?, ?, ?)",
                   (self.request.id, published, started, time.time(),  # type: ignore[attr-defined]
                    self.request.hostname or socket.gethostname()))  # type: ignore[attr-defined]
