"""The control round's own bounds, against real brokers: a round ends by its deadline
however many stray replies keep arriving, and on Redis the reply list it reads never lives
forever."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu.pidbox import Mailbox

from celery_ondemand import Observer
from celery_ondemand.observe.workers import INSPECTED, _pop_replies, gather
from tests.support.brokers import Queues, unique
from tests.support.workers import Fleet
from tests.test_observe_at_scale import _as_before_redis_6_2

pytestmark = pytest.mark.broker


@pytest.fixture
def app(broker_url: str) -> Iterator[Celery]:
    app = Celery("control-round", broker=broker_url, set_as_current=False)
    yield app
    app.close()


def _reply_queue_name(app: Celery, monkeypatch: pytest.MonkeyPatch) -> str:
    """The round's reply queue, named in advance so that the test can reply to it (kombu
    names it from the id of each copy of the mailbox, a new one every round)."""
    oid = f"control-round-{uuid.uuid4().hex}"
    monkeypatch.setattr(Mailbox, "oid", property(lambda self: oid))
    mailbox: Any = app.control.mailbox  # type: ignore[attr-defined]
    return str(mailbox.reply_queue.name)


def _stray_replies(app: Celery, count: int, ticket: str = "an-earlier-round",
                   declare: bool = False, serializer: str = "json") -> None:
    """``count`` replies to a round long over, on our reply queue, as late workers send."""
    mailbox: Any = app.control.mailbox  # type: ignore[attr-defined]
    with app.connection_for_write() as connection:
        bound = mailbox(connection)
        if declare:  # Redis: the binding; on RabbitMQ the round's queue is exclusive
            bound.reply_queue(connection.default_channel).declare()
        for i in range(count):
            bound._publish_reply({f"late-{i}@elsewhere": "pong"}, bound.reply_exchange.name,
                                 bound.oid, ticket, serializer=serializer)


def test_a_round_ends_by_its_deadline_while_stray_replies_keep_coming(
        app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    _reply_queue_name(app, monkeypatch)
    stop = threading.Event()

    def keep_replying() -> None:
        while not stop.wait(0.2):
            _stray_replies(app, 1)

    thread = threading.Thread(target=keep_replying, daemon=True)
    thread.start()
    try:
        with app.connection_for_read() as connection:
            started = time.monotonic()
            replies = gather(app, connection, ["never-answers@nowhere"], INSPECTED,
                             timeout=0.5, max_seconds=1.0)
            took = time.monotonic() - started
    finally:
        stop.set()
        thread.join(timeout=10)
    assert took < 2.5, f"the round lasted {took:.1f}s past its 1 s deadline"
    assert all(not by_host.get("never-answers@nowhere") for by_host in replies.values())


def test_the_redis_reply_list_left_by_a_cut_round_expires(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round killed after a read (the Lambda's timeout) never reaches the end that
    deletes its reply list: the read itself gives the list its expiry, as kombu's does."""
    app = Celery("control-round", broker=redis_url, set_as_current=False)
    try:
        key = _reply_queue_name(app, monkeypatch)
        _stray_replies(app, 300, declare=True)  # more than one bulk read takes
        mailbox: Any = app.control.mailbox  # type: ignore[attr-defined]
        with app.connection_for_read() as connection:
            channel: Any = connection.default_channel
            taken: list[Any] = []
            _pop_replies(channel, mailbox.reply_queue, mailbox.accept,
                         lambda body, headers: taken.append(body), lambda: True,
                         timeout=1.0, ends_at=0.0)  # cut after one read
        client = redis.Redis.from_url(redis_url)
        left, ttl = client.llen(key), client.pttl(key)
        client.delete(key)
    finally:
        app.close()
    assert 0 < len(taken) < 300 and left == 300 - len(taken)
    assert 0 < ttl <= 10_000, f"reply list {key} left with ttl {ttl} ms"


def test_a_worker_without_events_next_to_one_that_beats_is_found_by_control(
        redis_url: str) -> None:
    """The burst hears the worker that beats, so no ping goes out; the worker that sends
    no events still answers the round's broadcast, and that makes it heard. (The round's
    code is the same on RabbitMQ; one broker keeps the suite short.)"""
    broker_url, queues, fleet = redis_url, Queues(redis_url), Fleet(redis_url)
    try:
        _find_the_worker_without_events(broker_url, queues, fleet)
    finally:
        fleet.stop()
        queues.delete_all()


def _find_the_worker_without_events(broker_url: str, queues: Queues, fleet: Fleet) -> None:
    loud, quiet = queues.new("loud"), queues.new("quiet")
    beating = fleet.start([loud], name="beats", concurrency=1, wait=False)
    silent = fleet.start([quiet], name="no-events", concurrency=3, wait=False,
                         options=["--without-heartbeat"])  # and no -E, no gossip
    fleet.wait_ready()
    # A long burst window: waiting for a worker that never beats would wait it all out.
    with Observer(broker_url, burst_seconds=6.0) as observer:
        # Found when it answers before the round's awaited workers are done: on a busy
        # machine that can take a tick or two.
        first = observer.observe([loud, quiet])
        for _ in range(4):
            if silent.hostname in first.live_workers:
                break
            first = observer.observe([loud, quiet], previous=first)
        again = observer.observe([loud, quiet], previous=first)
    for status in (first, again):
        assert status.live_workers[beating.hostname].heard_by == "events"
        found = status.live_workers.get(silent.hostname)
        assert found is not None, "a worker without events went unheard"
        assert found.heard_by == "control" and found.concurrency == 3
        assert quiet in found.queues and status.queues[quiet].many_workers == 1
    assert "ping" not in first.sources  # found by the round itself, not by a ping
    assert again.duration < 4.5, "the burst waited for a worker that never beats"


@pytest.fixture(scope="module")
def redis_worker(redis_url: str) -> Iterator[str]:
    """One real worker on Redis, for the rounds below."""
    workers = Fleet(redis_url)
    try:
        yield workers.start([unique("ondemand-round")], name="round", concurrency=1).hostname
    finally:
        workers.stop()


def test_rounds_in_a_row_on_a_redis_without_rpop_count_lose_no_reply(
        redis_url: str, redis_worker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis older than 6.2 (no ``RPOP`` count): one ``BRPOP`` a reply. kombu's consumer,
    used for that before, left a ``BRPOP`` pending that took the next round's first
    reply when its wait ended."""
    _as_before_redis_6_2(monkeypatch)
    app = Celery("control-round", broker=redis_url, set_as_current=False)
    try:
        with app.connection_for_read() as connection:
            # A round that ends waiting (a worker named never answers), then two more.
            rounds = [gather(app, connection, [redis_worker, "gone@nowhere"], INSPECTED,
                             timeout=0.5, max_seconds=10.0)]
            rounds += [gather(app, connection, [redis_worker], INSPECTED, timeout=2.0,
                              max_seconds=10.0) for _ in range(2)]
    finally:
        app.close()
    for replies in rounds:
        assert {command for command, by_host in replies.items()
                if redis_worker in by_host} == set(INSPECTED)


def test_a_round_that_waits_longer_than_the_redis_socket_timeout_is_not_blind(
        redis_url: str, redis_worker: str) -> None:
    """With ``socket_timeout`` 1 s in the transport options, a BRPOP waiting 1.5 s for a
    worker that never answers must not fail the round (redis-py keeps the socket timeout
    for blocking commands)."""
    app = Celery("control-round", broker=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {"socket_timeout": 1}
    try:
        with app.connection_for_read() as connection:
            started = time.monotonic()
            replies = gather(app, connection, [redis_worker, "gone@nowhere"], INSPECTED,
                             timeout=1.5, max_seconds=10.0)
            took = time.monotonic() - started
    finally:
        app.close()
    assert all(redis_worker in by_host for by_host in replies.values())
    assert 1.4 < took < 5.0  # it waited out the silent worker's 1.5 s, no more


def test_replies_in_a_serializer_not_accepted_are_dropped_and_counted(
        app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another app's worker on the same control exchange may answer in pickle: on
    RabbitMQ kombu's consumer raised ContentDisallowed out of the round (the whole tick
    failed); now such replies are dropped and counted, on both brokers."""
    _reply_queue_name(app, monkeypatch)
    stop = threading.Event()

    def keep_replying() -> None:
        while not stop.wait(0.2):
            _stray_replies(app, 1, serializer="pickle")

    thread = threading.Thread(target=keep_replying, daemon=True)
    thread.start()
    try:
        with app.connection_for_read() as connection:
            replies = gather(app, connection, ["never-answers@nowhere"], INSPECTED,
                             timeout=0.5, max_seconds=1.0)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert replies.undecodable >= 1
    # Other tests' workers on the shared broker may answer the broadcast; ours may not.
    assert not any(host.startswith("late-") for by_host in replies.values() for host in by_host)
