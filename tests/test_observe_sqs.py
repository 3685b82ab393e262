"""SQS depths on moto: visible, in flight and delayed, resolved by kombu's own channel."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from celery_ondemand import Observer


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def test_sqs_counts_visible_in_flight_and_delayed(sqs: object) -> None:
    client = boto3.client("sqs", region_name="us-east-1")
    # Celery names the queue "emails.high"; kombu's SQS channel maps it to "emails-high".
    url = client.create_queue(QueueName="emails-high")["QueueUrl"]
    for _ in range(3):
        client.send_message(QueueUrl=url, MessageBody="{}")
    client.send_message(QueueUrl=url, MessageBody="{}", DelaySeconds=60)
    client.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=60)

    with Observer("sqs://") as observer:
        status = observer.observe(["emails.high", "nowhere"])

    queue = status.queues["emails.high"]
    assert (queue.size, queue.hidden, queue.delayed) == (2, 1, 1)
    assert queue.running is None and queue.reserved is None, "SQS gives no worker replies"
    assert status.queues["nowhere"].missing
    assert status.sources == ["broker"] and status.workers == {}


def test_sqs_queue_name_prefix_from_transport_options(sqs: object) -> None:
    from celery import Celery

    client = boto3.client("sqs", region_name="us-east-1")
    url = client.create_queue(QueueName="prod-celery")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="{}")
    app = Celery("p", broker="sqs://", set_as_current=False)
    app.conf.broker_transport_options = {"queue_name_prefix": "prod-", "region": "us-east-1"}

    with Observer(app=app) as observer:
        status = observer.observe(["celery"])
    assert status.queues["celery"].size == 1


def test_sqs_region_from_transport_options(sqs: object) -> None:
    """The workers' ``region`` wins over the environment's, as it does for them."""
    client = boto3.client("sqs", region_name="eu-west-1")
    url = client.create_queue(QueueName="reports")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="{}")

    with Observer("sqs://", transport_options={"region": "eu-west-1"}) as observer:
        status = observer.observe(["reports"])
    assert (status.queues["reports"].size, status.queues["reports"].missing) == (1, False)
    with Observer("sqs://") as elsewhere:  # us-east-1 from the environment: not there
        assert elsewhere.observe(["reports"]).queues["reports"].missing


def test_sqs_predefined_queues_without_listing_any(sqs: object,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A role granted only the predefined queues: ListQueues is refused (answered at the
    client boundary, as AWS would answer that role) and the read still succeeds."""
    from botocore.exceptions import ClientError
    from botocore.handlers import BUILTIN_HANDLERS

    client = boto3.client("sqs", region_name="us-east-1")
    url = client.create_queue(QueueName="prod-emails-a1b2")["QueueUrl"]
    for _ in range(2):
        client.send_message(QueueUrl=url, MessageBody="{}")

    def refuse(**_: object) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not granted"}},
                          "ListQueues")

    monkeypatch.setattr("botocore.handlers.BUILTIN_HANDLERS",
                        [*BUILTIN_HANDLERS, ("before-call.sqs.ListQueues", refuse)])
    options = {"predefined_queues": {"emails": {"url": url, "access_key_id": "testing",
                                                "secret_access_key": "testing"}}}
    with Observer("sqs://", transport_options=options) as observer:
        status = observer.observe(["emails", "other"])
    assert status.queues["emails"].size == 2
    assert status.queues["other"].missing, "not predefined: the workers cannot read it either"


def test_a_queue_looked_for_under_the_wrong_prefix_holds_a_running_fleet(
        sqs: object) -> None:
    """The workers read ``prod-emails``; the autoscaler's config forgot their prefix, so it
    looks for ``emails``, which does not exist. Read as empty, the two idle workers of the
    service would be stopped at once (no scale-down delay): with workers running, a missing
    queue is a gap, and the tick says where to look."""
    from celery_ondemand.config import settings_from_mapping
    from celery_ondemand.tick import Ticker
    from tests.support.aws import ecs_service_with_tasks

    client = boto3.client("sqs", region_name="us-east-1")
    client.create_queue(QueueName="prod-emails")
    ecs = boto3.client("ecs", region_name="us-east-1")
    ecs_service_with_tasks(ecs, boto3.client("ec2", region_name="us-east-1"), tasks=2)
    config = settings_from_mapping({
        "broker_url": "sqs://", "broker_transport_options": {"region": "us-east-1"},
        "targets": [{"name": "t", "queues": ["emails"], "scaler": "ecs", "cluster": "prod",
                     "service": "workers", "scale_down_delay_seconds": 0,
                     "startup_grace_seconds": 0}]})
    ticker = Ticker(config)
    try:
        results = [ticker.tick() for _ in range(3)]
    finally:
        ticker.close()
    for result in results:
        decision = result.decisions[0]
        assert (decision.desired, decision.rule) == (2, "blind"), decision.reason
        assert result.observation is not None and result.observation.queues["emails"].missing
    assert "emails not found on the broker while 2 workers run" in str(results[-1].warnings())
    service = ecs.describe_services(cluster="prod", services=["workers"])["services"][0]
    assert service["desiredCount"] == 2


def test_one_queue_deleted_after_its_url_was_cached_spoils_no_other_read(sqs: object) -> None:
    """kombu caches each queue's URL: a queue deleted later answers ``QueueDoesNotExist``
    to the next read of it. That queue is missing; the others are read as ever."""
    client = boto3.client("sqs", region_name="us-east-1")
    gone = client.create_queue(QueueName="retired")["QueueUrl"]
    kept = client.create_queue(QueueName="emails")["QueueUrl"]
    client.send_message(QueueUrl=kept, MessageBody="{}")
    with Observer("sqs://") as observer:
        first = observer.observe(["retired", "emails"])
        client.delete_queue(QueueUrl=gone)
        again = observer.observe(["retired", "emails"], previous=first)
    assert not first.queues["retired"].missing
    assert again.queues["retired"].missing and again.queues["emails"].size == 1
    assert not again.problems and not again.queue_problems


def test_a_queue_this_role_may_not_read_is_a_gap_for_its_targets_only(
        sqs: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """``AccessDenied`` on one queue (a predefined queue of another account, a policy that
    names some queues only): that queue is not read — its targets hold — and every other
    queue is. moto enforces no IAM, so SQS's answer is given at the client boundary."""
    import botocore.client
    from botocore.exceptions import ClientError

    client = boto3.client("sqs", region_name="us-east-1")
    client.create_queue(QueueName="secret")
    url = client.create_queue(QueueName="emails")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="{}")
    real = botocore.client.BaseClient._make_api_call

    def denied(self: object, operation: str, params: dict[str, object]) -> object:
        if operation == "GetQueueAttributes" and str(params["QueueUrl"]).endswith("/secret"):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not yours"}},
                              operation)
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", denied)
    with Observer("sqs://") as observer:
        status = observer.observe(["secret", "emails"])
    assert status.queues["emails"].size == 1
    assert "AccessDenied" in " ".join(status.queue_problems["secret"])
    assert status.problems_for(["secret"]) and not status.problems_for(["emails"])
