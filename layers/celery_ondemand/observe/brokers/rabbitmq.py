"""RabbitMQ (AMQP 0-9-1) queue depths.

Features:
    - ready count and consumer count from a passive ``queue.declare`` per queue (about
      0.2 ms each; messages delivered but not acknowledged are not in the ready count);
    - a missing queue is reported as ``missing`` with size 0. AMQP closes the channel on
      that 404, so the next queue is read on a fresh channel;
    - a queue whose home node is down answers the same 404 (a classic durable queue on a
      cluster node that stopped): that queue is ``unreadable``, a gap, not an empty queue.

Not available: the oldest task's age (AMQP cannot peek without taking the message).

Connection string: ``amqp://host:5672/vhost`` with the user and password before the host
(also ``amqps://``, ``pyamqp://``).
"""

from __future__ import annotations

from typing import Any

from amqp.exceptions import NotFound

from .base import BrokerProbe, QueueDepth


class RabbitMQProbe(BrokerProbe):
    """Reads each queue with a passive declare, surviving the 404 of a missing one."""

    auth_error_words = ("access_refused", "access refused", "login was refused")

    def _depths(self, queues: list[str], held_by_workers: int | None) -> dict[str, QueueDepth]:
        depths = {}
        channel: Any = None
        try:
            for queue in queues:
                if channel is None:
                    channel = self.connection.channel()
                try:
                    _, ready, consumers = channel.queue_declare(queue=queue, passive=True)
                except NotFound as exc:
                    channel = None  # the broker closed it
                    depths[queue] = unreadable_or_missing(str(exc))
                else:
                    depths[queue] = QueueDepth(ready=ready, consumers=consumers)
        finally:
            if channel is not None:
                channel.close()
        return depths


HOME_NODE_DOWN = ("home node", "down or inaccessible")
"""What RabbitMQ's 404 says of a queue that exists on a node it cannot reach
(``rabbit_amqqueue``: "home node '...' of durable queue '...' is down or inaccessible")."""


def unreadable_or_missing(reply_text: str) -> QueueDepth:
    """The depth of a queue a passive declare answered 404 for: missing, unless the 404
    says the queue's home node is down (its tasks are still there, out of reach)."""
    if any(words in reply_text for words in HOME_NODE_DOWN):
        return QueueDepth(ready=0, unreadable=reply_text.strip()[:200])
    return QueueDepth(ready=0, consumers=0, missing=True)
