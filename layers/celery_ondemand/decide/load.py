"""A target's load, minute by minute: what a forecast learns from and a replay replays.

Every tick that measured its target adds one :class:`LoadMinute` sample — the seconds it
covered, the tasks that arrived and finished in them, the slot-seconds busy, the count
asked for and the live workers — to the minute it falls in. A minute is the sum of its
ticks: the state store adds them where they are kept (DynamoDB's ``UpdateItem ADD``,
SQLite's ``ON CONFLICT DO UPDATE``), so a tick never reads before it writes.

:class:`LoadLog` keeps minutes in memory with the store's reading interface, for the
simulator and the tests. Pure data: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

from .decision import Decision
from .memory import TargetMemory

MINUTE = 60


@dataclass
class LoadMinute:
    """One target's load during one minute (or one tick's share of it).

    ``seconds`` is how much of the minute was measured (ticks whose read failed measured
    nothing), so a rate is ``arrivals / seconds`` even across gaps and interval changes.
    """

    minute: int
    """Epoch seconds at the minute's start."""
    seconds: float = 0.0
    arrivals: float = 0.0
    completions: float = 0.0
    busy_seconds: float = 0.0
    """Slot-seconds spent running tasks: service time, as ticks sample it."""
    desired_sum: float = 0.0
    live_sum: float = 0.0
    ticks: int = 0

    @property
    def arrival_rate(self) -> float | None:
        """Tasks arriving per second, None for a minute nothing measured."""
        return self.arrivals / self.seconds if self.seconds > 0 else None

    @property
    def desired(self) -> float:
        """Mean count asked for over the minute's ticks."""
        return self.desired_sum / self.ticks if self.ticks else 0.0

    @property
    def live(self) -> float:
        return self.live_sum / self.ticks if self.ticks else 0.0

    def add(self, other: LoadMinute) -> None:
        """Add another sample of the same minute."""
        for name in NUMBERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


NUMBERS = ("seconds", "arrivals", "completions", "busy_seconds", "desired_sum", "live_sum",
           "ticks")
"""The summed fields of a minute, in the order the stores keep them."""


def load_of(decision: Decision, memory: TargetMemory, now: float) -> LoadMinute | None:
    """This tick's sample of its target's load, None when the tick measured nothing (a
    failed or partial read, the first tick after a cold memory)."""
    if memory.last_tick is None:
        return None
    seconds, arrivals, completions, busy = memory.last_tick
    live = decision.inputs.get("live")
    return LoadMinute(int(now // MINUTE * MINUTE), seconds, arrivals, completions, busy,
                      float(decision.desired), float(live if isinstance(live, int) else 0),
                      1)


def loads_of(decisions: Iterable[Decision], memory: Mapping[str, TargetMemory],
             now: float) -> dict[str, LoadMinute]:
    """Each target's sample of this tick for the load history. A target that measured
    nothing has none; nor has one at rest that saw nothing arrive, finish or run (a
    minute with no item reads as no load: an idle deployment writes nothing more)."""
    loads = {d.target: (d, load_of(d, memory[d.target], now)) for d in decisions
             if d.target in memory}
    return {name: load for name, (decision, load) in loads.items() if load is not None
            and not (decision.at_rest() and load.arrivals == load.completions ==
                     load.busy_seconds == 0)}


class LoadHistory(Protocol):
    """What a forecast or a replay reads: a target's minutes between two instants."""

    def load_history(self, deployment: str, target: str, since: float,
                     until: float) -> list[LoadMinute]: ...


class LoadLog:
    """Minutes kept in memory (the simulator's and the tests' store), every target's."""

    def __init__(self) -> None:
        self.minutes: dict[str, dict[int, LoadMinute]] = {}

    def add_load(self, deployment: str, loads: Mapping[str, LoadMinute]) -> None:
        for target, sample in loads.items():
            kept = self.minutes.setdefault(target, {})
            if sample.minute in kept:
                kept[sample.minute].add(sample)
            else:
                kept[sample.minute] = LoadMinute(**asdict(sample))

    def load_history(self, deployment: str, target: str, since: float,
                     until: float) -> list[LoadMinute]:
        kept = self.minutes.get(target, {})
        first, last = int(since // MINUTE * MINUTE), int(until)
        if last - first < 4 * len(kept) * MINUTE:  # a short window: look each minute up
            return [kept[m] for m in range(first, last + 1, MINUTE) if m in kept]
        return sorted((m for m in kept.values() if first <= m.minute <= last),
                      key=lambda m: m.minute)

    def extend(self, target: str, minutes: Iterable[LoadMinute]) -> None:
        for minute in minutes:
            self.add_load("", {target: minute})
