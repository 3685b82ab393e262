"""Scale-in protection held by the worker itself while it runs tasks.

- ECS: the agent's task-protection endpoint (``$ECS_AGENT_URI/task-protection/v1/state``),
  with an expiry, so a crashed worker does not stay protected;
- EC2 Auto Scaling: ``SetInstanceProtection`` on this instance (its id from IMDSv2); it
  has no expiry, so the minutes asked for are not applied there;
- elsewhere: nothing, said once at start.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

TIMEOUT = 2.0


class Protection:
    """No platform to protect on: every call does nothing."""

    platform = "none"

    def set(self, enabled: bool, minutes: int) -> None:
        return None

    def info(self) -> dict[str, Any]:
        return {"platform": self.platform}


class EcsProtection(Protection):
    """The ECS agent's task scale-in protection endpoint."""

    platform = "ecs"

    def __init__(self, agent_uri: str, metadata_uri: str | None = None) -> None:
        self.agent_uri = agent_uri.rstrip("/")
        self.task_arn = _task_arn(metadata_uri)

    def set(self, enabled: bool, minutes: int) -> None:
        body: dict[str, Any] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = minutes
        request = urllib.request.Request(f"{self.agent_uri}/task-protection/v1/state",
                                         data=json.dumps(body).encode(), method="PUT",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            answer = response.read()
        try:
            failure = json.loads(answer or b"{}").get("failure")
        except (ValueError, AttributeError):
            failure = None
        if failure:  # the agent answers 200 with the API's failure in the body
            raise OSError(f"ECS refused task protection: {failure}")

    def info(self) -> dict[str, Any]:
        return {"platform": self.platform, "task_arn": self.task_arn}


class Ec2Protection(Protection):
    """Scale-in protection of this EC2 instance in its Auto Scaling group."""

    platform = "ec2"

    def __init__(self, imds: str = "http://169.254.169.254", client: Any = None) -> None:
        token = _http("PUT", f"{imds}/latest/api/token",
                      {"X-aws-ec2-metadata-token-ttl-seconds": "300"})
        self.instance_id = _http("GET", f"{imds}/latest/meta-data/instance-id",
                                 {"X-aws-ec2-metadata-token": token})
        if client is None:
            import boto3

            # An instance's environment names no region: the instance's own, from IMDS.
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") \
                or _http("GET", f"{imds}/latest/meta-data/placement/region",
                         {"X-aws-ec2-metadata-token": token})
            client = boto3.client("autoscaling", region_name=region)
        self.client = client
        found = client.describe_auto_scaling_instances(InstanceIds=[self.instance_id])
        instances = found.get("AutoScalingInstances", [])
        self.group = instances[0]["AutoScalingGroupName"] if instances else None

    def set(self, enabled: bool, minutes: int) -> None:
        if self.group:
            self.client.set_instance_protection(InstanceIds=[self.instance_id],
                                                AutoScalingGroupName=self.group,
                                                ProtectedFromScaleIn=enabled)

    def info(self) -> dict[str, Any]:
        return {"platform": self.platform, "instance_id": self.instance_id,
                "auto_scaling_group": self.group}


def detect() -> Protection:
    """The platform this worker runs on, from its environment; never a network guess."""
    agent = os.environ.get("ECS_AGENT_URI")
    if agent:
        return EcsProtection(agent, os.environ.get("ECS_CONTAINER_METADATA_URI_V4"))
    vendor = Path("/sys/class/dmi/id/board_vendor")
    on_ec2 = os.environ.get("ONDEMAND_PLATFORM") == "ec2" or (
        vendor.exists() and "amazon" in vendor.read_text().lower())
    if on_ec2:
        return Ec2Protection(os.environ.get("ONDEMAND_IMDS_URL", "http://169.254.169.254"))
    return Protection()


def _task_arn(metadata_uri: str | None) -> str | None:
    if not metadata_uri:
        return None
    try:
        task = json.loads(_http("GET", f"{metadata_uri.rstrip('/')}/task", {}))
    except (OSError, ValueError):
        return None
    arn = task.get("TaskARN") if isinstance(task, dict) else None
    return str(arn) if arn else None


def _http(method: str, url: str, headers: dict[str, str]) -> str:
    request = urllib.request.Request(url, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return str(response.read().decode())
