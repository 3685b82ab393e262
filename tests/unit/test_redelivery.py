"""When the broker hands a running task out again, as the decision reads it."""

from __future__ import annotations

from typing import Any

import pytest

from celery_ondemand.config import settings_from_mapping
from celery_ondemand.decide import decide
from tests.support.observations import observation


def timeout_for(broker: str, options: dict[str, Any], **target: Any) -> float:
    config = settings_from_mapping({
        "broker_url": broker, "broker_transport_options": options,
        "targets": [{"name": "t", "queues": ["q"], "scaler": "local", "command": "c",
                     **target}]})
    observed = observation({"q": (0, 0)})
    observed.broker = broker
    decisions, _ = decide(observed, config, {}, 0.0)
    return float(decisions[0].inputs["redelivery_timeout"])


@pytest.mark.parametrize(("broker", "options", "target", "expected"), [
    ("redis://h/0", {}, {}, 3600.0),
    ("redis://h/0", {"visibility_timeout": 14400}, {}, 14400.0),
    ("sqs://", {"visibility_timeout": 600}, {}, 600.0),
    ("amqp://h//", {"visibility_timeout": 600}, {}, 1800.0),  # RabbitMQ: consumer_timeout
    ("redis://h/0", {"visibility_timeout": 14400}, {"redelivery_timeout_seconds": 900}, 900.0),
])
def test_the_workers_visibility_timeout_is_the_redelivery_timeout(
        broker: str, options: dict[str, Any], target: dict[str, Any], expected: float) -> None:
    assert timeout_for(broker, options, **target) == expected
