"""Replay a target's own recorded traffic: its load history as a trace, and a search for
the cheapest settings that meet its wait target on it.

The state store keeps each target's arrivals per minute (:mod:`..decide.load`); a replay
spreads each minute's arrivals evenly over its seconds (a minute nothing was recorded for
had none) and draws service times around the mean the history measured (busy
slot-seconds per task finished), exponentially unless told otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..config import Settings, TargetConfig
from ..decide.load import MINUTE, LoadHistory, LoadLog, LoadMinute
from ..errors import ConfigError
from .engine import SimConfig, SimResult, arrivals_from, simulate
from .ondemand import OnDemandPolicy
from .traces import service_times

POLICY_SETTINGS = ("min_workers", "max_workers", "worker_concurrency", "target_wait_seconds",
                   "scale_down_delay_seconds", "stabilization_seconds", "tolerance",
                   "scale_up_max_step", "scale_up_max_percent", "forecast",
                   "forecast_lead_seconds", "forecast_min_days")
"""The target's settings the decision reads: a replay runs the policy with them."""

TUNED: dict[str, Sequence[float]] = {
    "stabilization_seconds": (0, 45, 120, 300),
    "tolerance": (0.0, 0.1, 0.2, 0.3),
    "target_wait_seconds": (0.5, 0.75, 1.0, 1.25, 1.5),  # times the wait target
}
"""What ``--tune`` searches, one setting at a time (the wait as a share of the goal)."""


@dataclass
class Recorded:
    """A target's recorded traffic, ready to replay."""

    target: TargetConfig
    minutes: list[LoadMinute]
    counts: list[int]
    config: SimConfig
    service: str
    since: float
    history: Callable[[], LoadLog] | None
    """The load history a forecast starts from (what came before ``since``), or None."""


def recorded(store: LoadHistory, settings: Settings, target: TargetConfig, since: float,
             until: float, *, startup: float = 60.0, concurrency: int = 1,
             service_time: str | None = None, forecast: bool = False) -> Recorded:
    """Read ``target``'s load between ``since`` and ``until`` from ``store``; the replay
    runs on the target's slots (else ``concurrency``), bounds and wait target, the
    deployment's ticks, ``startup``, and ``service_time`` (else the measured mean).
    ``forecast``: also read what came before, for a forecast to start from."""
    minutes = store.load_history(settings.deployment, target.name, since, until)
    if not minutes:
        raise ConfigError(f"no load history for target {target.name!r} of deployment "
                          f"{settings.deployment!r} in "
                          f"{settings.state_file or 'DynamoDB table ' + settings.state_table}"
                          f" between {when(since)} and {when(until)}")
    config = SimConfig(concurrency=target.worker_concurrency or concurrency,
                       startup_seconds=int(startup),
                       tick_seconds=int(settings.tick_interval_seconds),
                       wait_target=target.target_wait_seconds, max_workers=target.max_workers)
    history = None
    if forecast:
        before = [m for m in store.load_history(
            settings.deployment, target.name, since - settings.load_history_days * 86400,
            since) if m.minute < since]

        def history() -> LoadLog:
            log = LoadLog()
            log.extend("sim", before)
            return log
    try:
        service = service_spec(measured_service(minutes), service_time)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return Recorded(target, minutes, counts_from(minutes, since, until), config, service,
                    since, history)


def when(at: float) -> str:
    """An instant as people read it, in UTC."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def policy_settings(target: TargetConfig) -> dict[str, Any]:
    """The settings of ``target`` a replay's policy needs."""
    values = asdict(target)
    return {name: values[name] for name in POLICY_SETTINGS if values[name] is not None}


def counts_from(minutes: Sequence[LoadMinute], since: float, until: float) -> list[int]:
    """Per-second arrivals from ``since`` to ``until``: each minute's spread evenly."""
    first = int(since // MINUTE * MINUTE)
    counts = [0] * max(0, int(until) - first)
    for minute in minutes:
        offset = minute.minute - first
        if offset < 0 or offset >= len(counts):
            continue
        total = round(minute.arrivals * 60 / minute.seconds) if minute.seconds else 0
        seconds = min(MINUTE, len(counts) - offset)
        for i in range(seconds):  # the same count each second, the remainder spread
            counts[offset + i] = total * (i + 1) // MINUTE - total * i // MINUTE
    return counts


def measured_service(minutes: Sequence[LoadMinute]) -> float | None:
    """Mean seconds a task held its slot: busy slot-seconds per task finished."""
    busy = sum(m.busy_seconds for m in minutes)
    finished = sum(m.completions for m in minutes)
    return busy / finished if finished > 0 and busy > 0 else None


@dataclass
class Tuning:
    """The cheapest settings found that meet the goal, and every trial."""

    settings: dict[str, Any]
    result: SimResult | None
    trials: list[tuple[dict[str, Any], SimResult]]
    goal: float


def tune(counts: Sequence[int], config: SimConfig, service: str,
         target: Mapping[str, Any], warmup: int = 0, seed: int = 1,
         rounds: int = 2, history: Callable[[], LoadLog] | None = None,
         clock: float = 0.0) -> Tuning:
    """The cheapest of the searched settings whose replay meets the wait target (p95 wait
    within ``target_wait_seconds``, every task served): one setting at a time from the
    target's own, the others kept, ``rounds`` times over. ``history`` and ``clock`` as for
    :func:`.compare.compare` (a target with a forecast)."""
    goal = float(target.get("target_wait_seconds", config.wait_target))
    sampler, _ = service_times(service)
    tasks = arrivals_from(counts, 1.0, sampler, seed)
    cache: dict[tuple[tuple[str, Any], ...], SimResult] = {}

    def run(settings: dict[str, Any]) -> SimResult:
        key = tuple(sorted(settings.items()))
        if key not in cache:
            policy = OnDemandPolicy(config, "capacity", settings,
                                    history() if history else None, clock)
            cache[key] = simulate(tasks, policy, config, len(counts), measure_from=warmup)
        return cache[key]

    best = dict(target)
    candidates: Callable[[str], list[Any]] = lambda name: [  # noqa: E731
        round(goal * v, 1) if name == "target_wait_seconds" else v for v in TUNED[name]]
    for _ in range(rounds):
        for name in TUNED:
            trials = [{**best, name: value} for value in candidates(name)]
            meeting = [t for t in trials if run(t).meets(goal)]
            if meeting:
                best = min(meeting, key=lambda t: run(t).worker_seconds)
    found = run(best)
    return Tuning({k: best[k] for k in TUNED} if found.meets(goal) else {},
                  found if found.meets(goal) else None,
                  [(dict(k), r) for k, r in cache.items()], goal)


def service_spec(mean: float | None, given: str | None) -> str:
    """The service-time distribution to replay: the one given, else exponential around
    the measured mean."""
    if given:
        return given
    if mean is None or not math.isfinite(mean):
        raise ValueError("the history measured no service time (no task finished while "
                         "busy): pass --service-time")
    return f"exp:{mean:.3g}"
