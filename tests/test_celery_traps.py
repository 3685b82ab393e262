"""Celery's traps, with real brokers and real workers: workers that send no events, ETA
tasks held on workers, zombie workers, tasks nearing the broker's redelivery timeouts."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection, Consumer
from kombu import Queue as KombuQueue

from celery_ondemand import Observer, TargetMemory
from celery_ondemand.act.local import LocalScaler
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.decide import decide
from celery_ondemand.tick import Ticker, TickResult
from tests.support.brokers import BROKERS, Queues, require_broker, unique
from tests.support.observations import settings
from tests.support.workers import Fleet, local_worker_env, worker_command

pytestmark = pytest.mark.broker


def test_a_worker_without_heartbeat_or_events_is_found_and_never_read_as_idle(
        broker_url: str, queues: Queues, fleet: Fleet, producer: Celery) -> None:
    counter_url = require_broker(BROKERS["redis"])
    release = unique("ondemand-release")
    name = queues.new("noevents")
    worker = fleet.start([name], name="quiet", concurrency=1,  # and no -E, no gossip
                         options=["--without-heartbeat"],
                         env={"ONDEMAND_TEST_COUNTER": counter_url})
    producer.send_task("tests.hold", args=(release,), queue=name)  # runs until released
    try:
        with Observer(broker_url) as observer:
            first = observer.observe([name])
            again = observer.observe([name], previous=first)
    finally:
        redis.Redis.from_url(counter_url).set(release, 1, ex=300)
    # Nobody else beating, a ping finds it. Others beat on the shared broker (the other
    # test process's workers): the control round's broadcast reaches it too, but its
    # answer can come after theirs ended the round. Then RabbitMQ counts a consumer
    # nobody heard (a gap: held), and the next read pings; on Redis, found once, it is
    # pinged for on every later read.
    if worker.hostname not in first.live_workers:
        assert broker_url.startswith("amqp"), "missed on Redis, with no gap to say so"
        assert first.problems_for([name]), "missed, and not even a gap"
    for status in (first, again)[0 if worker.hostname in first.live_workers else 1:]:
        found = status.live_workers[worker.hostname]
        assert found.heard_by == "control" and "control" in status.sources
        assert name in found.queues
    assert "ping" in again.sources, "found before and never beating: pinged for"
    running = again.queues[name].running + again.queues[name].reserved  # type: ignore[operator]
    assert running + again.queues[name].size == 1
    config = settings(queues=[name], worker_concurrency=1, scale_down_delay_seconds=0)
    decisions, _ = decide(again, config, {"t": TargetMemory(idle_since=0.0)}, 1000.0,
                          current={"t": 1})
    assert decisions[0].desired == 1, "a worker we cannot hear beat is not an idle one"


def test_a_consumer_nobody_hears_is_a_gap_on_rabbitmq(rabbitmq_url: str) -> None:
    """RabbitMQ counts a queue's consumers: one more than the workers heard (here a plain
    kombu consumer, as a worker with events off and control unanswered would be) means
    someone unseen may be working. The read has a gap: a long-idle target is held."""
    queues = Queues(rabbitmq_url)
    name = queues.new("unheard")
    try:
        with Connection(rabbitmq_url) as connection:
            channel = connection.channel()
            queue = KombuQueue(name, routing_key=name, durable=True)
            consumer = Consumer(channel, [queue], callbacks=[lambda body, message: None])
            consumer.consume()
            with Observer(rabbitmq_url) as observer:
                status = observer.observe([name])
            consumer.cancel()
        assert status.queues[name].consumers == 1 and status.queues[name].workers == []
        unheard = f"queue {name}: 1 consumers on the broker, 0 workers heard"
        assert status.queue_problems[name] == [unheard] and status.problems_for([name])
        config = settings(queues=[name], worker_concurrency=1)
        long_idle = {"t": TargetMemory(idle_since=0.0)}
        decisions, _ = decide(status, config, long_idle, 1000.0, current={"t": 1})
        assert (decisions[0].desired, decisions[0].rule) == (1, "blind")
    finally:
        queues.delete_all()


def test_eta_tasks_hold_their_worker_and_add_no_demand(
        broker_url: str, queues: Queues, fleet: Fleet, producer: Celery) -> None:
    name = queues.new("eta")
    worker = fleet.start([name], name="eta", concurrency=1)
    for _ in range(3):
        producer.send_task("tests.sleep", args=(0,), queue=name, countdown=120)
    with Observer(broker_url) as observer:
        deadline = time.monotonic() + 60
        while True:
            status = observer.observe([name])
            held = status.live_workers[worker.hostname]
            if held.scheduled == 3:
                break
            assert time.monotonic() < deadline, held
    queue = status.queues[name]
    assert (queue.size, queue.hidden, queue.delayed) == (0, 0, 3), queue
    assert held.busy and held.active == 0
    config = settings(queues=[name], worker_concurrency=1, scale_down_delay_seconds=0,
                      min_workers=0, max_workers=5)
    idle_long_ago = {"t": TargetMemory(idle_since=0.0, workers_seen=[worker.hostname])}
    decisions, _ = decide(status, config, idle_long_ago, 1000.0, current={"t": 1})
    assert decisions[0].desired == 1, "never to zero, never up, while ETA tasks are held"


@pytest.mark.timeout(300)  # each wait below says what it saw when it gives up
def test_a_zombie_worker_is_flagged_and_replaced_keeping_the_count(
        broker_url: str, queues: Queues, producer: Celery, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    counter_url = require_broker(BROKERS["redis"])
    local_worker_env(monkeypatch, broker_url, counter_url)
    queue = queues.new("zombie")
    key = f"ondemand-test-zombie-{uuid.uuid4().hex}"
    counter = redis.Redis.from_url(counter_url)
    config = settings_from_mapping({"broker_url": broker_url, "targets": [{
        "name": "z", "queues": [queue], "scaler": "local",
        "command": worker_command(queue),
        "state_dir": str(tmp_path / "workers"), "worker_concurrency": 1, "max_workers": 1,
        "zombie_after_seconds": 2}]})
    ticker = Ticker(config, observer=Observer(broker_url))
    scaler = ticker.scalers["z"]
    assert isinstance(scaler, LocalScaler)
    try:
        producer.send_task("tests.count", args=(0, key), queue=queue)
        # The scaler's worker, heard: the broker is shared, so other tests' workers are
        # live too, and stalling one of them would leave ours to empty the queue.
        tick_until(ticker, lambda r: int(counter.get(key) or 0) == 1 and bool(
            r.observation and {w.hostname for w in scaler.workers()}
            & set(r.observation.live_workers)))
        zombie, = (w.hostname for w in scaler.workers())
        stalled = producer.control.broadcast("ondemand_test_stall", destination=[zombie],
                                             reply=True, timeout=10, limit=1)
        assert stalled, "the worker confirmed it stopped taking tasks"
        for _ in range(3):
            producer.send_task("tests.count", args=(0, key), queue=queue)
        flagged = tick_until(ticker, lambda r: bool(r.decisions[0].zombies),
                             logs=tmp_path / "workers")
        assert flagged.decisions[0].zombies == (zombie,)
        assert flagged.replaced == {"z": [zombie]}
        assert flagged.decisions[0].desired == 1, "the count is kept"
        assert any(zombie in w and "replaced" in w for w in flagged.warnings())
        tick_until(ticker, lambda r: int(counter.get(key) or 0) == 4)
        workers = scaler.workers()
        assert [w.hostname for w in workers if not w.stopping] != [zombie]
        assert len([w for w in workers if not w.stopping]) == 1
    finally:
        for worker in scaler.workers():
            os.kill(worker.pid, signal.SIGKILL)
        ticker.close()
        counter.delete(key)


def tick_until(ticker: Ticker, done: Callable[[TickResult], bool],
               timeout: float = 90, logs: Path | None = None) -> TickResult:
    """Tick until ``done``; on giving up, say what the last tick saw and what the workers
    logged (the ``*.log`` files under ``logs``)."""
    deadline = time.monotonic() + timeout
    while True:
        result = ticker.tick()
        assert result.ok, (result.error, result.target_errors)
        if done(result):
            return result
        if time.monotonic() >= deadline:
            logged = {log.name: log.read_text()[-3000:]
                      for log in sorted(logs.glob("*.log"))} if logs else {}
            pytest.fail(f"last tick: {result.serializer()}\nworker logs: {logged}")
        time.sleep(0.5)


def test_a_task_past_the_visibility_timeout_is_warned_of_and_its_copy_is_no_demand(
        redis_url: str) -> None:
    """On Redis a task running past ``visibility_timeout`` is handed out again: its copy
    waits in the queue while the original still runs. That copy is no new work."""
    queues, fleet = Queues(redis_url), Fleet(redis_url)
    name = queues.new("overdue")
    release = unique("ondemand-release")
    fleet.start([name], name="slow", concurrency=1, events=True,
                env={"ONDEMAND_TEST_VISIBILITY": "3",  # restored within ~2 s after that
                     "ONDEMAND_TEST_COUNTER": redis_url})
    Celery("p", broker=redis_url, set_as_current=False).send_task(
        "tests.hold", args=(release,), queue=name)  # runs until released
    config = settings(queues=[name], worker_concurrency=1, max_workers=5,
                      redelivery_timeout_seconds=3)
    try:
        with Observer(redis_url) as observer:
            deadline = time.monotonic() + 60
            while True:
                status = observer.observe([name])
                queue = status.queues[name]
                if queue.size == 1 and queue.running == 1:
                    break  # the copy is back in the queue, the original still runs
                assert time.monotonic() < deadline, queue
        assert max(queue.running_ages) > 3
        decisions, _ = decide(status, config, {}, 1000.0, current={"t": 1})
        decision = decisions[0]
        assert decision.inputs["near_redelivery"] == 1 and decision.inputs["ready"] == 0
        assert decision.desired == 1, "the copy adds no worker"
    finally:
        redis.Redis.from_url(redis_url).set(release, 1, ex=300)
        fleet.stop()
        queues.delete_all()
