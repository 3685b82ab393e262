"""``make bench`` (scale): one whole tick over 200 queues and 50 real workers.

50 ``celery worker`` processes, each consuming its own 4 of the 200 queues, every slot busy
and more waiting; 10 targets of 20 queues. The tick (lease, memory, observation, decision,
history, status in SQLite) runs RUNS times on one warm connection, as a warm Lambda runs it.
Budget: a tick well inside its 15 s interval (target: <= 3 s median) and the Lambda's
512 MB (target: <= 256 MB peak RSS of this process, everything imported included).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from celery_ondemand import Observer
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.remember import SQLiteStateStore
from celery_ondemand.tick import Ticker
from tests.bench.observe import require_broker_or_exit
from tests.support.brokers import BROKERS, Queues, producer_app
from tests.support.workers import Fleet


def bench_scale(url: str, queues: int, workers: int, runs: int) -> dict[str, float]:
    pool = Queues(url)
    names = [pool.new(f"scale{i}") for i in range(queues)]
    per_worker = max(1, queues // workers)
    fleet, producer = Fleet(url), producer_app(url)
    targets = 10
    per_target = queues // targets
    config = settings_from_mapping({"broker_url": url, "targets": [
        {"name": f"t{i}", "queues": names[i * per_target:(i + 1) * per_target],
         "scaler": "local", "command": "-", "worker_concurrency": 2, "max_workers": 20}
        for i in range(targets)]})
    try:
        started = time.perf_counter()
        for i in range(workers):
            fleet.start(names[i * per_worker:(i + 1) * per_worker], name="scale",
                        concurrency=2, wait=False)
        fleet.wait_ready(timeout=300)
        boot = time.perf_counter() - started
        for i in range(workers * 2 + queues):  # every slot busy, one waiting per queue
            producer.send_task("tests.sleep", args=(60,), queue=names[i % queues])
        with tempfile.TemporaryDirectory() as state:
            ticker = Ticker(config, observer=Observer(url), scalers={},
                            store=SQLiteStateStore(Path(state) / "state.db"))
            times = []
            for _ in range(runs):
                began = time.perf_counter()
                result = ticker.tick()
                times.append(time.perf_counter() - began)
                observed = result.observation
                assert result.ok and observed is not None, result.error
                assert len(observed.live_workers) == workers, len(observed.live_workers)
                assert set(names) <= set(observed.queues)
                assert not any(d.inputs.get("problems") for d in result.decisions), \
                    [d.inputs.get("problems") for d in result.decisions]
            ticker.close()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"median": statistics.median(times), "min": min(times), "max": max(times),
                "peak_mb": peak_mb, "boot": boot,
                "busy": sum(1 for w in observed.live_workers.values() if w.busy)}
    finally:
        for worker in fleet.workers:
            worker.kill()  # nothing to drain: their 60 s tasks are stand-ins
        fleet.stop()
        pool.delete_all()
        producer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queues", type=int, default=200)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"\nwhole tick over {args.queues} queues x {args.workers} workers "
          f"(10 targets), median of {args.runs} warm ticks")
    print(f"{'broker':9} {'median':>8} {'min':>8} {'max':>8} {'busy':>5} {'peak RSS':>9}")
    for label in ("rabbitmq", "redis"):
        url = require_broker_or_exit(BROKERS[label])
        r = bench_scale(url, args.queues, args.workers, args.runs)
        print(f"{label:9} {r['median']:7.3f}s {r['min']:7.3f}s {r['max']:7.3f}s "
              f"{r['busy']:5.0f} {r['peak_mb']:7.0f}MB  (workers booted in {r['boot']:.0f}s)",
              flush=True)
    print("targets: <= 3 s median tick (interval 15 s), <= 256 MB peak RSS (Lambda 512 MB)")


if __name__ == "__main__":
    main()
