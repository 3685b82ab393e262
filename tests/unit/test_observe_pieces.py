"""The pure pieces of observation: event handling, queue attribution, stamps, URLs."""

from __future__ import annotations

import pytest

from celery_ondemand import UnknownBroker
from celery_ondemand.model import Observation, WorkerStatus
from celery_ondemand.observe.brokers import probe_class
from celery_ondemand.observe.brokers.redis import RedisProbe, _headers
from celery_ondemand.observe.observer import _fill
from celery_ondemand.observe.workers import HeardWorker, _Burst
from celery_ondemand.stamping import PUBLISHED_AT_HEADER, published_at
from celery_ondemand.urls import safe_url


def test_burst_records_new_workers_and_ignores_odd_events() -> None:
    ticks = iter([0.0, 1.0, 2.0, 3.0])
    burst = _Burst(clock=lambda: next(ticks))
    burst.on_event({"type": "worker-heartbeat"})  # no hostname: ignored
    burst.on_event({"type": "worker-heartbeat", "hostname": 42})  # odd: ignored
    burst.on_event({"type": "worker-heartbeat", "hostname": "a", "local_received": 5.0,
                    "freq": 5})  # a wake-up beat: no counters
    assert burst.workers["a"].heartbeat_interval is None and burst.last_new_at == 1.0
    burst.on_event({"type": "worker-heartbeat", "hostname": "a", "local_received": 6.0,
                    "freq": 2.0, "active": 3, "processed": 10})
    assert (burst.workers["a"].active, burst.workers["a"].processed) == (3, 10)
    assert burst.last_new_at == 1.0, "a known worker is not new"
    burst.on_event({"type": "task-started", "hostname": "a", "timestamp": 3607.5,
                    "local_received": 7.6})  # the worker's clock is an hour ahead
    assert burst.workers["a"].task_times == {"last_task_started_at": 7.6}, "our clock"
    burst.on_event({"type": "worker-offline", "hostname": "a"})
    assert "a" not in burst.workers


def heard(hostname: str, queues: list[dict[str, object]], running: list[dict[str, object]],
          waiting: list[dict[str, object]]) -> HeardWorker:
    return HeardWorker(hostname, last_heartbeat_at=1.0, queues=queues, running=running,
                       waiting=waiting, replied=True, active=len(running))


def test_hidden_work_is_attributed_by_exchange_and_routing_key() -> None:
    queues = [{"name": "emails", "exchange": {"name": "mail"}, "routing_key": "send"},
              {"name": "reports", "exchange": {"name": "reports"}, "routing_key": "reports"}]
    worker = heard("w", queues,
                   running=[{"delivery_info": {"exchange": "mail", "routing_key": "send"}},
                            {"delivery_info": {"exchange": "", "routing_key": "reports"}},
                            {"delivery_info": {"exchange": "x", "routing_key": "unknown"}},
                            {"delivery_info": None}, "not a dict"],  # type: ignore[list-item]
                   waiting=[{"delivery_info": {"exchange": "mail", "routing_key": "send"}}])
    observation = Observation(broker="b", observed_at=100.0,
                              sources=["broker", "events", "control"])
    _fill(observation, ["emails", "reports"], {}, {"w": worker}, None)
    emails, reports = observation.queues["emails"], observation.queues["reports"]
    assert (emails.running, emails.reserved, emails.hidden) == (1, 1, 2)
    assert (reports.running, reports.reserved, reports.hidden) == (1, 0, 1)
    assert observation.workers["w"].queues == ["emails", "reports"]


def test_task_times_carry_over_from_the_previous_observation() -> None:
    before = Observation(broker="b", observed_at=1.0, workers={
        "w": WorkerStatus("w", alive=True, last_task_received_at=5.0,
                          last_task_succeeded_at=6.0)})
    worker = heard("w", [], [], [])
    worker.task_times = {"last_task_received_at": 9.0}
    observation = Observation(broker="b", observed_at=10.0)
    _fill(observation, [], {}, {"w": worker}, before)
    status = observation.workers["w"]
    assert (status.last_task_received_at, status.last_task_succeeded_at) == (9.0, 6.0)


def test_a_drain_reported_once_holds_until_the_worker_says_otherwise() -> None:
    """The bootstep reports the queues a worker drains in its stats; a round without its
    stats reply keeps what the last one said (a drain is for good), a report of none
    (a new worker under a reused hostname) ends it, and an odd value reads as none."""
    from celery_ondemand.observe.workers import apply_replies

    def read(stats: object, before: Observation | None) -> Observation:
        worker = HeardWorker("w", 0.0)
        apply_replies({"w": worker}, {"stats": {"w": stats}} if stats is not None else {})
        observation = Observation(broker="b", observed_at=10.0)
        _fill(observation, [], {}, {"w": worker}, before)
        return observation

    first = read({"ondemand": {"draining": ["q", 7]}}, None)
    assert first.workers["w"].draining == ["q", "7"]
    assert read(None, first).workers["w"].draining == ["q", "7"], "no stats this round"
    assert read({"ondemand": {"draining": None}}, first).workers["w"].draining is None
    assert read({"ondemand": {"draining": "q"}}, first).workers["w"].draining is None
    assert read({"pool": {}}, None).workers["w"].draining is None, "no bootstep"


@pytest.mark.parametrize(("raw", "expected", "celery"), [
    (b'{"body": "", "headers": {"%s": 12.5}}' % PUBLISHED_AT_HEADER.encode(), 12.5, True),
    (b'{"body": "", "headers": {"%s": "13"}}' % PUBLISHED_AT_HEADER.encode(), 13.0, True),
    (b'{"body": "", "headers": {"%s": true}}' % PUBLISHED_AT_HEADER.encode(), None, True),
    (b'{"body": "", "headers": {}}', None, True),  # a Celery message, not stamped
    (b'{"body": "", "headers": "oops"}', None, False),
    (b'{"headers": {"%s": 12.5}}' % PUBLISHED_AT_HEADER.encode(), None, False),  # no body
    (b'[1, 2]', None, False),
    (b"\xff\xfe", None, False),
])
def test_publish_stamp_is_read_only_from_well_formed_messages(
        raw: bytes, expected: float | None, celery: bool) -> None:
    headers = _headers(raw)
    assert published_at(headers) == expected
    assert (headers is not None) == celery


def test_published_at_tolerates_missing_headers() -> None:
    assert published_at(None) is None and published_at({}) is None


def test_unknown_scheme_is_named_with_a_hint_and_no_password() -> None:
    with pytest.raises(UnknownBroker) as error:
        probe_class("rediss2://user:hunter2@host/0")
    assert "hunter2" not in str(error.value)
    assert "Did you mean rediss://" in str(error.value)
    assert probe_class("redis://h/0") is RedisProbe


def test_safe_url_masks_only_a_password() -> None:
    assert safe_url("amqp://guest:guest@h:5672//") == "amqp://guest:**@h:5672//"
    assert safe_url("redis://h:6379/0") == "redis://h:6379/0"


def test_an_odd_control_reply_blinds_only_its_own_worker() -> None:
    """Another program on the broker answering our control round oddly (an error reply,
    a string, entries that are not records) must not fail the read of every worker: that
    worker alone is unanswered. The replies are what a control round gathers."""
    from celery_ondemand.observe.workers import apply_replies

    good = [{"name": "q", "exchange": {"name": "q"}, "routing_key": "q"}]
    replies = {
        "active_queues": {"good@h": good, "odd@h": {"error": "No such command"},
                          "worse@h": "nonsense"},
        "active": {"good@h": [{"id": "t1"}], "odd@h": {"error": "x"}, "worse@h": [7, None]},
        "reserved": {"good@h": [], "odd@h": "x"},
        "scheduled": {"good@h": [{"request": {"id": "t2"}}, "x"], "odd@h": [{"request": 3}]},
        "stats": {"good@h": {"pool": {"max-concurrency": 4}}, "odd@h": ["not", "a", "dict"]},
    }

    workers = {name: HeardWorker(name, 0.0) for name in ("good@h", "odd@h", "worse@h")}
    apply_replies(workers, replies)
    assert workers["good@h"].replied and workers["good@h"].queues == good
    assert (workers["good@h"].active, workers["good@h"].concurrency) == (1, 4)
    assert workers["good@h"].scheduled == [{"id": "t2"}]
    for name in ("odd@h", "worse@h"):
        assert not workers[name].replied and workers[name].queues == []
        assert workers[name].running == [] and workers[name].scheduled == []


@pytest.mark.parametrize("url, shown", [
    ("amqp://celery:FirstPass@a//;amqp://celery:SecondPass@b//",
     "amqp://celery:**@a//;amqp://celery:**@b//"),  # Celery's failover list
    ("sentinel://:pw@s1:26379;sentinel://:pw@s2:26379",
     "sentinel://:**@s1:26379/;sentinel://:**@s2:26379/"),
    ("redis://:pw@h:notaport/0", "redis://h:notaport"),  # kombu cannot read it: hosts only
])
def test_every_password_of_a_broker_list_is_masked(url: str, shown: str) -> None:
    assert safe_url(url) == shown
    assert "Pass" not in safe_url(url) and ":pw@" not in safe_url(url)


def test_a_retry_is_stamped_anew_a_first_publish_keeps_a_producers_own_stamp() -> None:
    """Celery republishes a retried task with its first publish's headers (our stamp
    included): read as its age, the task would look old and add workers every tick."""
    import time

    from celery_ondemand.stamping import _stamp

    first = {"id": "t", "retries": 0, PUBLISHED_AT_HEADER: 100.0}
    _stamp(headers=first)
    assert first[PUBLISHED_AT_HEADER] == 100.0
    retried = {"id": "t", "retries": 1, PUBLISHED_AT_HEADER: 100.0}
    _stamp(headers=retried)
    assert retried[PUBLISHED_AT_HEADER] > time.time() - 60


def test_a_queue_whose_home_node_is_down_is_a_gap_not_an_empty_queue() -> None:
    """RabbitMQ answers a passive declare of a classic durable queue on a stopped cluster
    node with the same 404 as a deleted queue (its text as rabbit_amqqueue words it). Read
    as missing it would be empty, and its target scaled in over a backlog; it is a gap for
    the targets that serve it, and only them. (One RabbitMQ node here cannot stop a queue's
    home node; the plain 404 of a deleted queue runs on a real broker in
    faults/test_tick_faults.py.)"""
    from amqp.exceptions import NotFound

    from celery_ondemand.observe.brokers.rabbitmq import unreadable_or_missing

    down = NotFound("NOT_FOUND - home node 'rabbit@b' of durable queue 'emails' in vhost "
                    "'/' is down or inaccessible", (50, 10), 404)
    gone = NotFound("NOT_FOUND - no queue 'emails' in vhost '/'", (50, 10), 404)
    assert unreadable_or_missing(str(gone)).missing
    depth = unreadable_or_missing(str(down))
    assert not depth.missing and depth.unreadable and "home node" in depth.unreadable
    observation = Observation(broker="b", observed_at=1.0, sources=["broker"])
    _fill(observation, ["emails", "reports"], {"emails": depth}, {}, None)
    assert observation.problems_for(["emails"]) and not observation.problems_for(["reports"])
    assert not observation.queues["emails"].missing


def test_a_consumer_nobody_heard_last_read_is_worth_a_ping_now() -> None:
    """A worker that sends no events, among others that beat, is found only by the control
    round, and its answer can come after theirs ended the round. RabbitMQ then counts a
    consumer nobody heard: the next read pings for it."""
    from celery_ondemand.model import QueueStatus
    from celery_ondemand.observe.observer import _unheard_consumers, _worth_a_ping

    beating = {"celery@a": HeardWorker("celery@a", 0.0)}
    a = WorkerStatus("celery@a", alive=True, queues=["q"], heard_by="events")
    seen = Observation(broker="amqp://h//", observed_at=0.0, workers={"celery@a": a})
    seen.queues["q"] = QueueStatus("q", size=0, consumers=1, workers=[a])
    assert not _worth_a_ping(beating, seen), "every consumer heard: no ping"
    seen.queues["q"] = QueueStatus("q", size=0, consumers=2, workers=[a])
    assert _worth_a_ping(beating, seen)
    assert _worth_a_ping({}, None) and not _worth_a_ping(beating, None)
    pinged = frozenset(_unheard_consumers(seen))
    assert not _worth_a_ping(beating, seen, pinged), \
        "pinged for these already: a consumer no ping answers costs no second each tick"
    seen.queues["q"] = QueueStatus("q", size=0, consumers=3, workers=[a])
    assert _worth_a_ping(beating, seen, pinged), "another unheard consumer: news"
