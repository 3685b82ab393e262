"""A rollout under load: the bootstep keeps a busy worker's task protected, and ECS does
not stop a protected task to deploy, so the tick drains the busy workers on the tasks the
rollout replaces, no more at a time than the new deployment runs. Real workers with the
bootstep (each reporting its task through a stand-in ECS agent endpoint), a real broker,
ECS on moto (its deployments answered at the client: tests.support.aws.RollingOut)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest
import redis
from moto import mock_aws

from celery_ondemand import WorkerStatus
from celery_ondemand.act.ecs import ECSScaler
from celery_ondemand.tick import Ticker
from tests.support.aws import RollingOut, ecs_service_with_tasks, fake_credentials
from tests.support.brokers import BROKERS, Queues, producer_app, require_broker, unique
from tests.support.observations import settings
from tests.support.waiting import wait_until
from tests.support.workers import Fleet, Worker
from tests.worker.test_bootstep import FakeEcsAgent

OLD, NEW = "ecs-svc/1111111111111111111", "ecs-svc/2222222222222222222"


@pytest.fixture
def ecs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RollingOut, list[str], list[str]]]:
    """The service mid-rollout: three tasks of the old deployment, one of the new."""
    fake_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("ecs", region_name="us-east-1")
        ecs_service_with_tasks(client, boto3.client("ec2", region_name="us-east-1"), tasks=1)
        old, new = ([t["taskArn"] for t in client.run_task(
            cluster="prod", taskDefinition="worker", count=n, startedBy=by)["tasks"]]
            for n, by in ((3, OLD), (1, NEW)))
        yield RollingOut(client, OLD, NEW), old, new


def agent_for(task_arn: str) -> FakeEcsAgent:
    agent = FakeEcsAgent(task_arn)
    threading.Thread(target=agent.serve_forever, daemon=True).start()
    return agent


def test_busy_workers_of_the_outgoing_deployment_are_drained_as_the_rollout_adds_room(
        ecs: tuple[RollingOut, list[str], list[str]]) -> None:
    client, old, new = ecs
    target = settings(scaler="ecs", cluster="prod", service="workers", command=None).targets[0]
    scaler = ECSScaler(target, client)
    a, b = (WorkerStatus(f"celery@{n}", alive=True, active=1, machine=old[i])
            for i, n in enumerate("ab"))
    others = [WorkerStatus("celery@idle", alive=True, machine=old[2]),
              WorkerStatus("celery@eta", alive=True, scheduled=2, machine=old[2]),
              WorkerStatus("celery@new", alive=True, active=1, machine=new[0]),
              WorkerStatus(f"celery@{old[2].rsplit('/', 1)[-1]}", alive=True, active=1)]
    elsewhere = WorkerStatus("celery@elsewhere", alive=True, active=1,
                             machine="arn:aws:ecs:us-east-1:123456789012:task/prod/another")
    scaler.current()
    assert scaler.outgoing([a, b, *others], [elsewhere]) == ["celery@a"], \
        "running a task on an old task, its bootstep reporting it; no surplus yet: one " \
        "(a quiet worker of another service's task is none of this one's)"
    # Draining, a consumes nothing: it is no longer among the target's workers but among
    # the quiet ones, on one of the service's tasks.
    assert scaler.outgoing([b, *others], [a, elsewhere]) == [], "one at a time"
    client.running = 3  # the rollout started two tasks over the desired one
    scaler.current()
    assert scaler.outgoing([b, *others], [a]) == ["celery@b"]
    client.deployments[0]["rolloutState"] = "FAILED"
    scaler.current()
    assert scaler.outgoing([a, b, *others], []) == [], "a failed rollout keeps the old tasks"
    client.deployments = client.deployments[:1]
    client.deployments[0]["rolloutState"] = "COMPLETED"
    scaler.current()
    assert scaler.outgoing([a, b, *others], []) == [], "no outgoing deployment: nothing"


@pytest.mark.broker
def test_a_rollout_drains_busy_old_workers_one_at_a_time_and_each_finishes_its_task(
        broker_url: str, queues: Queues, fleet: Fleet,
        ecs: tuple[RollingOut, list[str], list[str]]) -> None:
    client, old, new = ecs
    counter_url = require_broker(BROKERS["redis"])
    releases = [unique("ondemand-release") for _ in range(2)]
    name = queues.new("rollout")
    producer = producer_app(broker_url)
    agents = [agent_for(old[0]), agent_for(old[1]), agent_for(new[0])]
    store = redis.Redis.from_url(counter_url)
    try:
        def start(label: str, agent: FakeEcsAgent) -> Worker:
            return fleet.start([name], name=label, concurrency=1, env={
                "ONDEMAND_TEST_BOOTSTEP": "1", "ECS_AGENT_URI": agent.url,
                "ECS_CONTAINER_METADATA_URI_V4": f"{agent.url}/meta",
                "ONDEMAND_TEST_COUNTER": counter_url, "ONDEMAND_PROTECTION_POLL": "0.1"})

        olds = []
        for i, release in enumerate(releases):  # each old worker takes one long task
            olds.append(start(f"old{i}", agents[i]))
            producer.send_task("tests.hold", args=(release,), queue=name)
            wait_until(lambda i=i: [b for _, b in agents[i].calls if b["ProtectionEnabled"]],
                       what=f"old worker {i} running its task, shielded")
        start("new", agents[2])  # the new deployment's task comes up
        config = settings(queues=[name], scaler="ecs", cluster="prod", service="workers",
                          command=None, worker_concurrency=1, max_workers=4)
        ticker = Ticker(config, broker_url=broker_url,
                        scalers={"t": ECSScaler(config.targets[0], client)})
        try:
            first = wait_until(lambda: ticker.tick(), lambda r: bool(r.drained), timeout=60,
                               what="a tick that hears the busy old workers and drains")
            (drained,) = first.drained["t"]
            assert any("draining" in w and drained in w for w in first.warnings())
            for _ in range(2):
                assert ticker.tick().drained == {}, "one at a time, and each told once"
            cold = Ticker(config, broker_url=broker_url,  # a new Lambda container
                          scalers={"t": ECSScaler(config.targets[0], client)})
            try:
                read = cold.tick()
                assert read.drained == {}, "a cold start still knows who drains"
                assert read.observation.workers[drained].draining == [name]
                assert read.decisions[0].inputs["draining"] == 1
            finally:
                cold.close()
            (one,) = [w for w in olds if w.hostname == drained]
            (other,) = [w for w in olds if w.hostname != drained]
            assert one.process.poll() is None, "still finishing its task"
            store.set(releases[olds.index(one)], 1, ex=300)
            assert one.process.wait(timeout=60) == 0, "a warm shutdown once it is done"
            assert "Task tests.hold" in one.log.read_text()
            after = wait_until(lambda: ticker.tick(), lambda r: bool(r.drained), timeout=60,
                               what="the next old worker drained once the first has gone")
            assert after.drained == {"t": [other.hostname]}
        finally:
            ticker.close()
    finally:
        for release in releases:
            store.set(release, 1, ex=300)
        producer.close()
        for agent in agents:
            agent.shutdown()
            agent.server_close()
