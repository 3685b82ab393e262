"""cwod's Agent, kept as the extension point, and its two rules as the ``cwod`` policy.

A user's subclass overrides ``flag_up(queue)`` / ``flag_down(queue)`` exactly as cwod's
README shows. It serves in two places:

- inside ``CeleryWorkerOnDemand``, built as cwod builds it, ``Agent(cwod)``: its flags read
  ``self.cwod`` if they like, and it is the thread that ticks (:meth:`Agent.run`);
- named in a target's ``policy:``, built by the decision engine with the target's config.

Either way a raised flag moves the target by one worker, as cwod's ``UpWorker`` /
``DownWorker`` start or stop one, and the safety rails (bounds, never below the busy
workers, never down on a blind read) still apply afterwards. Deciding does no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..config import TargetConfig
from ..model import QueueStatus
from .decision import Recommendation
from .view import TargetView


class Agent(threading.Thread):
    """Decides from per-queue flags, as celery-worker-on-demand does.

    ``Agent(cwod)`` serves a ``CeleryWorkerOnDemand`` (``self.cwod``) and runs as its
    thread; ``Agent(target_config)`` decides for one target of a configuration.

    Example
    -------
    >>> class MyAgent(Agent):
    ...     def flag_up(self, queue):
    ...         return queue.size > 100 or super().flag_up(queue)
    """

    def __init__(self, cwod: Any = None) -> None:
        super().__init__(name=type(self).__name__, daemon=True)
        self._config = cwod if isinstance(cwod, TargetConfig) else None
        self.cwod = None if self._config is not None else cwod

    @property
    def target(self) -> TargetConfig:
        """The target this Agent decides for, when a configuration built it."""
        if self._config is None:
            raise AttributeError("this Agent serves a CeleryWorkerOnDemand, not one target: "
                                 "each target's config is in view.config")
        return self._config

    def run(self) -> None:
        """cwod: watch the queues and start workers up and down until the service stops.

        Here each round is one tick on the queue updater's newest read.
        """
        if self.cwod is None:
            raise RuntimeError("Agent.run() needs the CeleryWorkerOnDemand it serves: "
                               "Agent(cwod)")
        self.cwod.watch()

    def flag_up(self, queue: QueueStatus) -> Any:
        """cwod: tasks wait and nobody serves the queue."""
        return queue.size > 0 and not queue.has_worker

    def flag_down(self, queue: QueueStatus) -> Any:
        """cwod: nothing waits and someone serves the queue."""
        return queue.size == 0 and queue.has_worker

    def recommend(self, view: TargetView) -> Recommendation:
        """One more worker if any queue flags up; one fewer if every served queue flags down.

        A flag is read for its truth, as cwod does (``flag_down`` may return a container).
        While workers the scaler already started have not yet been heard from, a flag up
        waits for them instead of adding more (cwod waited for its UpWorker thread). A flag
        that raises holds this target, naming the error; the other targets decide as usual.
        """
        try:
            raised = [q.name for q in view.queues if _flag(self.flag_up, q)]
            served = [q for q in view.queues if q.has_worker]
            lowered = [] if raised else [q.name for q in served if _flag(self.flag_down, q)]
        except FlagError as exc:
            return Recommendation(view.current, "flag-error", f"{exc}: holding")
        if raised:
            if view.current > view.live:
                return Recommendation(view.current, "starting",
                                      f"flag_up({', '.join(raised)}), but "
                                      f"{view.current - view.live} started worker(s) not up yet")
            return Recommendation(view.current + 1, "flag_up",
                                  f"flag_up({', '.join(raised)}): one more worker")
        if lowered and len(lowered) == len(served):
            return Recommendation(view.current - 1, "flag_down",
                                  f"flag_down({', '.join(lowered)}): one worker fewer")
        return Recommendation(view.current, "no-flag", "no queue raised a flag")


class FlagError(Exception):
    """A user's ``flag_up`` / ``flag_down`` raised."""


def _flag(flag: Callable[[QueueStatus], Any], queue: QueueStatus) -> bool:
    try:
        return bool(flag(queue))
    except Exception as exc:
        raise FlagError(f"{flag.__name__}({queue.name}) raised {type(exc).__name__}: "
                        f"{exc}") from exc
