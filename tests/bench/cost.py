"""``make bench`` (cost): what the autoscaler itself costs a month, for the reference
deployment (10 queues, 3 targets), next to what its policy saves.

Two ticks are measured on a real Redis with real workers (see
:mod:`celery_ondemand.metering`): one with work (a task waiting on every queue, a worker
per target running), one at rest (no task, no worker, every target at its floor of zero).
The model (:mod:`celery_ondemand.cost`) prices a month at rest, half busy and busy around
the clock. Beside it: the worker-minutes our policy saves against KEDA and AWS target
tracking over a day of the Twitter trace, priced as Fargate arm64 tasks of 1 vCPU and
2 GB ($0.03238 per vCPU-hour + $0.00356 per GB-hour, us-east-1).

Goals: at rest <= $3 a month, busy around the clock <= $8 (without the dashboard, which an
account's first three are free of).
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

from celery_ondemand import cost, metrics
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.metering import Meter
from celery_ondemand.simulate import SimConfig, compare, read_counts
from tests.bench.observe import require_broker_or_exit
from tests.support.brokers import BROKERS, Queues, producer_app
from tests.support.workers import Fleet

TRACE = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / \
    "twitter-per-second.tbz2"
FARGATE_WORKER_MINUTE = (0.03238 + 2 * 0.00356) / 60
RUNS = 5


def measure(url: str) -> tuple[cost.TickUsage, cost.TickUsage]:
    queues = Queues(url)
    names = [queues.new(f"ref{i}") for i in range(10)]
    settings = settings_from_mapping({"broker_url": url, "targets": [
        {"name": "a", "queues": names[:4], "scaler": "local", "command": "-"},
        {"name": "b", "queues": names[4:7], "scaler": "local", "command": "-"},
        {"name": "c", "queues": names[7:], "scaler": "local", "command": "-"}]})
    fleet, producer = Fleet(url), producer_app(url)
    try:
        for target in settings.targets:
            fleet.start(list(target.queues), name=f"ref-{target.name}", concurrency=1)
        with Meter(settings, url) as meter:
            busy = []
            for _ in range(RUNS + 1):
                for name in names:
                    producer.send_task("tests.sleep", args=(30,), queue=name)
                busy.append(meter.tick().usage)
            fleet.stop()
            queues.delete_all()
            rest = [meter.tick().usage for _ in range(RUNS + 2)][2:]  # settled
        assert all(u.metric_streams == metrics.streams_while_busy(settings) for u in busy[1:])
        assert all(u.metric_streams == len(metrics.ALWAYS_PRINTED) for u in rest)
        return _median(busy[1:]), _median(rest)
    finally:
        fleet.stop()
        queues.delete_all()
        producer.close()


def _median(usages: list[cost.TickUsage]) -> cost.TickUsage:
    return cost.TickUsage(
        seconds=statistics.median(u.seconds for u in usages),
        write_units=statistics.median(u.write_units for u in usages),
        read_units=statistics.median(u.read_units for u in usages),
        log_bytes=int(statistics.median(u.log_bytes for u in usages)),
        metric_streams=usages[0].metric_streams)


def savings() -> dict[str, float]:
    """Worker-minutes our policy saves, over the Twitter day, against KEDA and AWS target
    tracking (the simulator of `ondemand simulate`)."""
    config = SimConfig(concurrency=4, startup_seconds=60, tick_seconds=15, wait_target=60,
                       max_workers=300)
    results = compare(read_counts(TRACE, 86400, 86400), config, "exp:20", 0.1,
                      policies=("capacity", "keda", "aws-target-tracking"),
                      warmup=1800).by_policy()
    return {policy: results[policy].worker_minutes - results["capacity"].worker_minutes
            for policy in ("keda", "aws-target-tracking")}


def main() -> None:
    url = require_broker_or_exit(BROKERS["redis"])
    busy, rest = measure(url)
    print("cost of the autoscaler itself, reference deployment: 10 queues, 3 targets "
          f"(median of {RUNS} measured ticks each, 256 MB, 15 s ticks)")
    for label, usage in (("with work", busy), ("at rest", rest)):
        print(f"  a tick {label}: {usage.seconds:.2f} s, {usage.write_units:g} write and "
              f"{usage.read_units:g} read units, {usage.log_bytes} bytes logged, "
              f"{usage.metric_streams} metric streams")
    shape = cost.Deployment()
    print(f"{'month':<26} {'total':>8} {'without dashboard':>18}")
    totals = {}
    for label, fraction in (("at rest", 0.0), ("busy 8 h a day", 1 / 3),
                            ("busy around the clock", 1.0)):
        bill = cost.monthly_bill(busy, rest, replace(shape, busy_fraction=fraction))
        totals[label] = bill.total - bill.lines["CloudWatch dashboard"]
        print(f"{label:<26} ${bill.total:7.2f} ${totals[label]:17.2f}")
    print(cost.monthly_bill(busy, rest, replace(shape, busy_fraction=1.0)).table())
    print(f"goals: at rest <= $3 ({'met' if totals['at rest'] <= 3 else 'MISSED'}), busy "
          f"around the clock <= $8 "
          f"({'met' if totals['busy around the clock'] <= 8 else 'MISSED'}), dashboard aside")
    if TRACE.exists():
        for policy, minutes in savings().items():
            print(f"our policy saves {minutes:,.0f} worker-minutes a day against {policy} on "
                  f"the Twitter day (x0.1, exp:20): ${minutes * FARGATE_WORKER_MINUTE * 30:,.0f}"
                  " a month as Fargate tasks")


if __name__ == "__main__":
    main()
