"""Schedules: time windows in which a target keeps a floor (and optionally a ceiling).

A window is either a weekly range of wall-clock times (``days: mon-fri``, ``from: "08:00"``,
``to: "18:00"``) or a cron expression that opens it and how long it stays open
(``cron: "0 8 * * mon-fri"``, ``duration_minutes: 600``), always in a named time zone.
Times are read on the zone's wall clock, so a window keeps its local hours across daylight
saving changes: on the day clocks go forward the skipped hour never comes (a window inside
it does not open that day), and on the day they go back the repeated hour is inside a
window that covers it both times. A range whose ``to`` is not after its ``from`` runs past
midnight into the next day.

While windows are open, a target's bounds are its own ``min_workers``/``max_workers`` raised
to the highest open floor and lowered to the lowest open ceiling; a floor never lifts the
count above the target's own ``max_workers``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import TargetConfig

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
KEYS = ("days", "from", "to", "cron", "duration_minutes", "timezone", "min_workers",
        "max_workers")


@dataclass(frozen=True)
class Window:
    """One window: when it is open, and the bounds it sets."""

    timezone: str
    days: frozenset[int] = frozenset()
    """Weekdays it opens on (0 is Monday), for a range."""
    start: time | None = None
    end: time | None = None
    cron: str | None = None
    duration_minutes: float = 0.0
    min_workers: int | None = None
    max_workers: int | None = None

    def is_open(self, now: float) -> bool:
        """Whether the window is open at ``now`` (seconds since the epoch)."""
        local = datetime.fromtimestamp(now, UTC).astimezone(ZoneInfo(self.timezone))
        if self.cron is not None:
            return self._cron_open(local)
        assert self.start is not None and self.end is not None
        wall = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= wall < self.end
        # past midnight: open from ``start`` on its day, and until ``end`` the day after
        return (local.weekday() in self.days and wall >= self.start) or (
            (local.weekday() - 1) % 7 in self.days and wall < self.end)

    def _cron_open(self, local: datetime) -> bool:
        """Open if the cron expression matched a wall-clock minute within the duration."""
        spec = _crontab(str(self.cron))
        minute = local.replace(second=0, microsecond=0)
        for back in range(math.ceil(self.duration_minutes)):
            at = (minute - timedelta(minutes=back)) if back else minute
            wall = at.replace(tzinfo=None)  # wall-clock minutes, as cron reads them
            if (wall.minute in spec.minute and wall.hour in spec.hour
                    and wall.day in spec.day_of_month and wall.month in spec.month_of_year
                    and (wall.weekday() + 1) % 7 in spec.day_of_week):
                return True
        return False

    def describe(self) -> str:
        bounds = ", ".join(f"{name} {value}" for name, value in (
            ("at least", self.min_workers), ("at most", self.max_workers)) if value is not None)
        if self.cron is not None:
            when = f"cron {self.cron!r} for {self.duration_minutes:g} min"
        else:
            days = ",".join(DAYS[d] for d in sorted(self.days))
            when = f"{days} {self.start:%H:%M}-{self.end:%H:%M}"
        return f"schedule {when} {self.timezone}: {bounds}"


def bounds(windows: Iterable[Window], now: float, min_workers: int,
           max_workers: int) -> tuple[int, int, list[Window]]:
    """The bounds the open windows set over the target's own, and those windows."""
    open_now = [w for w in windows if w.is_open(now)]
    floor = max([min_workers, *(w.min_workers for w in open_now if w.min_workers is not None)])
    ceiling = min([max_workers, *(w.max_workers for w in open_now
                                  if w.max_workers is not None)])
    return min(floor, ceiling), ceiling, open_now


def floor(target: TargetConfig, now: float) -> int:
    """A target's ``min_workers`` at ``now``, raised by its open windows."""
    return bounds(target.schedules, now, target.min_workers, target.max_workers)[0]


def parse(raw: Any, path: str, target_max: int) -> tuple[Window, ...]:
    """A target's ``schedules``: a list of windows, every error naming its path."""
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: must be a list of windows")
    return tuple(_window(item, f"{path}[{i}]", target_max) for i, item in enumerate(raw))


def check_zone(zone: str, path: str) -> None:
    """An IANA time zone name zoneinfo knows, or a ConfigError naming ``path``."""
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{path}: unknown time zone {zone!r}") from exc


def _window(raw: Any, path: str, target_max: int) -> Window:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: must be a mapping, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown setting; known: {', '.join(KEYS)}")
    zone = raw.get("timezone")
    if not isinstance(zone, str):
        raise ConfigError(f"{path}.timezone: required, an IANA name such as Europe/Paris")
    check_zone(zone, f"{path}.timezone")
    low, high = (_count(raw.get(k), f"{path}.{k}") for k in ("min_workers", "max_workers"))
    if low is None and high is None:
        raise ConfigError(f"{path}: sets neither min_workers nor max_workers")
    if low is not None and high is not None and low > high:
        raise ConfigError(f"{path}.max_workers: must be ≥ min_workers ({low}), got {high}")
    if low is not None and low > target_max:
        raise ConfigError(f"{path}.min_workers: above the target's max_workers "
                          f"({target_max}), got {low}")
    if "cron" in raw:
        if any(k in raw for k in ("days", "from", "to")):
            raise ConfigError(f"{path}: give cron with duration_minutes, or days/from/to")
        duration = raw.get("duration_minutes")
        if isinstance(duration, bool) or not isinstance(duration, int | float) \
                or not 0 < duration <= 7 * 24 * 60:
            raise ConfigError(f"{path}.duration_minutes: required with cron, a number of "
                              f"minutes up to a week, got {duration!r}")
        try:
            _crontab(str(raw["cron"]))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}.cron: not a cron expression (minute hour "
                              f"day-of-month month day-of-week): {exc}") from exc
        return Window(zone, cron=str(raw["cron"]), duration_minutes=float(duration),
                      min_workers=low, max_workers=high)
    for key in ("days", "from", "to"):
        if key not in raw:
            raise ConfigError(f"{path}.{key}: required (or give cron and duration_minutes)")
    return Window(zone, days=_days(raw["days"], f"{path}.days"),
                  start=_clock(raw["from"], f"{path}.from"),
                  end=_clock(raw["to"], f"{path}.to"), min_workers=low, max_workers=high)


def _count(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{path}: must be a whole number ≥ 0, got {value!r}")
    return value


def _days(value: Any, path: str) -> frozenset[int]:
    """``mon-fri``, ``sat,sun``, ``[mon, wed]`` or ``daily``."""
    parts = value if isinstance(value, list) else str(value).split(",")
    found: set[int] = set()
    for part in (str(p).strip().lower() for p in parts):
        if part in ("daily", "*"):
            found |= set(range(7))
            continue
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ConfigError(f"{path}: unknown day {part!r}; days are {', '.join(DAYS)}, "
                              "ranges such as mon-fri, or daily")
        a, b = DAYS.index(first), DAYS.index(last or first)
        found |= {(a + i) % 7 for i in range((b - a) % 7 + 1)}
    if not found:
        raise ConfigError(f"{path}: names no day")
    return frozenset(found)


def _clock(value: Any, path: str) -> time:
    try:
        hours, minutes = str(value).split(":")
        return time(int(hours), int(minutes))
    except ValueError as exc:
        raise ConfigError(f"{path}: must be a wall-clock time HH:MM, got {value!r}") from exc


@lru_cache(maxsize=128)
def _crontab(expression: str) -> Any:
    """Celery's own crontab parser, over the five fields of a cron expression."""
    from celery.schedules import crontab

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"five fields expected, got {len(fields)}")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                   month_of_year=month_of_year, day_of_week=day_of_week)
