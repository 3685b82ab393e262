"""Scale events on EventBridge: every change of capacity, and every hold a fault caused.

Each applied scale action and each decision held because something failed (a read with a
gap, a scaler that failed, a scale-in whose busy workers could not be shielded) becomes an
event on an event bus (the account's default bus, as the stack sets it), so one EventBridge
rule sends it to SNS, chat or a pager::

    source:      celery-ondemand
    detail-type: Scale action | Scale held
    detail:      {"deployment", "target", "from", "to", "rule", "reason"}

Publishing is best effort: a failure is logged and never fails the tick.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tick import TickResult

SOURCE = "celery-ondemand"
FAULT_HOLDS = frozenset({"blind", "scaler-error", "protection"})
"""Rules that hold a target because something failed (not because nothing is to do)."""

logger = logging.getLogger("celery-ondemand")

_holding: dict[tuple[str, str], tuple[str, str]] = {}
"""Per deployment and target, the fault hold last published (a warm container's memory): a
hold is published when it begins or its cause changes, not again every tick it lasts."""


def scale_events(result: TickResult, deployment: str) -> list[dict[str, Any]]:
    """The tick's scale events, as ``PutEvents`` entries (without the bus)."""
    entries = []
    for decision in result.decisions:
        key = (deployment, decision.target)
        applied = decision.target in result.applied and decision.action != "hold"
        held = decision.rule in FAULT_HOLDS or decision.target in result.target_errors
        if not held:
            _holding.pop(key, None)
        elif _holding.get(key) == (decision.rule, _cause(decision.reason)):
            held = False  # published when it began
        else:
            _holding[key] = (decision.rule, _cause(decision.reason))
        if not (applied or held):
            continue
        detail = {"deployment": deployment, "target": decision.target,
                  "from": decision.current, "to": decision.desired,
                  "rule": decision.rule, "reason": decision.reason,
                  "error": result.target_errors.get(decision.target)}
        entries.append({"Source": SOURCE,
                        "DetailType": "Scale action" if applied else "Scale held",
                        "Detail": json.dumps(detail)})
    return entries


def _cause(reason: str) -> str:
    """A hold's reason without the durations that grow each tick it lasts ("… workers
    heard for 195s"): the same cause, however long it has lasted."""
    return re.sub(r"\b\d+(?:\.\d+)?s\b", "#s", reason)


def publish(result: TickResult, deployment: str, bus: str,
            client: Callable[[], Any]) -> int:
    """Put the tick's scale events on ``bus``; returns how many were accepted. Never
    raises: an event that cannot be published is logged, and the tick goes on."""
    entries = [{**entry, "EventBusName": bus} for entry in scale_events(result, deployment)]
    accepted = 0
    for start in range(0, len(entries), 10):  # PutEvents takes ten entries a call
        batch = entries[start:start + 10]
        try:
            answer = client().put_events(Entries=batch)
        except Exception as exc:
            logger.warning(f"scale events not published: {type(exc).__name__}: {exc}")
            continue
        failed = int(answer.get("FailedEntryCount") or 0)
        accepted += len(batch) - failed
        if failed:
            logger.warning(f"{failed} scale events refused by EventBridge")
    return accepted
