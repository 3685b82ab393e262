"""Redis (and Valkey) queue depths.

Features:
    - ready count: the queue's list plus each of its priority lists, all queues in one
      pipeline (one round trip whatever the number of queues);
    - oldest task age: the tail of each list (``LINDEX key -1``) is its oldest message; its
      publish-time header (see :mod:`celery_ondemand.stamping`) gives the age without
      consuming anything.

Not available: consumer counts (Redis keeps none) and ``missing`` (an empty queue and an
absent one are the same thing in Redis: no key).

Connection string: ``redis://host[:port][/db]`` (a password goes before the host, after
``:``), ``rediss://`` for TLS.
Transport options: kombu's own (``priority_steps``, ``sep``, ``global_keyprefix``) are
honoured because the key names come from kombu's channel.
"""

from __future__ import annotations

import json
from typing import Any

from ...stamping import published_at
from .base import BrokerProbe, QueueDepth


class RedisProbe(BrokerProbe):
    """Reads every queue's priority lists in one pipeline."""

    auth_error_words = ("auth", "wrongpass", "invalid username-password", "noperm")

    def _check(self) -> None:
        super()._check()
        channel: Any = self.connection.default_channel  # kombu's Redis channel
        channel.client.ping()

    def _depths(self, queues: list[str]) -> dict[str, QueueDepth]:
        channel: Any = self.connection.default_channel
        keys = {
            queue: list(dict.fromkeys(channel._q_for_pri(queue, step)
                                      for step in channel.priority_steps))
            for queue in queues
        }
        with channel.client.pipeline(transaction=False) as pipe:
            for queue_keys in keys.values():
                for key in queue_keys:
                    pipe.llen(key)
                    pipe.lindex(key, -1)
            replies = iter(pipe.execute())
        depths = {}
        for queue, queue_keys in keys.items():
            ready, foreign = 0, 0
            stamps = []
            for _ in queue_keys:
                length, tail = next(replies), next(replies)
                ready += int(length or 0)
                headers = _headers(tail)
                foreign += int(tail is not None and headers is None)
                stamp = published_at(headers)
                if stamp is not None:
                    stamps.append(stamp)
            depths[queue] = QueueDepth(ready=ready, oldest_published_at=min(stamps, default=None),
                                       foreign=foreign)
        return depths


def _headers(raw: Any) -> dict[str, Any] | None:
    """The headers of one raw kombu Redis message; None for anything that is not one
    (a foreign producer's bytes, a corrupt payload)."""
    if not raw:
        return None
    try:
        message = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(message, dict) or "body" not in message:
        return None
    headers = message.get("headers")
    return headers if isinstance(headers, dict) else None
