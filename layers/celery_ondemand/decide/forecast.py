"""Forecast pre-warm: the arrivals a target's past days and weeks say are coming, and the
workers to have ready ``forecast_lead_seconds`` before they come.

Learning (:func:`learn`) reads only the past: for each coming minute m, the arrival rate
at the same minute of each of the past days (each averaged over m ± 1 minute), and takes
their **median** — a spike on one day, or a missing day, moves a median of three or more
days not at all. Where three or more past weeks are known, the weekly shape scales it: the
median of the same hour on the same weekday over the past weeks, over the median of that
hour over every past day (a quiet Sunday is expected quiet, though most days are busy).
Before that, a rise the same weekday a week ago (once known) did not show at least half
of is bounded by that day's minutes: a rise of the weekdays only is not forecast on a
Saturday. Past days are the same wall-clock minutes in the target's forecast time zone,
so a 09:00 rise stays at 09:00 across a DST change.

Minutes the store has no item for are read as no load: a target at rest that saw nothing
arrive writes none (each write is billed), so a missing minute is mostly an idle one. The
few that were not measured (a failed read, a container gone before writing its last
minute) read as idle too: one such minute of one day does not move a median of days.

Using it (:func:`pre_scale`) only ever adds workers to what the reactive policy wants:
when the forecast expects a *rise* over the lead — its highest rate before workers started
at the next tick could serve above what it expected over the last three minutes — the
target is sized with the policy's own model for that highest rate, scaled down where today
runs below the forecast (measured / expected, each plus one worker's rate, at least
``LEAST_TRUST``), and never for less than the measured rate. A rise that came early is
not added on top of itself; a rise from a quiet night's trickle (measured 0 of 0.02/s
expected) is planned for in full. Never below the reactive count, never above
``max_workers`` (the rails still apply), at most the policy's step a tick.

Stepping back: every pre-scale is checked ``CHECK_AFTER`` past its lead; if the measured
rate then rose by less than half the rise forecast, the forecast was wrong and stays off
for ``STEP_BACK_SECONDS``. Until ``forecast_min_days`` of history exist it stays off, and
the decision's reason says so.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .decision import Recommendation
from .load import MINUTE, LoadHistory, LoadMinute
from .memory import TargetMemory
from .view import TargetView

if TYPE_CHECKING:
    from ..config import Settings
    from .capacity import CapacityAgent

DAY = 86400
SPREAD_MINUTES = 1
"""Each past minute is read as the mean of itself and this many minutes either side."""
RECENT_MINUTES = 3
"""The forecast of the last minutes, which the measured rate is compared with."""
MIN_SAMPLES = 3
"""Past days (or weeks) a median needs: with three, one odd day cannot move it."""
HORIZON_SECONDS = 3600
"""A forecast covers this much beyond its lead; it is learnt again when it runs out."""
CHECK_AFTER = 120.0
"""How long past its lead a pre-scale waits before the measured rate must have risen (the
measured rate is smoothed over a few ticks)."""
MAX_CHECKS = 10
"""Pre-scales waiting to be judged that a target's memory keeps."""
STEP_BACK_SECONDS = 3600.0
"""How long a wrong forecast stays off."""
WORTH = 0.01
"""A rise below this many tasks a second is not worth a worker."""
RETRY_SECONDS = 600.0
"""After a failed read of the history, how long before the next try."""
REFRESH_PER_TICK = 2
"""Targets whose forecast is learnt again in one tick (the others wait their turn)."""
LEAST_TRUST = 0.5
"""The least share of a forecast level planned for, however far today runs below it."""


def days_back(at: int, days: int, zone: str = "UTC") -> int:
    """The instant that showed ``at``'s wall-clock time in ``zone`` ``days`` days earlier:
    a load that rises at 09:00 local time rose at 09:00 before a DST change too."""
    if zone == "UTC":
        return at - days * DAY
    tz = ZoneInfo(zone)
    wall = datetime.fromtimestamp(at, tz).replace(tzinfo=None) - timedelta(days=days)
    return int(wall.replace(tzinfo=tz).timestamp())


def learn(minutes: Mapping[int, float], start: int, count: int, max_days: int,
          earliest: int | None, zone: str = "UTC") -> dict[str, Any]:
    """The forecast of ``count`` minutes from ``start`` (an epoch minute), from past
    per-minute arrival rates (``minutes``: epoch minute → tasks a second) known since
    ``earliest``, days being ``zone``'s: ``{"start", "rates" (None where too few days are
    known), "days", "weekly"}``."""
    if earliest is None:
        return {"start": start, "rates": [], "days": 0.0, "weekly": False}
    days = max(0.0, (start - earliest) / DAY)

    def spread(at: int) -> float | None:
        if at - SPREAD_MINUTES * MINUTE < earliest:
            return None
        window = range(at - SPREAD_MINUTES * MINUTE, at + (SPREAD_MINUTES + 1) * MINUTE,
                       MINUTE)
        return sum(minutes.get(m, 0.0) for m in window) / len(window)

    lags = range(1, max_days + 1)
    rates: list[float | None] = []
    for m in range(start, start + count * MINUTE, MINUTE):
        seen = [v for v in (spread(days_back(m, k, zone)) for k in lags) if v is not None]
        rates.append(statistics.median(seen) if len(seen) >= MIN_SAMPLES else None)
    factor = _weekly_factor(minutes, start, count, max_days, earliest, zone)
    if factor is None and max_days >= 7:  # no weekly shape yet: a rise the same weekday
        # did not show a week ago is not forecast (Monday-to-Friday's, on a Saturday)
        week_ago = [spread(days_back(m, 7, zone))
                    for m in range(start, start + count * MINUTE, MINUTE)]
        if not _also_rose(rates, week_ago):
            rates = [r if r is None or w is None else min(r, w)
                     for r, w in zip(rates, week_ago, strict=True)]
    # Four decimals (a task every 10,000 s) keep the memory item small: ~0.5 KB an hour.
    rates = [round(r * (factor or 1.0), 4) if r is not None else None for r in rates]
    return {"start": start, "rates": rates, "days": round(days, 3),
            "weekly": factor is not None}


def _also_rose(rates: list[float | None], week_ago: list[float | None]) -> bool:
    """Whether the same weekday a week ago rose at least half as much as ``rates`` (from
    their first minutes to their highest) — True when it is not known, or no rise is."""
    def rise(values: list[float]) -> float:
        return max(values) - statistics.mean(values[:RECENT_MINUTES])

    if None in rates or None in week_ago:
        return True
    expected = rise([r for r in rates if r is not None])
    return expected <= WORTH or rise([w for w in week_ago if w is not None]) >= 0.5 * expected


def _weekly_factor(minutes: Mapping[int, float], start: int, count: int, max_days: int,
                   earliest: int, zone: str) -> float | None:
    """The same hours on the same weekday over every day's, or None with too few weeks."""
    def level(days: int) -> float | None:
        first = days_back(start, days, zone)
        if first < earliest:
            return None
        return sum(minutes.get(m, 0.0) for m in range(first, first + count * MINUTE,
                                                     MINUTE)) / count
    weekly = [v for v in (level(7 * j) for j in range(1, max_days // 7 + 1)) if v is not None]
    daily = [v for v in (level(k) for k in range(1, max_days + 1)) if v is not None]
    if len(weekly) < MIN_SAMPLES or len(daily) < MIN_SAMPLES:
        return None
    typical = statistics.median(daily)
    if typical <= 0:
        return None
    return min(50.0, max(0.02, statistics.median(weekly) / typical))


def read_and_learn(history: LoadHistory, deployment: str, target: str, now: float,
                   lead: float, max_days: int, zone: str = "UTC") -> dict[str, Any]:
    """Read what :func:`learn` needs from the store — the same hours and a bit of each
    past day of ``zone`` (``max_days`` small range reads, nothing of the future) — and
    learn the forecast from a few minutes back (to compare with what is measured) to the
    horizon."""
    start = int(now // MINUTE * MINUTE) - RECENT_MINUTES * MINUTE
    count = RECENT_MINUTES + int((HORIZON_SECONDS + lead) // MINUTE) + 2
    margin = SPREAD_MINUTES * MINUTE
    rates: dict[int, float] = {}
    earliest: int | None = None
    for k in range(1, max_days + 1):
        found = history.load_history(deployment, target,
                                     days_back(start, k, zone) - margin,
                                     days_back(start + count * MINUTE, k, zone) + margin)
        rates.update(_rates(found))
        if found:  # the oldest minute read: before it nothing is known, after it a
            # minute with no item had no load
            earliest = min(found[0].minute, earliest or found[0].minute)
    return learn(rates, start, count, max_days, earliest, zone)


def _rates(found: list[LoadMinute]) -> dict[int, float]:
    return {m.minute: m.arrival_rate for m in found if m.arrival_rate is not None}


def due(memory: TargetMemory, now: float, lead: float, tick: float) -> bool:
    """Whether the target's forecast must be learnt again: none yet, or it ends before the
    lead ahead of the next tick; not before a failed read's ``RETRY_SECONDS`` are over."""
    if memory.forecast_retry_at is not None and now < memory.forecast_retry_at:
        return False
    forecast = memory.forecast
    if not forecast:
        return True
    end = forecast["start"] + len(forecast["rates"]) * MINUTE
    if not forecast["rates"]:
        end = forecast["start"] + HORIZON_SECONDS  # too little history: ask again hourly
    return bool(now < forecast["start"] or now + tick + lead + MINUTE >= end)


def refresh(settings: Settings, memory: dict[str, TargetMemory], history: LoadHistory,
            now: float, deadline: float | None = None,
            clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Learn again the forecasts that ran out (in place), at most ``REFRESH_PER_TICK``
    targets a tick, the longest due first, none once ``clock()`` passes ``deadline``: a
    tick's reads stay few however many targets forecast (each is ``load_history_days``
    range reads). A target whose read fails keeps its last forecast (its rates run out,
    then it reacts only), is tried again no sooner than ``RETRY_SECONDS`` later, and does
    not stop the others. Returns what failed, one line a target."""
    due_now = []
    for target in settings.targets:
        kept = memory.get(target.name)
        if not target.forecast:
            if kept is not None:  # turned off: nothing of it left in the memory item
                kept.forecast, kept.forecast_checks = None, []
                kept.forecast_off_until = kept.forecast_retry_at = None
            continue
        kept = memory.setdefault(target.name, TargetMemory())
        if due(kept, now, target.forecast_lead_seconds, settings.tick_interval_seconds):
            ends = kept.forecast["start"] + len(kept.forecast["rates"]) * MINUTE \
                if kept.forecast else -math.inf
            due_now.append((ends, target))
    failed = []
    for _, target in sorted(due_now, key=lambda due_at: due_at[0])[:REFRESH_PER_TICK]:
        if deadline is not None and clock() >= deadline:
            break
        kept = memory[target.name]
        try:
            kept.forecast = read_and_learn(history, settings.deployment, target.name, now,
                                           target.forecast_lead_seconds,
                                           int(settings.load_history_days),
                                           target.forecast_zone)
            kept.forecast_retry_at = None
        except Exception as exc:  # it only ever adds workers: without it, the policy reacts
            kept.forecast_retry_at = now + RETRY_SECONDS
            failed.append(f"target {target.name}: forecast not learnt ({type(exc).__name__}: "
                          f"{exc}); reacting only, next try in {RETRY_SECONDS:.0f}s")
    return failed


def rate_at(forecast: Mapping[str, Any], at: float) -> float | None:
    """The forecast rate of the minute ``at`` falls in; None outside it or unknown."""
    index = int((at - forecast["start"]) // MINUTE)
    rates = forecast["rates"]
    return rates[index] if 0 <= index < len(rates) else None


def pre_scale(agent: CapacityAgent, view: TargetView,
              reactive: Recommendation) -> Recommendation:
    """The reactive recommendation, raised to what a forecast rise needs (see the module's
    docstring); the reason says when and why the forecast is off."""
    config, memory, now = view.config, view.memory, view.now
    if not config.forecast:
        return reactive
    forecast = memory.forecast
    days = forecast["days"] if forecast else 0.0
    if not forecast or days < config.forecast_min_days or not forecast["rates"]:
        return _note(reactive, f"forecast off: {days:.1f} of {config.forecast_min_days:g} "
                               "days of history")
    _check(memory, now)
    if memory.forecast_off_until is not None and now < memory.forecast_off_until:
        return _note(reactive, "forecast stepped back (a forecast rise did not come) for "
                               f"{memory.forecast_off_until - now:.0f}s more")
    lead = config.forecast_lead_seconds + view.tick_seconds
    recent = [rate_at(forecast, now - s * MINUTE) for s in range(1, RECENT_MINUTES + 1)]
    ahead = [rate_at(forecast, now + s) for s in [*range(0, int(lead), MINUTE), lead]]
    known = [r for r in ahead if r is not None]
    if None in recent or not known:
        return reactive
    expected_now = sum(r for r in recent if r is not None) / len(recent)
    rise = max(known) - expected_now
    measured = memory.arrival_rate or 0.0
    if rise <= WORTH or memory.service_rate is None:
        return reactive
    planned = max(measured, max(known) * _trust(measured, expected_now, memory.service_rate))
    if planned - measured <= WORTH:
        return reactive
    # Sized for the rate to come, beyond the visible work the reactive policy sizes for.
    needed = max(agent.workers_at(view, agent.goal, planned), view.running / view.concurrency)
    wanted = min(max(1, math.ceil(needed - 1e-9)), config.max_workers)
    if wanted <= reactive.desired:
        return reactive
    _to_check(memory, [round(now + lead + CHECK_AFTER), round(planned, 4), round(measured, 4)])
    reason = (f"{reactive.reason}; forecast: {max(known):.2f}/s expected within "
              f"{lead:.0f}s (now {measured:.2f}/s): {wanted} workers ready for it")
    if wanted > view.current:
        return agent.step_up(view, wanted, "forecast", reason)
    return Recommendation(wanted, "forecast", reason)


def _trust(measured: float, expected_now: float, worker_rate: float) -> float:
    """How much of the forecast level to plan for: today's rate over the forecast's for
    the last minutes, each plus one worker's rate (so a quiet night's trickle, measured 0
    of 0.02/s, is no reason to distrust a rise from it), between ``LEAST_TRUST`` and 1."""
    ratio = (measured + worker_rate) / (expected_now + worker_rate)
    return min(1.0, max(LEAST_TRUST, ratio))


def _to_check(memory: TargetMemory, check: list[float]) -> None:
    """Keep a pre-scale to judge: one a minute (the ticks between take the same rise), at
    most ``MAX_CHECKS``, the newest, so the memory item stays small."""
    checks = memory.forecast_checks
    if checks and check[0] - checks[-1][0] < MINUTE:
        return
    memory.forecast_checks = [*checks, check][-MAX_CHECKS:]


def _check(memory: TargetMemory, now: float) -> None:
    """Judge the pre-scales whose time came: a rise that did not come steps back."""
    measured = memory.arrival_rate or 0.0
    judged = [c for c in memory.forecast_checks if c[0] <= now]
    memory.forecast_checks = [c for c in memory.forecast_checks if c[0] > now]
    if any(measured - base < 0.5 * (planned - base) for _, planned, base in judged):
        memory.forecast_off_until = now + STEP_BACK_SECONDS
        memory.forecast_checks = []


def _note(recommendation: Recommendation, why: str) -> Recommendation:
    return replace(recommendation, reason=f"{recommendation.reason}; {why}")
