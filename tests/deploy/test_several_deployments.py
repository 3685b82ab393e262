"""Several deployments in one stack (``Deployments=eu,us``), end to end on a moto server and
a real Redis: the scheduled invocation fans out (one asynchronous ``lambda:Invoke`` of the
function itself per deployment, on moto's Lambda without Docker), each payload is then run
by the handler in-process as Lambda would run it, the ticks it queued too; both deployments
tick on one table and one broker, each with its own configuration, broker secret, lease,
memory, history, status and metrics (the checks of tests/remember/test_two_deployments.py),
and an unlisted name is refused before anything is read.

Every AWS call is recorded at the client and judged against the policies the transformed
template gives the role that makes it, as in test_permissions.py: the fan-out's own grants
(invoking the function itself, each deployment's parameter, the further broker secrets) are
all used and all suffice, and reach nothing else.
"""

from __future__ import annotations

import io
import json
import os
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
import pytest
import yaml
from aws_lambda_powertools.utilities import parameters
from moto.server import ThreadedMotoServer

from celery_ondemand import aws_lambda
from celery_ondemand.remember import DynamoDBStateStore
from celery_ondemand.remember.dynamodb import create_table
from tests.support.aws import (
    LambdaContext,
    ecs_service_with_tasks,
    function_handler,
    reset_moto_server,
    scheduler_event,
)
from tests.support.aws_calls import AwsCall, CallRecorder, World, allowed, resource_of
from tests.support.brokers import Queues, producer_app
from tests.support.cloudformation import ACCOUNT, Stack, transformed
from tests.support.faults import emf

pytestmark = pytest.mark.broker

PATH = "/ondemand"
TABLE = "ondemand"
TICK_QUEUE = "ondemand-ticks"
STACK_DEPLOYMENT = "split"
FUNCTION = LambdaContext.function_name  # the stack's ${AWS::StackName}-autoscaler
SERVICES = {"eu": "web-eu", "us": "web-us"}


@dataclass
class Run:
    """What the scenario did and saw."""

    stack: Stack
    calls: list[AwsCall]
    dispatched: dict[str, Any]
    payloads: list[dict[str, Any]]
    summaries: dict[str, dict[str, Any]]
    refused: dict[str, dict[str, Any]]
    statuses: dict[str, dict[str, Any]]
    store: DynamoDBStateStore
    metrics: list[dict[str, Any]]
    queues: dict[str, str]
    secrets: dict[str, str]


def _function_code() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def _invoke_payloads(calls: list[AwsCall]) -> list[dict[str, Any]]:
    return [json.loads(c.params["Payload"]) for c in calls if c.action == "lambda:Invoke"]


@pytest.fixture(scope="module")
def run(redis_url: str) -> Iterator[Run]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    reset_moto_server(endpoint)
    # moto's Lambda without Docker: an invocation is accepted and answered, not run.
    urllib.request.urlopen(urllib.request.Request(
        f"{endpoint}/moto-api/config", method="POST",
        data=json.dumps({"lambda": {"use_docker": False}}).encode()))
    recorder, queues = CallRecorder(), Queues(redis_url)
    producer = producer_app(redis_url)
    output = io.StringIO()
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
                "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_NAMESPACE": "TestOnDemand",
                "ONDEMAND_CONFIG_PARAMETER": PATH, "ONDEMAND_DEPLOYMENTS": "eu,us",
                "ONDEMAND_DEPLOYMENT": STACK_DEPLOYMENT, "ONDEMAND_STATE_TABLE": TABLE,
                "ONDEMAND_CONFIG_MAX_AGE": "0",
                "ONDEMAND_RESERVED_CONCURRENCY": "", "ONDEMAND_QUEUED_TICK_CONCURRENCY": "2",
                }.items():
            env.setenv(name, value)
        env.setattr(aws_lambda, "_warm", None)
        env.setattr(aws_lambda, "_warm_listed", {})
        parameters.clear_caches()
        recorder.install()
        try:
            clients = {n: boto3.client(n, region_name="us-east-1") for n in (
                "ssm", "secretsmanager", "dynamodb", "ecs", "ec2", "sqs", "iam", "lambda")}
            create_table(clients["dynamodb"], TABLE)
            role = clients["iam"].create_role(RoleName="autoscaler", AssumeRolePolicyDocument=
                                              json.dumps({"Version": "2012-10-17",
                                                          "Statement": []}))["Role"]["Arn"]
            clients["lambda"].create_function(FunctionName=FUNCTION, Runtime="python3.12",
                                              Role=role, Handler="app.handler",
                                              Code={"ZipFile": _function_code()})
            env.setenv("ONDEMAND_TICK_QUEUE_URL", clients["sqs"].create_queue(
                QueueName=TICK_QUEUE)["QueueUrl"])
            ecs_service_with_tasks(clients["ecs"], clients["ec2"], service="web-eu", tasks=1)
            clients["ecs"].create_service(cluster="prod", serviceName="web-us",
                                          taskDefinition="worker", desiredCount=0)
            # The stack's own secret holds a broker no deployment may use: each names its own.
            env.setenv("ONDEMAND_BROKER_SECRET", clients["secretsmanager"].create_secret(
                Name="ondemand/stack", SecretString="redis://127.0.0.1:1/0")["ARN"])
            secrets, names = {}, {}
            for deployment, service in SERVICES.items():
                secrets[deployment] = clients["secretsmanager"].create_secret(
                    Name=f"ondemand/{deployment}", SecretString=redis_url)["ARN"]
                names[deployment] = queues.new(deployment)
                clients["ssm"].put_parameter(
                    Name=f"{PATH}/{deployment}", Type="String", Value=yaml.safe_dump({
                        "deployment": "ignored", "broker_url_secret": secrets[deployment],
                        "tick_interval_seconds": 10, "targets": [{
                            "name": "web", "queues": [names[deployment]], "scaler": "ecs",
                            "cluster": "prod", "service": service, "worker_concurrency": 2,
                            "max_workers": 10}]}))
            clients["ssm"].put_parameter(Name=f"{PATH}/asia", Type="String", Value="{}")
            for _ in range(5):
                producer.send_task("tests.sleep", args=(0,), queue=names["eu"])
            autoscaler, status = function_handler("autoscaler"), function_handler("status")

            with redirect_stdout(output):
                event = scheduler_event()
                with recorder.acting_as("AutoscalerFunctionRole"):
                    dispatched = autoscaler(event, LambdaContext())
                payloads = _invoke_payloads(recorder.calls)
                summaries = {}
                with recorder.acting_as("AutoscalerFunctionRole"):
                    for payload in payloads:
                        summaries[payload["deployment"]] = autoscaler(payload, LambdaContext())
                # eu's first queued tick, when its delay is over (at most one tick
                    # interval), run as Lambda's poller would.
                answer = clients["sqs"].receive_message(
                    QueueUrl=os.environ["ONDEMAND_TICK_QUEUE_URL"],
                    MaxNumberOfMessages=1, WaitTimeSeconds=15)
                bodies = [m["Body"] for m in answer.get("Messages", [])]
                queued = [b for b in bodies if json.loads(b)["deployment"] == "eu"][:1]
                assert queued, f"eu, with work, queued its minute's ticks: {bodies}"
                with recorder.acting_as("AutoscalerFunctionRole"):
                    summaries["eu-queued"] = autoscaler(
                        {"Records": [{"body": queued[0]}]}, LambdaContext())
                    before = len(recorder.calls)
                    refused = {
                        "scheduled": autoscaler({**event, "deployment": "asia"},
                                                LambdaContext()),
                        "queued": autoscaler({"Records": [{"body": json.dumps(
                            {"deployment": "asia", "slot": 0})}]}, LambdaContext())}
                    assert len(recorder.calls) == before, "a refused name reads nothing"
                statuses = {}
                with recorder.acting_as("StatusFunctionRole"):
                    for name in ("eu", "us", "asia", None):
                        query = {"deployment": name} if name else None
                        statuses[str(name)] = status({"queryStringParameters": query},
                                                     LambdaContext())
        finally:
            recorder.uninstall()
            for warm in aws_lambda._warm_listed.values():
                warm.ticker.close()
            queues.delete_all()
            producer.close()
        store = DynamoDBStateStore(TABLE, boto3.client("dynamodb", region_name="us-east-1"))
        parameters_given = {
            "Deployments": "eu,us", "ConfigParameterName": PATH,
            "DeploymentName": STACK_DEPLOYMENT, "EcsClusterName": "prod",
            "EcsServiceNames": ",".join(SERVICES.values()),
            "BrokerSecretArns": ",".join(secrets.values())}
        stack = Stack(transformed(parameters_given), parameters_given,
                      physical={"StateTable": TABLE, "TickQueue": TICK_QUEUE})
        yield Run(stack, recorder.calls, dispatched, payloads, summaries, refused, statuses,
                  store, emf(output.getvalue()), names, secrets)
    # moto's configuration is the process's: back to its default, or every later mock_aws
    # test in this process accepts invocations of functions that do not exist.
    urllib.request.urlopen(urllib.request.Request(
        f"{endpoint}/moto-api/config", method="POST",
        data=json.dumps({"lambda": {"use_docker": True}}).encode()))
    server.stop()


def test_the_schedule_fans_out_once_per_deployment_with_its_name(run: Run) -> None:
    invokes = [c for c in run.calls if c.action == "lambda:Invoke"]
    assert [(c.params["FunctionName"], c.params["InvocationType"]) for c in invokes] == [
        (FUNCTION, "Event"), (FUNCTION, "Event")]
    assert [p["deployment"] for p in run.payloads] == ["eu", "us"]
    schedule = scheduler_event()
    for payload in run.payloads:
        assert payload["source"] == schedule["source"]
        assert payload["period_seconds"] == 60 and payload["scheduled_time"]
    assert run.dispatched == {"dispatched": ["eu", "us"], "ok": True, "errors": []}
    dispatcher_calls = run.calls[:len(invokes)]
    assert {c.action for c in dispatcher_calls} == {"lambda:Invoke"}, \
        "the dispatcher reads no configuration and ticks nothing"


def test_each_deployment_ticks_its_own_configuration_and_broker(run: Run) -> None:
    eu, us = run.summaries["eu"], run.summaries["us"]
    assert eu["ticks"] == 1 and eu["ok"] and not eu["errors"], eu
    assert us["ticks"] == 1 and us["ok"] and not us["errors"], us
    assert [(d["target"], d["desired"]) for d in eu["decisions"]] == [("web", 3)]
    assert [(d["target"], d["desired"]) for d in us["decisions"]] == [("web", 0)]
    assert eu["queued"] and not us["queued"], "only the deployment with work ticks again"
    assert run.summaries["eu-queued"]["ticks"] == 1 and run.summaries["eu-queued"]["ok"]
    read = [c.params["Name"] for c in run.calls if c.action == "ssm:GetParameter"
            and c.role == "AutoscalerFunctionRole"]
    assert set(read) == {f"{PATH}/eu", f"{PATH}/us"}
    secrets = {c.params["SecretId"] for c in run.calls
               if c.action == "secretsmanager:GetSecretValue"}
    assert secrets == set(run.secrets.values()), "each its own secret, not the stack's"
    services = {c.params["service"]: c.params["desiredCount"] for c in run.calls
                if c.action == "ecs:UpdateService"}
    assert services == {"web-eu": 3}


def test_the_deployments_share_the_table_without_touching_each_other(run: Run) -> None:
    store = run.store
    eu, us = store.load_memory("eu")["web"], store.load_memory("us")["web"]
    assert eu.to_dict() != us.to_dict()
    assert [d["desired"] for d in store.history("eu")] == [3, 3]  # scheduled, queued
    assert [d["desired"] for d in store.history("us")] == [0]
    eu_status, us_status = store.load_status("eu"), store.load_status("us")
    assert eu_status is not None and us_status is not None
    assert set(eu_status["queues"]) == {run.queues["eu"]}
    assert set(us_status["queues"]) == {run.queues["us"]}
    assert store.load_memory("ignored") == {} and store.load_status("ignored") is None, \
        "the stack imposes each listed name over the configuration's"
    # Each lease is its own: one held by a stranger leaves the other free.
    assert store.acquire_lease("eu", "stranger", 2e9, 60)
    assert store.acquire_lease("us", "another", 2e9, 60)
    assert not store.acquire_lease("eu", "another", 2e9 + 1, 60)


def test_metrics_name_each_deployment_and_the_dispatchers_count_matches(run: Run) -> None:
    desired: dict[tuple[str, str], list[float]] = {}
    for blob in run.metrics:
        if "DesiredWorkers" in blob and "queue" not in blob:
            desired.setdefault((blob["deployment"], blob["target"]), []).extend(
                blob["DesiredWorkers"])
    assert desired == {("eu", "web"): [3.0, 3.0], ("us", "web"): [0.0]}
    ticks = {b["deployment"] for b in run.metrics if sum(b.get("SuccessfulTicks", [])) > 0}
    assert ticks == {"eu", "us"}
    refusals = [b["Errors"] for b in run.metrics if b["deployment"] == STACK_DEPLOYMENT
                and "Errors" in b]
    assert refusals == [[1.0], [1.0]], "the two refusals count under the stack's own name"
    scheduled = [b for b in run.metrics if "DeploymentsScheduled" in b]
    ticked = [b for b in run.metrics if "DeploymentsTicked" in b]
    assert [(b["deployment"], b["DeploymentsScheduled"]) for b in scheduled] == [
        (STACK_DEPLOYMENT, [2.0])]
    assert sorted((b["deployment"], b["DeploymentsTicked"]) for b in ticked) == [
        (STACK_DEPLOYMENT, [1.0]), (STACK_DEPLOYMENT, [1.0])]
    due = datetime.fromisoformat(run.payloads[0]["scheduled_time"]).timestamp() * 1000
    assert {b["_aws"]["Timestamp"] for b in scheduled + ticked} == {int(due)}, \
        "stamped with the schedule's due time: the alarm compares them minute by minute"
    alarm = run.stack.resource("NoSuccessfulTickAlarm")
    watched = {m["MetricStat"]["Metric"]["MetricName"]: m["MetricStat"]["Metric"]["Dimensions"]
               for m in alarm["Metrics"] if "MetricStat" in m}
    assert watched == {name: [{"Name": "deployment", "Value": STACK_DEPLOYMENT}]
                       for name in ("DeploymentsScheduled", "DeploymentsTicked")}


def test_an_unlisted_deployment_is_refused(run: Run) -> None:
    for summary in run.refused.values():
        assert summary["ticks"] == 0 and not summary["ok"]
        assert summary["errors"] == [
            "deployment 'asia' is not one this stack lists (eu, us): refused"]
    assert run.store.load_status("asia") is None
    assert run.statuses["asia"]["statusCode"] == 400
    assert run.statuses["None"]["statusCode"] == 400, "which deployment must be named"


def test_the_status_url_serves_the_named_deployment(run: Run) -> None:
    for name in ("eu", "us"):
        response = run.statuses[name]
        assert response["statusCode"] == 200
        assert set(json.loads(response["body"])["queues"]) == {run.queues[name]}


@pytest.mark.parametrize("role", ["AutoscalerFunctionRole", "StatusFunctionRole"])
def test_every_call_is_allowed_to_the_role_that_makes_it(run: Run, role: str) -> None:
    policies = run.stack.policies(role)
    calls = [c for c in run.calls if c.role == role]
    denied = [f"{action} on {resource}" for call in calls
              for action, resource in resource_of(call, World()) if
              not allowed(policies, action, resource)]
    assert calls and denied == []


def test_the_fan_outs_grants_are_used_and_reach_nothing_else(run: Run) -> None:
    used = {pair for call in run.calls if call.role == "AutoscalerFunctionRole"
            for pair in resource_of(call, World())}
    function = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{FUNCTION}"
    parameter = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter"
    assert ("lambda:InvokeFunction", function) in used
    assert {(a, r) for a, r in used if a == "ssm:GetParameter"} == {
        ("ssm:GetParameter", f"{parameter}{PATH}/eu"),
        ("ssm:GetParameter", f"{parameter}{PATH}/us")}
    assert {r for a, r in used if a == "secretsmanager:GetSecretValue"} == \
        set(run.secrets.values())
    for role in ("AutoscalerFunctionRole", "StatusFunctionRole"):
        policies = run.stack.policies(role)
        for name in (f"{PATH}/asia", PATH, "/other/eu", f"{PATH}/eu-west"):
            assert not allowed(policies, "ssm:GetParameter", f"{parameter}{name}"), name
    policies = run.stack.policies("AutoscalerFunctionRole")
    for other in (f"{function}-other", f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:other",
                  f"{function}:live"):
        assert not allowed(policies, "lambda:InvokeFunction", other), other
    assert not allowed(run.stack.policies("StatusFunctionRole"), "lambda:InvokeFunction",
                       function)
