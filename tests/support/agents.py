"""A user's Agent subclass, written as cwod's README shows, named in a test config."""

from __future__ import annotations

from celery_ondemand import Agent, QueueStatus


class BigQueueAgent(Agent):
    """Adds a worker whenever more than ten tasks wait, even if the queue has workers."""

    def flag_up(self, queue: QueueStatus) -> bool:
        return queue.size > 10 or super().flag_up(queue)

    def flag_down(self, queue: QueueStatus) -> bool:
        return False


class NotAnAgent:
    """Named in a config to prove a policy must subclass Agent."""
