"""Schedules: windows read on their zone's wall clock (daylight saving changes in both
directions), validated with their path, and the rule that wins in a decision."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from celery_ondemand.config import settings_from_mapping
from celery_ondemand.decide import TargetMemory, decide
from celery_ondemand.errors import ConfigError
from celery_ondemand.schedules import Window, bounds, parse
from tests.support.observations import observation


def at(text: str) -> float:
    """Seconds since the epoch of a UTC time ``YYYY-MM-DD HH:MM``."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()


def window(**raw: Any) -> Window:
    return parse([{"timezone": "Europe/Paris", "min_workers": 4, **raw}], "s", 10)[0]


OFFICE = {"days": "mon-fri", "from": "08:00", "to": "18:00"}


@pytest.mark.parametrize("form", [OFFICE, {"cron": "0 8 * * mon-fri", "duration_minutes": 600}])
@pytest.mark.parametrize("utc, is_open, why", [
    ("2026-03-27 07:15", True, "Friday 08:15 CET (+1)"),
    ("2026-03-27 06:45", False, "Friday 07:45 CET"),
    ("2026-03-30 06:15", True, "Monday after spring forward: 08:15 CEST (+2); +1 would say 07:15"),
    ("2026-03-30 05:45", False, "07:45 CEST"),
    ("2026-03-30 16:15", False, "18:15 CEST; +1 would say 17:15, still open"),
    ("2026-10-26 06:30", False, "Monday after fall back: 07:30 CET; +2 would say 08:30"),
    ("2026-10-26 07:05", True, "08:05 CET"),
    ("2026-10-26 16:55", True, "17:55 CET; +2 would say 18:55, closed"),
    ("2026-03-28 09:00", False, "a Saturday"),
])
def test_office_hours_keep_their_local_times_across_daylight_saving(
        form: dict[str, Any], utc: str, is_open: bool, why: str) -> None:
    assert window(**form).is_open(at(utc)) is is_open, why


def test_the_repeated_hour_of_a_fall_back_is_inside_a_window_that_covers_it_twice() -> None:
    night = window(days="daily", **{"from": "02:00", "to": "03:00"})
    assert night.is_open(at("2026-10-25 00:30")), "02:30 CEST, the first time"
    assert night.is_open(at("2026-10-25 01:30")), "02:30 CET, the second time"
    assert not night.is_open(at("2026-10-25 02:30")), "03:30 CET"


def test_the_skipped_hour_of_a_spring_forward_never_opens_a_window_inside_it() -> None:
    skipped = window(days="daily", **{"from": "02:15", "to": "02:45"})
    day = at("2026-03-29 00:00")
    assert not any(skipped.is_open(day + minute * 60) for minute in range(24 * 60))
    assert skipped.is_open(at("2026-03-30 00:30")), "02:30 CEST the next day"


def test_a_range_past_midnight_runs_into_the_next_day() -> None:
    batch = window(days="fri", **{"from": "22:00", "to": "02:00"}, timezone="UTC")
    assert batch.is_open(at("2026-11-27 23:00"))  # Friday
    assert batch.is_open(at("2026-11-28 01:30"))  # Saturday morning, Friday's window
    assert not batch.is_open(at("2026-11-28 22:30"))  # Saturday evening
    assert not batch.is_open(at("2026-11-27 01:30"))  # Friday morning: Thursday's, none


def test_open_windows_raise_the_floor_and_lower_the_ceiling_within_the_targets_own() -> None:
    floor = window(days="daily", **{"from": "00:00", "to": "23:59"}, min_workers=4)
    cap = parse([{"timezone": "UTC", "days": "daily", "from": "00:00", "to": "23:59",
                  "max_workers": 6}], "s", 10)[0]
    closed = window(days="sat", **{"from": "00:00", "to": "00:01"}, min_workers=9)
    now = at("2026-11-25 12:00")  # a Wednesday
    assert bounds([floor, cap, closed], now, 1, 10)[:2] == (4, 6)
    assert bounds([floor], now, 5, 10)[:2] == (5, 10), "never below the target's own floor"
    assert bounds([cap], now, 8, 10)[:2] == (6, 6), "a ceiling wins over a floor"


@pytest.mark.parametrize("raw, path", [
    ({"days": "mon-fri", "from": "08:00", "to": "18:00"}, "s[0].timezone"),
    ({**OFFICE, "timezone": "Mars/Olympus"}, "s[0].timezone"),
    ({**OFFICE, "timezone": "UTC", "days": "mon-fry"}, "s[0].days"),
    ({**OFFICE, "timezone": "UTC", "from": "8am"}, "s[0].from"),
    ({**OFFICE, "timezone": "UTC", "max_workers": 2, "min_workers": 3}, "s[0].max_workers"),
    ({"timezone": "UTC", "cron": "0 8 * *", "duration_minutes": 60}, "s[0].cron"),
    ({"timezone": "UTC", "cron": "0 8 * * *"}, "s[0].duration_minutes"),
    ({**OFFICE, "timezone": "UTC", "cron": "0 8 * * *", "duration_minutes": 60}, "s[0]"),
    ({**OFFICE, "timezone": "UTC", "min_workers": 11}, "s[0].min_workers"),
    ({**OFFICE, "timezone": "UTC", "floor": 3}, "s[0].floor"),
])
def test_a_bad_window_is_refused_naming_its_path(raw: dict[str, Any], path: str) -> None:
    raw = {"min_workers": 1, **raw}
    with pytest.raises(ConfigError, match="^" + re.escape(path)):
        parse([raw], "s", 10)


def test_the_config_reads_schedules_per_target_and_names_their_path() -> None:
    with pytest.raises(ConfigError, match=r"targets\[0\]\.schedules\[0\]\.days"):
        settings_from_mapping({"broker_url": "redis://h", "targets": [{
            "name": "t", "queues": ["q"], "scaler": "local", "command": "x",
            "schedules": [{"timezone": "UTC", "days": "someday", "from": "08:00",
                           "to": "09:00", "min_workers": 1}]}]})


def test_a_schedule_floor_is_the_rule_that_wins_and_the_decision_says_which() -> None:
    settings = settings_from_mapping({"broker_url": "redis://h", "targets": [{
        "name": "t", "queues": ["q"], "scaler": "local", "command": "x", "max_workers": 10,
        "scale_down_delay_seconds": 0,
        "schedules": [{"timezone": "Europe/Paris", **OFFICE, "min_workers": 4},
                      {"timezone": "Europe/Paris", "days": "sat,sun", "from": "00:00",
                       "to": "23:59", "max_workers": 1}]}]})
    empty = observation({"q": (0, 0)})
    monday_9 = at("2026-11-30 08:00")  # 09:00 CET
    decisions, _ = decide(empty, settings, {"t": TargetMemory(idle_since=0.0)}, monday_9,
                          current={"t": 0})
    assert (decisions[0].desired, decisions[0].rule) == (4, "schedule")
    assert "mon,tue,wed,thu,fri 08:00-18:00 Europe/Paris: at least 4" in decisions[0].reason
    monday_20 = at("2026-11-30 19:00")
    decisions, _ = decide(empty, settings, {"t": TargetMemory(idle_since=0.0)}, monday_20,
                          current={"t": 4})
    assert decisions[0].desired == 0 and decisions[0].rule != "schedule"
    busy = observation({"q": (40, 0)})
    saturday = at("2026-11-28 12:00")
    decisions, _ = decide(busy, settings, {}, saturday, current={"t": 1})
    assert (decisions[0].desired, decisions[0].rule) == (1, "schedule"), "the weekend cap"


def test_unquoted_times_in_a_yaml_config_are_times_not_base_60_numbers() -> None:
    """YAML 1.1 (PyYAML) reads ``18:00`` as the integer 1080 and ``9:30`` as 570: a config
    written as README's example, without the quotes, would fail to load and freeze every
    target. Numbers elsewhere read as before."""
    from celery_ondemand.config import parse_settings

    settings = parse_settings("""
broker_url: redis://h
targets:
  - name: t
    queues: [q]
    scaler: local
    command: x
    scale_down_delay_seconds: 1_200
    schedules:
      - {days: mon-fri, from: 9:30, to: 18:00, timezone: Europe/Paris, min_workers: 4}
""")
    target = settings.targets[0]
    assert target.scale_down_delay_seconds == 1200
    def floor_at(utc: str) -> int:
        return bounds(target.schedules, at(utc), 0, 10)[0]

    assert floor_at("2026-03-27 08:15") == 0, "09:15 CET, a Friday: not yet open"
    assert floor_at("2026-03-27 08:45") == 4, "09:45 CET: open"
    assert floor_at("2026-03-27 16:55") == 4, "17:55 CET: open"
    assert floor_at("2026-03-27 17:15") == 0, "18:15 CET: closed"
