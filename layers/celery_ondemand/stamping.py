"""Stamp each published task with its publish time, so a queue's oldest task has an age.

Celery puts no enqueue time in a message (no header, no AMQP ``timestamp``), so nobody can
tell how long the head of a queue has waited. A ``before_task_publish`` handler adds one
header; the Redis probe peeks the oldest message and reads it back.
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import before_task_publish

PUBLISHED_AT_HEADER = "ondemand_published_at"
"""Header holding the publish time, in seconds since the epoch (the producer's clock)."""

_DISPATCH_UID = "celery_ondemand.stamp_publish_time"


def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    if headers.get("retries"):
        # A retry is published anew carrying its first publish's headers: its wait in the
        # queue starts now, not when the task was first sent.
        headers[PUBLISHED_AT_HEADER] = time.time()
    else:
        headers.setdefault(PUBLISHED_AT_HEADER, time.time())


def stamp_publish_time() -> None:
    """Make every task published from this process carry :data:`PUBLISHED_AT_HEADER`.

    Call it once where the producers configure Celery (for example beside ``app.conf``).
    Celery's publish signal is process-wide, so one call covers every app; calling it again
    does nothing. A header the producer set itself is kept, except on a retry, which is
    stamped anew.
    """
    before_task_publish.connect(_stamp, weak=False, dispatch_uid=_DISPATCH_UID)


def published_at(headers: dict[str, Any] | None) -> float | None:
    """The publish time stamped in a message's headers, or None if absent or malformed."""
    if not headers:
        return None
    value = headers.get(PUBLISHED_AT_HEADER)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None
