"""A decision is data: what a target has, what it should have, which rule said so, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["up", "down", "hold"]


@dataclass(frozen=True)
class Recommendation:
    """A policy's answer before the safety rails: a worker count, the rule, a reason.

    ``needed`` is the raw need before smoothing (stabilization, tolerance); it is what the
    stabilization window remembers, so a held value never props itself up. None means
    the same as ``desired``.
    """

    desired: int
    rule: str
    reason: str
    needed: int | None = None


@dataclass(frozen=True)
class Decision:
    """The final word for one target this tick.

    ``rule`` names what fired last (a policy rule such as ``backlog``, or a rail such as
    ``blind``, ``busy-floor``, ``bounds``); ``reason`` says it in one line; ``inputs`` holds
    the numbers it used, so a decision can be checked by hand.
    """

    target: str
    current: int
    desired: int
    rule: str
    reason: str
    dry_run: bool = False
    paused: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)
    zombies: tuple[str, ...] = ()
    """Live workers that take no work although work waits: to be replaced, count kept."""

    @property
    def action(self) -> Action:
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return "hold"

    def at_rest(self, floor: int | None = None) -> bool:
        """Nothing to do: no task waiting or held, no worker busy, the count at ``floor``
        (by default the floor the decision was made with: ``min_workers`` as schedules and
        the platform set it) and staying there, and a complete read."""
        inputs = self.inputs
        floor = inputs.get("floor", 0) if floor is None else floor
        return (self.current == self.desired == floor and not inputs.get("ready")
                and not inputs.get("hidden") and not inputs.get("busy")
                and not inputs.get("problems") and not self.zombies)

    def serializer(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "current": self.current,
            "desired": self.desired,
            "action": self.action,
            "rule": self.rule,
            "reason": self.reason,
            "dry_run": self.dry_run,
            "paused": self.paused,
            "inputs": dict(self.inputs),
            "zombies": list(self.zombies),
        }
