"""A rollout under load: the bootstep keeps a busy worker's task protected, and ECS does
not stop a protected task to deploy, so the tick drains the workers on the tasks the
rollout replaces. Real workers with the bootstep (each reporting its task through a
stand-in ECS agent endpoint), a real broker, ECS on moto (its deployments answered at the
client: tests.support.aws.RollingOut)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from celery_ondemand import WorkerStatus
from celery_ondemand.act.ecs import ECSScaler
from celery_ondemand.tick import Ticker
from tests.support.aws import RollingOut, ecs_service_with_tasks, fake_credentials
from tests.support.brokers import Queues
from tests.support.observations import settings
from tests.support.waiting import wait_until
from tests.support.workers import Fleet
from tests.worker.test_bootstep import FakeEcsAgent

OLD, NEW = "ecs-svc/1111111111111111111", "ecs-svc/2222222222222222222"


@pytest.fixture
def ecs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RollingOut, list[str], list[str]]]:
    """The service mid-rollout: two tasks of the old deployment, one of the new."""
    fake_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("ecs", region_name="us-east-1")
        ecs_service_with_tasks(client, boto3.client("ec2", region_name="us-east-1"), tasks=1)
        old, new = ([t["taskArn"] for t in client.run_task(
            cluster="prod", taskDefinition="worker", count=n, startedBy=by)["tasks"]]
            for n, by in ((2, OLD), (1, NEW)))
        yield RollingOut(client, OLD, NEW), old, new


def agent_for(task_arn: str) -> FakeEcsAgent:
    agent = FakeEcsAgent(task_arn)
    threading.Thread(target=agent.serve_forever, daemon=True).start()
    return agent


def test_the_workers_of_the_deployment_being_replaced_are_named(
        ecs: tuple[RollingOut, list[str], list[str]]) -> None:
    client, old, new = ecs
    target = settings(scaler="ecs", cluster="prod", service="workers", command=None).targets[0]
    scaler = ECSScaler(target, client)
    workers = [WorkerStatus("celery@a", alive=True, machine=old[0]),
               WorkerStatus("celery@b", alive=True, machine=new[0]),
               WorkerStatus(f"celery@{old[1].rsplit('/', 1)[-1]}", alive=True)]
    scaler.current()
    assert scaler.outgoing(workers) == ["celery@a"], \
        "only a worker whose bootstep reported an old task (it answers the drain)"
    client.deployments = client.deployments[:1]  # the old deployment is gone: done
    scaler.current()
    assert scaler.outgoing(workers) == []


@pytest.mark.broker
def test_a_rollout_drains_the_old_workers_once_and_leaves_the_new(
        broker_url: str, queues: Queues, fleet: Fleet,
        ecs: tuple[RollingOut, list[str], list[str]]) -> None:
    client, old, new = ecs
    name = queues.new("rollout")
    agents = [agent_for(old[0]), agent_for(new[0])]
    try:
        leaving, staying = (fleet.start([name], name=label, env={
            "ONDEMAND_TEST_BOOTSTEP": "1", "ECS_AGENT_URI": agent.url,
            "ECS_CONTAINER_METADATA_URI_V4": f"{agent.url}/meta"})
            for label, agent in (("old", agents[0]), ("new", agents[1])))
        config = settings(queues=[name], scaler="ecs", cluster="prod", service="workers",
                          command=None, worker_concurrency=2, max_workers=4)
        ticker = Ticker(config, broker_url=broker_url,
                        scalers={"t": ECSScaler(config.targets[0], client)})
        try:
            first = wait_until(lambda: ticker.tick(), lambda r: bool(r.drained), timeout=60,
                               what="a tick that hears both workers and drains")
            assert first.drained == {"t": [leaving.hostname]}
            assert any("draining" in w and leaving.hostname in w for w in first.warnings())
            assert leaving.process.wait(timeout=60) == 0, "drained: a warm shutdown"
            assert staying.process.poll() is None, "the new deployment's worker runs on"
            again = ticker.tick()
            assert again.drained == {} and again.ok
        finally:
            ticker.close()
    finally:
        for agent in agents:
            agent.shutdown()
            agent.server_close()
