"""``make bench`` (policies): our policy, its peers and the oracle over random windows of
both shared traces.

Four cases: short tasks (fixed 2 s and exponential 2 s) on Twitter 2021 scaled by 0.05
(a fleet of one to three workers), long tasks (exponential 20 s) on NASA 1995 scaled by 10
and on Twitter scaled by 0.05 (tens of workers). 4 slots per worker, 60 s startup, 15 s
ticks, 60 s wait target. Each case runs WINDOWS windows of six hours picked at random each
run (the seed is printed; BENCH_SEED=N repeats a run), each after half an hour of warm-up
that is neither billed nor counted. The oracle is the cheapest clairvoyant plan on time;
``fixed/or`` is the cheapest constant fleet meeting the target at p95 (chosen knowing the
window, but blind to when in it the load comes): how much of the oracle's edge is foresight.
``judo/or`` is Judoscale at its best for the window: the cheapest of 48 settings
(``JUDOSCALE_SETTINGS``: upscale jumps, queue-time ranges, downscale delays) meeting the
target, chosen knowing the window, as a user tuning it on their own traffic would approach.

Goals for ``capacity``, on every window: p95 wait within the target; at most 1.10x the
oracle's worker-minutes; at most 2x its scale actions; fewer worker-minutes than every
baseline that also meets the target.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from celery_ondemand.config import TargetConfig
from celery_ondemand.decide import capacity, engine
from celery_ondemand.decide.capacity import CapacityAgent
from celery_ondemand.decide.view import TargetView
from celery_ondemand.simulate import SimConfig, arrivals_from, compare, read_counts, simulate
from celery_ondemand.simulate.baselines import JudoscalePolicy
from celery_ondemand.simulate.engine import SimResult, Snapshot, Task, busy_bound_minutes
from celery_ondemand.simulate.ondemand import OnDemandPolicy
from celery_ondemand.simulate.planners import oracle_of, plan_all, smallest
from celery_ondemand.simulate.traces import service_times

TRACES = Path(os.environ.get("BENCH_TRACES") or
              Path(__file__).resolve().parents[2].parent / "shared" / "traces")
"""shared/traces beside the project, or BENCH_TRACES (a worktree elsewhere)."""
BASELINES = ["cwod", "keda", "aws-target-tracking", "judoscale"]
JUDOSCALE_SETTINGS = [(jump, delay, top, bottom) for jump in (1, 2, 4, 8)
                      for delay in (600.0, 120.0) for top in (0.125, 0.25, 0.5)
                      for bottom in (1.0, 15.0)]
"""Judoscale settings tried for ``judo/or``: (upscale jump, downscale delay, the range's top
as a share of the wait target, its bottom in seconds)."""
GOAL_RATIO, GOAL_ACTIONS = 1.10, 2.0


@dataclass(frozen=True)
class Case:
    title: str
    trace: str
    service: str
    scale: float


CASES = [
    Case("short: Twitter x0.05, fixed:2", "twitter-per-second.tbz2", "fixed:2", 0.05),
    Case("short: Twitter x0.05, exp:2", "twitter-per-second.tbz2", "exp:2", 0.05),
    Case("long: NASA x10, exp:20", "nasa-1995-per-second.tbz2", "exp:20", 10.0),
    Case("long: Twitter x0.05, exp:20", "twitter-per-second.tbz2", "exp:20", 0.05),
]


@dataclass
class Window:
    start: int
    bound: float
    oracle: float
    planner: str
    ratio: float
    p95: float
    actions: float
    beaten: bool
    baselines: str
    static: float
    judoscale: float


class Constant:
    """A fixed fleet: the reference without foresight of when the load comes."""

    name = "constant"

    def __init__(self, count: int) -> None:
        self.count = count

    def desired(self, snapshot: Snapshot) -> int:
        return self.count


def cheapest_constant(tasks: list[Task], config: SimConfig, horizon: int,
                      warmup: int) -> float:
    """Worker-minutes of the smallest constant fleet whose p95 wait is within the target
    (p95 only falls as workers are added, so bisect)."""
    results = {}

    def meets(count: int) -> bool:
        results[count] = simulate(tasks, Constant(count), config, horizon,
                                  measure_from=warmup)
        return results[count].meets(config.wait_target)

    floor = int(sum(s for a, s in tasks if a >= warmup) / config.concurrency
                / max(1, horizon - warmup))
    found = smallest(meets, floor + 1, config.max_workers)
    return results[found].worker_minutes if found is not None else float("inf")


def window_tasks(counts: list[int], case: Case, start: int, length: int,
                 warmup: int) -> list[Task]:
    """A window's tasks, its warm-up first, drawn as ``compare`` draws them (seeded by the
    window's start): every mode of this bench replays the same tasks."""
    sampler, _ = service_times(case.service)
    return arrivals_from(counts[start - warmup:start + length], case.scale, sampler, start)


def oracle_for(tasks: list[Task], config: SimConfig, horizon: int, warmup: int) -> SimResult:
    """The cheapest clairvoyant plan for these tasks under ``config``."""
    return oracle_of(plan_all(tasks, config, horizon, measure_from=warmup), config.wait_target)


def best_judoscale(tasks: list[Task], config: SimConfig, horizon: int,
                   warmup: int) -> float:
    """Worker-minutes of the cheapest Judoscale setting meeting the target (inf if none)."""
    met = [result.worker_minutes for result in (
        simulate(tasks, JudoscalePolicy(config, jump, config.wait_target * top, bottom, delay),
                 config, horizon, measure_from=warmup)
        for jump, delay, top, bottom in JUDOSCALE_SETTINGS)
        if result.meets(config.wait_target)]
    return min(met, default=float("inf"))


def run_window(counts: list[int], case: Case, config: SimConfig, start: int, length: int,
               warmup: int) -> Window:
    comparison = compare(counts[start - warmup:start + length], config, case.service,
                         case.scale, ["capacity", *BASELINES, "oracle"], seed=start,
                         warmup=warmup)
    by = comparison.by_policy()
    ours, oracle = by["capacity"], comparison.oracle
    meeting = [by[name] for name in BASELINES if by[name].meets(config.wait_target)]
    tasks = window_tasks(counts, case, start, length, warmup)
    static = cheapest_constant(tasks, config, warmup + length, warmup)
    judoscale = best_judoscale(tasks, config, warmup + length, warmup)
    return Window(
        start, comparison.bound_minutes, oracle.worker_minutes, oracle.policy[8:-1],
        ours.worker_minutes / oracle.worker_minutes, ours.percentile(0.95),
        ours.actions / max(1, oracle.actions),
        all(ours.worker_minutes < other.worker_minutes for other in meeting)
        and ours.worker_minutes < judoscale,
        " ".join(f"{name} {by[name].worker_minutes / oracle.worker_minutes:.2f}"
                 f"{'' if by[name].meets(config.wait_target) else '!'}"
                 for name in BASELINES), static / oracle.worker_minutes,
        judoscale / oracle.worker_minutes)


def report(case: Case, windows: list[Window], wait_target: float) -> bool:
    print(f"{'start (h)':>9} {'bound':>8} {'oracle':>8} {'plan':>6} {'ours/or':>7} "
          f"{'p95':>6} {'act/or':>6} {'fixed/or':>8} {'judo/or':>7}  baselines / oracle "
          f"(! = misses the target)")
    for w in windows:
        print(f"{w.start / 3600:9.1f} {w.bound:8.1f} {w.oracle:8.1f} {w.planner:>6} "
              f"{w.ratio:7.3f} {w.p95:5.1f}s {w.actions:6.2f} {w.static:8.3f} {w.judoscale:7.3f}  "
              f"{w.baselines}")
    ratios = [w.ratio for w in windows]
    worst = max(windows, key=lambda w: w.ratio)
    p95 = max(w.p95 for w in windows)
    actions = max(w.actions for w in windows)
    beaten = sum(w.beaten for w in windows)
    ok = (p95 <= wait_target and worst.ratio <= GOAL_RATIO and actions <= GOAL_ACTIONS
          and beaten == len(windows))
    print(f"capacity: {statistics.mean(ratios):.3f}x oracle mean, worst "
          f"{worst.ratio:.3f}x (window at {worst.start / 3600:.1f} h), spread "
          f"{min(ratios):.3f}-{max(ratios):.3f}; worst p95 wait {p95:.1f}s; actions up to "
          f"{actions:.2f}x the oracle's; cheaper than every baseline meeting the target on "
          f"{beaten}/{len(windows)} windows -> {'met' if ok else 'MISSED'}")
    return ok


GAP_VARIANTS: list[tuple[str, dict[str, int], dict[str, float]]] = [
    ("as benched", {}, {}),
    ("no startup lead (0 s)", {"startup_seconds": 0}, {}),
    ("5 s ticks", {"tick_seconds": 5}, {}),
    ("no tolerance", {}, {"tolerance": 0.0}),
]


def gap(counts: list[int], case: Case, config: SimConfig, start: int, length: int,
        warmup: int) -> list[float]:
    """Ours / oracle with each source of the gap taken away in turn (both sides obey the
    same startup and ticks)."""
    tasks = window_tasks(counts, case, start, length, warmup)
    horizon, ratios = warmup + length, []
    for _, rules, target in GAP_VARIANTS:
        varied = replace(config, **rules)
        oracle = oracle_for(tasks, varied, horizon, warmup)
        ours = simulate(tasks, OnDemandPolicy(varied, "capacity", target), varied, horizon,
                        measure_from=warmup)
        ratios.append(ours.worker_minutes / oracle.worker_minutes)
    return ratios


class Foreseeing(CapacityAgent):
    """The capacity policy told how many tasks arrive over the next T, in place of its
    estimate λT + s: not a policy (it reads the future), the measure of what that
    foresight alone is worth. ``coming(now)`` is None where it has nothing to say."""

    def __init__(self, target: TargetConfig,
                 coming: Callable[[float], float | None]) -> None:
        super().__init__(target)
        self.coming = coming

    def workers_at(self, view: TargetView, goal: float, arriving: float) -> float:
        coming = self.coming(view.now)
        if coming is None:
            return super().workers_at(view, goal, arriving)
        rate, horizon = view.memory.service_rate or 1e-9, self.target.target_wait_seconds
        return max(view.ready / (rate * goal),
                   (view.ready + coming) / (rate * (goal + horizon)))


def exact_count(tasks: list[Task], horizon: float) -> Callable[[float], float | None]:
    """How many tasks arrive within ``horizon`` seconds of each instant: foresight."""
    instants = [arrival for arrival, _ in tasks]

    def coming(now: float) -> float:
        return float(bisect.bisect_left(instants, now + horizon)
                     - bisect.bisect_left(instants, now))
    return coming


def linear_forecast(tasks: list[Task], horizon: int, tick: int, warmup: int, end: int,
                    deviations: float, past: int = 12) -> Callable[[float], float | None]:
    """The best linear forecast of the tasks arriving within ``horizon`` of each tick from
    the ``past`` ticks' counts (least squares, fitted on the measured part of this very
    window: hindsight no causal forecaster has, a trend term being one of them), plus
    ``deviations`` standard deviations of its error."""
    import numpy as np

    per_second = np.zeros(end + horizon + 1)
    for arrival, _ in tasks:
        per_second[min(int(arrival), end + horizon)] += 1
    cumulative = np.concatenate([[0.0], np.cumsum(per_second)])
    ticks = np.arange(tick * past, end, tick)
    actual = cumulative[ticks + horizon] - cumulative[ticks]
    columns = [cumulative[ticks - tick * k] - cumulative[ticks - tick * (k + 1)]
               for k in range(past)]
    inputs = np.column_stack([np.ones(len(ticks)), *columns])
    measured = ticks >= warmup
    weights, *_ = np.linalg.lstsq(inputs[measured], actual[measured], rcond=None)
    forecast = inputs @ weights
    margin = deviations * float(np.std((actual - forecast)[measured]))
    by_tick = {int(t): max(0.0, float(f)) + margin for t, f in zip(ticks, forecast, strict=True)}
    return lambda now: by_tick.get(int(now))


def local_rate(tasks: list[Task], horizon: int, tick: int, warmup: int, end: int,
               width: int, deviations: float) -> Callable[[float], float | None]:
    """The tasks a T brings at the local rate: the mean of the tick counts over the
    ``width`` seconds centred on each tick (half of them still to come: foresight of the
    rate, not of its draws), plus ``deviations`` times the spread of a T's count, from the
    spread of those tick counts (rate changes within the width included)."""
    import numpy as np

    per_tick = np.zeros(end // tick + 2)  # bin k: arrivals in [k * tick, (k + 1) * tick)
    for arrival, _ in tasks:
        per_tick[min(len(per_tick) - 1, int(arrival // tick))] += 1
    half, ticks = width // tick // 2, horizon / tick
    by_tick = {}
    for i in range(len(per_tick)):
        around = per_tick[max(0, i - half):i + half]
        by_tick[i * tick] = float(around.mean() * ticks
                                  + deviations * math.sqrt(around.var() * ticks))
    return lambda now: by_tick.get(int(now))


FORESIGHT: list[tuple[str, Callable[..., Callable[[float], float | None]] | None,
                      dict[str, Any]]] = [
    ("as benched", None, {}),
    ("next T known", exact_count, {}),
    ("best linear forecast + 1 sd", linear_forecast, {"deviations": 1.0}),
    ("+ 0.5 sd", linear_forecast, {"deviations": 0.5}),
    ("rate of the 150 s around known + 0.5 sd", local_rate,
     {"width": 150, "deviations": 0.5}),
    ("rate of the 300 s around known + 1 sd", local_rate, {"width": 300, "deviations": 1.0}),
]


def foresight(counts: list[int], case: Case, config: SimConfig, start: int, length: int,
              warmup: int) -> list[tuple[float, float]]:
    """(ours / oracle, p95 wait) for the capacity policy as benched, then given the exact
    count of the next T's arrivals, then the best linear forecast of it (FORESIGHT)."""
    tasks = window_tasks(counts, case, start, length, warmup)
    horizon, wait = warmup + length, int(config.wait_target)
    oracle = oracle_for(tasks, config, horizon, warmup)
    rows = []
    for _, build, options in FORESIGHT:
        ours = OnDemandPolicy(config, "capacity")
        if build is exact_count:
            ours.agents["sim"] = Foreseeing(ours.settings.targets[0], exact_count(tasks, wait))
        elif build is not None:
            ours.agents["sim"] = Foreseeing(ours.settings.targets[0], build(
                tasks, wait, config.tick_seconds, warmup, horizon, **options))
        result = simulate(tasks, ours, config, horizon, measure_from=warmup)
        rows.append((result.worker_minutes / oracle.worker_minutes, result.percentile(0.95)))
    return rows


def breakdown(counts: list[int], case: Case, config: SimConfig, start: int, length: int,
              warmup: int) -> None:
    """Where the worker-minutes beyond the busy time go, ours against the oracle's: to
    workers starting (and how many were started, and cancelled before serving), to a
    minimum charge's top-up (``--minimum-billing``) and to idle slots of serving
    workers."""
    tasks = window_tasks(counts, case, start, length, warmup)
    busy = busy_bound_minutes([t for t in tasks if t[0] >= warmup], config.concurrency)
    oracle = oracle_for(tasks, config, warmup + length, warmup)
    ours = simulate(tasks, OnDemandPolicy(config, "capacity"), config, warmup + length,
                    measure_from=warmup)
    print(f"{start / 3600:9.1f} h  busy {busy:8.1f}" + "".join(
        f"  | {r.policy}: {r.worker_minutes:8.1f} = busy + {r.startup_seconds / 60:6.1f} "
        f"starting ({r.started} started, {r.cancelled} cancelled) + "
        + (f"{r.minimum_seconds / 60:6.1f} minimum + " if config.minimum_billed_seconds
           else "")
        + f"{r.worker_minutes - busy - (r.startup_seconds + r.minimum_seconds) / 60:6.1f} "
        "idle" for r in (ours, oracle)), flush=True)


@contextmanager
def constants(goal_share: float, surge: float, smoothing: float) -> Iterator[None]:
    """The capacity policy with other values of its three constants, for the run only."""
    saved = capacity.GOAL_SHARE, capacity.SURGE_DEVIATIONS, engine.SMOOTHING
    capacity.GOAL_SHARE, capacity.SURGE_DEVIATIONS, engine.SMOOTHING = (
        goal_share, surge, smoothing)
    try:
        yield
    finally:
        capacity.GOAL_SHARE, capacity.SURGE_DEVIATIONS, engine.SMOOTHING = saved


def knobs(counts: list[int], case: Case, config: SimConfig, starts: list[int], length: int,
          warmup: int, settings: list[tuple[float, ...]]) -> None:
    """Ours / oracle (mean, worst window) and the worst p95 for each setting of (goal
    share, surge deviations, smoothing, tolerance): whether another default would do."""
    windows = []
    for start in starts:
        tasks = window_tasks(counts, case, start, length, warmup)
        oracle = oracle_for(tasks, config, warmup + length, warmup)
        windows.append((tasks, oracle.worker_minutes))
    for goal_share, surge, smoothing, tolerance in settings:
        with constants(goal_share, surge, smoothing):
            results = [simulate(tasks, OnDemandPolicy(config, "capacity",
                                                      {"tolerance": tolerance}),
                                config, warmup + length, measure_from=warmup)
                       for tasks, _ in windows]
        ratios = [r.worker_minutes / o for r, (_, o) in zip(results, windows, strict=True)]
        print(f"goal {goal_share:g} T, surge {surge:g} sd, smoothing {smoothing:g}, "
              f"tolerance {tolerance:g}: {statistics.mean(ratios):.3f} mean, "
              f"{max(ratios):.3f} worst, p95 up to "
              f"{max(r.percentile(0.95) for r in results):.1f}s", flush=True)


HINDSIGHT_GRID = [
    *itertools.product((0.75, 0.85), (0.0, 1.0), (0.1, 0.2), (0.1, 0.25), (60.0, 300.0)),
    *itertools.product((0.9, 0.95), (1.0, 1.5, 2.0), (0.05, 0.1), (0.0, 0.1, 0.25),
                       (60.0, 300.0))]
"""(goal share, surge deviations, smoothing, tolerance, scale-down delay) settings tried by
``hindsight``: the policy's three constants (code, not configuration) and two of its
target settings around the defaults, and the corner (slow rates, a late goal, a wide
margin) finer searches found cheapest on NASA's worst windows."""


def hindsight(counts: list[int], case: Case, config: SimConfig, start: int, length: int,
              warmup: int) -> None:
    """The window's load (busy workers, mean) and swing (the median change of its arrivals
    from one minute to the next), ours / oracle as benched, and the policy at its best for
    this window: the cheapest ``HINDSIGHT_GRID`` setting whose p95 wait is within the
    target, chosen knowing the window. Where even that costs over 1.10x the oracle, no
    setting of that grid, default or not, costs less there."""
    tasks = window_tasks(counts, case, start, length, warmup)
    measured = [t for t in tasks if t[0] >= warmup]
    busy = busy_bound_minutes(measured, config.concurrency) * 60 / length
    minutes = [sum(counts[m:m + 60]) for m in range(start, start + length, 60)]
    swing = statistics.median(abs(b - a) / a for a, b in itertools.pairwise(minutes) if a)
    oracle = oracle_for(tasks, config, warmup + length, warmup).worker_minutes
    ours = simulate(tasks, OnDemandPolicy(config, "capacity"), config, warmup + length,
                    measure_from=warmup)
    best: tuple[float, float, tuple[float, ...]] | None = None
    for goal_share, surge, smoothing, tolerance, delay in HINDSIGHT_GRID:
        with constants(goal_share, surge, smoothing):
            result = simulate(tasks, OnDemandPolicy(config, "capacity", {
                "tolerance": tolerance, "scale_down_delay_seconds": delay}),
                config, warmup + length, measure_from=warmup)
        found = (result.worker_minutes / oracle, result.percentile(0.95),
                 (goal_share, surge, smoothing, tolerance, delay))
        if result.meets(config.wait_target) and (best is None or found < best):
            best = found
    at_best = "none meets the target" if best is None else (
        f"{best[0]:.3f} (p95 {best[1]:.1f}s) at G {best[2][0]:g} T, S {best[2][1]:g} sd, "
        f"SM {best[2][2]:g}, tolerance {best[2][3]:g}, delay {best[2][4]:.0f}s")
    print(f"{start / 3600:9.1f} h  busy workers {busy:5.1f}  swing {swing:4.0%}  as benched "
          f"{ours.worker_minutes / oracle:.3f} (p95 {ours.percentile(0.95):.1f}s)  "
          f"at its best {at_best}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--warmup", type=int, default=1800, metavar="SECONDS")
    parser.add_argument("--case", type=int, action="append", help="case index (repeatable)")
    parser.add_argument("--gap", type=int, default=0, metavar="WINDOWS",
                        help="instead: where the gap to the oracle comes from, over this "
                             "many windows per case")
    parser.add_argument("--foresight", action="store_true",
                        help="instead: what foresight of the next T's arrivals is worth to "
                             "the capacity policy, per window")
    parser.add_argument("--breakdown", action="store_true",
                        help="instead: where ours and the oracle's worker-minutes go, per "
                             "window")
    parser.add_argument("--minimum-billing", type=float, default=0.0, metavar="SECONDS",
                        help="bill every worker started at least this long (Fargate and "
                             "EC2 bill a minute at least; default: by the second)")
    parser.add_argument("--hindsight", action="store_true",
                        help="instead: per window, its load and the cheapest of a grid of "
                             "the policy's settings meeting the target, chosen knowing it")
    parser.add_argument("--knobs", action="append", metavar="G,S,SM,TOL",
                        help="instead: ours / oracle with the policy's goal share, surge "
                             "deviations, smoothing and tolerance set so (repeatable)")
    args = parser.parse_args()
    if not 0 <= args.minimum_billing < math.inf:
        parser.error("--minimum-billing: seconds, >= 0")
    seed = int(os.environ.get("BENCH_SEED") or time.time_ns() % 10**6)
    config = SimConfig(concurrency=4, startup_seconds=60, tick_seconds=15, wait_target=60,
                       max_workers=300, minimum_billed_seconds=args.minimum_billing)
    length = int(args.hours * 3600)
    print(f"== policies: {args.windows} random windows of {args.hours:g} h per case, "
          f"{args.warmup}s warm-up, 4 slots, 60 s startup, 15 s ticks, 60 s wait target"
          + (f", starts billed {args.minimum_billing:g} s at least" if args.minimum_billing
             else "") + f" (BENCH_SEED={seed})")
    rng, traces, results = random.Random(seed), {}, {}
    chosen = set(args.case or range(len(CASES)))
    for index, case in enumerate(CASES):
        path = TRACES / case.trace
        if not path.exists():
            sys.exit(f"bench: {path} not found (shared/traces sits beside the project, "
                     "or set BENCH_TRACES)")
        counts = traces.setdefault(case.trace, read_counts(path))
        starts = [rng.randrange(args.warmup, len(counts) - length)
                  for _ in range(args.gap or args.windows)]
        if index not in chosen:  # drawn all the same: --case N runs a full run's windows
            continue
        if args.breakdown:
            print(f"-- {case.title}: worker-minutes beyond the busy time, per window")
            for start in starts:
                breakdown(counts, case, config, start, length, args.warmup)
            continue
        if args.hindsight:
            print(f"-- {case.title}: ours / oracle as benched and at its best per window "
                  f"({len(HINDSIGHT_GRID)} settings)")
            for start in starts:
                hindsight(counts, case, config, start, length, args.warmup)
            continue
        if args.knobs:
            print(f"-- {case.title}: {len(starts)} windows")
            knobs(counts, case, config, starts, length, args.warmup,
                  [tuple(float(x) for x in k.split(",")) for k in args.knobs])
            continue
        if args.foresight:
            print(f"-- {case.title}: ours / oracle (p95 wait), per window: "
                  + "; ".join(name for name, _, _ in FORESIGHT))
            for start in starts:
                found = foresight(counts, case, config, start, length, args.warmup)
                print(f"{start / 3600:9.1f} h  " + "  ".join(
                    f"{ratio:.3f} ({p95:.0f}s)" for ratio, p95 in found), flush=True)
            continue
        if args.gap:
            rows = [gap(counts, case, config, start, length, args.warmup) for start in starts]
            print(f"-- {case.title}: ours / oracle, mean of {args.gap} windows: " + "; ".join(
                f"{name} {statistics.mean(r[i] for r in rows):.3f}"
                for i, (name, _, _) in enumerate(GAP_VARIANTS)))
            continue
        began = time.perf_counter()
        windows = [run_window(counts, case, config, start, length, args.warmup)
                   for start in starts]
        print(f"\n-- {case.title} ({time.perf_counter() - began:.0f}s to run)")
        results[case.title] = report(case, windows, config.wait_target)
    missed = [title for title, ok in results.items() if not ok]
    if results:
        print(f"\npolicy goals: {'all met' if not missed else 'missed in ' + '; '.join(missed)}")


if __name__ == "__main__":
    main()
