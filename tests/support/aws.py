"""AWS on moto: fixtures' building blocks, and the one call moto lacks.

moto 5 raises NotImplementedError for ``ecs.update_task_protection``. :class:`ECSWithProtection`
wraps a real moto ECS client and fakes *only* that call, recording what was asked; every
other call goes to moto unchanged.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import yaml


def fake_credentials(monkeypatch: Any) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)


class ECSWithProtection:
    """A moto ECS client plus a recorded UpdateTaskProtection (moto lacks it)."""

    def __init__(self, client: Any, refusing: set[str] | None = None) -> None:
        self._client = client
        self.protected: dict[str, bool] = {}
        self.protection_calls: list[dict[str, Any]] = []
        self.refusing = set(refusing or ())
        """Task ARNs ECS answers in ``failures`` (HTTP 200), as it does for a task that
        is stopping or gone: ``TASK_NOT_VALID``."""

    def update_task_protection(self, *, cluster: str, tasks: list[str],
                               protectionEnabled: bool,
                               expiresInMinutes: int | None = None) -> dict[str, Any]:
        self.protection_calls.append({"cluster": cluster, "tasks": list(tasks),
                                      "enabled": protectionEnabled,
                                      "minutes": expiresInMinutes})
        done = [arn for arn in tasks if arn not in self.refusing]
        for arn in done:
            self.protected[arn] = protectionEnabled
        return {"protectedTasks": [{"taskArn": a, "protectionEnabled": protectionEnabled}
                                   for a in done],
                "failures": [{"arn": a, "reason": "TASK_NOT_VALID"}
                             for a in tasks if a in self.refusing]}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class RollingOut(ECSWithProtection):
    """A service mid-deployment: ``DescribeServices`` answered with a ``PRIMARY``
    deployment rolling out beside an ``ACTIVE`` one being replaced. moto keeps one
    deployment per service, so only this answer is made up, at the client boundary; the
    service, its count and its tasks (whose ``startedBy`` names the deployment that
    started them, as ECS does) are moto's."""

    def __init__(self, client: Any, old: str, new: str, *, new_running: int = 1) -> None:
        super().__init__(client)
        self.deployments = [
            {"id": new, "status": "PRIMARY", "rolloutState": "IN_PROGRESS",
             "runningCount": new_running},
            {"id": old, "status": "ACTIVE", "rolloutState": "COMPLETED", "runningCount": 2}]

    running: int | None = None
    """The service's running count to answer (old and new tasks), if not moto's."""

    def describe_services(self, **kwargs: Any) -> dict[str, Any]:
        found: dict[str, Any] = self._client.describe_services(**kwargs)
        for service in found.get("services", []):
            service["deployments"] = [dict(d) for d in self.deployments]
            if self.running is not None:
                service["runningCount"] = self.running
        return found


def ecs_service_with_tasks(ecs: Any, ec2: Any, *, cluster: str = "prod",
                           service: str = "workers", tasks: int = 3,
                           rolling_out: bool = False) -> list[str]:
    """A cluster, a service at ``tasks`` desired, and that many running tasks.

    moto reads a new service's running count from ``MOTO_ECS_SERVICE_RUNNING`` and calls
    its deployment IN_PROGRESS while that is below the desired count: ``rolling_out``
    makes it so, otherwise the service is at steady state."""
    import os
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(family="worker", containerDefinitions=[
        {"name": "worker", "image": "celery", "memory": 256}])
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    document = {"instanceId": instance["InstanceId"], "accountId": "123456789012",
                "region": "us-east-1"}
    import json

    ecs.register_container_instance(cluster=cluster,
                                    instanceIdentityDocument=json.dumps(document))
    before = os.environ.get("MOTO_ECS_SERVICE_RUNNING")
    os.environ["MOTO_ECS_SERVICE_RUNNING"] = str(max(0, tasks - 1) if rolling_out else tasks)
    try:
        ecs.create_service(cluster=cluster, serviceName=service, taskDefinition="worker",
                           desiredCount=tasks)
    finally:
        if before is None:
            del os.environ["MOTO_ECS_SERVICE_RUNNING"]
        else:
            os.environ["MOTO_ECS_SERVICE_RUNNING"] = before
    started = ecs.run_task(cluster=cluster, taskDefinition="worker", count=tasks,
                           startedBy="ecs-svc")
    return [task["taskArn"] for task in started["tasks"]]


def auto_scaling_group(autoscaling: Any, ec2: Any, *, name: str = "workers",
                       desired: int = 3) -> list[str]:
    """A group of ``desired`` instances; returns their ids."""
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.create_launch_template(LaunchTemplateName="worker",
                               LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"})
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": "worker"},
        MinSize=0, MaxSize=10, DesiredCapacity=desired, AvailabilityZones=["us-east-1a"])
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return [i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]]


class LambdaContext:
    """The attributes and method of the context object Lambda hands a Python handler."""

    function_name = "celery-ondemand-autoscaler"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = ("arn:aws:lambda:us-east-1:123456789012:function:"
                            "celery-ondemand-autoscaler")
    log_group_name = "/aws/lambda/celery-ondemand-autoscaler"
    log_stream_name = "2026/11/28/[$LATEST]0123456789abcdef"

    def __init__(self, timeout_seconds: float = 90.0, request_id: str = "req-1") -> None:
        import time

        self.aws_request_id = request_id
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        import time

        return int((self._deadline - time.monotonic()) * 1000)


SCHEDULER_EVENT = {"source": "celery-ondemand.schedule"}
"""A payload without the schedule's time, as a manual test invocation sends."""


def scheduler_event(period_seconds: float = 60, late_seconds: float = 0.0) -> dict[str, Any]:
    """The payload the stack's EventBridge Scheduler schedule sends (its ``Input``, with
    ``<aws.scheduler.scheduled-time>`` filled in), for a schedule due ``late_seconds`` ago."""
    template = yaml.load((Path(__file__).resolve().parents[2] / "template.yaml").read_text(),
                         Loader=_IgnoreTags)
    schedule = template["Resources"]["AutoscalerFunction"]["Properties"]["Events"]
    payload: str = schedule["EveryMinute"]["Properties"]["Input"]
    due = datetime.fromtimestamp(int(time.time() - late_seconds), UTC)
    event: dict[str, Any] = json.loads(payload.replace(
        "<aws.scheduler.scheduled-time>", due.strftime("%Y-%m-%dT%H:%M:%SZ")))
    event["period_seconds"] = period_seconds
    return event


class _IgnoreTags(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, ...) read as nothing: only the plain
    values (the schedule's payload) are wanted."""


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: None)


class InstanceRefreshes:
    """moto lacks ``DescribeInstanceRefreshes``: the suite answers that one call at the
    client boundary (botocore's ``before-call``, for every client of the default boto3
    session) with the refreshes a test sets — none by default, a group at rest."""

    refreshes: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    def answer(cls, **_: Any) -> tuple[Any, dict[str, Any]]:
        from botocore.awsrequest import AWSResponse

        return (AWSResponse("https://autoscaling.invalid/", 200, {}, None),
                {"InstanceRefreshes": list(cls.refreshes)})

    @classmethod
    def install(cls) -> None:
        """Register the answer in every botocore session from now on (the way moto hooks
        itself in), and in the default boto3 session if it exists already."""
        import boto3
        from botocore.handlers import BUILTIN_HANDLERS

        event = "before-call.auto-scaling.DescribeInstanceRefreshes"
        if (event, cls.answer) not in BUILTIN_HANDLERS:
            BUILTIN_HANDLERS.append((event, cls.answer))
        boto3._get_default_session().events.register(
            event, cls.answer, unique_id="ondemand-tests-instance-refreshes")


class TaskProtections:
    """moto lacks ``ecs:UpdateTaskProtection``: for clients the product builds itself (the
    Lambda's), the suite answers that one call at the client boundary (botocore's
    ``before-call``, in every session) as ECS documents it, recording what was asked."""

    asked: ClassVar[list[dict[str, Any]]] = []
    EVENT = "before-call.ecs.UpdateTaskProtection"

    @classmethod
    def answer(cls, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        from botocore.awsrequest import AWSResponse

        body = json.loads(params["body"])
        cls.asked.append(body)
        protected = [{"taskArn": arn, "protectionEnabled": body["protectionEnabled"]}
                     for arn in body["tasks"]]
        return (AWSResponse("https://ecs.invalid/", 200, {}, None),
                {"protectedTasks": protected, "failures": []})

    @classmethod
    def install(cls) -> None:
        import boto3
        from botocore.handlers import BUILTIN_HANDLERS

        if (cls.EVENT, cls.answer) not in BUILTIN_HANDLERS:
            BUILTIN_HANDLERS.append((cls.EVENT, cls.answer))
        boto3._get_default_session().events.register(
            cls.EVENT, cls.answer, unique_id="ondemand-tests-task-protection")

    @classmethod
    def uninstall(cls) -> None:
        from botocore.handlers import BUILTIN_HANDLERS

        while (cls.EVENT, cls.answer) in BUILTIN_HANDLERS:
            BUILTIN_HANDLERS.remove((cls.EVENT, cls.answer))


def function_handler(name: str) -> Any:
    """The handler of ``functions/<name>/app.py``, loaded as Lambda loads it: by file."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"{name}_app", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def reset_moto_server(endpoint: str) -> None:
    """Start a moto server's test from nothing. moto's backends live in this process and
    outlive a server; so do the Lambda's clients (one set per endpoint, with Powertools'
    caches of the config and the secret): a server on an earlier test's port would read
    that test's configuration (seen: a config of another test read as this one's)."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    lambda_module = sys.modules.get("celery_ondemand.aws_lambda")
    if lambda_module is not None:
        lambda_module._clients_for.cache_clear()
