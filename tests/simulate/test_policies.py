"""Each baseline's documented rules, our own policy through the tick's decision code, and
the comparison the command line prints."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from celery_ondemand.simulate import SimConfig, arrivals_from, compare, service_times, simulate
from celery_ondemand.simulate.baselines import JudoscalePolicy, KedaPolicy, TargetTrackingPolicy
from celery_ondemand.simulate.engine import SimWorker, Snapshot
from celery_ondemand.simulate.ondemand import OnDemandPolicy


def snap(now: int, ready: int, current: int, running: int = 0,
         oldest: float | None = None) -> Snapshot:
    workers = [SimWorker(i, 0, 0, ends=[1.0] * running) for i in range(current)]
    return Snapshot(now, ready, oldest, workers, current)


def test_keda_rules() -> None:
    keda = KedaPolicy(SimConfig(concurrency=2))
    assert keda.desired(snap(0, 5, 0)) == 1, "activation: 0 → 1 on any message"
    assert keda.desired(snap(15, 50, 1)) == 1, "polls every 30 s: keeps its last answer"
    assert keda.desired(snap(30, 50, 1)) == 5, "scale-up limit: max(4 pods, 100 %)"
    assert keda.desired(snap(60, 50, 5)) == 10
    assert keda.desired(snap(90, 2, 10)) == 10, "down only to the 300 s window's highest"
    assert keda.desired(snap(420, 2, 10)) == 1, "the window has passed"


def test_judoscale_rules() -> None:
    judo = JudoscalePolicy(SimConfig(wait_target=60, startup_seconds=60), jump=2,
                           downscale_delay=600)
    assert judo.upscale_above == 15, "the range's top: a quarter of the wait target"
    assert judo.desired(snap(0, 3, 0, oldest=1)) == 2, "from zero at once, by a jump"
    assert judo.desired(snap(15, 9, 2, oldest=20)) == 2, "one upscale per startup"
    assert judo.desired(snap(60, 9, 2, oldest=20)) == 4, "queue time above the range"
    assert judo.desired(snap(75, 2, 4, oldest=10)) == 4, "within the range: holds"
    for now in range(90, 690, 15):
        assert judo.desired(snap(now, 0, 4, running=1)) == 4, \
            "down only after ten minutes below the range"
    assert judo.desired(snap(690, 0, 4, running=1)) == 3, "then one at a time"
    assert judo.desired(snap(705, 0, 3, running=1)) == 3, "once per downscale delay"
    assert judo.desired(snap(1290, 0, 3, running=1)) == 2
    assert judo.desired(snap(1305, 0, 2, oldest=30)) == 4, "a downscale delays no upscale"


def test_target_tracking_rules() -> None:
    tt = TargetTrackingPolicy(SimConfig(concurrency=1, wait_target=60), mean_service=10)
    assert tt.target == 6, "backlog per instance = wait target / mean service time"
    assert tt.desired(snap(0, 3, 0)) == 1
    for minute in (1, 2):
        assert tt.desired(snap(60 * minute, 30, 1)) == 1, "needs 3 minutes above target"
    assert tt.desired(snap(180, 30, 1)) == 5, "ceil(1 * 30 / 6)"


def test_our_policy_meets_its_target_on_a_steady_load_of_short_tasks() -> None:
    rng = random.Random(3)
    counts = [rng.choice([1, 2, 3, 4]) for _ in range(3600)]
    config = SimConfig(concurrency=4, startup_seconds=30, tick_seconds=15, wait_target=60)
    comparison = compare(counts, config, "exp:0.5", 1.0, policies=["capacity", "oracle"],
                         warmup=600)
    ours = comparison.by_policy()["capacity"]
    assert ours.meets(config.wait_target), ours.percentile(0.95)
    assert ours.worker_minutes >= comparison.bound_minutes


@pytest.mark.parametrize(("tick", "phase"), [(15, 0), (15, 1), (15, 7), (15, 14), (60, 0),
                                            (60, 1), (60, 30), (60, 59)])
def test_a_cron_window_opened_ahead_meets_a_periodic_fan_out_that_reacting_misses(
        tick: int, phase: int) -> None:
    """400 tasks of 20 s fanned out every 4 minutes, on minutes 0, 4, 8... (a beat
    crontab): reacting, the fleet is ready a startup after each burst and the burst's tasks
    wait past the target. A window opening the startup plus one tick before each fan-out
    and closing a minute after it has the workers ready however the ticks fall against the
    minute: they fall ``phase`` seconds past it (60 s is an idle deployment's tick)."""
    counts = [80 if (second + phase) % 240 < 5 else 0 for second in range(5400)]
    config = SimConfig(concurrency=4, startup_seconds=60, tick_seconds=tick, wait_target=60)
    sampler, _ = service_times("exp:20")
    tasks = arrivals_from(counts, 1.0, sampler, 7)
    reacting = simulate(tasks, OnDemandPolicy(config, clock=phase), config, len(counts),
                        measure_from=1200)
    window = {"cron": "2-59/4 * * * *", "duration_minutes": 3, "timezone": "UTC",
              "min_workers": 25}
    ready = simulate(tasks, OnDemandPolicy(config, target={"schedules": [window],
                                                           "max_workers": 50},
                                           clock=phase),
                     config, len(counts), measure_from=1200)
    assert not reacting.meets(config.wait_target), reacting.percentile(0.95)
    assert ready.meets(config.wait_target), ready.percentile(0.95)


def test_the_command_line_compares_every_policy_with_the_oracle(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    trace.write_text(" ".join(str(n) for n in [0, 3, 1, 0, 2] * 240))
    command = [sys.executable, "-m", "celery_ondemand.cli", "simulate", "--trace", str(trace),
               "--service-time", "fixed:0.5", "--concurrency", "2", "--startup", "20",
               "--warmup", "600", "--json"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(out.stdout)
    assert [p["policy"] for p in report["policies"]][:4] == [
        "capacity", "cwod", "keda", "aws-target-tracking"]
    assert report["policies"][-1]["policy"] == report["oracle"]
    assert report["oracle"] in {f"oracle ({name})" for name in report["plans"]}
    assert report["busy_bound_minutes"] == 6 * 120 * 0.5 / 2 / 60, \
        "6 tasks of 0.5 s per 5 s, after the 600 s warm-up"


def test_the_command_line_bills_a_minimum_per_start_when_asked(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    trace.write_text(" ".join(str(n) for n in [0, 3, 1, 0, 2] * 240))
    command = [sys.executable, "-m", "celery_ondemand.cli", "simulate", "--trace", str(trace),
               "--service-time", "fixed:0.5", "--concurrency", "2", "--startup", "20",
               "--warmup", "600", "--json", "--policy", "cwod", "--policy", "capacity"]
    rows = {}
    for minimum in ("0", "60"):
        out = subprocess.run([*command, "--minimum-billing", minimum], capture_output=True,
                             text=True, timeout=120, check=True)
        rows[minimum] = {p["policy"]: p for p in json.loads(out.stdout)["policies"]}
    by_second, at_least_a_minute = rows["0"]["cwod"], rows["60"]["cwod"]
    assert by_second["started"] == at_least_a_minute["started"] > 0, "the same decisions"
    assert by_second["worker_minutes"] < at_least_a_minute["worker_minutes"], \
        "some of cwod's workers stop within their first minute: a minimum bills more"
    assert at_least_a_minute["worker_minutes"] >= at_least_a_minute["started"], \
        "every worker started is billed a minute at least"
    refused = subprocess.run([*command, "--minimum-billing", "-1"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0 and "--minimum-billing" in refused.stderr
