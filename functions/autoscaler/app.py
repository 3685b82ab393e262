"""Lambda entry point: thin wiring over the library, no logic of its own.

For now each invocation observes the broker once and returns cwod's status JSON; the full
tick (decide, act, remember) is wired here as those parts land. The observer lives at
module level so a warm Lambda reuses its broker connection.
"""

from __future__ import annotations

import os
from typing import Any

from celery_ondemand import Observer

_observer: Observer | None = None


def handler(event: dict[str, Any] | None, context: object) -> dict[str, Any]:
    """Observe every queue (or ``event["queues"]``) and every worker once."""
    global _observer
    if _observer is None:
        _observer = Observer(os.environ["BROKER_URL"])
    queues = (event or {}).get("queues")
    return _observer.observe(queues).serializer()
