"""The worker bootstep: hold scale-in protection while tasks run, report the platform,
and answer ``ondemand_drain``.

Add it with :func:`celery_ondemand.worker.install` (or ``app.steps["worker"].add``), as
Celery's "Extensions and Bootsteps" guide describes. Protection follows the worker's
running tasks, checked every ``ONDEMAND_PROTECTION_POLL`` seconds (default 1): set when a
task starts, lifted once the worker has been idle ``ONDEMAND_PROTECTION_LINGER`` seconds
(default 30: a worker between two short tasks is neither exposed nor calling the platform's
API every second; a call that fails is tried again after a wait that doubles up to a
minute), with an expiry on ECS (``ONDEMAND_PROTECTION_MINUTES``, default 60,
renewed at half-time) so a crashed worker does not stay protected. What the step knows
(platform, task ARN or instance id, protected or not) appears in the worker's ``stats()``
reply under
``ondemand``, where the autoscaler reads it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from celery import bootsteps
from celery.platforms import EX_OK
from celery.worker import state as worker_state
from celery.worker.control import control_command

from .protection import Protection, detect

logger = logging.getLogger("celery_ondemand.worker")


MAX_RETRY_SECONDS = 60.0
"""The longest wait between two tries of a protection call that keeps failing (the wait
doubles from one poll)."""


class OnDemandStep(bootsteps.StartStopStep):
    """Scale-in protection while busy, for the worker it is added to."""

    label = "celery-ondemand"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.poll = float(os.environ.get("ONDEMAND_PROTECTION_POLL", "1.0"))
        self.minutes = int(os.environ.get("ONDEMAND_PROTECTION_MINUTES", "60"))
        self.linger = float(os.environ.get("ONDEMAND_PROTECTION_LINGER", "30"))
        self.protection: Protection = Protection()
        self.protected = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        try:
            self.protection = detect()
        except Exception as exc:
            logger.warning("celery-ondemand: scale-in protection unavailable: %s", exc)
        if self.protection.platform == "none":
            logger.info("celery-ondemand: not on ECS or EC2 Auto Scaling: no scale-in "
                        "protection to hold")
            return
        logger.info("celery-ondemand: holding %s scale-in protection while tasks run",
                    self.protection.platform)
        # Nothing runs yet: lift what a crashed predecessor on this task or instance may
        # have left (EC2's protection never expires, and the tick leaves it to us).
        self._set(False)
        self._thread = threading.Thread(target=self._follow_tasks, daemon=True,
                                        name="celery-ondemand-protection")
        self._thread.start()
        atexit.register(self._lift_at_exit, os.getpid())

    def _lift_at_exit(self, pid: int) -> None:
        """The last word, once the pool has finished (stop() may not have waited for the
        follow thread): an instance's protection never expires by itself."""
        if os.getpid() == pid and self.protected and not worker_state.active_requests:
            self._set(False)

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None and not worker_state.active_requests:
            self._thread.join(timeout=5)

    def info(self, parent: Any) -> dict[str, Any]:  # type: ignore[override]  # stubs say None
        return {"ondemand": {**self.protection.info(), "protected": self.protected,
                             "rate_limited": _rate_limited(parent),
                             "draining": _drained_queues,
                             "beat": getattr(parent, "beat", None) is not None}}

    def _going_on(self) -> bool:
        """After one poll: whether to go on following. Until stopped, and past that while
        tasks still run: Celery may stop this step before its pool, whose warm shutdown
        then finishes them; their shield must outlast them."""
        if not self._stop.wait(self.poll):
            return True
        if worker_state.active_requests:
            time.sleep(self.poll)  # stopped: wait() no longer waits
            return True
        return False

    def _follow_tasks(self) -> None:
        set_at = busy_at = retry_at = 0.0
        backoff = self.poll
        while self._going_on():
            now = time.monotonic()
            if worker_state.active_requests:
                busy_at = now
            wanted = now - busy_at < self.linger if busy_at else False
            renew = self.protected and now - set_at > self.minutes * 30
            if (wanted != self.protected or (wanted and renew)) and now >= retry_at:
                done = self._set(wanted)
                if done is None:  # refused (a role without the permission?) or throttled:
                    # every poll of every busy worker would call and log again; back off
                    retry_at, backoff = now + backoff, min(backoff * 2, MAX_RETRY_SECONDS)
                else:
                    set_at, retry_at, backoff = done, 0.0, self.poll
        if self.protected:
            self._set(False)

    def _set(self, enabled: bool) -> float | None:
        try:
            self.protection.set(enabled, self.minutes)
        except Exception as exc:
            logger.warning("celery-ondemand: could not %s scale-in protection: %s",
                           "set" if enabled else "lift", exc)
            return None
        self.protected = enabled
        return time.monotonic()


def _rate_limited(worker: Any) -> int:
    """Tasks this worker has taken from the broker and holds back under a rate limit:
    neither running nor reserved, so without this it would look like a zombie."""
    buckets = getattr(getattr(worker, "consumer", None), "task_buckets", None) or {}
    return sum(len(bucket.contents) for bucket in list(buckets.values())
               if bucket is not None and hasattr(bucket, "contents"))


_drained_queues: list[str] | None = None
"""The queues this worker stopped consuming when told to drain, None until then: reported
in ``stats()``, so the tick knows whose worker it is while it consumes nothing."""


@control_command(name="ondemand_drain")
def ondemand_drain(state: Any, **_: Any) -> dict[str, str]:
    """Stop consuming every queue, finish the running tasks, then exit (warm shutdown).

    The worker stays up, heard and shielded, until its tasks are done, and only then shuts
    down: a shutdown begun at once would stop its control and heartbeats while the tasks
    still run (a gap in every read), and could stop the protection step first."""
    global _drained_queues
    consumer = state.consumer
    queues = [q.name for q in consumer.task_consumer.queues] if consumer.task_consumer else []
    _drained_queues = sorted({*(_drained_queues or []), *queues})
    for name in queues:
        consumer.call_soon(consumer.cancel_task_queue, name)
    threading.Thread(target=_exit_when_done, daemon=True,
                     name="celery-ondemand-drain").start()
    return {"ok": f"draining: no longer consuming {', '.join(queues) or 'anything'}"}


def _exit_when_done(poll: float = 0.5) -> None:
    """Once nothing runs on this worker, ask for a warm shutdown, as Celery's
    own SIGTERM handler does (its event loop checks the flag each turn)."""
    time.sleep(poll)  # the queues are cancelled on the loop's next turn
    while worker_state.active_requests:
        time.sleep(poll)
    worker_state.should_stop = EX_OK  # type: ignore[assignment]  # stubs say None
