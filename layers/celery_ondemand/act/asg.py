"""EC2 Auto Scaling groups: the desired capacity of one group.

Read: ``DescribeAutoScalingGroups`` (desired, InService, Pending). Set:
``SetDesiredCapacity``. Before a scale-in, instances whose workers are busy get
``SetInstanceProtection(ProtectedFromScaleIn=True)`` and idle ones lose it, so the group
terminates idle instances; a busy worker not matched to its instance, or a protection call
that fails, holds the scale-in. A worker is matched to its instance by the instance id its
bootstep reports, else by a host name equal to the instance id, private IP or private DNS
name (the default ``celery@ip-10-…`` matches).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from ..config import TargetConfig
from ..errors import ScalerError
from ..model import WorkerStatus
from .base import AWS_CLIENT_CONFIG, Capacity, Scaler, identities, replaceable, shield_plan

REFRESHING = {"Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking"}
"""Instance refresh states in which the group is still replacing instances."""


class ASGScaler(Scaler):
    """Sets the desired capacity of ``auto_scaling_group``."""

    def __init__(self, target: TargetConfig, client: Any = None, ec2: Any = None) -> None:
        super().__init__(target)
        self._client, self._ec2 = client, ec2

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("autoscaling", config=AWS_CLIENT_CONFIG)
        return self._client

    @property
    def ec2(self) -> Any:
        if self._ec2 is None:
            import boto3

            self._ec2 = boto3.client("ec2", config=AWS_CLIENT_CONFIG)
        return self._ec2

    def _group(self) -> dict[str, Any]:
        name = self.target.auto_scaling_group
        groups = self.client.describe_auto_scaling_groups(
            AutoScalingGroupNames=[name]).get("AutoScalingGroups", [])
        if not groups:
            raise ScalerError(f"target {self.target.name}: Auto Scaling group {name!r} "
                              "not found")
        group: dict[str, Any] = groups[0]
        return group

    def _read(self, workers: Sequence[WorkerStatus]) -> Capacity:
        group = self._group()
        states = [i.get("LifecycleState", "") for i in group.get("Instances", [])]
        return Capacity(int(group["DesiredCapacity"]),
                        sum(1 for s in states if s == "InService"),
                        sum(1 for s in states if s.startswith("Pending")), self._refresh(),
                        bounds=(int(group["MinSize"]), int(group["MaxSize"])))

    def _refresh(self) -> str | None:
        """An instance refresh under way replaces instances by itself: scale-in waits.

        An optional signal: when it cannot be read, scale-in waits too, but the group is
        still read and scale-out goes ahead (a backlog must not wait on it).
        """
        try:
            found = self.client.describe_instance_refreshes(
                AutoScalingGroupName=self.target.auto_scaling_group, MaxRecords=5)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "").startswith("AccessDenied"):
                return None  # a role from before this check: scale as before
            return f"instance refreshes could not be read ({_short(exc)})"
        except (BotoCoreError, ResponseParserError) as exc:  # e.g. an HTTP 500 page
            return f"instance refreshes could not be read ({_short(exc)})"
        for refresh in found.get("InstanceRefreshes", []):
            if refresh.get("Status") in REFRESHING:
                return f"instance refresh {refresh.get('InstanceRefreshId', '?')} in progress"
        return None

    def _set_desired(self, desired: int, current: int, workers: Sequence[WorkerStatus]) -> None:
        self.client.set_desired_capacity(AutoScalingGroupName=self.target.auto_scaling_group,
                                         DesiredCapacity=desired, HonorCooldown=False)

    def _replace(self, zombies: Sequence[WorkerStatus],
                 workers: Sequence[WorkerStatus]) -> list[str]:
        """Terminate each zombie's instance; the group launches another to keep its count."""
        instances = replaceable(zombies, workers, self._instances())
        for _, instance_id in sorted(instances.items()):
            self.client.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=False)
        return sorted(instances)

    def _before_scale_in(self, busy: list[WorkerStatus], idle: list[WorkerStatus]) -> None:
        busy_ids, idle_ids = shield_plan(self.target.name, busy, idle, self._instances(),
                                         "instances")
        for ids, protect in ((busy_ids, True), (idle_ids, False)):
            for start in range(0, len(ids), 50):  # the API takes fifty instances a call
                self.client.set_instance_protection(
                    InstanceIds=ids[start:start + 50], ProtectedFromScaleIn=protect,
                    AutoScalingGroupName=self.target.auto_scaling_group)

    def _instances(self) -> dict[str, set[str]]:
        """The group's instances: id → the names its worker may carry."""
        ids = [i["InstanceId"] for i in self._group().get("Instances", [])]
        if not ids:
            return {}
        found: dict[str, set[str]] = {}
        for reservation in self.ec2.describe_instances(InstanceIds=ids).get("Reservations", []):
            for instance in reservation.get("Instances", []):
                found[instance["InstanceId"]] = identities(
                    instance["InstanceId"], instance.get("PrivateIpAddress"),
                    instance.get("PrivateDnsName"))
        return found


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] or type(exc).__name__
