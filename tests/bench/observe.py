"""``make bench``: how fast one observation is, beside a cwod-style observer in the same run.

For each broker: 6 real workers consuming the same 20 queues, every worker busy and more
tasks waiting. Ours is timed over RUNS observations on one warm connection (as a warm Lambda
keeps it); the baseline does what cwod's QueueUpdater does for every queue — the broker's
size call and one ``inspect().active_queues()`` broadcast with Celery's default 1 s timeout.
Peak RSS is this process's, read right after our runs (before the baseline runs).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from typing import Any

from celery import Celery

from celery_ondemand import Observer
from tests.support.brokers import BROKERS, Queues, producer_app, require_broker
from tests.support.workers import Fleet


def cwod_style_observation(app: Celery, queue_names: list[str]) -> dict[str, Any]:
    """cwod's loop, once: size and an ``active_queues`` broadcast per queue."""
    status = {}
    with app.connection_for_read() as connection:
        channel: Any = connection.default_channel
        for name in queue_names:
            if connection.transport.driver_type == "amqp":
                size = channel.queue_declare(queue=name, passive=True).message_count
            else:
                size = channel._size(name)
            replies = app.control.inspect(connection=connection).active_queues() or {}
            workers = [host for host, queues in replies.items()
                       if any(q.get("name") == name for q in queues)]
            status[name] = {"size": size, "workers": workers}
    return status


def bench_broker(label: str, url: str, queues: int, workers: int, runs: int,
                 baseline_runs: int) -> dict[str, float]:
    names_pool = Queues(url)
    names = [names_pool.new(f"bench{i}") for i in range(queues)]
    fleet = Fleet(url)
    producer = producer_app(url)
    try:
        for _ in range(workers):
            fleet.start(names, name="bench", wait=False)
        fleet.wait_ready()
        for i in range(workers * 4):  # every slot busy, some prefetched, the rest waiting
            producer.send_task("tests.sleep", args=(8,), queue=names[i % queues])
        with Observer(url) as observer:
            cold_started = time.perf_counter()
            status = observer.observe()
            cold = time.perf_counter() - cold_started
            assert len(status.live_workers) >= workers, status.live_workers
            assert set(names) <= set(status.queues)
            times, previous = [], status
            for _ in range(runs):
                started = time.perf_counter()
                previous = observer.observe(previous=previous)
                times.append(time.perf_counter() - started)
                assert {w.hostname for w in fleet.workers} <= set(previous.live_workers)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        baseline = []
        app = Celery("cwod-style", broker=url, set_as_current=False)
        for _ in range(baseline_runs):
            started = time.perf_counter()
            cwod_status = cwod_style_observation(app, names)
            baseline.append(time.perf_counter() - started)
        assert all(len(v["workers"]) >= workers for v in cwod_status.values())
        app.close()
        ours = statistics.median(times)
        theirs = statistics.median(baseline)
        return {"ours": ours, "cold": cold, "min": min(times), "max": max(times),
                "baseline": theirs, "speedup": theirs / ours, "peak_mb": peak_mb}
    finally:
        fleet.stop()
        names_pool.delete_all()
        producer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--baseline-runs", type=int, default=3)
    args = parser.parse_args()
    print(f"observation of {args.queues} queues x {args.workers} workers; "
          f"ours: median of {args.runs} warm runs; cwod-style: median of {args.baseline_runs}")
    header = (f"{'broker':9} {'ours':>8} {'min':>8} {'max':>8} {'cold':>8} "
              f"{'cwod-style':>11} {'speed-up':>9} {'peak RSS':>9}")
    print(header)
    for label in ("rabbitmq", "redis"):
        url = require_broker_or_exit(BROKERS[label])
        r = bench_broker(label, url, args.queues, args.workers, args.runs, args.baseline_runs)
        print(f"{label:9} {r['ours']:7.3f}s {r['min']:7.3f}s {r['max']:7.3f}s "
              f"{r['cold']:7.3f}s {r['baseline']:10.2f}s {r['speedup']:8.1f}x "
              f"{r['peak_mb']:7.0f}MB", flush=True)
    print("targets: ours <= 0.5 s median, >= 20x the cwod-style observer, <= 150 MB peak RSS")


def require_broker_or_exit(url: str) -> str:
    try:
        return require_broker(url)
    except BaseException as exc:  # pytest's skip/fail outcomes are BaseExceptions
        raise SystemExit(f"bench: {exc}") from None


if __name__ == "__main__":
    main()
