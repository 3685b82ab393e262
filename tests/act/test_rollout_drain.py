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


def test_busy_workers_of_the_outgoing_deployment_are_drained_as_the_new_one_runs(
        ecs: tuple[RollingOut, list[str], list[str]]) -> None:
    client, old, new = ecs
    target = settings(scaler="ecs", cluster="prod", service="workers", command=None).targets[0]
    scaler = ECSScaler(target, client)
    workers = [WorkerStatus("celery@a", alive=True, active=1, machine=old[0]),
               WorkerStatus("celery@b", alive=True, active=1, machine=old[1]),
               WorkerStatus("celery@idle", alive=True, machine=old[2]),
               WorkerStatus("celery@new", alive=True, active=1, machine=new[0]),
               WorkerStatus(f"celery@{old[2].rsplit('/', 1)[-1]}", alive=True, active=1)]
    scaler.current()
    assert scaler.outgoing(workers, set()) == ["celery@a"], \
        "busy, on an old task, its bootstep reporting it; one at a time: one new task runs"
    assert scaler.outgoing(workers, {"celery@a"}) == [], "a is still finishing"
    client.deployments[0]["runningCount"] = 3
    scaler.current()
    assert scaler.outgoing(workers, {"celery@a"}) == ["celery@b"], \
        "an idle worker is unprotected: ECS stops it without being drained"
    client.deployments[0]["rolloutState"] = "FAILED"
    scaler.current()
    assert scaler.outgoing(workers, set()) == [], "a failed rollout keeps the old tasks"
    client.deployments = client.deployments[:1]
    client.deployments[0]["rolloutState"] = "COMPLETED"
    scaler.current()
    assert scaler.outgoing(workers, set()) == [], "no outgoing deployment: nothing"


@pytest.mark.broker
def test_a_rollout_drains_a_busy_old_worker_once_and_it_finishes_its_task(
        broker_url: str, queues: Queues, fleet: Fleet,
        ecs: tuple[RollingOut, list[str], list[str]]) -> None:
    client, old, new = ecs
    counter_url = require_broker(BROKERS["redis"])
    release = unique("ondemand-release")
    name = queues.new("rollout")
    producer = producer_app(broker_url)
    agents = [agent_for(old[0]), agent_for(new[0])]
    try:
        def start(label: str, agent: FakeEcsAgent) -> Worker:
            return fleet.start([name], name=label, concurrency=1, env={
                "ONDEMAND_TEST_BOOTSTEP": "1", "ECS_AGENT_URI": agent.url,
                "ECS_CONTAINER_METADATA_URI_V4": f"{agent.url}/meta",
                "ONDEMAND_TEST_COUNTER": counter_url, "ONDEMAND_PROTECTION_POLL": "0.1"})

        leaving = start("old", agents[0])
        producer.send_task("tests.hold", args=(release,), queue=name)
        wait_until(lambda: [b for _, b in agents[0].calls if b["ProtectionEnabled"]],
                   what="the old worker running the task, shielded")
        staying = start("new", agents[1])  # the new deployment's task comes up
        config = settings(queues=[name], scaler="ecs", cluster="prod", service="workers",
                          command=None, worker_concurrency=1, max_workers=4)
        ticker = Ticker(config, broker_url=broker_url,
                        scalers={"t": ECSScaler(config.targets[0], client)})
        try:
            first = wait_until(lambda: ticker.tick(), lambda r: bool(r.drained), timeout=60,
                               what="a tick that hears the busy old worker and drains it")
            assert first.drained == {"t": [leaving.hostname]}
            assert any("draining" in w and leaving.hostname in w for w in first.warnings())
            again = ticker.tick()
            assert again.drained == {}, "told once"
            assert leaving.process.poll() is None, "still finishing its task"
            redis.Redis.from_url(counter_url).set(release, 1, ex=300)
            assert leaving.process.wait(timeout=60) == 0, "a warm shutdown once it is done"
            assert staying.process.poll() is None, "the new deployment's worker runs on"
            assert "Task tests.hold" in leaving.log.read_text()
        finally:
            ticker.close()
    finally:
        redis.Redis.from_url(counter_url).set(release, 1, ex=300)
        producer.close()
        for agent in agents:
            agent.shutdown()
            agent.server_close()
