"""ECS and Auto Scaling targets on moto (in-process): read, set, bounds, protection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from celery_ondemand import ScalerError, WorkerStatus
from celery_ondemand.act import scaler_for
from celery_ondemand.act.asg import ASGScaler
from celery_ondemand.act.ecs import ECSScaler
from tests.support.aws import (
    ECSWithProtection,
    auto_scaling_group,
    ecs_service_with_tasks,
    fake_credentials,
)
from tests.support.observations import settings


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    fake_credentials(monkeypatch)
    with mock_aws():
        yield {name: boto3.client(name, region_name="us-east-1")
               for name in ("ecs", "ec2", "autoscaling")}


def worker_on(machine_id: str, *, busy: bool) -> WorkerStatus:
    return WorkerStatus(f"celery@{machine_id}", alive=True, active=1 if busy else 0,
                        queues=["q"])


def ecs_target(**extra: Any) -> Any:
    return settings(scaler="ecs", cluster="prod", service="workers", command=None,
                    **extra).targets[0]


def test_ecs_reads_and_sets_the_desired_count(aws: dict[str, Any]) -> None:
    ecs_service_with_tasks(aws["ecs"], aws["ec2"], tasks=2)
    scaler = ECSScaler(ecs_target(), ECSWithProtection(aws["ecs"]))
    assert scaler.current().desired == 2
    scaler.apply(5, 2, [])
    scaler.apply(5, 5, [])  # a repeated tick sets the same number, never adds twice
    service = aws["ecs"].describe_services(cluster="prod", services=["workers"])["services"][0]
    assert service["desiredCount"] == 5 and scaler.current().desired == 5


def test_ecs_scale_in_protects_busy_tasks_and_frees_idle_ones(aws: dict[str, Any]) -> None:
    arns = ecs_service_with_tasks(aws["ecs"], aws["ec2"], tasks=3)
    ids = [arn.rsplit("/", 1)[-1] for arn in arns]
    client = ECSWithProtection(aws["ecs"])
    scaler = ECSScaler(ecs_target(), client)
    workers = [worker_on(ids[0], busy=True), worker_on(ids[1], busy=False),
               worker_on(ids[2], busy=True)]
    scaler.apply(1, 3, workers)
    assert client.protected == {arns[0]: True, arns[2]: True, arns[1]: False}
    assert all(call["minutes"] == 60 for call in client.protection_calls if call["enabled"])
    service = aws["ecs"].describe_services(cluster="prod", services=["workers"])["services"][0]
    assert service["desiredCount"] == 1


def test_ecs_maps_workers_by_the_task_arn_they_report(aws: dict[str, Any]) -> None:
    """A worker reporting its task runs the bootstep, which holds its own protection: the
    busy one is protected, and the idle one's is left to its bootstep — lifting it could
    undo what the bootstep set for a task taken since the observation."""
    arns = ecs_service_with_tasks(aws["ecs"], aws["ec2"], tasks=3)
    client = ECSWithProtection(aws["ecs"])
    workers = [WorkerStatus("celery@a", alive=True, active=1, machine=arns[1]),
               WorkerStatus("celery@b", alive=True, machine=arns[0]),
               WorkerStatus(f"celery@{arns[2].rsplit('/', 1)[-1]}", alive=True)]
    ECSScaler(ecs_target(), client).apply(1, 3, workers)
    assert client.protected == {arns[1]: True, arns[2]: False}, \
        "only a worker without a bootstep has its protection lifted by the tick"


def test_ecs_scale_out_touches_no_protection(aws: dict[str, Any]) -> None:
    arns = ecs_service_with_tasks(aws["ecs"], aws["ec2"], tasks=1)
    client = ECSWithProtection(aws["ecs"])
    ECSScaler(ecs_target(), client).apply(3, 1, [worker_on(arns[0].rsplit("/", 1)[-1],
                                                           busy=True)])
    assert client.protection_calls == []


def test_ecs_missing_service_is_a_scaler_error_naming_the_target(aws: dict[str, Any]) -> None:
    aws["ecs"].create_cluster(clusterName="prod")
    with pytest.raises(ScalerError, match="target t: ECS service 'workers' not found"):
        ECSScaler(ecs_target(), aws["ecs"]).current()
    with pytest.raises(ScalerError, match="target t: reading failed"):
        ECSScaler(settings(scaler="ecs", cluster="nowhere", service="workers",
                           command=None).targets[0], aws["ecs"]).current()


def asg_target() -> Any:
    return settings(scaler="asg", auto_scaling_group="workers", command=None).targets[0]


def test_asg_reads_in_service_and_sets_capacity(aws: dict[str, Any]) -> None:
    auto_scaling_group(aws["autoscaling"], aws["ec2"], desired=2)
    scaler = ASGScaler(asg_target(), aws["autoscaling"], aws["ec2"])
    capacity = scaler.current()
    assert (capacity.desired, capacity.running) == (2, 2)
    scaler.apply(4, 2, [])
    assert scaler.current().desired == 4


def test_asg_scale_in_keeps_the_instances_whose_workers_are_busy(aws: dict[str, Any]) -> None:
    ids = auto_scaling_group(aws["autoscaling"], aws["ec2"], desired=3)
    scaler = ASGScaler(asg_target(), aws["autoscaling"], aws["ec2"])
    busy = ids[1]
    workers = [worker_on(ids[0], busy=False), worker_on(busy, busy=True),
               worker_on(ids[2], busy=False)]
    scaler.apply(1, 3, workers)
    group = aws["autoscaling"].describe_auto_scaling_groups(
        AutoScalingGroupNames=["workers"])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 1
    assert [i["InstanceId"] for i in group["Instances"]] == [busy], \
        "the group terminated a busy worker's instance"


def test_asg_matches_workers_by_private_dns_name(aws: dict[str, Any]) -> None:
    ids = auto_scaling_group(aws["autoscaling"], aws["ec2"], desired=2)
    described = aws["ec2"].describe_instances(InstanceIds=ids)["Reservations"]
    names = {i["InstanceId"]: i["PrivateDnsName"].split(".")[0]
             for r in described for i in r["Instances"]}
    scaler = ASGScaler(asg_target(), aws["autoscaling"], aws["ec2"])
    scaler.apply(1, 2, [WorkerStatus(f"celery@{names[ids[0]]}", alive=True, active=2),
                        WorkerStatus(f"celery@{names[ids[1]]}", alive=True)])
    group = aws["autoscaling"].describe_auto_scaling_groups(
        AutoScalingGroupNames=["workers"])["AutoScalingGroups"][0]
    assert [i["InstanceId"] for i in group["Instances"]] == [ids[0]]


def test_asg_missing_group(aws: dict[str, Any]) -> None:
    with pytest.raises(ScalerError, match="Auto Scaling group 'workers' not found"):
        ASGScaler(asg_target(), aws["autoscaling"], aws["ec2"]).current()


def test_custom_scalers_are_built_from_their_class_path() -> None:
    target = settings(scaler="tests.support.agents:RecordingDemand", command=None).targets[0]
    assert type(scaler_for(target)).__name__ == "CwodScaler"
    from celery_ondemand import ConfigError

    bad = settings(scaler="tests.support.agents:NotAnAgent", command=None).targets[0]
    with pytest.raises(ConfigError, match="neither a Scaler subclass"):
        scaler_for(bad)


def test_ecs_replaces_a_zombie_by_stopping_its_task_only(aws: dict[str, Any]) -> None:
    arns = ecs_service_with_tasks(aws["ecs"], aws["ec2"], tasks=2)
    scaler = ECSScaler(ecs_target(), aws["ecs"])
    zombie = WorkerStatus("celery@zombie", alive=True, machine=arns[0], queues=["q"])
    assert scaler.replace([zombie]) == ["celery@zombie"]
    described = aws["ecs"].describe_tasks(cluster="prod", tasks=arns)["tasks"]
    wanted = {t["taskArn"]: t["desiredStatus"] for t in described}
    assert wanted == {arns[0]: "STOPPED", arns[1]: "RUNNING"}
    service = aws["ecs"].describe_services(cluster="prod", services=["workers"])["services"][0]
    assert service["desiredCount"] == 2, "the service starts a replacement: the count is kept"


def test_asg_replaces_a_zombie_by_terminating_its_instance_keeping_capacity(
        aws: dict[str, Any]) -> None:
    ids = auto_scaling_group(aws["autoscaling"], aws["ec2"], desired=2)
    target = settings(scaler="asg", auto_scaling_group="workers", command=None).targets[0]
    scaler = ASGScaler(target, aws["autoscaling"], aws["ec2"])
    assert scaler.replace([worker_on(ids[0], busy=False)]) == [f"celery@{ids[0]}"]
    group = aws["autoscaling"].describe_auto_scaling_groups(
        AutoScalingGroupNames=["workers"])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 2
    assert ids[0] not in {i["InstanceId"] for i in group["Instances"]}


def test_an_auto_scaling_groups_own_min_and_max_bound_the_decision(
        aws: dict[str, Any]) -> None:
    """A count outside MinSize..MaxSize is refused by SetDesiredCapacity on every tick: the
    decision stays within the group's own bounds instead (and at rest means at MinSize)."""
    from celery_ondemand.tick import Ticker
    from tests.support.observations import ScriptedObserver, observation

    auto_scaling_group(aws["autoscaling"], aws["ec2"], desired=2)
    aws["autoscaling"].update_auto_scaling_group(AutoScalingGroupName="workers", MinSize=1,
                                                 MaxSize=3)
    config = settings(scaler="asg", auto_scaling_group="workers", command=None,
                      worker_concurrency=1, max_workers=10, scale_down_delay_seconds=0)
    busy = Ticker(config, observer=ScriptedObserver(observation({"q": (20, 0)})))
    result = busy.tick(now=1000.0)
    assert result.ok and (result.decisions[0].desired, result.decisions[0].rule) == (3, "bounds")
    group = aws["autoscaling"].describe_auto_scaling_groups(AutoScalingGroupNames=["workers"])
    assert group["AutoScalingGroups"][0]["DesiredCapacity"] == 3
    idle = Ticker(config, observer=ScriptedObserver(observation({"q": (0, 0)})))
    rest = idle.tick(now=2000.0)
    assert rest.ok and rest.decisions[0].desired == 1, "never below MinSize"
    settled = idle.tick(now=2015.0)
    assert settled.at_rest(config), "at rest at the group's MinSize, not at min_workers 0"
