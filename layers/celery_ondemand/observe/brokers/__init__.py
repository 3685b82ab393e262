"""One module per broker, found by the URL's scheme and imported only when used.

The registry maps schemes to ``"module:Class"`` strings, the way kombu maps transport
aliases, so a Redis deployment never imports boto3 and an SQS one never imports redis.
"""

from __future__ import annotations

import difflib
from importlib import import_module

from kombu import Connection

from ...errors import UnknownBroker
from ...urls import safe_url, scheme_of
from .base import BrokerProbe, QueueDepth

PROBES = {
    "amqp": "celery_ondemand.observe.brokers.rabbitmq:RabbitMQProbe",
    "amqps": "celery_ondemand.observe.brokers.rabbitmq:RabbitMQProbe",
    "pyamqp": "celery_ondemand.observe.brokers.rabbitmq:RabbitMQProbe",
    "redis": "celery_ondemand.observe.brokers.redis:RedisProbe",
    "rediss": "celery_ondemand.observe.brokers.redis:RedisProbe",
    "sqs": "celery_ondemand.observe.brokers.sqs:SQSProbe",
}


def probe_class(url: str) -> type[BrokerProbe]:
    """The probe class for a broker URL; :class:`UnknownBroker` names the choices."""
    scheme = scheme_of(url)
    if scheme not in PROBES:
        hint = difflib.get_close_matches(scheme, PROBES, n=1)
        did_you_mean = f" Did you mean {hint[0]}://?" if hint else ""
        raise UnknownBroker(
            f"cannot observe broker {safe_url(url)!r}: unknown scheme {scheme!r}; "
            f"expected one of {', '.join(sorted(PROBES))}.{did_you_mean}"
        )
    module_name, class_name = PROBES[scheme].split(":")
    cls: type[BrokerProbe] = getattr(import_module(module_name), class_name)
    return cls


def probe_for(connection: Connection) -> BrokerProbe:
    """A probe reading queue depths over ``connection``."""
    return probe_class(connection.as_uri(include_password=True))(connection)


__all__ = ["PROBES", "BrokerProbe", "QueueDepth", "probe_class", "probe_for"]
