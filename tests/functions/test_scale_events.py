"""Scale events on EventBridge: what a tick publishes, delivered through a rule on moto's
default bus to an SQS queue as a user's rule would route them, and a bus that cannot take
them failing nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import yaml
from aws_lambda_powertools.utilities import parameters

from celery_ondemand import aws_lambda, scale_events
from celery_ondemand.decide import Decision
from celery_ondemand.remember.dynamodb import create_table
from celery_ondemand.tick import TickResult
from tests.support.aws import (
    LambdaContext,
    ecs_service_with_tasks,
    function_handler,
    scheduler_event,
)
from tests.support.brokers import Queues, producer_app


def decision(target: str, current: int, desired: int, rule: str,
             reason: str = "why") -> Decision:
    return Decision(target, current, desired, rule, reason)


def details(entries: list[dict[str, Any]]) -> list[tuple[str, str, int, int, str]]:
    return [(e["DetailType"], json.loads(e["Detail"])["target"],
             json.loads(e["Detail"])["from"], json.loads(e["Detail"])["to"],
             json.loads(e["Detail"])["rule"]) for e in entries]


def test_applied_actions_and_fault_holds_are_events_and_nothing_else() -> None:
    result = TickResult(None, [decision("up", 1, 3, "backlog"),
                               decision("down", 3, 1, "throughput"),
                               decision("failed", 2, 4, "backlog"),
                               decision("blind", 2, 2, "blind", "broker unread"),
                               decision("quiet", 0, 0, "idle")],
                        target_errors={"failed": "ECS throttled"}, applied=["up", "down"])
    entries = scale_events.scale_events(result, "ev-1")
    assert details(entries) == [("Scale action", "up", 1, 3, "backlog"),
                                ("Scale action", "down", 3, 1, "throughput"),
                                ("Scale held", "failed", 2, 4, "backlog"),
                                ("Scale held", "blind", 2, 2, "blind")]
    assert {e["Source"] for e in entries} == {"celery-ondemand"}
    assert json.loads(entries[2]["Detail"])["error"] == "ECS throttled"


def test_a_lasting_fault_is_published_when_it_begins_and_when_its_cause_changes() -> None:
    def tick(rule: str, reason: str) -> list[str]:
        result = TickResult(None, [decision("t", 2, 2, rule, reason)])
        return [e["DetailType"] for e in scale_events.scale_events(result, "ev-2")]

    assert tick("blind", "broker unread") == ["Scale held"]
    assert tick("blind", "broker unread") == [], "the same hold, the next tick: said already"
    assert tick("blind", "worker w not heard") == ["Scale held"], "its cause changed"
    assert tick("idle", "no work") == []
    assert tick("blind", "broker unread") == ["Scale held"], "a new outage is news again"
    lasting = "read incomplete (2 running on the target but 1 workers heard for {}s)"
    assert tick("blind", lasting.format(190)) == ["Scale held"]
    assert tick("blind", lasting.format(205)) == [], "only how long it has lasted changed"
    assert tick("blind", lasting.format(220.5).replace("2 running", "3 running")) == \
        ["Scale held"], "another instance without its worker: a new cause"


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {"POWERTOOLS_TRACE_DISABLED": "true",
                        "ONDEMAND_CONFIG_PARAMETER": "/ondemand/config",
                        "ONDEMAND_STATE_TABLE": "ondemand", "ONDEMAND_DEPLOYMENT": "events",
                        "ONDEMAND_CONFIG_MAX_AGE": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ONDEMAND_TICK_QUEUE_URL", raising=False)
    monkeypatch.setattr(aws_lambda, "_warm", None)
    parameters.clear_caches()
    clients = {n: boto3.client(n, region_name="us-east-1")
               for n in ("ssm", "dynamodb", "ecs", "ec2", "events", "sqs")}
    create_table(clients["dynamodb"], "ondemand")
    ecs_service_with_tasks(clients["ecs"], clients["ec2"], tasks=1)
    yield clients
    if aws_lambda._warm is not None:
        aws_lambda._warm.ticker.close()


def configure(aws: dict[str, Any], broker_url: str, queue: str, **target: Any) -> None:
    """One ECS target on ``queue``, one tick per invocation (ticks a minute apart)."""
    aws["ssm"].put_parameter(Name="/ondemand/config", Type="String", Value=yaml.safe_dump({
        "broker_url": broker_url, "tick_interval_seconds": 60, "targets": [{
            "name": "emails", "queues": [queue], "scaler": "ecs", "cluster": "prod",
            "service": "workers", **target}]}))


@pytest.mark.broker
def test_a_scale_up_reaches_a_users_rule_on_the_default_bus(
        aws: dict[str, Any], redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As README's rule would: scale actions of this source, routed to a queue."""
    inbox = aws["sqs"].create_queue(QueueName="scale-events")["QueueUrl"]
    inbox_arn = aws["sqs"].get_queue_attributes(
        QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws["events"].put_rule(Name="scale-ups", EventPattern=json.dumps(
        {"source": ["celery-ondemand"], "detail-type": ["Scale action"]}))
    aws["events"].put_targets(Rule="scale-ups", Targets=[{"Id": "inbox", "Arn": inbox_arn}])
    bus = aws["events"].describe_event_bus()["Arn"]
    monkeypatch.setenv("ONDEMAND_EVENT_BUS", bus)
    queues, producer = Queues(redis_url), producer_app(redis_url)
    try:
        queue = queues.new("events")
        for _ in range(4):
            producer.send_task("tests.sleep", args=(0,), queue=queue)
        configure(aws, redis_url, queue, worker_concurrency=2)
        summary = function_handler("autoscaler")(scheduler_event(), LambdaContext())
        assert summary["ok"] and summary["decisions"][0]["applied"]
        received = aws["sqs"].receive_message(QueueUrl=inbox, MaxNumberOfMessages=10,
                                              WaitTimeSeconds=2).get("Messages", [])
        events = [json.loads(m["Body"]) for m in received]
        assert [(e["source"], e["detail-type"]) for e in events] == [
            ("celery-ondemand", "Scale action")]
        assert {k: events[0]["detail"][k] for k in ("deployment", "target", "from", "to")} == {
            "deployment": "events", "target": "emails", "from": 1, "to": 2}
    finally:
        queues.delete_all()
        producer.close()


@pytest.mark.broker
def test_a_bus_that_cannot_take_the_events_fails_nothing(
        aws: dict[str, Any], redis_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ONDEMAND_EVENT_BUS", "arn:aws:events:us-east-1:123456789012:"
                                             "event-bus/does-not-exist")
    queues, producer = Queues(redis_url), producer_app(redis_url)
    try:
        queue = queues.new("events")
        producer.send_task("tests.sleep", args=(0,), queue=queue)
        configure(aws, redis_url, queue, worker_concurrency=1, min_workers=3)
        summary = function_handler("autoscaler")(scheduler_event(), LambdaContext())
        assert summary["ok"] and summary["decisions"][0]["applied"], summary
        assert any("scale events" in r.getMessage() for r in caplog.records
                   if r.levelname == "WARNING")
    finally:
        queues.delete_all()
        producer.close()
