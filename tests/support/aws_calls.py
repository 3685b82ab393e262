"""Every AWS call the product makes, recorded at the botocore client, and judged against the
IAM policies the stack gives the calling function's role.

:class:`CallRecorder` hooks botocore's ``before-parameter-build`` event in every session (the
way moto hooks itself in), so it sees each call of every boto3 client in this process —
ours, Powertools' (SSM, Secrets Manager) and kombu's (SQS) — with its API parameters, before
anything is sent or answered. :func:`resource_of` turns a call into the IAM action and the
ARN IAM authorizes it on; :func:`allowed` evaluates that against policy documents with
moto's IAM policy evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from moto.iam.access_control import IAMPolicyStatement, PermissionResult

from tests.support.cloudformation import ACCOUNT, PARTITION, REGION


@dataclass(frozen=True)
class AwsCall:
    """One API call: who made it (the role it would run under), what, with what."""

    role: str
    service: str  # the IAM prefix, e.g. "ecs"
    operation: str
    params: dict[str, Any] = field(hash=False)

    @property
    def action(self) -> str:
        return f"{self.service}:{self.operation}"


class CallRecorder:
    """Records every boto3 call in this process while active, under the current role."""

    EVENT = "before-parameter-build"

    def __init__(self) -> None:
        self.calls: list[AwsCall] = []
        self.role: str | None = None

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if self.role is not None:
            self.calls.append(AwsCall(self.role, model.service_model.signing_name,
                                      model.name, dict(params)))

    def install(self) -> None:
        """Hook every botocore session created from now on, and boto3's default one."""
        import boto3
        from botocore.handlers import BUILTIN_HANDLERS

        if (self.EVENT, self._record) not in BUILTIN_HANDLERS:
            BUILTIN_HANDLERS.append((self.EVENT, self._record))
        boto3.DEFAULT_SESSION = None  # the next default session is a new, hooked one
        try:
            from aws_lambda_powertools.utilities.parameters import base

            base.DEFAULT_PROVIDERS.clear()  # Powertools' cached clients, likewise
        except ImportError:
            pass

    def uninstall(self) -> None:
        from botocore.handlers import BUILTIN_HANDLERS

        while (self.EVENT, self._record) in BUILTIN_HANDLERS:
            BUILTIN_HANDLERS.remove((self.EVENT, self._record))
        self.role = None

    @contextmanager
    def acting_as(self, role: str) -> Iterator[None]:
        """Attribute the calls made inside to ``role`` (calls outside are not recorded:
        the test's own setup is not the product's)."""
        self.role = role
        try:
            yield
        finally:
            self.role = None


@dataclass
class World:
    """What the mapping of calls to ARNs needs to know of the AWS the test built."""

    group_arns: dict[str, str] = field(default_factory=dict)
    """Auto Scaling group name → its ARN (a group's ARN holds a UUID)."""
    instance_groups: dict[str, str] = field(default_factory=dict)
    """EC2 instance id → the name of its Auto Scaling group."""
    secret_arns: dict[str, str] = field(default_factory=dict)
    """Secret name → ARN, for a secret asked for by name."""


def _arn(service: str, resource: str, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


def _ecs_task(cluster: str, task: str) -> str:
    return task if task.startswith("arn:") else _arn("ecs", f"task/{cluster}/{task}")


_DYNAMODB_ITEMS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                   "ConditionCheck": "ConditionCheckItem"}


def resource_of(call: AwsCall, world: World) -> list[tuple[str, str]]:
    """The (IAM action, resource ARN) pairs IAM authorizes ``call`` on.

    ``*`` where the API authorizes no resource (List*, Describe* of many). An operation not
    mapped here raises: every call the product makes must be understood before it can pass.
    """
    p, action = call.params, call.action
    handlers: dict[str, Callable[[], list[tuple[str, str]]]] = {
        "dynamodb:TransactWriteItems": lambda: [
            (f"dynamodb:{_DYNAMODB_ITEMS[kind]}", _arn("dynamodb", f"table/{body['TableName']}"))
            for item in p["TransactItems"] for kind, body in item.items()],
        "ssm:GetParameter": lambda: [(action, _arn(
            "ssm", "parameter" + (p["Name"] if p["Name"].startswith("/") else "/" + p["Name"])))],
        "secretsmanager:GetSecretValue": lambda: [(action, p["SecretId"] if p["SecretId"]
                                                   .startswith("arn:") else
                                                   world.secret_arns[p["SecretId"]])],
        "ecs:DescribeServices": lambda: [(action, _arn("ecs", f"service/{p['cluster']}/{s}"))
                                         for s in p["services"]],
        "ecs:UpdateService": lambda: [(action, _arn("ecs",
                                                    f"service/{p['cluster']}/{p['service']}"))],
        "ecs:ListTasks": lambda: [(action, "*")],
        "ecs:DescribeTasks": lambda: [(action, _ecs_task(p["cluster"], t)) for t in p["tasks"]],
        "ecs:UpdateTaskProtection": lambda: [(action, _ecs_task(p["cluster"], t))
                                             for t in p["tasks"]],
        "ecs:StopTask": lambda: [(action, _ecs_task(p["cluster"], p["task"]))],
        "autoscaling:DescribeAutoScalingGroups": lambda: [(action, "*")],
        "autoscaling:DescribeInstanceRefreshes": lambda: [(action, "*")],
        "autoscaling:SetDesiredCapacity": lambda: [
            (action, world.group_arns[p["AutoScalingGroupName"]])],
        "autoscaling:SetInstanceProtection": lambda: [
            (action, world.group_arns[p["AutoScalingGroupName"]])],
        "autoscaling:TerminateInstanceInAutoScalingGroup": lambda: [
            (action, world.group_arns[world.instance_groups[p["InstanceId"]]])],
        "ec2:DescribeInstances": lambda: [(action, "*")],
        "lambda:Invoke": lambda: [("lambda:InvokeFunction", p["FunctionName"] if p[
            "FunctionName"].startswith("arn:") else _arn("lambda",
                                                          f"function:{p['FunctionName']}"))],
        "sqs:ListQueues": lambda: [(action, "*")],
        "events:PutEvents": lambda: [(action, e.get("EventBusName") if str(
            e.get("EventBusName", "")).startswith("arn:") else _arn(
            "events", f"event-bus/{e.get('EventBusName') or 'default'}")) for e in p["Entries"]],
        "sqs:GetQueueUrl": lambda: [(action, _arn("sqs", p["QueueName"]))],
        "sqs:GetQueueAttributes": lambda: [
            (action, _arn("sqs", urlparse(p["QueueUrl"]).path.rsplit("/", 1)[-1]))],
        # A batch is authorized as its single-message action.
        "sqs:SendMessageBatch": lambda: [
            ("sqs:SendMessage", _arn("sqs", urlparse(p["QueueUrl"]).path.rsplit("/", 1)[-1]))],
    }
    for name in ("GetItem", "PutItem", "DeleteItem", "Query", "UpdateItem"):
        handlers[f"dynamodb:{name}"] = lambda: [(action, _arn("dynamodb",
                                                              f"table/{p['TableName']}"))]
    if action not in handlers:
        raise KeyError(f"{action} is not mapped to the resource IAM authorizes it on: "
                       "teach tests/support/aws_calls.py:resource_of")
    return handlers[action]()


def allowed(documents: list[dict[str, Any]], action: str, resource: str) -> bool:
    """Whether IAM allows ``action`` on ``resource`` under these identity policies: an
    explicit deny wins, else any allow.

    Each statement is evaluated by moto's IAM policy evaluator, except one with
    ``NotResource``, which moto does not read: it applies to every resource its patterns do
    not match (moto's own pattern matching decides that).
    """
    permitted = False
    for document in documents:
        statements = document["Statement"]
        for statement in statements if isinstance(statements, list) else [statements]:
            if "NotResource" in statement:
                result = _not_resource(statement, action, resource)
            else:
                result = IAMPolicyStatement(statement).is_action_permitted(action, resource)
            if result == PermissionResult.DENIED:
                return False
            permitted = permitted or result == PermissionResult.PERMITTED
    return permitted


def _not_resource(statement: dict[str, Any], action: str, resource: str) -> PermissionResult:
    evaluator = IAMPolicyStatement({**statement, "Resource": statement["NotResource"]})
    if not evaluator._check_element_matches("Action", action):
        return PermissionResult.NEUTRAL
    if evaluator._check_element_matches("Resource", resource):
        return PermissionResult.NEUTRAL  # one of the resources the statement leaves out
    return PermissionResult.DENIED if statement["Effect"] == "Deny" \
        else PermissionResult.PERMITTED


def granted_actions(documents: list[dict[str, Any]]) -> set[str]:
    """Every action an Allow statement of these documents names."""
    found = set()
    for document in documents:
        for statement in document["Statement"]:
            if statement["Effect"] == "Allow":
                actions = statement["Action"]
                found |= set(actions if isinstance(actions, list) else [actions])
    return found
