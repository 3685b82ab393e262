"""Which worker runs where, exactly, and a scale-in that waits when a busy worker cannot be
shielded: ECS and Auto Scaling on moto (UpdateTaskProtection, which moto lacks, answered at
the client boundary by :class:`~tests.support.aws.ECSWithProtection`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from celery_ondemand import TargetMemory, WorkerStatus
from celery_ondemand.act.asg import ASGScaler
from celery_ondemand.act.base import owners
from celery_ondemand.act.ecs import ECSScaler
from celery_ondemand.errors import ScaleInHeld
from celery_ondemand.tick import Ticker
from tests.support.aws import (
    ECSWithProtection,
    auto_scaling_group,
    ecs_service_with_tasks,
    fake_credentials,
)
from tests.support.observations import ScriptedObserver, observation, settings, worker


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    fake_credentials(monkeypatch)
    with mock_aws():
        yield {name: boto3.client(name, region_name="us-east-1")
               for name in ("ecs", "ec2", "autoscaling")}


def on(host: str, *, busy: bool, name: str = "celery") -> WorkerStatus:
    return WorkerStatus(f"{name}@{host}", alive=True, active=1 if busy else 0, queues=["q"])


def private_names(aws: dict[str, Any], ids: list[str]) -> dict[str, str]:
    """Instance id → its EC2 host name (``ip-10-…``), as ``celery@$HOSTNAME`` carries it."""
    described = aws["ec2"].describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["PrivateDnsName"].split(".")[0]
            for r in described for i in r["Instances"]}


def group(aws: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = aws["autoscaling"].describe_auto_scaling_groups(
        AutoScalingGroupNames=["workers"])["AutoScalingGroups"][0]
    return found


def asg_scaler(aws: dict[str, Any]) -> ASGScaler:
    target = settings(scaler="asg", auto_scaling_group="workers", command=None).targets[0]
    return ASGScaler(target, aws["autoscaling"], aws["ec2"])


def ecs_scaler(client: Any) -> ECSScaler:
    return ECSScaler(settings(scaler="ecs", cluster="prod", service="workers",
                              command=None).targets[0], client)


def test_names_match_whole_never_as_part_of_a_longer_one() -> None:
    machines = {"i-a": {"ip-10-0-1-2", "i-a"}, "i-b": {"ip-10-0-1-23", "i-b"}}
    found = owners([on("ip-10-0-1-23", busy=True), on("ip-10-0-1-2.ec2.internal", busy=True),
                    on("ip-10-0-1-234", busy=True), on("x-ip-10-0-1-2", busy=True)],
                   machines)
    assert found == {"celery@ip-10-0-1-23": "i-b", "celery@ip-10-0-1-2.ec2.internal": "i-a"}
    reported = WorkerStatus("celery@ip-10-0-1-2", machine="i-gone")
    assert owners([reported], machines) == {}, "a reported machine is the only one it may be"


def test_a_busy_worker_matched_to_no_instance_holds_the_scale_in(aws: dict[str, Any]) -> None:
    ids = auto_scaling_group(aws["autoscaling"], aws["ec2"], desired=3)
    names = private_names(aws, ids)
    # Its name begins with another instance's name: a substring match would shield that
    # instance instead, and the group could terminate the busy worker's own.
    look_alike = names[ids[0]] + "9"
    workers = [on(look_alike, busy=True), *(on(names[i], busy=False) for i in ids)]
    with pytest.raises(ScaleInHeld, match=f"busy workers not matched.*celery@{look_alike}"):
        asg_scaler(aws).apply(1, 3, workers)
    assert group(aws)["DesiredCapacity"] == 3
    assert not any(i.get("ProtectedFromScaleIn") for i in group(aws)["Instances"])


def test_a_zombie_is_replaced_only_on_its_own_machine(aws: dict[str, Any]) -> None:
    ids = auto_scaling_group(aws["autoscaling"], aws["ec2"], desired=2)
    names = private_names(aws, ids)
    healthy = on(names[ids[0]], busy=True)
    look_alike = on(names[ids[0]] + "7", busy=False)  # a zombie somewhere else
    neighbour = on(names[ids[1]], busy=False, name="zombie")  # shares ids[1] with ...
    busy_there = on(names[ids[1]], busy=True, name="second")  # ... a busy worker
    scaler = asg_scaler(aws)
    assert scaler.replace([look_alike, neighbour],
                          [healthy, look_alike, neighbour, busy_there]) == []
    assert {i["InstanceId"] for i in group(aws)["Instances"]} == set(ids)


def test_a_task_ecs_does_not_protect_holds_the_scale_in(aws: dict[str, Any]) -> None:
    arns = ecs_service_with_tasks(aws["ecs"], aws["ec2"], tasks=3)
    ids = [arn.rsplit("/", 1)[-1] for arn in arns]
    client = ECSWithProtection(aws["ecs"], refusing={arns[0]})
    workers = [on(ids[0], busy=True), on(ids[1], busy=False), on(ids[2], busy=False)]
    with pytest.raises(ScaleInHeld, match=f"did not protect busy tasks: {ids[0]} "
                                          r"\(TASK_NOT_VALID\)"):
        ecs_scaler(client).apply(1, 3, workers)
    service = aws["ecs"].describe_services(cluster="prod", services=["workers"])["services"][0]
    assert service["desiredCount"] == 3


def test_a_task_ecs_does_not_protect_does_not_hold_a_scale_out(aws: dict[str, Any]) -> None:
    """Shielding is for a scale-in only: a scale-out stops no task, so a refused
    protection must not hold it."""
    arns = ecs_service_with_tasks(aws["ecs"], aws["ec2"], tasks=2)
    ids = [arn.rsplit("/", 1)[-1] for arn in arns]
    client = ECSWithProtection(aws["ecs"], refusing={arns[0]})
    ecs_scaler(client).apply(4, 2, [on(ids[0], busy=True), on(ids[1], busy=False)])
    service = aws["ecs"].describe_services(cluster="prod", services=["workers"])["services"][0]
    assert service["desiredCount"] == 4


def test_the_tick_holds_and_warns_when_the_shield_fails(aws: dict[str, Any]) -> None:
    arns = ecs_service_with_tasks(aws["ecs"], aws["ec2"], tasks=2)
    ids = [arn.rsplit("/", 1)[-1] for arn in arns]
    client = ECSWithProtection(aws["ecs"], refusing={arns[0]})
    config = settings(scaler="ecs", cluster="prod", service="workers", command=None,
                      worker_concurrency=1, scale_down_delay_seconds=0,
                      stabilization_seconds=0, tolerance=0)
    busy = worker(f"celery@{ids[0]}", ["q"], active=1)
    idle = worker(f"celery@{ids[1]}", ["q"])
    seen = TargetMemory(idle_since=0.0, workers_seen=sorted([busy.hostname, idle.hostname]))
    ticker = Ticker(config, observer=ScriptedObserver(observation(  # type: ignore[arg-type]
        {"q": (0, 1)}, [busy, idle])), scalers={"t": ecs_scaler(client)})
    ticker.memory = {"t": seen}
    result = ticker.tick(now=1000.0)
    decision = result.decisions[0]
    assert (decision.current, decision.desired, decision.rule) == (2, 2, "protection")
    assert result.ok, "a held scale-in is a warning, not an error"
    assert any("did not protect busy tasks" in w for w in result.warnings())
    assert ticker.memory["t"].last_desired == 2, "no worker was expected to leave"
    service = aws["ecs"].describe_services(cluster="prod", services=["workers"])["services"][0]
    assert service["desiredCount"] == 2


def test_a_scale_in_the_platform_has_not_finished_keeps_busy_tasks_shielded(
        aws: dict[str, Any]) -> None:
    """A ceiling fell below the busy workers (max_workers lowered, a window opened): the
    count is 1, three tasks still run, one of them busy. ECS stops only unprotected tasks,
    and the protection the scale-in set lasts an hour: each tick that still finds more
    workers than asked for protects the busy task again (a task running past the hour is
    not stopped) and lifts the idle ones' (ECS stops those)."""
    arns = ecs_service_with_tasks(aws["ecs"], aws["ec2"], tasks=3)
    aws["ecs"].update_service(cluster="prod", service="workers", desiredCount=1)
    ids = [arn.rsplit("/", 1)[-1] for arn in arns]
    client = ECSWithProtection(aws["ecs"])
    config = settings(scaler="ecs", cluster="prod", service="workers", command=None,
                      worker_concurrency=1, max_workers=1)
    running = [worker(f"celery@{ids[0]}", ["q"], active=1, concurrency=1),
               *(worker(f"celery@{i}", ["q"], concurrency=1) for i in ids[1:])]
    ticker = Ticker(config, observer=ScriptedObserver(observation(  # type: ignore[arg-type]
        {"q": (0, 1)}, running)), scalers={"t": ecs_scaler(client)})
    ticker.memory = {"t": TargetMemory(workers_seen=sorted(w.hostname for w in running))}
    for minute in range(3):
        result = ticker.tick(now=1000.0 + 60 * minute)
        assert (result.decisions[0].current, result.decisions[0].desired) == (1, 1)
        assert result.ok
    assert client.protected == {arns[0]: True, arns[1]: False, arns[2]: False}
    renewals = [c for c in client.protection_calls if c["enabled"]]
    assert [c["tasks"] for c in renewals] == [[arns[0]]] * 3, "renewed every tick"
    assert all(c["minutes"] == 60 for c in renewals)


def test_while_it_finishes_a_busy_task_it_cannot_shield_is_said_and_bootstep_workers_are_left_alone(
        aws: dict[str, Any]) -> None:
    arns = ecs_service_with_tasks(aws["ecs"], aws["ec2"], tasks=3)
    aws["ecs"].update_service(cluster="prod", service="workers", desiredCount=1)
    ids = [arn.rsplit("/", 1)[-1] for arn in arns]
    client = ECSWithProtection(aws["ecs"], refusing={arns[0]})
    config = settings(scaler="ecs", cluster="prod", service="workers", command=None,
                      worker_concurrency=1, max_workers=1)
    own = WorkerStatus("celery@own", alive=True, active=1, concurrency=1, queues=["q"],
                       machine=arns[2], last_heartbeat_at=0.0)
    running = [worker(f"celery@{ids[0]}", ["q"], active=1, concurrency=1),
               worker(f"celery@{ids[1]}", ["q"], concurrency=1), own]
    ticker = Ticker(config, observer=ScriptedObserver(observation(  # type: ignore[arg-type]
        {"q": (0, 2)}, running)), scalers={"t": ecs_scaler(client)})
    ticker.memory = {"t": TargetMemory(workers_seen=sorted(w.hostname for w in running))}
    result = ticker.tick(now=1000.0)
    assert result.decisions[0].rule == "protection" and result.ok
    assert any("did not protect busy tasks" in w for w in result.warnings())
    assert all(arns[2] not in c["tasks"] for c in client.protection_calls), \
        "a worker with the bootstep renews its own protection"
