"""``make bench`` (forecast): the forecast pre-warm backtested on weeks of both shared
traces, against the reactive policy alone.

For each case, the policy runs over a window of ``--days`` days (after a half-hour warm-up
that is neither billed nor counted) twice over the same tasks: ``capacity`` as it reacts,
and ``capacity`` with ``forecast: true``. The forecaster sees only the past: its load
history holds the trace's own per-minute arrivals before the window (what the tick would
have recorded there: ``--history-days`` of them) and, from then on, the minutes the
simulated ticks record themselves; nothing of the window's future is in it.

Cases: Twitter 2021 x0.05 (22 days: 8 known, 14 replayed) and NASA 1995 x10 (58 days: 21
known, so the weekly shape is on, 14 replayed), exponential 20 s tasks, 4 slots per worker,
60 s startup, 15 s ticks, 60 s wait target: tens of workers. A run takes about 5 minutes
on one core (``--days`` fewer to subsample: the window's first days).

Goal (issue 19): forecast + reactive gives a lower p95 and p99 wait than reactive alone
at no more than +3 % worker-minutes, or the same waits for fewer.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from celery_ondemand.decide.load import LoadLog, LoadMinute
from celery_ondemand.simulate import SimConfig, SimResult, arrivals_from, read_counts, simulate
from celery_ondemand.simulate.ondemand import OnDemandPolicy
from celery_ondemand.simulate.traces import service_times

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
DAY = 86400
GOAL_COST = 1.03


@dataclass(frozen=True)
class Case:
    title: str
    trace: str
    scale: float
    known_days: int
    service: str = "exp:20"


CASES = [
    Case("Twitter x0.05, exp:20", "twitter-per-second.tbz2", 0.05, 8),
    Case("NASA x10, exp:20", "nasa-1995-per-second.tbz2", 10.0, 21),
]


def known_history(counts: list[int], scale: float, until: int, days: int) -> LoadLog:
    """The trace's per-minute arrivals of the ``days`` before second ``until``."""
    log = LoadLog()
    for minute in range(max(0, until - days * DAY), until, 60):
        log.add_load("bench", {"sim": LoadMinute(
            minute, 60.0, sum(counts[minute:minute + 60]) * scale, ticks=4)})
    return log


def backtest(counts: list[int], case: Case, config: SimConfig, days: float,
             warmup: int) -> dict[str, SimResult]:
    start = case.known_days * DAY
    first = start - warmup
    window = counts[first:start + int(days * DAY)]
    sampler, _ = service_times(case.service)
    tasks = arrivals_from(window, case.scale, sampler, seed=start)
    results = {}
    for name, on in (("reactive", False), ("forecast", True)):
        # The history holds only what came before the warm-up: the simulated ticks record
        # the rest, as the tick would.
        history = known_history(counts, case.scale, first, case.known_days)
        policy = OnDemandPolicy(config, "capacity", {"forecast": on}, history=history,
                                clock=first, name=name)
        results[name] = simulate(tasks, policy, config, len(window), measure_from=warmup)
    return results


def report(case: Case, results: dict[str, SimResult], days: float) -> bool:
    print(f"\n-- {case.title}: days {case.known_days}-{case.known_days + days:g} replayed, "
          f"{case.known_days} known before")
    print(f"{'policy':10} {'worker-min':>11} {'vs react':>8} {'p50':>7} {'p95':>7} "
          f"{'p99':>7} {'max':>7} {'>target':>8} {'actions':>8}")
    base = results["reactive"]
    for name, r in results.items():
        print(f"{name:10} {r.worker_minutes:11.0f} {r.worker_minutes / base.worker_minutes:8.3f} "
              f"{r.percentile(0.5):6.1f}s {r.percentile(0.95):6.1f}s {r.percentile(0.99):6.1f}s "
              f"{r.max_wait:6.1f}s {r.share_over(60):7.2%} {r.actions:8}")
    ours = results["forecast"]
    cost = ours.worker_minutes / base.worker_minutes
    lower = ours.percentile(0.95) < base.percentile(0.95) and \
        ours.percentile(0.99) < base.percentile(0.99) and cost <= GOAL_COST
    same_for_less = ours.percentile(0.95) <= base.percentile(0.95) + 0.5 and \
        ours.percentile(0.99) <= base.percentile(0.99) + 0.5 and cost < 1.0
    ok = lower or same_for_less
    print(f"forecast vs reactive: p95 {ours.percentile(0.95) - base.percentile(0.95):+.1f}s, "
          f"p99 {ours.percentile(0.99) - base.percentile(0.99):+.1f}s, worker-minutes "
          f"{cost - 1:+.1%} -> {'met' if ok else 'MISSED'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=14.0,
                        help="days replayed per case (default 14)")
    parser.add_argument("--warmup", type=int, default=1800, metavar="SECONDS")
    parser.add_argument("--case", type=int, action="append", help="case index (repeatable)")
    args = parser.parse_args()
    config = SimConfig(concurrency=4, startup_seconds=60, tick_seconds=15, wait_target=60,
                       max_workers=300)
    print(f"== forecast: {args.days:g} days per case, 4 slots, 60 s startup, 15 s ticks, "
          "60 s wait target; the forecaster sees only the past")
    verdicts = {}
    for index in args.case or range(len(CASES)):
        case = CASES[index]
        path = TRACES / case.trace
        if not path.exists():
            sys.exit(f"bench: {path} not found (shared/traces sits beside the project)")
        began = time.perf_counter()
        counts = read_counts(path)
        results = backtest(counts, case, config, args.days, args.warmup)
        verdicts[case.title] = report(case, results, args.days)
        print(f"({time.perf_counter() - began:.0f}s to run)", flush=True)
    missed = [title for title, ok in verdicts.items() if not ok]
    verdict = "met on every case" if not missed else "missed: " + "; ".join(missed)
    print(f"\nforecast goal: {verdict}")


if __name__ == "__main__":
    main()
