"""``make bench`` (unacked): a whole tick with 100,000 ETA tasks parked in Redis's
unacknowledged hash, beside the unbounded read it replaced, in the same run.

A private redis-server holds the hash (``unacked``: one entry per message a worker took and
has not acknowledged, the whole message in it; ETA tasks wait there for hours), filled as
kombu's ``QoS.append`` fills it, with the raw message of a real Celery countdown task; one
live worker consumes the queue, and it does not account for them (they were left by a
worker that died). The tick (observation, decision) runs RUNS times on one warm
connection. The baseline is the read
the observer used to make: ``HVALS`` of the whole hash, every entry parsed.
Budget: the tick within 1 s and this process within 150 MB peak RSS (everything imported
included); peak RSS is read right after our ticks, before the baseline runs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import redis

from celery_ondemand import Observer
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.observe.brokers.redis import _unacked_by_queue
from celery_ondemand.tick import Ticker
from tests.support.brokers import private_redis
from tests.support.unacked import park
from tests.support.workers import Fleet

QUEUE = "eta-parked"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_unacked(parked: int, runs: int) -> dict[str, float]:
    with private_redis() as port:
        url = f"redis://127.0.0.1:{port}/0"
        began = time.perf_counter()
        park(url, QUEUE, parked)
        filled = time.perf_counter() - began
        client = redis.Redis.from_url(url)
        assert client.hlen("unacked") == parked
        config = settings_from_mapping({"broker_url": url, "targets": [
            {"name": "eta", "queues": [QUEUE], "scaler": "local", "command": "-",
             "worker_concurrency": 4}]})
        fleet = Fleet(url)
        fleet.start([QUEUE], name="bench", concurrency=2)
        ticker = Ticker(config, observer=Observer(url), scalers={})
        try:
            ticker.tick(dry_run=True)  # warm: connection and imports
            times = []
            for _ in range(runs):
                began = time.perf_counter()
                result = ticker.tick(dry_run=True)
                times.append(time.perf_counter() - began)
            observed = result.observation
            assert observed is not None, result.error
            assert len(observed.live_workers) == 1, observed.serializer()["workers"]
            assert observed.queues[QUEUE].hidden >= 1 and result.decisions[0].desired >= 1
            assert any("beyond the bounded read" in p for p in observed.problems)
            ours_peak = peak_mb()
        finally:
            ticker.close()
            fleet.stop()
        baseline = []
        for _ in range(runs):
            began = time.perf_counter()
            counted = _unacked_by_queue(client.hvals("unacked"), {QUEUE})
            baseline.append(time.perf_counter() - began)
        assert counted == {QUEUE: parked}
        return {"median": statistics.median(times), "max": max(times), "peak_mb": ours_peak,
                "baseline": statistics.median(baseline), "baseline_peak_mb": peak_mb(),
                "filled": filled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parked", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"\nwhole tick with {args.parked:,} ETA tasks parked in Redis's unacked hash, "
          f"median of {args.runs} warm ticks")
    r = bench_unacked(args.parked, args.runs)
    print(f"ours (bounded HSCAN): {r['median']:.3f}s median, {r['max']:.3f}s max, "
          f"{r['peak_mb']:.0f} MB peak RSS")
    print(f"baseline (HVALS of the whole hash, read alone): {r['baseline']:.3f}s median, "
          f"{r['baseline_peak_mb']:.0f} MB peak RSS after it; ratio ours/baseline "
          f"{r['median'] / r['baseline']:.3f}")
    print(f"(hash filled in {r['filled']:.1f}s) targets: tick <= 1 s, <= 150 MB peak RSS")


if __name__ == "__main__":
    main()
