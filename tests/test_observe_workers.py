"""Observation against real brokers and real ``celery worker`` processes.

Each test runs on RabbitMQ and on Redis. The module starts one fleet per broker:
two workers share queue A, one of them also serves B, one serves C alone, and one (a
single slot, prefetching two) serves D for the busy and hidden-work checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from celery import Celery

from celery_ondemand import Observation, Observer
from tests.support.brokers import BROKERS, Queues, require_broker, unique
from tests.support.workers import Fleet, Worker

pytestmark = pytest.mark.broker


@dataclass
class Deployment:
    a: str
    b: str
    c: str
    d: str
    only_a: Worker
    a_and_b: Worker
    only_c: Worker
    only_d: Worker
    counter_url: str


@pytest.fixture(scope="module")
def deployment(broker_url: str, module_queues: Queues) -> Iterator[Deployment]:
    counter_url = require_broker(BROKERS["redis"])  # releases the held tasks of D
    a, b, c, d = (module_queues.new(x) for x in "abcd")
    fleet = Fleet(broker_url)
    try:
        workers = [fleet.start([a], name="only-a", wait=False),
                   fleet.start([a, b], name="a-and-b", wait=False),
                   fleet.start([c], name="only-c", pool="prefork", wait=False),
                   fleet.start([d], name="only-d", concurrency=1, prefetch=2, wait=False,
                               env={"ONDEMAND_TEST_COUNTER": counter_url})]
        fleet.wait_ready()
        yield Deployment(a, b, c, d, *workers, counter_url)
    finally:
        fleet.stop()


@pytest.fixture
def observer(broker_url: str) -> Iterator[Observer]:
    with Observer(broker_url) as observer:
        yield observer


def observe_until(observer: Observer, queues: list[str] | None,
                  condition: Callable[[Observation], bool], timeout: float = 30.0) -> Observation:
    """Observe until ``condition`` holds (work takes a moment to reach workers)."""
    deadline = time.monotonic() + timeout
    observation = observer.observe(queues)
    while not condition(observation) and time.monotonic() < deadline:
        time.sleep(0.2)
        observation = observer.observe(queues, previous=observation)
    return observation


def ours(deployment: Deployment) -> set[str]:
    return {w.hostname for w in (deployment.only_a, deployment.a_and_b, deployment.only_c,
                                 deployment.only_d)}


def test_every_live_worker_is_seen_with_its_queues(deployment: Deployment,
                                                   observer: Observer) -> None:
    # A first observation ends 0.25 s after the last new worker answered; on a loaded
    # machine one may answer later, and the next observation waits for those it knows.
    status = observe_until(observer, None, lambda o: ours(deployment) <= set(o.live_workers))
    assert ours(deployment) <= set(status.live_workers)
    assert status.sources == ["broker", "events", "control"]
    assert status.workers[deployment.a_and_b.hostname].queues == [deployment.a, deployment.b]
    assert status.workers[deployment.only_c.hostname].concurrency == 2


def test_without_queue_list_the_queues_are_those_live_workers_consume(
        deployment: Deployment, observer: Observer) -> None:
    status = observe_until(observer, None, lambda o: ours(deployment) <= set(o.live_workers))
    assert {deployment.a, deployment.b, deployment.c, deployment.d} <= set(status.queues)
    assert {w.hostname for w in status.queues[deployment.a].workers} == {
        deployment.only_a.hostname, deployment.a_and_b.hostname}
    assert [w.hostname for w in status.queues[deployment.b].workers] == [
        deployment.a_and_b.hostname]
    assert status.queues[deployment.a].many_workers == 2
    assert status.queues[deployment.c].has_worker


def test_busy_worker_and_the_work_the_broker_hides(deployment: Deployment, observer: Observer,
                                                   producer: Celery) -> None:
    release = unique("ondemand-release")
    for _ in range(4):  # each runs until released: the picture holds however slow we are
        producer.send_task("tests.hold", args=(release,), queue=deployment.d)

    def settled(o: Observation) -> bool:
        queue = o.queues[deployment.d]
        return queue.running == 1 and queue.reserved == 1 and queue.size == 2

    try:
        status = observe_until(observer, [deployment.d, deployment.c], settled, timeout=60)
    finally:
        redis.Redis.from_url(deployment.counter_url).set(release, 1, ex=300)
    queue = status.queues[deployment.d]
    worker = status.workers[deployment.only_d.hostname]
    assert (queue.size, queue.running, queue.reserved, queue.hidden) == (2, 1, 1, 2)
    assert worker.busy and worker.active == 1 and worker.reserved == 1
    assert not status.workers[deployment.only_c.hostname].busy
    assert status.queues[deployment.c].hidden == 0
    if broker_is_rabbitmq(status):
        assert queue.consumers == 1


def test_a_killed_worker_disappears(deployment: Deployment, observer: Observer,
                                    fleet: Fleet) -> None:
    doomed = fleet.start([deployment.a], name="doomed")
    before = observe_until(observer, [deployment.a],
                           lambda o: o.queues[deployment.a].many_workers == 3)
    assert doomed.hostname in before.live_workers
    assert before.queues[deployment.a].many_workers == 3

    doomed.kill()
    after = observer.observe([deployment.a], previous=before)
    assert doomed.hostname not in after.workers
    assert {w.hostname for w in after.queues[deployment.a].workers} == {
        deployment.only_a.hostname, deployment.a_and_b.hostname}


def test_depth_counts_every_priority(broker_url: str, queues: Queues, producer: Celery,
                                     observer: Observer) -> None:
    from kombu import Queue

    name = queues.new("prio")
    queue = Queue(name, routing_key=name, queue_arguments={"x-max-priority": 10})
    with producer.connection_for_write() as connection:
        queue(connection.default_channel).declare()
    for priority in (0, 0, 3, 5, 9):
        producer.send_task("tests.sleep", args=(0,), queue=queue, priority=priority)

    status = observer.observe([name])
    assert status.queues[name].size == 5
    assert status.queues[name].workers == []
    if not broker_is_rabbitmq(status):
        # Prove the messages really went to separate priority lists.
        with producer.connection_for_write() as connection:
            client = connection.default_channel.client
            assert client.llen(name) == 2 and client.llen(f"{name}\x06\x169") == 1


def test_a_missing_queue_is_empty_and_does_not_break_the_next(
        broker_url: str, queues: Queues, producer: Celery, observer: Observer) -> None:
    missing, present = queues.new("missing"), queues.new("present")
    producer.send_task("tests.sleep", args=(0,), queue=present)
    producer.send_task("tests.sleep", args=(0,), queue=present)

    status = observer.observe([missing, present, missing])
    assert list(status.queues) == [missing, present]
    assert status.queues[missing].size == 0
    assert status.queues[present].size == 2
    assert status.queues[missing].missing is broker_is_rabbitmq(status)
    assert not status.queues[present].missing


def broker_is_rabbitmq(status: Observation) -> bool:
    return status.broker.startswith("amqp")
