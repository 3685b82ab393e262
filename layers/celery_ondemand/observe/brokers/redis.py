"""Redis (and Valkey) queue depths.

Features:
    - ready count: the queue's list plus each of its priority lists, all queues in one
      pipeline (one round trip whatever the number of queues);
    - oldest task age: the tail of each list (``LINDEX key -1``) is its oldest message; its
      publish-time header (see :mod:`celery_ondemand.stamping`) gives the age without
      consuming anything;
    - work the broker hides: messages delivered but not yet acknowledged (kombu's
      ``unacked`` hash), by queue. A worker killed mid-task leaves its tasks there, and
      only a running consumer puts them back, after ``visibility_timeout``: counted as
      hidden work, they keep a worker up to do that instead of the target scaling to zero
      with tasks stranded. The hash is one for all queues and holds whole messages (ETA
      tasks wait there for hours), so its entries are read only when the live workers do
      not account for all of them, with ``HSCAN`` in batches (each a short command on
      the server), at most :data:`UNACKED_READ_LIMIT`; what lies beyond is counted
      (``HLEN``) and reported as unattributed, a gap in the read.

Not available: consumer counts (Redis keeps none) and ``missing`` (an empty queue and an
absent one are the same thing in Redis: no key).

Connection string: ``redis://host[:port][/db]`` (a password goes before the host, after
``:``), ``rediss://`` for TLS.

Transport options (the workers' ``broker_transport_options``, which the observer must be
given): ``sep`` and ``priority_steps`` name the priority lists (Celery's documented
priority setup is ``sep: ":"``, ``priority_steps: [0, 1, ..., 9]``), ``global_keyprefix``
prefixes every key, ``unacked_key`` names the unacknowledged hash. The list names come
from kombu's own channel (``_q_for_pri``); every key is then named in full here, prefix
included, and read with a plain client: kombu's prefixing client prefixes only the
commands kombu itself sends, and ``LINDEX``/``HVALS`` are not among them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import redis

from ...stamping import published_at
from .base import BrokerProbe, QueueDepth

UNACKED_READ_LIMIT = 2000
"""Most unacknowledged entries read per observation (whole messages: about 1 KB each)."""

UNACKED_BATCH = 500
"""Entries asked for per ``HSCAN`` call."""


class RedisProbe(BrokerProbe):
    """Reads every queue's priority lists in one pipeline."""

    auth_error_words = ("auth", "wrongpass", "invalid username-password", "noperm")

    def _check(self) -> None:
        super()._check()
        channel: Any = self.connection.default_channel  # kombu's Redis channel
        with channel.conn_or_acquire() as client:
            client.ping()

    def _depths(self, queues: list[str], held_by_workers: int | None) -> dict[str, QueueDepth]:
        channel: Any = self.connection.default_channel
        prefix = str(channel.global_keyprefix or "")
        keys = {
            queue: [prefix + key for key in dict.fromkeys(
                channel._q_for_pri(queue, step) for step in channel.priority_steps)]
            for queue in queues
        }
        unacked_key = prefix + str(channel.unacked_key)
        client = _plain_client(channel)
        with client.pipeline(transaction=False) as pipe:
            for queue_keys in keys.values():
                for key in queue_keys:
                    pipe.llen(key)
                    pipe.lindex(key, -1)
            pipe.hlen(unacked_key)
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
                                       foreign=foreign, in_flight=0)
        unacked = int(next(replies) or 0)
        if unacked and (held_by_workers is None or unacked > held_by_workers):
            entries = _scan(client, unacked_key, UNACKED_READ_LIMIT)
            self.unattributed = max(0, unacked - len(entries))
            for queue, count in _unacked_by_queue(entries, set(queues)).items():
                depths[queue] = replace(depths[queue], in_flight=count)
        return depths


def _scan(client: redis.Redis, key: str, limit: int) -> list[Any]:
    """Up to about ``limit`` values of hash ``key``, in short ``HSCAN`` steps."""
    values: list[Any] = []
    cursor = 0
    while True:
        cursor, found = client.hscan(key, cursor, count=UNACKED_BATCH)
        values += found.values() if isinstance(found, dict) else []
        if not cursor or len(values) >= limit:
            return values[:limit]


def _plain_client(channel: Any) -> redis.Redis:
    """A client that sends keys exactly as given, on the channel's synchronous pool.

    The synchronous pool, as kombu's own size reads use: ``channel.client`` shares the
    connection of a BRPOP a timed-out control round may have left in flight. Not kombu's
    prefixing client: the keys given here are already named in full.
    """
    return redis.Redis(connection_pool=channel.pool)


def _unacked_by_queue(entries: list[Any] | None, queues: set[str]) -> dict[str, int]:
    """Count kombu's unacked entries (``[message, exchange, routing_key]``) by queue: the
    routing key names the queue under Celery's default routing, else the exchange does."""
    counts: dict[str, int] = {}
    for entry in entries or []:
        try:
            _, exchange, routing_key = json.loads(entry)
        except (TypeError, ValueError):
            continue
        queue = routing_key if routing_key in queues else exchange
        if queue in queues:
            counts[queue] = counts.get(queue, 0) + 1
    return counts


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
