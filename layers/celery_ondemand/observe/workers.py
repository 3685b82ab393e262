"""Who is alive, busy and serving what: one short burst of events, then control replies.

Workers beat every 2 s even without ``-E``, but waiting out that period on every tick is
slow. Instead the burst subscribes to the event exchange, asks every worker to beat now
(Celery's ``heartbeat`` control command), and stops as soon as the workers it expects have
answered and a short quiet period brings no new one, and never later than ``max_seconds``.
The subscription must be live before the wake-up is sent: on Redis a wake-up published
earlier is lost.

A worker that sends no events at all (``--without-heartbeat`` without ``-E``) answers the
control round's broadcast all the same, which makes it heard (:func:`ask`); when the burst
heard nobody, or missed a worker found that way before, a ``ping`` broadcast looks for such
workers first (:func:`discover`).

Then the inspect commands (``active_queues``, ``active``, ``reserved``, ``scheduled``,
``stats``) go out together in one round (:func:`gather`), which returns as soon as every
worker heard has answered all of them rather than after a timeout, and never later than
its deadline.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
import weakref
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from celery import Celery
from kombu import Connection, Consumer
from kombu.serialization import prepare_accept_content
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

_TASK_EVENT_FIELDS = {
    "task-received": "last_task_received_at",
    "task-started": "last_task_started_at",
    "task-succeeded": "last_task_succeeded_at",
}


@dataclass
class HeardWorker:
    """What the burst and the control round learned about one worker."""

    hostname: str
    last_heartbeat_at: float
    heartbeat_interval: float | None = None
    active: int = 0
    processed: int = 0
    task_times: dict[str, float] = field(default_factory=dict)
    replied: bool = False
    queues: list[dict[str, Any]] = field(default_factory=list)
    running: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    concurrency: int | None = None
    machine: str | None = None
    scheduled: list[dict[str, Any]] = field(default_factory=list)
    rate_limited: int = 0
    """Tasks it holds back under a rate limit (reported by the bootstep)."""
    draining: list[str] | None = None
    """The queues it stopped consuming when told to drain, as the bootstep reported them
    in this round's ``stats`` ([] for none); None without a report."""
    by_events: bool = True
    clock_offset: float = 0.0
    """Our clock minus the worker's, from its last heartbeat: task start times it reports
    are on its clock."""


class _Burst:
    """Collects events into HeardWorker records, noting when each worker was first heard."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.workers: dict[str, HeardWorker] = {}
        self.last_new_at = clock()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        hostname = event.get("hostname")
        if not isinstance(hostname, str):
            return
        received = float(event.get("local_received") or time.time())
        if kind == "worker-offline":
            self.workers.pop(hostname, None)
            return
        worker = self.workers.get(hostname)
        if worker is None:
            worker = self.workers[hostname] = HeardWorker(hostname, received)
            self.last_new_at = self.clock()
        worker.last_heartbeat_at = max(worker.last_heartbeat_at, received)
        if kind == "worker-heartbeat" and event.get("timestamp"):
            worker.clock_offset = received - float(event["timestamp"])
        if kind == "worker-heartbeat" and "active" in event:
            # A scheduled beat; the wake-up beat carries no counters and a made-up freq.
            worker.active = int(event.get("active") or 0)
            worker.processed = int(event.get("processed") or 0)
            worker.heartbeat_interval = float(event.get("freq") or 0) or None
        elif kind in _TASK_EVENT_FIELDS:
            # Our clock, not the worker's: a worker with a skewed clock must not look
            # as if it last worked an hour ago (or in the future).
            name = _TASK_EVENT_FIELDS[kind]
            worker.task_times[name] = max(worker.task_times.get(name, 0.0), received)


def listen(app: Celery, connection: Connection, *, expected: Collection[str] = (),
           max_seconds: float = 2.5, quiet: float = 0.25,
           clock: Callable[[], float] = time.monotonic) -> dict[str, HeardWorker]:
    """Gather every worker that beats within the burst, by hostname.

    ``expected`` names workers seen last time: the burst waits for them (up to
    ``max_seconds``) so that one slow answer does not make a live worker look gone.
    """
    burst = _Burst(clock)
    receiver = app.events.Receiver(connection, handlers={"*": burst.on_event})
    channel: Any = connection.channel()
    consumers = receiver.get_consumers(partial(Consumer, channel), channel)
    try:
        for consumer in consumers:
            consumer.consume()
        _drain(connection, 0.01)  # on Redis the SUBSCRIBE happens on the first poll
        app.control.broadcast("heartbeat", connection=connection, channel=channel)
        burst.last_new_at = clock()
        deadline = burst.last_new_at + max_seconds  # listening time, not connection setup
        woken_twice = False
        while True:
            now = clock()
            if now >= deadline:
                break
            quiet_until = burst.last_new_at + quiet
            if now >= quiet_until and not burst.workers and not woken_twice:
                # Nobody answered: on a slow link the wake-up can overtake our SUBSCRIBE
                # and be lost. The subscription is live by now; ask once more.
                app.control.broadcast("heartbeat", connection=connection, channel=channel)
                burst.last_new_at, woken_twice = clock(), True
                continue
            if now >= quiet_until and set(expected) <= burst.workers.keys():
                break
            wait = (quiet_until if now < quiet_until else deadline) - now
            _drain(connection, min(wait, deadline - now))
    finally:
        for consumer in consumers:
            consumer.cancel()
        channel.close()
    return burst.workers


def _records(reply: Any) -> list[dict[str, Any]]:
    """The dicts of a worker's list reply; nothing of one that is not a list (an error
    reply, another program's answer): a worker must not blind the read of every other."""
    if not isinstance(reply, list):
        return []
    return [dict(item) for item in reply if isinstance(item, dict)]


REPLY_EXPIRES_SECONDS = 10.0
"""How long an unread reply list lives when its queue names no ``expires`` (kombu's
default for the reply queue, Celery's ``control_queue_expires``)."""

INSPECTED = {"active_queues": {}, "active": {"safe": None}, "reserved": {}, "scheduled": {},
             "stats": {}}
"""The inspect commands of one control round, with the arguments Celery's ``inspect``
sends."""


class Replies(dict[str, dict[str, Any]]):
    """A control round's replies by command, then by hostname."""

    undecodable: int = 0
    """Replies dropped unread: in a serializer we do not accept (pickle or msgpack from
    another app's worker on the same control exchange), or not a message at all."""


def gather(app: Celery, connection: Connection, hostnames: Collection[str] | None,
           commands: Mapping[str, dict[str, Any]], timeout: float = 1.0,
           max_seconds: float | None = None) -> Replies:
    """Every command's replies by hostname: all commands sent at once, replies read in one
    pass until every worker named has answered every command, or ``timeout`` seconds pass
    without a reply, and never longer than ``max_seconds`` in all (a stream of replies
    from workers not awaited would otherwise keep restarting ``timeout``: at 2,000 workers
    a round outlasted the Lambda's 60 s). Workers not answered by then are unanswered.

    Celery's ``inspect`` asks one command at a time and waits for its last reply before
    the next: at a thousand workers five rounds each wait out the slowest worker of the
    thousand. And its ``limit=`` counts reads, not replies. The broadcast names no
    destination (a list of a thousand names would be copied to every worker, five times a
    tick); a worker not named that answers is awaited too, for all its replies (a worker
    that sends no events is heard no other way). ``hostnames`` None takes every reply until
    ``timeout`` passes without one (nobody knows who will answer).
    """
    expected = set(hostnames) if hostnames is not None else None
    replies = Replies({command: {} for command in commands})
    if expected is not None and not expected:
        return replies
    mailbox: Any = app.control.mailbox(connection)  # type: ignore[attr-defined]
    channel: Any = connection.default_channel
    tickets = {uuid.uuid4().hex: command for command in commands}
    ends_at = time.monotonic() + (max_seconds if max_seconds is not None else float("inf"))
    waiting = len(expected) * len(commands) if expected is not None else -1

    def take(body: Any, headers: Any) -> None:
        nonlocal waiting
        command = tickets.get(str((headers or {}).get("ticket")))
        if command is None or not isinstance(body, dict):
            return  # a late reply to an earlier round
        for hostname, reply in body.items():
            if hostname in replies[command]:
                continue
            if expected is not None and hostname not in expected:
                expected.add(hostname)  # one not named answers: await the rest of its replies
                waiting += len(commands)
            replies[command][hostname] = reply
            waiting -= 1

    def drop(message: Any, error: Exception) -> None:  # kombu's on_decode_error
        replies.undecodable += 1

    def publish() -> None:
        for ticket, command in tickets.items():
            mailbox._publish(command, dict(commands[command]), reply_ticket=ticket,
                             channel=channel, timeout=timeout)

    try:
        if _is_redis(channel):
            mailbox.reply_queue(channel).declare()
            publish()
            _pop_replies(channel, mailbox.reply_queue, mailbox.accept, take,
                         lambda: waiting != 0, timeout, ends_at, drop)
        else:
            # A reply we may not decode is dropped, not raised: it would fail the round.
            with Consumer(channel, [mailbox.reply_queue], accept=mailbox.accept, no_ack=True,
                          callbacks=[lambda body, message: take(body, message.headers)],
                          on_decode_error=drop):
                publish()
                while waiting != 0 and time.monotonic() < ends_at:
                    try:
                        connection.drain_events(
                            timeout=min(timeout, max(ends_at - time.monotonic(), 0.001)))
                    except TimeoutError:
                        break  # nobody answered for a whole timeout: the rest are silent
    finally:
        with contextlib.suppress(Exception):
            channel.after_reply_message_received(mailbox.reply_queue.name)
    return replies


def _is_redis(channel: Any) -> bool:
    """Whether the channel is kombu's Redis channel (a list per queue, on a client pool)."""
    return callable(getattr(channel, "_q_for_pri", None)) and hasattr(channel, "pool") \
        and hasattr(channel, "priority_steps")


_NO_RPOP_COUNT: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
"""Connection pools whose Redis refused ``RPOP`` with a count (older than 6.2): asked once
per connection, not once a round."""


_WHOLE_SECOND_BRPOP: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
"""Connection pools whose Redis refused a fractional ``BRPOP`` timeout (older than 6.0)."""


def _own_client(channel: Any) -> Any:
    """A client of our own on the channel's pool.

    Not ``channel.client``: once kombu has registered a ``BRPOP`` on the channel, that
    client is pinned to the connection of kombu's pending ``BRPOP``, whose reply would
    take one of ours (a reply lost, the rest shifted). Not kombu's prefixing client
    either: keys are named here in full, ``global_keyprefix`` included."""
    import redis  # a Redis channel: redis is there

    return redis.Redis(connection_pool=channel.pool)


def _pop_replies(channel: Any, queue: Any, accept: Collection[str],
                 take: Callable[[Any, Any], None], pending: Callable[[], bool],
                 timeout: float, ends_at: float,
                 drop: Callable[[Any, Exception], None] = lambda message, error: None,
                 batch: int = 200) -> None:
    """Redis: the replies popped ``batch`` at a time (``RPOP`` with a count), not one
    blocking ``BRPOP`` round trip each as kombu's consumer does: at a thousand workers
    those round trips were most of the control round. Waits at most ``timeout`` seconds
    for a next reply, and not past ``ends_at`` (monotonic). On a Redis older than 6.2 (no
    count) one ``BRPOP`` a reply, on our own client too.

    Each read also sets the reply lists' expiry (``PEXPIRE``, the queue's ``expires``), as
    kombu's own reads do: replies arriving after the round must not stay for good."""
    from redis import exceptions as redis_errors  # a Redis channel: redis is there

    allowed = prepare_accept_content(accept)
    prefix = str(getattr(channel, "global_keyprefix", "") or "")
    keys = [prefix + key for key in dict.fromkeys(channel._q_for_pri(queue.name, pri)
                                                  for pri in channel.priority_steps)]
    expires_ms = int(1000 * (queue.expires or REPLY_EXPIRES_SECONDS))
    client = _own_client(channel)

    def pop_many() -> list[Any]:
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.rpop(key, batch)
                pipe.pexpire(key, expires_ms)
            results = pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, redis_errors.ResponseError):
                raise result
        return [item for found in results[::2] for item in (found or [])]

    # redis-py does not stretch the socket timeout for a blocking command: a BRPOP that
    # waits as long as ``socket_timeout`` fails with TimeoutError. Wait in shorter steps.
    socket_timeout = channel.pool.connection_kwargs.get("socket_timeout")
    step = max(float(socket_timeout) / 2, 0.01) if socket_timeout else float("inf")

    def brpop_once(seconds: float) -> Any:
        # Redis before 6.0 takes whole seconds only (and 0 would block for good).
        whole = _WHOLE_SECOND_BRPOP.get(channel.pool)
        with client.pipeline(transaction=False) as pipe:
            pipe.brpop(keys, timeout=max(math.ceil(seconds), 1) if whole else
                       max(seconds, 0.01))
            for key in keys:
                pipe.pexpire(key, expires_ms)
            return pipe.execute()[0]

    def pop_next(wait: float) -> list[Any]:
        until = time.monotonic() + wait
        while (left := until - time.monotonic()) > 0:
            try:
                found = brpop_once(min(step, left))
            except redis_errors.ResponseError as error:
                if "timeout" not in str(error) or _WHOLE_SECOND_BRPOP.get(channel.pool):
                    raise
                _WHOLE_SECOND_BRPOP[channel.pool] = True  # "timeout is not an integer"
                continue
            if found:
                return [found[1]]
        return []

    def pop() -> list[Any]:
        if _NO_RPOP_COUNT.get(channel.pool):
            return []
        try:
            return pop_many()
        except redis_errors.ResponseError:  # ERR wrong number of arguments: Redis < 6.2
            _NO_RPOP_COUNT[channel.pool] = True
            return []

    items = pop()
    while pending():
        if not items:
            left = ends_at - time.monotonic()
            if left <= 0:
                return
            items = pop_next(min(timeout, left))  # the next one, or a silent round
            if not items:
                return
        for item in items:
            try:
                message = channel.Message(loads(bytes_to_str(item)), channel=channel,
                                          accept=allowed)
                body = message.decode()
            except Exception as error:  # a reply we may not or cannot decode: no answer
                drop(item, error)
                continue
            take(body, message.headers)
        if time.monotonic() >= ends_at:
            return  # the round's time is up: whoever has not answered did not
        items = pop()


def ask(app: Celery, connection: Connection, workers: dict[str, HeardWorker],
        timeout: float = 1.0, max_seconds: float | None = None) -> int:
    """Fill in queues, running and waiting tasks, and pool size from one round of replies
    (at most ``max_seconds`` long). Returns how many replies could not be decoded.

    A worker that answered the round but was not heard (it sends no events: no ``-E``,
    ``--without-heartbeat``) is added, as one found by ``ping`` is: in a fleet where
    others beat, no ping is sent, and it would never be found."""
    if not workers:
        return 0
    replies = gather(app, connection, workers, INSPECTED, timeout, max_seconds)
    now = time.time()
    for hostname, queues in replies.get("active_queues", {}).items():
        answered_all = all(hostname in replies.get(command, {}) for command in INSPECTED)
        if hostname not in workers and isinstance(queues, list) and answered_all:
            # Only whole answers: one cut by the deadline could hide its running tasks.
            workers[hostname] = HeardWorker(hostname, now, by_events=False)
    apply_replies(workers, replies)
    return replies.undecodable


def apply_replies(workers: dict[str, HeardWorker],
                  replies: Mapping[str, Mapping[str, Any]]) -> None:
    """Fill in each worker from its replies, by command; an odd reply is no answer."""
    for hostname, queues in replies.get("active_queues", {}).items():
        if hostname in workers and isinstance(queues, list):
            workers[hostname].queues = _records(queues)
            workers[hostname].replied = True  # an odd reply (an error) is no answer
    for hostname, tasks in replies.get("active", {}).items():
        if hostname in workers:
            workers[hostname].running = _records(tasks)
            workers[hostname].active = len(workers[hostname].running)
    for hostname, tasks in replies.get("reserved", {}).items():
        if hostname in workers:
            workers[hostname].waiting = _records(tasks)
    for hostname, entries in replies.get("scheduled", {}).items():  # ETA / countdown
        if hostname in workers:
            workers[hostname].scheduled = [dict(entry.get("request") or {})
                                           for entry in _records(entries)
                                           if isinstance(entry.get("request") or {}, dict)]
    for hostname, stats in replies.get("stats", {}).items():
        if hostname in workers and isinstance(stats, dict):
            pool = stats.get("pool") or {}
            concurrency = pool.get("max-concurrency") if isinstance(pool, dict) else None
            workers[hostname].concurrency = concurrency if isinstance(concurrency, int) else None
            totals = stats.get("total") or {}
            if isinstance(totals, dict):
                workers[hostname].processed = max(workers[hostname].processed,
                                                  sum(int(n) for n in totals.values()))
            ondemand = stats.get("ondemand")  # from the celery-ondemand bootstep, if installed
            if isinstance(ondemand, dict):
                machine = ondemand.get("task_arn") or ondemand.get("instance_id")
                workers[hostname].machine = str(machine) if machine else None
                held = ondemand.get("rate_limited")
                workers[hostname].rate_limited = held if isinstance(held, int) else 0
                drained = ondemand.get("draining")  # [] here: it said it is not
                workers[hostname].draining = [str(q) for q in drained] \
                    if isinstance(drained, list) else []


def discover(app: Celery, connection: Connection, known: Collection[str],
             timeout: float = 1.0, max_seconds: float | None = None
             ) -> dict[str, HeardWorker]:
    """Workers that send no events, found by a ``ping`` broadcast.

    A worker started with ``--without-heartbeat`` (and without ``-E``) never beats, but it
    answers control commands. Nobody knows how many will answer, so this waits out
    ``timeout``: the observer asks only when the burst left a reason to.
    """
    now = time.time()
    # Our own round, not Celery's ping: on Redis kombu's consumer leaves a BRPOP pending
    # when its wait ends, which takes the next round's first reply and loses it.
    names = set(gather(app, connection, None, {"ping": {}}, timeout,
                       max_seconds)["ping"])
    return {name: HeardWorker(name, now, by_events=False)
            for name in sorted(names - set(known))}


def _drain(connection: Connection, timeout: float) -> None:
    """Deliver whatever events arrive within ``timeout`` seconds."""
    with contextlib.suppress(TimeoutError):
        connection.drain_events(timeout=max(timeout, 0.001))
