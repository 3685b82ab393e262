"""Amazon SQS queue depths.

Features, from one ``GetQueueAttributes`` call per queue:
    - ready: ``ApproximateNumberOfMessages`` (visible);
    - in flight: ``ApproximateNumberOfMessagesNotVisible`` (received by a worker, not yet
      deleted: reserved or running), reported as the queue's hidden work;
    - delayed: ``ApproximateNumberOfMessagesDelayed``;
    - a queue that does not exist is reported as ``missing``, one this role may not read
      (or that failed past the retries) as unreadable: a gap for its targets only.

Not available: worker events and control replies (Celery's SQS transport supports
neither), consumer counts, and the oldest task's age (SQS publishes that only as a
CloudWatch metric).

Connection string: ``sqs://`` (credentials from the AWS chain, or an access key and secret
key before an ``@``).

Transport options (the workers' ``broker_transport_options``, which the observer must be
given): queue names go through kombu's own SQS channel (``canonical_queue_name``,
``_resolve_queue_url``, ``sqs(queue=...)``), the calls kombu's ``_size`` makes, so
``queue_name_prefix``, ``region``, ``predefined_queues`` (with each queue's own URL and
credentials) and ``client-config`` mean what they mean to the workers. With
``predefined_queues`` nothing is listed: a role allowed only the predefined queues works.
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

_DOES_NOT_EXIST = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
_REFUSED_EVERYWHERE = ("invalidclienttokenid", "signaturedoesnotmatch", "unrecognizedclient",
                       "expiredtoken")
"""Error codes about the caller, not a queue: no other queue would read either."""


class SQSProbe(BrokerProbe):
    """Reads the three message counts SQS keeps for each queue."""

    supports_workers: ClassVar[bool] = False
    auth_error_words = ("invalidclienttokenid", "signaturedoesnotmatch", "accessdenied",
                        "unrecognizedclient", "unable to locate credentials")

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        return (*super().driver_errors(), BotoCoreError, ClientError)

    def _check(self) -> None:
        channel: Any = self.connection.default_channel  # kombu's SQS channel
        if not channel.predefined_queues:  # kombu itself lists none then: neither do we
            channel.sqs().list_queues(MaxResults=1)

    def _depths(self, queues: list[str], held_by_workers: int | None) -> dict[str, QueueDepth]:
        channel: Any = self.connection.default_channel
        depths = {}
        for queue in queues:
            try:
                url = channel._resolve_queue_url(queue)
            except (DoesNotExistQueueException, UndefinedQueueException):
                depths[queue] = QueueDepth(ready=0, in_flight=0, delayed=0, missing=True)
                continue
            client = channel.sqs(queue=channel.canonical_queue_name(queue))
            try:
                counts = client.get_queue_attributes(QueueUrl=url, AttributeNames=_ATTRIBUTES)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code.lower() in _REFUSED_EVERYWHERE:
                    raise  # the credentials, not this queue: the whole read fails
                if code in _DOES_NOT_EXIST:  # deleted since kombu cached its URL
                    channel._queue_cache.pop(channel.canonical_queue_name(queue), None)
                    depths[queue] = QueueDepth(ready=0, in_flight=0, delayed=0, missing=True)
                else:  # this queue only (AccessDenied, a throttle past the retries)
                    depths[queue] = QueueDepth(ready=0, unreadable=str(exc))
                continue
            attributes = counts["Attributes"]
            depths[queue] = QueueDepth(
                ready=int(attributes.get("ApproximateNumberOfMessages", 0)),
                in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
            )
        return depths
