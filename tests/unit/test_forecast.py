"""The forecaster on synthetic periodic loads, learning only from the past, and the policy
pre-scaling ahead of a forecast rise (and stepping back when the rise does not come)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest

from celery_ondemand.config import Settings, settings_from_mapping
from celery_ondemand.decide import TargetMemory, decide
from celery_ondemand.decide.forecast import read_and_learn, refresh
from celery_ondemand.decide.load import LoadLog, LoadMinute
from celery_ondemand.simulate import SimConfig, arrivals_from, simulate
from celery_ondemand.simulate.ondemand import OnDemandPolicy
from celery_ondemand.simulate.traces import service_times
from tests.support.observations import observation, settings, worker

DAY, WEEK = 86400, 7 * 86400
NINE = 9 * 3600


def office(second: float) -> float:
    """A square wave: 4 tasks/s from 09:00 to 17:00, 0.4/s otherwise."""
    return 4.0 if NINE <= second % DAY < 17 * 3600 else 0.4


def history(rate: Callable[[int], float], days: int, now: int,
            noise: random.Random | None = None, target: str = "t") -> LoadLog:
    """``days`` of per-minute load before ``now``: Poisson counts if ``noise`` is given."""
    log = LoadLog()
    for minute in range(now - days * DAY, now, 60):
        mean = rate(minute) * 60
        arrivals = _poisson(noise, mean) if noise else mean
        log.add_load("d", {target: LoadMinute(minute, 60.0, arrivals, ticks=4)})
    return log


def _poisson(rng: random.Random, mean: float) -> float:
    """A normal approximation is close enough for means of tens."""
    return max(0.0, round(rng.gauss(mean, math.sqrt(mean))))


def learnt(log: LoadLog, now: int, max_days: int = 28) -> list[float]:
    """The forecast from ``now`` on (it begins three minutes back)."""
    forecast = read_and_learn(log, "d", "t", now, 60.0, max_days)
    assert forecast["start"] == now // 60 * 60 - 180
    return forecast["rates"][3:]


def test_it_learns_a_square_wave_ahead_of_its_rise() -> None:
    now = 10 * DAY + NINE - 30 * 60  # 08:30 on day 10
    rates = learnt(history(office, 10, now), now)
    assert rates[:29] == pytest.approx([0.4] * 29), "08:30-08:58: the night rate"
    assert rates[31:] == pytest.approx([4.0] * len(rates[31:])), "from 09:01 on: the day's"
    assert 0.4 < rates[29] < rates[30] < 4.0, "09:00 blurred over ±1 minute"


def test_it_learns_a_daily_sine_through_noise() -> None:
    def sine(second: float) -> float:
        return 3.0 + 2.0 * math.sin(2 * math.pi * second / DAY)

    for hour in (3, 9, 15, 21):
        now = 14 * DAY + hour * 3600
        rates = learnt(history(sine, 14, now, random.Random(hour)), now)
        truth = [sine(now + 60 * i) for i in range(len(rates))]
        errors = [abs(r - t) / t for r, t in zip(rates, truth, strict=True)]
        assert max(errors) < 0.12, f"at {hour}:00"
        assert sum(errors) / len(errors) < 0.04


def test_a_one_off_spike_is_not_forecast() -> None:
    def spiky(second: float) -> float:
        spike = 6 * DAY + 10 * 3600 <= second < 6 * DAY + 10.5 * 3600  # one day, 10:00
        return 40.0 if spike else 1.0

    now = 10 * DAY + 9 * 3600 + 45 * 60  # 09:45 on day 10
    assert learnt(history(spiky, 10, now), now) == pytest.approx([1.0] * 63)


def test_the_weekly_shape_scales_the_daily_one() -> None:
    """Busy weekdays, a quiet weekend: a weekend forecast is the weekend's level once
    three past weeks are known, the weekdays' before."""
    def week(second: float) -> float:
        return 0.5 if second % WEEK >= 5 * DAY else 4.0  # days 5 and 6 of each week

    saturday = 3 * WEEK + 5 * DAY + 12 * 3600
    assert learnt(history(week, 22, saturday), saturday) == pytest.approx([0.5] * 63)
    two_weeks = learnt(history(week, 14, saturday), saturday, max_days=14)
    assert two_weeks == pytest.approx([4.0] * 63), "two weeks: the daily level, no rise"


def test_a_weekday_rise_is_not_forecast_on_the_weekend_before_three_weeks() -> None:
    """Office hours Monday to Friday (days 5 and 6 of each week quiet), ten days known:
    the daily median rises at 09:00 on Saturday too, but last Saturday did not; Monday's
    rise, which last Monday showed, is forecast."""
    def weekdays(second: float) -> float:
        return 0.4 if second % WEEK >= 5 * DAY else office(second)

    saturday = 2 * WEEK + 5 * DAY + NINE - 30 * 60  # 08:30
    assert max(learnt(history(weekdays, 10, saturday), saturday)) == pytest.approx(0.4)
    monday = 2 * WEEK + NINE - 30 * 60
    rates = learnt(history(weekdays, 10, monday), monday)
    assert rates[:29] == pytest.approx([0.4] * 29) and rates[-1] == pytest.approx(4.0)


def test_nothing_of_the_future_is_read() -> None:
    now = 10 * DAY + NINE - 30 * 60
    log = history(office, 10, now)
    for minute in range(now, now + DAY, 60):  # the future says: a huge rise at 08:45
        log.add_load("d", {"t": LoadMinute(minute, 60, 1e4 if minute > now + 900 else 0)})
    assert max(learnt(log, now)[:29]) == pytest.approx(0.4)


def decided(memory: TargetMemory, now: float, **target: object) -> tuple[int, str, str]:
    config = settings(**{"worker_concurrency": 4, "max_workers": 12, "forecast": True,
                         **target})
    workers = [worker("w0", ["q"], active=2, processed=100)]
    decisions, _ = decide(observation({"q": (0, 2)}, workers), config, {"t": memory}, now,
                          current={"t": 1})
    return decisions[0].desired, decisions[0].rule, decisions[0].reason


def measured(forecast: dict[str, object] | None, rate: float = 0.4) -> TargetMemory:
    return TargetMemory(service_rate=0.2, arrival_rate=rate, observed_at=None,
                        forecast=forecast, last_tick=[15.0, 6, 6, 30.0])


def test_off_until_enough_history_and_the_reason_says_so() -> None:
    rising = {"start": -180, "rates": [0.4, 0.4, 0.4, 0.4, 4.0, 4.0], "days": 3.5,
              "weekly": False}
    desired, rule, reason = decided(measured(rising), 10.0)
    assert (desired, rule) == (1, "tolerance"), "the visible work needs no more"
    assert "forecast off: 3.5 of 7 days of history" in reason
    desired, rule, reason = decided(measured(rising), 10.0, forecast_min_days=3,
                                    scale_up_max_step=20)
    assert rule == "forecast" and desired == 12, "the rise: 4/s at 0.2/s a worker, max 12"
    assert "4.00/s expected" in reason


def test_a_forecast_rise_raises_never_lowers_and_steps_back_when_wrong() -> None:
    flat = {"start": -180, "rates": [2.0] * 10, "days": 9.0, "weekly": False}
    assert decided(measured(flat, rate=2.0), 10.0)[1] != "forecast", "no rise: reactive"
    rising = {"start": -180, "rates": [0.4, 0.4, 0.4, 0.4, 1.0, 1.0, 1.0, 1.0], "days": 9.0}
    memory = measured(rising)
    desired, rule, _ = decided(memory, 10.0)
    reactive, _, _ = decided(measured(None), 10.0, forecast=False)
    assert rule == "forecast" and desired > reactive
    # Three minutes on, the rate is what it was: the rise never came.
    config = settings(worker_concurrency=4, max_workers=12, forecast=True)
    workers = [worker("w0", ["q"], active=2, processed=100)]
    _, after = decide(observation({"q": (0, 2)}, workers), config, {"t": memory}, 10.0,
                      current={"t": 1})
    after["t"].arrival_rate, after["t"].service_rate = 0.4, 0.2
    decisions, later = decide(observation({"q": (0, 2)}, workers), config, after, 260.0,
                              current={"t": desired})
    assert decisions[0].rule != "forecast" and "forecast stepped back" in decisions[0].reason
    assert later["t"].forecast_off_until == pytest.approx(260.0 + 3600)


def test_in_the_simulator_workers_are_ready_before_the_rise() -> None:
    """The same square wave, eight days of it in the history, the ninth simulated from
    08:00: with the forecast, workers are serving when 09:00 comes and fewer tasks wait."""
    config = SimConfig(concurrency=4, startup_seconds=60, tick_seconds=15, wait_target=60,
                       max_workers=40)
    start = 8 * DAY + 8 * 3600
    def busier(second: float) -> float:
        return office(second) * 2.5  # 1/s at night, 10/s by day

    counts = [round(busier(start + s) * 5) if s % 5 == 0 else 0 for s in range(2 * 3600)]
    sampler, _ = service_times("exp:4")
    tasks = arrivals_from(counts, 1.0, sampler, 7)
    results, timelines = {}, {}
    for name, on in (("reactive", False), ("forecast", True)):
        log = history(busier, 8, start, target="sim")
        policy = OnDemandPolicy(config, "capacity", {"forecast": on}, history=log,
                                clock=start)
        result = simulate(tasks, policy, config, len(counts), keep_timeline=True,
                          measure_from=1800)
        results[name] = result
        timelines[name] = {t: n for t, _, _, n in result.timeline}
    rise = 3600  # 09:00
    assert timelines["forecast"][rise - 30] > timelines["reactive"][rise - 30]
    assert results["forecast"].percentile(0.99) < results["reactive"].percentile(0.99)
    assert results["forecast"].max_wait < results["reactive"].max_wait


def test_the_cwod_policy_refuses_a_forecast() -> None:
    from celery_ondemand.errors import ConfigError

    with pytest.raises(ConfigError, match=r"targets\[0\].forecast: the cwod policy"):
        settings(policy="cwod", forecast=True)


def test_a_rise_that_came_early_is_not_added_on_top_of_itself() -> None:
    """4/s measured while the forecast still expects 0.4/s before 4/s: the target is sized
    for 4/s (what the reactive policy sizes for), not for 4 + 3.6 = 7.6/s."""
    rising = {"start": -180, "rates": [0.4] * 4 + [4.0] * 6, "days": 9.0, "weekly": False}
    wide = {"max_workers": 40, "scale_up_max_step": 40}
    forecast, _, reason = decided(measured(rising, rate=4.0), 10.0, **wide)
    reactive, _, _ = decided(measured(None, rate=4.0), 10.0, forecast=False, **wide)
    assert forecast == reactive, reason
    ahead, rule, _ = decided(measured(rising, rate=0.4), 10.0, **wide)
    assert rule == "forecast" and ahead > reactive, "before it came, the rise is planned for"


def test_a_rise_from_a_quiet_night_is_planned_for() -> None:
    """A trickle of 0.02/s expected, nothing measured, 4/s coming: measured 0 of 0.02/s
    is no reason to distrust the rise."""
    rising = {"start": -180, "rates": [0.02] * 4 + [4.0] * 6, "days": 9.0, "weekly": False}
    wide = {"max_workers": 40, "scale_up_max_step": 40}
    desired, rule, reason = decided(measured(rising, rate=0.0), 10.0, **wide)
    trusted = {**rising, "rates": [0.4] * 4 + [4.0] * 6}
    in_full, _, _ = decided(measured(trusted, rate=0.4), 10.0, **wide)
    assert rule == "forecast" and desired >= 0.8 * in_full, reason


class Flaky(LoadLog):
    """A history whose reads of some targets fail (throttled), counting every read."""

    def __init__(self, failing: set[str]) -> None:
        super().__init__()
        self.failing, self.reads = failing, {}

    def load_history(self, deployment: str, target: str, since: float,
                     until: float) -> list[LoadMinute]:
        from celery_ondemand.errors import StateError

        self.reads[target] = self.reads.get(target, 0) + 1
        if target in self.failing:
            raise StateError("DynamoDB table t: query failed: throttled")
        return super().load_history(deployment, target, since, until)


def forecasting(*names: str, **top: object) -> Settings:
    return settings_from_mapping({"broker_url": "redis://test/0", **top, "targets": [
        {"name": n, "queues": [n], "scaler": "local", "command": "-", "forecast": True}
        for n in names]})


def test_a_failed_read_spares_the_other_targets_and_waits_ten_minutes() -> None:
    history = Flaky({"a"})
    memory: dict[str, TargetMemory] = {}
    failed = refresh(forecasting("a", "b"), memory, history, 10 * DAY)
    assert len(failed) == 1 and "target a" in failed[0] and "throttled" in failed[0]
    assert memory["b"].forecast is not None, "b learnt its forecast all the same"
    reads = history.reads["a"]
    assert refresh(forecasting("a", "b"), memory, history, 10 * DAY + 15) == []
    assert history.reads["a"] == reads, "no new try on the next tick"
    history.failing.clear()
    assert refresh(forecasting("a", "b"), memory, history, 10 * DAY + 601) == []
    assert memory["a"].forecast is not None and memory["a"].forecast_retry_at is None


def test_a_tick_learns_a_few_forecasts_within_its_budget() -> None:
    history = Flaky(set())
    config, memory = forecasting("a", "b", "c", "d"), {}
    refresh(config, memory, history, 10 * DAY)
    assert sorted(history.reads) == ["a", "b"], "two a tick"
    refresh(config, memory, history, 10 * DAY + 15)
    assert sorted(history.reads) == ["a", "b", "c", "d"], "the others the next"
    for kept in memory.values():
        kept.forecast = None
    refresh(config, memory, history, 10 * DAY + 30, deadline=5.0, clock=lambda: 6.0)
    assert all(kept.forecast is None for kept in memory.values()), "past the budget: none"


def test_turning_the_forecast_off_clears_it_from_the_memory() -> None:
    memory = {"a": TargetMemory(forecast={"start": 0, "rates": [1.0], "days": 9.0},
                                forecast_checks=[[1.0, 2.0, 0.5]])}
    refresh(settings(name="a", queues=["a"], forecast=False), memory, LoadLog(), 10 * DAY)
    assert memory["a"].forecast is None and memory["a"].forecast_checks == []


def test_office_hours_stay_at_nine_local_across_the_spring_change() -> None:
    """Berlin office hours (4/s from 09:00 to 17:00 local): four days after the clocks
    went forward on 29 March 2026, six days before it. Comparing UTC days, the median
    would put 09:00 an hour late (10:00 CEST) for days; the forecaster compares local days."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")

    def office_in_berlin(second: float) -> float:
        local = datetime.fromtimestamp(second, berlin)
        return 4.0 if 9 <= local.hour < 17 else 0.4

    now = int(datetime(2026, 4, 2, 8, 30, tzinfo=berlin).timestamp())
    log = history(office_in_berlin, 10, now)
    rates = read_and_learn(log, "d", "t", now, 60.0, 10, "Europe/Berlin")["rates"][3:]
    assert rates[:29] == pytest.approx([0.4] * 29), "08:30-08:58: the night rate"
    assert rates[31:] == pytest.approx([4.0] * len(rates[31:])), "from 09:01 on: the day's"
    in_utc = read_and_learn(log, "d", "t", now, 60.0, 10)["rates"][3:]
    assert in_utc[31:60] == pytest.approx([0.4] * 29), "UTC days: an hour late"


def test_the_forecast_zone_defaults_to_the_schedules() -> None:
    scheduled = settings(forecast=True, schedules=[{
        "days": "mon-fri", "from": "08:00", "to": "18:00", "timezone": "Europe/Paris",
        "min_workers": 1}])
    assert scheduled.targets[0].forecast_zone == "Europe/Paris"
    assert settings(forecast=True).targets[0].forecast_zone == "UTC"
    assert settings(forecast_timezone="Asia/Tokyo").targets[0].forecast_zone == "Asia/Tokyo"
    from celery_ondemand import ConfigError
    with pytest.raises(ConfigError, match=r"^targets\[0\]\.forecast_timezone: unknown"):
        settings(forecast_timezone="Mars/Olympus")


def test_the_lead_counts_the_configured_tick_not_the_last_ticks_length() -> None:
    """After an outage the last tick measured minutes: the lead is still lead + one tick
    (a rise 10 minutes away is not pre-scaled for yet)."""
    rates = [0.4] * 13 + [4.0] * 6  # the rise 10 minutes from now
    memory = measured({"start": -180, "rates": rates, "days": 9.0, "weekly": False})
    memory.observed_at, memory.work, memory.processed = 10.0 - 900, 2, {"w0": 100}
    memory.running = 2  # last read 15 minutes ago: this tick measures 900 s
    assert decided(memory, 10.0, scale_up_max_step=20)[1] != "forecast"
    memory.forecast = {"start": -180, "rates": [0.4] * 4 + [4.0] * 6, "days": 9.0}
    assert decided(memory, 10.0, scale_up_max_step=20)[1] == "forecast", "within the lead"


def test_the_pre_scales_to_judge_stay_few_and_rounded() -> None:
    """A pre-scale every tick for ten minutes keeps one check a minute, rounded."""
    rising = {"start": -180, "rates": [0.4] * 4 + [4.0] * 20, "days": 9.0, "weekly": False}
    config = settings(worker_concurrency=4, max_workers=12, forecast=True,
                      forecast_lead_seconds=1200)
    workers = [worker("w0", ["q"], active=2, processed=100)]
    memory = {"t": measured(rising)}
    for now in range(10, 610, 15):
        memory["t"].forecast = rising
        memory["t"].arrival_rate, memory["t"].service_rate = 1 / 3, 0.2
        _, memory = decide(observation({"q": (0, 2)}, workers), config, memory, float(now),
                           current={"t": 1})
    checks = memory["t"].forecast_checks
    assert 1 < len(checks) <= 10
    assert all(b[0] - a[0] >= 60 for a, b in itertools.pairwise(checks))
    assert all(c == [round(c[0]), round(c[1], 4), round(c[2], 4)] for c in checks)
