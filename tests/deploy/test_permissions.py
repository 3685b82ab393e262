"""Every permission proven by use: each AWS call the functions make is allowed by the IAM
policies the stack (as CloudFormation receives it) gives their roles, and each grant is used.

The functions run in-process, as the Lambda handlers, against AWS on a moto server and real
brokers with real workers, through one scenario per scaler and broker: scale-out, scale-in
with a busy worker shielded, a zombie worker replaced, the rollout checks, reading the SSM
configuration and the broker secret, the state table, and the status function. Every boto3
call is recorded at the client (``before-parameter-build``), mapped to the IAM action and
resource it is authorized on, and evaluated against the transformed template's role policies
with moto's IAM policy evaluator.

moto lacks ``ecs:UpdateTaskProtection`` and ``autoscaling:DescribeInstanceRefreshes``: those
two calls are answered at the client boundary (:class:`TaskProtections`,
:class:`InstanceRefreshes`), after they were recorded like any other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import yaml
from celery import Celery
from moto.server import ThreadedMotoServer

from celery_ondemand import aws_lambda
from celery_ondemand.remember.dynamodb import create_table
from tests.support.aws import (
    InstanceRefreshes,
    LambdaContext,
    TaskProtections,
    auto_scaling_group,
    ecs_service_with_tasks,
    function_handler,
    reset_moto_server,
    scheduler_event,
)
from tests.support.aws_calls import (
    AwsCall,
    CallRecorder,
    World,
    allowed,
    granted_actions,
    resource_of,
)
from tests.support.brokers import Queues, producer_app
from tests.support.cloudformation import ACCOUNT, Stack, transformed
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker

CONFIG = "/ondemand/config"
TABLE = "ondemand"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TICK_QUEUE = "ondemand-ticks"
SERVER_SIDE = {
    "kms:Decrypt": "Secrets Manager decrypts the secret with the caller's grant",
    **dict.fromkeys(("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"),
                    "Lambda's event source mapping polls the tick queue with the role")}
"""Grants no client call of ours makes: AWS makes them on the function's behalf."""
SCENARIOS = ("redis-ecs", "rabbitmq-asg", "sqs-ecs")


@dataclass
class Recorded:
    calls: dict[str, list[AwsCall]]
    world: World
    stack: Stack


class Deployment:
    """One stack's AWS side on a moto server, and its two functions invoked in-process."""

    def __init__(self, recorder: CallRecorder, world: World) -> None:
        self.recorder, self.world = recorder, world
        self.clients = {n: boto3.client(n, region_name="us-east-1") for n in (
            "ssm", "secretsmanager", "dynamodb", "ecs", "ec2", "autoscaling", "sqs")}
        create_table(self.clients["dynamodb"], TABLE)
        self.secret_arn = self.clients["secretsmanager"].create_secret(
            Name="ondemand/broker", SecretString="redis://127.0.0.1:1/0")["ARN"]
        self.autoscaler = function_handler("autoscaler")
        self.status = function_handler("status")

    def configure(self, broker_url: str, target: dict[str, Any]) -> None:
        """The broker URL in the secret, the target in the SSM configuration."""
        self.clients["secretsmanager"].put_secret_value(SecretId=self.secret_arn,
                                                        SecretString=broker_url)
        self.clients["ssm"].put_parameter(Name=CONFIG, Type="String", Overwrite=True,
                                          Value=yaml.safe_dump({
                                              "deployment": "prod",
                                              "tick_interval_seconds": 15,
                                              "targets": [target]}))

    def tick(self) -> dict[str, Any]:
        """One scheduled invocation of the autoscaler: one tick, the minute's further ticks
        queued (nothing takes them here)."""
        with self.recorder.acting_as("AutoscalerFunctionRole"):
            summary: dict[str, Any] = self.autoscaler(scheduler_event(), LambdaContext())
        assert summary["ticks"] == 1 and not summary["errors"], summary
        return summary

    def tick_after_the_minute(self) -> None:
        """One more tick, with the load minute the warm Ticker sums moved a minute back, as
        the first tick of the next minute finds it: the tick writes it (UpdateItem used)
        without the test waiting for the wall clock."""
        held = aws_lambda._warm.ticker.unwritten_load if aws_lambda._warm else {}
        assert held, "the ticks measured their target's load"
        for minute in held.values():
            minute.minute -= 60
        self.tick()

    def read_status(self) -> None:
        """The status function (nothing cached: ONDEMAND_CONFIG_MAX_AGE is 0)."""
        with self.recorder.acting_as("StatusFunctionRole"):
            response = self.status({"requestContext": {}}, LambdaContext())
        assert response["statusCode"] == 200


def target(name: str, queue: str, **scaler: Any) -> dict[str, Any]:
    """A target that scales in at once and calls a worker a zombie after 1 s."""
    return {"name": name, "queues": [queue], "worker_concurrency": 1, "max_workers": 6,
            "stabilization_seconds": 0, "scale_down_delay_seconds": 0, "tolerance": 0,
            "zombie_after_seconds": 1, **scaler}


def wait_until_busy(producer: Celery, worker: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = producer.control.inspect(destination=[worker], timeout=1).active() or {}
        if active.get(worker):
            return
    raise TimeoutError(f"{worker} never started its task")


def wait_until_idle(producer: Celery, worker: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = producer.control.inspect(destination=[worker], timeout=1).active()
        if active and not active.get(worker):
            return
    raise TimeoutError(f"{worker} never finished its task")


def scale_in_scale_out_and_replace(deployment: Deployment, broker_url: str,
                                   scaler: dict[str, Any], host: str) -> None:
    """With one real worker on the target's first machine (three run, desired three):
    scale-in while it is busy (its machine shielded), then scale-out to a floor of two
    (which keeps the idle worker's machine from the next scale-in: moto terminates the
    instances an Auto Scaling group sheds), then the worker turned zombie and replaced."""
    queues, fleet, producer = Queues(broker_url), Fleet(broker_url), producer_app(broker_url)
    try:
        queue = queues.new("iam")
        worker = fleet.start([queue], name="iam", concurrency=1, host=host)
        deployment.configure(broker_url, target(scaler["scaler"], queue, **scaler))
        producer.send_task("tests.sleep", args=(3,), queue=queue)
        wait_until_busy(producer, worker.hostname)
        scaled_in = deployment.tick()
        assert scaled_in["decisions"][0]["action"] == "down", str(scaled_in["decisions"])

        wait_until_idle(producer, worker.hostname)
        deployment.configure(broker_url, target(scaler["scaler"], queue, min_workers=2,
                                                **scaler))
        producer.control.broadcast("ondemand_test_stall", destination=[worker.hostname])
        for _ in range(3):
            producer.send_task("tests.sleep", args=(0,), queue=queue)
        scaled_out = deployment.tick()
        assert scaled_out["decisions"][0]["action"] == "up", str(scaled_out["decisions"])
        for _ in range(8):  # a task prefetched before the stall landed may still finish
            time.sleep(1.2)
            replaced = deployment.tick()["decisions"][0]["replaced"]
            if replaced:
                break
        assert replaced == [worker.hostname]
        deployment.tick_after_the_minute()
        deployment.read_status()
    finally:
        fleet.stop()
        queues.delete_all()
        producer.close()


@pytest.fixture(scope="module")
def recorded(redis_url: str, rabbitmq_url: str) -> Iterator[Recorded]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    reset_moto_server(endpoint)
    recorder, world = CallRecorder(), World()
    calls: dict[str, list[AwsCall]] = {}
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
                "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true",
                "ONDEMAND_CONFIG_PARAMETER": CONFIG, "ONDEMAND_STATE_TABLE": TABLE,
                "ONDEMAND_CONFIG_MAX_AGE": "0",  # each tick reads the config the test set
                "ONDEMAND_DEPLOYMENT": "prod"}.items():
            env.setenv(name, value)
        env.setattr(aws_lambda, "_warm", None)
        InstanceRefreshes.install()
        TaskProtections.install()
        recorder.install()
        try:
            deployment = Deployment(recorder, world)
            env.setenv("ONDEMAND_BROKER_SECRET", deployment.secret_arn)
            env.setenv("ONDEMAND_TICK_QUEUE_URL", deployment.clients["sqs"].create_queue(
                QueueName=TICK_QUEUE)["QueueUrl"])
            env.setenv("ONDEMAND_EVENT_BUS",
                       f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/default")
            clients = deployment.clients

            tasks = ecs_service_with_tasks(clients["ecs"], clients["ec2"], tasks=3)
            scale_in_scale_out_and_replace(
                deployment, redis_url, {"scaler": "ecs", "cluster": "prod",
                                        "service": "workers"}, host=tasks[0].rsplit("/", 1)[1])
            calls["redis-ecs"], recorder.calls = recorder.calls, []

            instances = auto_scaling_group(clients["autoscaling"], clients["ec2"],
                                           name="batch", desired=3)
            group = clients["autoscaling"].describe_auto_scaling_groups(
                AutoScalingGroupNames=["batch"])["AutoScalingGroups"][0]
            world.group_arns["batch"] = group["AutoScalingGroupARN"]
            world.instance_groups.update(dict.fromkeys(instances, "batch"))
            scale_in_scale_out_and_replace(
                deployment, rabbitmq_url, {"scaler": "asg", "auto_scaling_group": "batch"},
                host=instances[0])
            calls["rabbitmq-asg"], recorder.calls = recorder.calls, []

            clients["sqs"].create_queue(QueueName="iam-sqs")
            for _ in range(3):
                clients["sqs"].send_message(QueueUrl=clients["sqs"].get_queue_url(
                    QueueName="iam-sqs")["QueueUrl"], MessageBody="{}")
            deployment.configure("sqs://", target("s", "iam-sqs", scaler="ecs",
                                                  cluster="prod", service="workers"))
            deployment.tick()
            calls["sqs-ecs"], recorder.calls = recorder.calls, []
        finally:
            recorder.uninstall()
            TaskProtections.uninstall()
            if aws_lambda._warm is not None:
                aws_lambda._warm.ticker.close()
            server.stop()
    stack_parameters = {"ConfigParameterName": CONFIG, "BrokerSecretArn": deployment.secret_arn,
                        "BrokerSecretKmsKeyArn": KEY_ARN, "SqsBroker": "true",
                        "EcsClusterName": "prod", "EcsServiceNames": "workers",
                        "AutoScalingGroupNames": "batch"}
    stack = Stack(transformed(stack_parameters), stack_parameters,
                  physical={"StateTable": TABLE, "TickQueue": TICK_QUEUE})
    yield Recorded(calls, world, stack)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_call_is_allowed_to_the_role_that_makes_it(recorded: Recorded,
                                                         scenario: str) -> None:
    denied = []
    for call in recorded.calls[scenario]:
        policies = recorded.stack.policies(call.role)
        for action, resource in resource_of(call, recorded.world):
            if not allowed(policies, action, resource):
                denied.append(f"{call.role}: {action} on {resource}")
    assert recorded.calls[scenario], "the scenario made AWS calls"
    assert denied == []


def test_the_scenarios_exercise_every_path_that_calls_aws(recorded: Recorded) -> None:
    made = {(c.role, c.action) for calls in recorded.calls.values() for c in calls}
    autoscaler = {a for role, a in made if role == "AutoscalerFunctionRole"}
    assert {"ssm:GetParameter", "secretsmanager:GetSecretValue", "dynamodb:PutItem",
            "dynamodb:TransactWriteItems", "ecs:UpdateService", "ecs:UpdateTaskProtection",
            "ecs:StopTask", "autoscaling:SetDesiredCapacity",
            "autoscaling:SetInstanceProtection",
            "autoscaling:TerminateInstanceInAutoScalingGroup",
            "autoscaling:DescribeInstanceRefreshes", "sqs:GetQueueAttributes",
            "sqs:SendMessageBatch", "events:PutEvents"} <= autoscaler
    assert {a for role, a in made if role == "StatusFunctionRole"} == {
        "ssm:GetParameter", "dynamodb:GetItem"}


@pytest.mark.parametrize("role", ["AutoscalerFunctionRole", "StatusFunctionRole"])
def test_no_grant_goes_unused(recorded: Recorded, role: str) -> None:
    used = {action for calls in recorded.calls.values() for call in calls
            if call.role == role for action, _ in resource_of(call, recorded.world)}
    granted = granted_actions(recorded.stack.policies(role))
    server_side = set(SERVER_SIDE) if role == "AutoscalerFunctionRole" else set()
    assert granted - used - server_side == set()
    assert server_side <= granted


def test_the_roles_reach_nothing_the_stack_was_not_given(recorded: Recorded) -> None:
    policies = recorded.stack.policies("AutoscalerFunctionRole")
    service = f"arn:aws:ecs:us-east-1:{ACCOUNT}:service"
    group = f"arn:aws:autoscaling:us-east-1:{ACCOUNT}:autoScalingGroup:1234-5678"
    assert allowed(policies, "ecs:UpdateService", f"{service}/prod/workers")
    for action, resource in (
            ("ecs:UpdateService", f"{service}/prod/web"),
            ("ecs:UpdateService", f"{service}/other/workers"),
            ("ecs:StopTask", f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/other/0123"),
            ("autoscaling:SetDesiredCapacity", f"{group}:autoScalingGroupName/web"),
            ("autoscaling:TerminateInstanceInAutoScalingGroup",
             f"{group}:autoScalingGroupName/web"),
            ("dynamodb:PutItem", f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/other"),
            ("dynamodb:Scan", f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{TABLE}"),
            ("ssm:GetParameter", f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/other"),
            ("events:PutEvents", f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/other"),
            ("secretsmanager:GetSecretValue",
             f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:other-AbCdEf")):
        assert not allowed(policies, action, resource), f"{action} on {resource}"
    assert not allowed(recorded.stack.policies("StatusFunctionRole"), "dynamodb:PutItem",
                       f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{TABLE}")
