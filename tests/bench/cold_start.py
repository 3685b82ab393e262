"""``make bench`` (cold start): the built autoscaler from a cold process, as Lambda starts it.

Two figures, each the median of RUNS fresh processes, on the built artifact (``make build``)
in Lambda's layout (function and layer read-only, ``/opt`` the layer; see
:mod:`tests.support.lambda_runtime`):

1. importing the handler module with no writable bytecode cache: the layer as built (it ships
   bytecode) against the same layer stripped of it (what a layer built without compiling
   gives: every module compiled at every cold start), and the X-Ray SDK's import, which the
   function pays only with tracing on;
2. process start to the first broker read, under awslambdaric with an invocation waiting:
   interpreter start, imports, the SSM configuration, the broker secret, the lease and the
   memory in DynamoDB (a local moto server here, so AWS round trips are nearly free), then
   the first byte to the broker (a TCP proxy in front of Redis notes it); the answered
   invocation and the process's peak RSS come with it.

Goals: <= 0.6 s to the first broker read on this machine, <= 150 MB.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import yaml
from moto.server import ThreadedMotoServer

from celery_ondemand.remember.dynamodb import create_table
from tests.bench.observe import require_broker_or_exit
from tests.support.aws import ecs_service_with_tasks, scheduler_event
from tests.support.brokers import BROKERS, Queues
from tests.support.cloudformation import Stack, transformed
from tests.support.lambda_runtime import (
    BUILD,
    RuntimeApi,
    missing,
    run_in_lambda_layout,
    start_function,
)
from tests.support.proxy import Proxy

IMPORT = ("import time; t = time.perf_counter(); import app; "
          "print(time.perf_counter() - t)")
XRAY = ("import time; t = time.perf_counter(); import aws_xray_sdk.core; "
        "print(time.perf_counter() - t)")


def without_bytecode(layer: Path, into: Path) -> Path:
    """A copy of ``layer`` with every ``__pycache__`` removed."""
    copy = into / "layer-without-bytecode"
    shutil.copytree(layer, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def timed(code: str, runs: int, layer: Path) -> float:
    return statistics.median(float(run_in_lambda_layout("AutoscalerFunction", code, layer))
                             for _ in range(runs))


def cold_starts(redis_url: str, runs: int, workdir: Path) -> list[dict[str, float]]:
    """``runs`` cold starts of the built autoscaler, each answering one invocation."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs each request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    os.environ.update(aws)
    clients = {n: boto3.client(n) for n in ("ssm", "secretsmanager", "dynamodb", "ecs", "ec2")}
    create_table(clients["dynamodb"], "ondemand")
    ecs_service_with_tasks(clients["ecs"], clients["ec2"], tasks=1)
    proxy = Proxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    secret = clients["secretsmanager"].create_secret(
        Name="ondemand/broker", SecretString=f"redis://127.0.0.1:{proxy.port}/0")["ARN"]
    parameters = {"BrokerSecretArn": secret, "EcsClusterName": "prod",
                  "EcsServiceNames": "workers"}
    stack = Stack(transformed(parameters), parameters, physical={"StateTable": "ondemand"})
    variables = stack.resource("AutoscalerFunction")["Environment"]["Variables"]
    environment = {**{k: str(v) for k, v in variables.items()}, **aws}
    queues = Queues(redis_url)
    clients["ssm"].put_parameter(
        Name=environment["ONDEMAND_CONFIG_PARAMETER"], Type="String",
        Value=yaml.safe_dump({"tick_interval_seconds": 60, "targets": [{
            "name": "bench", "queues": [queues.new("cold")], "scaler": "ecs",
            "cluster": "prod", "service": "workers"}]}))
    results = []
    try:
        for run in range(runs):
            api = RuntimeApi()
            api.pending.put((f"cold-{run}", scheduler_event(period_seconds=2)))
            proxy.first_request_at = None
            started = time.perf_counter()
            process = start_function("AutoscalerFunction", api, environment,
                                     workdir / f"cold-{run}.log")
            try:
                answer = api.answers.get(timeout=120)
                answered = time.perf_counter()
                assert answer.kind == "response" and answer.body["ok"], answer.body
                peak_kb = _peak_rss_kb(process.pid)
            finally:
                process.kill()
                process.wait(timeout=10)
                api.close()
            assert proxy.first_request_at is not None, "the function never read the broker"
            assert api.first_poll_at is not None
            results.append({"init": api.first_poll_at - started,
                            "first_read": proxy.first_request_at - started,
                            "answered": answered - started, "peak_mb": peak_kb / 1024})
    finally:
        proxy.close()
        queues.delete_all()
        server.stop()
    return results


def _peak_rss_kb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1])
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    reason = missing()
    if reason is not None:
        raise SystemExit(f"bench: {reason}")
    redis_url = require_broker_or_exit(BROKERS["redis"])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        stripped = without_bytecode(BUILD / "LibraryLayer", workdir)
        built = timed(IMPORT, args.runs, BUILD / "LibraryLayer")
        baseline = timed(IMPORT, args.runs, stripped)
        xray = timed(XRAY, args.runs, BUILD / "LibraryLayer")
        print(f"cold start of the built autoscaler (Python 3.12, read-only layer; "
              f"median of {args.runs})")
        print(f"import of the handler: {built:.3f} s with the layer's bytecode, "
              f"{baseline:.3f} s without ({baseline / built:.1f}x); the X-Ray SDK adds "
              f"{xray:.3f} s when tracing is on")
        runs = cold_starts(redis_url, args.runs, workdir)
        summary: dict[str, Any] = {key: statistics.median(r[key] for r in runs)
                                   for key in runs[0]}
        worst = max(r["first_read"] for r in runs)
        print(f"process start to init done (the runtime asks for work): {summary['init']:.3f} s")
        print(f"process start to first broker read: {summary['first_read']:.3f} s "
              f"(worst {worst:.3f} s); invocation answered at {summary['answered']:.3f} s; "
              f"peak RSS {summary['peak_mb']:.0f} MB")
        print("goals: <= 0.6 s to the first broker read, <= 150 MB")
        print(json.dumps({"import_s": built, "import_without_bytecode_s": baseline,
                          "xray_import_s": xray, **summary}))


if __name__ == "__main__":
    main()
