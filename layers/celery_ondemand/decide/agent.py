"""cwod's Agent, kept as the extension point, and its two rules as the ``cwod`` policy.

A user's subclass overrides ``flag_up(queue)`` / ``flag_down(queue)`` exactly as cwod's
README shows and is named in the target's ``policy:``. Here a raised flag moves the target by
one worker, as cwod's ``UpWorker`` / ``DownWorker`` start or stop one; the safety rails
(bounds, never below the busy workers, never down on a blind read) still apply afterwards.
"""

from __future__ import annotations

from ..config import TargetConfig
from ..model import QueueStatus
from .decision import Recommendation
from .view import TargetView


class Agent:
    """Decides from per-queue flags, as celery-worker-on-demand does.

    Example
    -------
    >>> class MyAgent(Agent):
    ...     def flag_up(self, queue):
    ...         return queue.size > 100 or super().flag_up(queue)
    """

    def __init__(self, target: TargetConfig) -> None:
        self.target = target

    def flag_up(self, queue: QueueStatus) -> bool:
        """cwod: tasks wait and nobody serves the queue."""
        return queue.size > 0 and not queue.has_worker

    def flag_down(self, queue: QueueStatus) -> bool:
        """cwod: nothing waits and someone serves the queue."""
        return queue.size == 0 and queue.has_worker

    def recommend(self, view: TargetView) -> Recommendation:
        """One more worker if any queue flags up; one fewer if every served queue flags down.

        While workers the scaler already started have not yet been heard from, a flag up
        waits for them instead of adding more (cwod would start one per tick).
        """
        raised = [q.name for q in view.queues if self.flag_up(q)]
        if raised:
            if view.current > view.live:
                return Recommendation(view.current, "starting",
                                      f"flag_up({', '.join(raised)}), but "
                                      f"{view.current - view.live} started worker(s) not up yet")
            return Recommendation(view.current + 1, "flag_up",
                                  f"flag_up({', '.join(raised)}): one more worker")
        served = [q for q in view.queues if q.has_worker]
        lowered = [q.name for q in served if self.flag_down(q)]
        if lowered and len(lowered) == len(served):
            return Recommendation(view.current - 1, "flag_down",
                                  f"flag_down({', '.join(lowered)}): one worker fewer")
        return Recommendation(view.current, "no-flag", "no queue raised a flag")
