"""SQS with an ECS target, end to end: real Celery workers consuming SQS on a moto server,
an ECS service on the same server (its tasks run by :class:`~tests.support.ecs_standin.
EcsStandIn`, since moto launches none), up and back down to zero with nothing lost.

On SQS no worker can be heard (no events, no control replies): liveness comes from the
service's running count, the busy floor from the queue's in-flight count, and scale-in
safety from each worker's own task protection (the bootstep). The startup grace is short
here so that a read that stayed blind for good would show within the test.
"""

from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest
import redis
from celery import Celery

from celery_ondemand.config import settings_from_mapping
from celery_ondemand.tick import Ticker, TickResult
from tests.support.brokers import BROKERS, require_broker
from tests.support.ecs_standin import EcsStandIn
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker  # the completion counter lives in Redis

TASKS = 6
OPTIONS = {"region": "us-east-1", "wait_time_seconds": 1, "polling_interval": 0.3,
           "visibility_timeout": 120}


def test_sqs_with_an_ecs_service_scales_up_and_back_to_zero_losing_nothing(
        moto_server: str) -> None:
    counter_url = require_broker(BROKERS["redis"])
    counter, key = redis.Redis.from_url(counter_url), f"ondemand-test-sqs-{uuid.uuid4().hex}"
    queue = f"ondemand-sqs-{uuid.uuid4().hex[:8]}"
    ecs = boto3.client("ecs")
    ecs.create_cluster(clusterName="prod")
    ecs.register_task_definition(family="worker", containerDefinitions=[
        {"name": "worker", "image": "celery", "memory": 256}])
    ecs.create_service(cluster="prod", serviceName="workers", taskDefinition="worker",
                       desiredCount=0)
    producer = Celery("ondemand-sqs-producer", broker="sqs://", set_as_current=False)
    producer.conf.broker_transport_options = OPTIONS
    for _ in range(TASKS):
        producer.send_task("tests.count", args=(2, key), queue=queue)
    config = settings_from_mapping({
        "broker_url": "sqs://", "broker_transport_options": OPTIONS,
        "targets": [{"name": "t", "queues": [queue], "scaler": "ecs", "cluster": "prod",
                     "service": "workers", "max_workers": 3, "worker_concurrency": 1,
                     "scale_down_delay_seconds": 0, "stabilization_seconds": 0,
                     "startup_grace_seconds": 5}]})
    ticker = Ticker(config)
    standin = EcsStandIn(ecs, Fleet("sqs://"), [queue], cluster="prod", service="workers",
                         env={"ONDEMAND_TEST_TRANSPORT_OPTIONS": json.dumps(OPTIONS),
                              "ONDEMAND_TEST_COUNTER": counter_url,
                              "ONDEMAND_TEST_BOOTSTEP": "1",
                              "ONDEMAND_PROTECTION_POLL": "0.2"})
    results: list[TickResult] = []
    try:
        deadline = time.monotonic() + 100
        while True:
            result = ticker.tick()
            results.append(result)
            assert result.ok, (result.error, result.target_errors)
            desired = standin.reconcile()
            if int(counter.get(key) or 0) >= TASKS and desired == 0 and not standin.running:
                break
            assert time.monotonic() < deadline, [r.decisions[0].serializer() for r in
                                                 results[-5:]]
            time.sleep(1)
        done = int(counter.get(key) or 0)
    finally:
        ticker.close()
        standin.close()
        counter.delete(key)
        producer.close()

    assert done == TASKS, "every task ran, exactly once"
    decisions = [r.decisions[0] for r in results]
    assert max(d.desired for d in decisions) >= 2, "it scaled out for the backlog"
    assert any(d.action == "down" for d in decisions) and decisions[-1].desired == 0
    assert not [d for d in decisions if d.inputs["problems"]], "never blind on SQS"
    assert standin.agent.calls > 0, "the busy workers protected their own tasks"
