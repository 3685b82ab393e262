"""Amazon SQS queue depths.

Features, from one ``GetQueueAttributes`` call per queue:
    - ready: ``ApproximateNumberOfMessages`` (visible);
    - in flight: ``ApproximateNumberOfMessagesNotVisible`` (received by a worker, not yet
      deleted: reserved or running), reported as the queue's hidden work;
    - delayed: ``ApproximateNumberOfMessagesDelayed``;
    - a queue that does not exist is reported as ``missing``.

Not available: worker events and control replies (Celery's SQS transport supports
neither), consumer counts, and the oldest task's age (SQS publishes that only as a
CloudWatch metric).

Connection string: ``sqs://`` (credentials from the AWS chain, or an access key and secret
key before an ``@``). Queue names, ``queue_name_prefix``, ``region`` and
``predefined_queues`` are resolved by kombu's own SQS channel, exactly as the workers do.
"""

from __future__ import annotations

from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError
from kombu.transport.SQS import DoesNotExistQueueException, UndefinedQueueException

from .base import BrokerProbe, QueueDepth

_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class SQSProbe(BrokerProbe):
    """Reads the three message counts SQS keeps for each queue."""

    supports_workers: ClassVar[bool] = False
    auth_error_words = ("invalidclienttokenid", "signaturedoesnotmatch", "accessdenied",
                        "unrecognizedclient", "unable to locate credentials")

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        return (*super().driver_errors(), BotoCoreError, ClientError)

    def _check(self) -> None:
        channel: Any = self.connection.default_channel  # kombu's SQS channel
        channel.sqs().list_queues(MaxResults=1)

    def _depths(self, queues: list[str]) -> dict[str, QueueDepth]:
        channel: Any = self.connection.default_channel
        depths = {}
        for queue in queues:
            try:
                url = channel._resolve_queue_url(queue)
            except (DoesNotExistQueueException, UndefinedQueueException):
                depths[queue] = QueueDepth(ready=0, in_flight=0, delayed=0, missing=True)
                continue
            client = channel.sqs(queue=channel.canonical_queue_name(queue))
            counts = client.get_queue_attributes(QueueUrl=url, AttributeNames=_ATTRIBUTES)
            attributes = counts["Attributes"]
            depths[queue] = QueueDepth(
                ready=int(attributes.get("ApproximateNumberOfMessages", 0)),
                in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
            )
        return depths
