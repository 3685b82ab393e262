"""The worker-side settings the autoscaler relies on, applied in one call.

Like a shared ``Config`` every worker of a deployment imports. Each setting carries its
reason; a setting the user already chose is kept, and :func:`configure` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.app.defaults import DEFAULTS
from kombu import Queue

from ..stamping import stamp_publish_time

logger = logging.getLogger("celery_ondemand.worker")


CHANGES_TO_SAY = {
    "task_acks_late": ("; a task is now acknowledged when it ends, so one longer than the "
                       "broker's redelivery limit (RabbitMQ consumer_timeout, 30 min by "
                       "default; the Redis/SQS visibility_timeout) is delivered again"),
    "worker_prefetch_multiplier": "",
}
"""Celery defaults :func:`configure` changes that change how tasks run, said in the log."""


@dataclass(frozen=True)
class Config:
    """What :func:`configure` applies; every default has a reason in :meth:`settings`."""

    queues: tuple[str, ...] = ()
    prefetch_multiplier: int = 1
    visibility_timeout: int | None = None
    """Left to the broker's default (Redis 3600 s, SQS 1800 s) unless given: on Redis and
    SQS a task still running, or an ETA/countdown task still waiting, when it passes is
    delivered again and runs twice. A shorter one returns a lost worker's tasks sooner,
    but no value is safe for every deployment; ``ondemand doctor`` checks yours against
    the longest task and the furthest ETA it sees."""
    stamp_publish_time: bool = True

    def settings(self) -> dict[str, tuple[Any, str]]:
        """Setting → (value, why the autoscaler needs it)."""
        wanted: dict[str, tuple[Any, str]] = {
            "worker_send_task_events": (True, "task events give last_task_* times"),
            "task_acks_late": (True, "a task on a worker that is stopped or lost goes back "
                               "to the queue instead of vanishing"),
            "task_reject_on_worker_lost": (True, "with acks_late: a task whose process died "
                                           "is requeued, not acknowledged"),
            "worker_prefetch_multiplier": (self.prefetch_multiplier,
                                           "long tasks stay visible in the queue (ready) "
                                           "instead of hiding on one busy worker"),
        }
        if self.visibility_timeout is not None:
            wanted["broker_transport_options"] = (
                {"visibility_timeout": self.visibility_timeout},
                "Redis/SQS: a task of a lost worker returns after this long; a task running "
                "or an ETA waiting longer runs twice (keep it above both)")
        if self.queues:
            wanted["task_queues"] = ([Queue(name) for name in self.queues],
                                     "the queues are declared, so a missing one is visible")
        return wanted


def configure(app: Celery, queues: Iterable[str] = (), config: Config | None = None
              ) -> list[str]:
    """Apply the settings; returns (and logs) one line per setting kept as the user set it."""
    config = config or Config(queues=tuple(queues))
    kept = []
    for name, (value, why) in config.settings().items():
        if name == "broker_transport_options":
            options = dict(app.conf.broker_transport_options or {})
            if "visibility_timeout" in options:
                if options["visibility_timeout"] != value["visibility_timeout"]:
                    kept.append(f"kept your broker_transport_options.visibility_timeout="
                                f"{options['visibility_timeout']!r} ({why})")
                continue
            app.conf.broker_transport_options = {**options, **value}
            continue
        if _user_set(app, name) and app.conf[name] != value:
            kept.append(f"kept your {name}={app.conf[name]!r}; celery-ondemand recommends "
                        f"{value!r}: {why}")
            continue
        if app.conf.get(name) != value and name in CHANGES_TO_SAY:
            logger.info(f"celery-ondemand set {name}={value!r}: {why}"
                        f"{CHANGES_TO_SAY[name]}")
        app.conf[name] = value
    if config.stamp_publish_time:
        stamp_publish_time()
    for line in kept:
        logger.warning(line)
    return kept


def _user_set(app: Celery, name: str) -> bool:
    """Set by the user (in ``app.conf`` or a config object), not left at Celery's default."""
    changes = (app.conf.maps or [{}])[0]
    return name in changes or app.conf.get(name) != DEFAULTS.get(name)
