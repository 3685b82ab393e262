"""The built artifact runs the way Lambda runs it.

After ``make build``, each function of ``.aws-sam/build`` runs under Lambda's runtime
interface client (awslambdaric) on Python 3.12, with only its own directory, the built layer
(read-only at /opt, in a mount namespace of its own) and a stand-in of the runtime's
packages on the path, taking invocations from a local stand-in of the Lambda Runtime API.
Its environment is the one the transformed template gives it; AWS is a moto server, the
broker a real Redis. A missing dependency, a wrong handler path, an import that writes to
/opt, or a boto3/botocore pair that does not load fails here.

The layer is built for arm64: its few compiled modules (PyYAML, wrapt) cannot load on this
x86_64 machine and their pure-Python fallbacks run instead; everything else is the artifact
as deployed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from celery_ondemand.remember.dynamodb import create_table
from tests.support.aws import ecs_service_with_tasks, scheduler_event
from tests.support.brokers import Queues, producer_app
from tests.support.cloudformation import Stack, transformed
from tests.support.lambda_runtime import (
    RuntimeApi,
    missing,
    run_in_lambda_layout,
    start_function,
)

pytestmark = pytest.mark.broker
TABLE = "ondemand"
TICK_QUEUE = "ondemand-ticks"


def queued_bodies(queue: str) -> list[dict[str, Any]]:
    """The messages on a queue of the in-process moto server, delayed ones included (they
    cannot be received yet)."""
    from moto.sqs.models import sqs_backends

    messages = sqs_backends["123456789012"]["us-east-1"].queues[queue]._messages
    return sorted((json.loads(m.body) for m in messages), key=lambda b: float(b["slot"]))


@pytest.fixture
def runnable() -> None:
    reason = missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the built artifact must run under CI: {reason}")
        pytest.skip(reason)


@pytest.fixture
def api() -> Iterator[RuntimeApi]:
    runtime_api = RuntimeApi()
    yield runtime_api
    runtime_api.close()


def environment_of(function: str, stack: Stack, endpoint: str) -> dict[str, str]:
    """The function's environment as the stack sets it, plus what Lambda itself sets
    (region, credentials) pointed at the moto server."""
    variables = stack.resource(function)["Environment"]["Variables"]
    return {**{k: str(v) for k, v in variables.items()},
            "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


def test_the_layers_boto3_and_botocore_shadow_the_runtimes(runnable: None) -> None:
    found = json.loads(run_in_lambda_layout("AutoscalerFunction", (
        "import json, boto3, botocore; print(json.dumps({'boto3': [boto3.__version__, "
        "boto3.__file__], 'botocore': [botocore.__version__, botocore.__file__]}))")))
    locked = {line.split("==")[0]: line.split("==")[1].split()[0] for line in
              (Path(__file__).resolve().parents[2] / "layers" / "requirements.txt")
              .read_text().splitlines() if "==" in line}
    for name in ("boto3", "botocore"):
        version, path = found[name]
        assert path.startswith("/opt/python/"), f"{name} from {path}, not the layer"
        assert version == locked[name]


def test_the_built_autoscaler_ticks_under_lambdas_runtime_client(
        runnable: None, api: RuntimeApi, redis_url: str, moto_server: str,
        tmp_path: Path) -> None:
    queues, producer = Queues(redis_url), producer_app(redis_url)
    clients = {n: boto3.client(n, region_name="us-east-1")
               for n in ("ssm", "secretsmanager", "dynamodb", "ecs", "ec2", "sqs")}
    create_table(clients["dynamodb"], TABLE)
    ecs_service_with_tasks(clients["ecs"], clients["ec2"], tasks=1)
    clients["sqs"].create_queue(QueueName=TICK_QUEUE)
    secret = clients["secretsmanager"].create_secret(Name="ondemand/broker",
                                                     SecretString=redis_url)["ARN"]
    parameters = {"BrokerSecretArn": secret, "EcsClusterName": "prod",
                  "EcsServiceNames": "workers"}
    stack = Stack(transformed(parameters), parameters,
                  physical={"StateTable": TABLE, "TickQueue": TICK_QUEUE})
    environment = environment_of("AutoscalerFunction", stack, moto_server)
    api.timeout_seconds = float(stack.resource("AutoscalerFunction")["Timeout"])
    log = tmp_path / "autoscaler.log"
    process = None
    try:
        queue = queues.new("built")
        for _ in range(4):
            producer.send_task("tests.sleep", args=(0,), queue=queue)
        clients["ssm"].put_parameter(
            Name=environment["ONDEMAND_CONFIG_PARAMETER"], Type="String",
            Value=yaml.safe_dump({"targets": [{
                "name": "built", "queues": [queue], "scaler": "ecs", "cluster": "prod",
                "service": "workers", "worker_concurrency": 2}]}))
        process = start_function("AutoscalerFunction", api, environment, log)

        cold = api.invoke(scheduler_event())
        assert cold.kind == "response", log.read_text()
        summary: dict[str, Any] = cold.body
        assert summary["ok"] and summary["ticks"] == 1, summary
        assert summary["decisions"][0]["desired"] == 2 and summary["decisions"][0]["applied"]
        service = clients["ecs"].describe_services(cluster="prod", services=["workers"])
        assert service["services"][0]["desiredCount"] == 2
        bodies = queued_bodies(TICK_QUEUE)
        assert [b["slot"] for b in bodies] == summary["queued"] and len(bodies) >= 3, \
            "tasks wait: the minute's further ticks are queued on the stack's tick queue"

        warm = api.invoke({"Records": [{"messageId": "m-1", "eventSource": "aws:sqs",
                                        "body": json.dumps(bodies[0])}]})
        assert warm.kind == "response" and warm.body["ok"], log.read_text()
        assert warm.body["ticks"] == 1, "a queued tick, taken from the queue, ticks once"
        assert process.poll() is None, "the container stays warm between invocations"

        output = log.read_text()
        assert "Traceback" not in output and api.init_errors == []
        metrics = [json.loads(line) for line in output.splitlines() if '"_aws"' in line]
        assert any(m.get("SuccessfulTicks") == [1.0] for m in metrics)
    finally:
        if process is not None:
            process.kill()
            process.wait(timeout=10)
        queues.delete_all()
        producer.close()


def test_the_built_status_function_answers_under_lambdas_runtime_client(
        runnable: None, api: RuntimeApi, moto_server: str, tmp_path: Path) -> None:
    clients = {n: boto3.client(n, region_name="us-east-1") for n in ("ssm", "dynamodb")}
    create_table(clients["dynamodb"], TABLE)
    stack = Stack(transformed({}), {}, physical={"StateTable": TABLE})
    environment = {**environment_of("StatusFunction", stack, moto_server),
                   "ONDEMAND_CONFIG_MAX_AGE": "0"}
    clients["ssm"].put_parameter(
        Name=environment["ONDEMAND_CONFIG_PARAMETER"], Type="String",
        Value=yaml.safe_dump({"broker_url": "redis://127.0.0.1:6379/0", "targets": [{
            "name": "t", "queues": ["q"], "scaler": "ecs", "cluster": "c", "service": "s"}]}))
    process = start_function("StatusFunction", api, environment, tmp_path / "status.log")
    try:
        answer = api.invoke({"requestContext": {"http": {"method": "GET"}}})
        assert answer.kind == "response", (tmp_path / "status.log").read_text()
        assert answer.body["statusCode"] == 404, "no tick has run yet: said, not crashed"
        assert json.loads(answer.body["body"]) == {"error": "no tick has run yet"}
        clients["ssm"].delete_parameter(Name=environment["ONDEMAND_CONFIG_PARAMETER"])
        answer = api.invoke({"requestContext": {"http": {"method": "GET"}}})
        assert answer.kind == "response" and answer.body["statusCode"] == 503, \
            "a missing configuration is an answer, not a crash"
    finally:
        process.kill()
        process.wait(timeout=10)
