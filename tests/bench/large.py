"""``make bench`` (large): one tick at 1,000 workers x 1,000 queues and 2,000 x 200.

The workers are the load rig's (:mod:`tests.support.rig`): simulated workers speaking
Celery's wire protocol, many per process, on a PRIVATE broker started here (a redis-server
on a free port, a private RabbitMQ node), never the shared ones. Each size runs in a child
process of its own, so the peak RSS it reports is that of the process running the ticks
(everything imported included), as a Lambda's would be.

Per broker and size: the median and worst of RUNS warm ticks (observe + decide + remember
in SQLite, as the Lambda's tick does, on one warm connection), the child's peak RSS, the
messages the observer read (events and control replies, last tick), whether every worker
and every queue was read without a gap, and the size of the status as stored (compressed).
The curve's four sizes grow workers and queues together; 2,000 x 200 is the other shape.
Goal: <= 2 s and <= 256 MB per tick, cost no faster than linear.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.rig import ROOT, plan, start_rig

SIZES = [(125, 125), (250, 250), (500, 500), (1000, 1000), (2000, 200)]
QUEUES_PER_TARGET = 20
CONCURRENCY = 2


def measure(url: str, workers: int, queues: int, runs: int,
            profile: bool = False) -> dict[str, Any]:
    """Start the rig, load every worker, tick RUNS times; the figures of this size."""
    from celery_ondemand import Observer
    from celery_ondemand.config import settings_from_mapping
    from celery_ondemand.observe import workers as heard_workers
    from celery_ondemand.remember import SQLiteStateStore
    from celery_ondemand.remember.base import encode_status
    from celery_ondemand.tick import Ticker
    from tests.support.brokers import producer_app

    run_id = uuid.uuid4().hex[:6]
    names = [f"large-{run_id}-{i}" for i in range(queues)]
    layout = plan(workers, names, prefix=f"w{run_id}-")
    read = {"events": 0, "replies": 0}
    _count_reads(read, heard_workers)
    rig = start_rig(url, layout, concurrency=CONCURRENCY)
    producer = producer_app(url)
    try:
        with producer.producer_or_acquire() as publisher:
            for i in range(workers * 2 * CONCURRENCY + queues):  # every slot held, more wait
                producer.send_task("tests.sleep", args=(600,), queue=names[i % queues],
                                   producer=publisher)
        time.sleep(2.0)  # the rig takes its prefetch
        targets = [{"name": f"t{i}", "queues": names[start:start + QUEUES_PER_TARGET],
                    "scaler": "local", "command": "-", "worker_concurrency": CONCURRENCY,
                    "max_workers": workers}
                   for i, start in enumerate(range(0, queues, QUEUES_PER_TARGET))]
        settings = settings_from_mapping({"broker_url": url, "targets": targets})
        times, cpu, gaps = [], [], []
        with tempfile.TemporaryDirectory() as state:
            ticker = Ticker(settings, observer=Observer(url), scalers={},
                            store=SQLiteStateStore(Path(state) / "state.db"))
            for _ in range(runs):
                read.update(events=0, replies=0)
                began, began_cpu = time.perf_counter(), time.process_time()
                result = _profiled(ticker.tick) if profile else ticker.tick()
                times.append(time.perf_counter() - began)
                cpu.append(time.process_time() - began_cpu)
                gaps.append(_gaps(result, layout, names))
            stored = len(encode_status(result.status(), time.time()))
            ticker.close()
        return {"workers": workers, "queues": queues, "median": statistics.median(times),
                "worst": max(times), "cpu": statistics.median(cpu), "peak_mb": resource.getrusage(
                    resource.RUSAGE_SELF).ru_maxrss / 1024,
                "events": read["events"], "replies": read["replies"],
                "gaps": [gap for gap in gaps if gap], "status_kb": stored / 1024}
    finally:
        rig.stop()
        producer.close()


def _profiled(call: Any) -> Any:
    """Run ``call`` under cProfile; print where the time went (to stderr)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(call)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    return result


def _count_reads(read: dict[str, int], heard_workers: Any) -> None:
    """Count the events the burst handles and the control replies gathered."""
    on_event = heard_workers._Burst.on_event
    gather = heard_workers.gather

    def counting_event(self: Any, event: dict[str, Any]) -> None:
        read["events"] += 1
        on_event(self, event)

    def counting_gather(*args: Any, **kwargs: Any) -> Any:
        replies = gather(*args, **kwargs)
        read["replies"] += sum(len(by_host) for by_host in replies.values())
        return replies

    heard_workers._Burst.on_event = counting_event
    heard_workers.gather = counting_gather


def _gaps(result: Any, layout: list[tuple[str, list[str]]], names: list[str]) -> str:
    """What the tick missed: unheard workers, unread queues, problems; empty if none."""
    observation = result.observation
    if result.error or observation is None:
        return f"error: {result.error}"
    missed = [host for host, _ in layout if host not in observation.live_workers]
    unread = [name for name in names if name not in observation.queues]
    problems = [p for d in result.decisions for p in d.inputs.get("problems", [])]
    unanswered = [h for h, w in observation.workers.items() if w.concurrency is None]
    found = []
    if missed:
        found.append(f"{len(missed)} workers unheard")
    if unread:
        found.append(f"{len(unread)} queues unread")
    if unanswered:
        found.append(f"{len(unanswered)} workers without control replies")
    if problems:
        found.append(f"{len(problems)} problems, e.g. {problems[0][:120]}")
    return "; ".join(found)


@contextmanager
def private_broker(label: str) -> Iterator[str]:
    """A private broker of this bench's own: never load the shared ones."""
    if label == "redis":
        from tests.support.brokers import private_redis

        with private_redis("--appendonly", "no", "--maxclients", "12000") as port:
            yield f"redis://127.0.0.1:{port}/0"
    else:
        from tests.support.rabbitmq_node import private_rabbitmq

        with private_rabbitmq() as node:
            yield node.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--sizes", default=",".join(f"{w}x{q}" for w, q in SIZES),
                        help="workers x queues, comma separated")
    parser.add_argument("--profile", action="store_true", help="profile each tick (stderr)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child: url,workers,queues
    args = parser.parse_args()
    if args.one:
        url, workers, queues = args.one.rsplit(",", 2)
        print(json.dumps(measure(url, int(workers), int(queues), args.runs, args.profile)))
        return
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    print(f"\none tick at scale (load rig, private brokers), {args.runs} warm ticks each")
    print(f"{'broker':9} {'workers':>7} {'queues':>6} {'median':>8} {'worst':>8} "
          f"{'cpu':>6} {'peak RSS':>9} {'events':>7} {'replies':>7} {'status':>8}  gaps")
    for label in args.brokers.split(","):
        try:
            with private_broker(label) as url:
                for workers, queues in sizes:
                    child = subprocess.run(
                        [sys.executable, "-m", "tests.bench.large", "--runs", str(args.runs),
                         "--one", f"{url},{workers},{queues}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
                    if child.returncode != 0:
                        print(f"{label:9} {workers:7} {queues:6} failed:\n"
                              f"{child.stderr[-2000:]}", flush=True)
                        continue
                    r = json.loads(child.stdout.strip().splitlines()[-1])
                    print(f"{label:9} {workers:7} {queues:6} {r['median']:7.2f}s "
                          f"{r['worst']:7.2f}s {r['cpu']:5.2f}s {r['peak_mb']:7.0f}MB "
                          f"{r['events']:7} {r['replies']:7} {r['status_kb']:6.0f}KB  "
                          f"{'; '.join(r['gaps']) or 'none'}", flush=True)
        except pytest.skip.Exception as exc:
            print(f"{label}: no private broker ({exc})")
    print("goal: <= 2 s and <= 256 MB per tick; the status item <= 400 KB (DynamoDB)")


if __name__ == "__main__":
    main()
