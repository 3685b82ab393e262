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

The wall is split in two: the **wait for the rig**, from each broadcast (the burst's
``heartbeat``, each control round) to the last wake-up beat or reply the rig's processes
sent for it (they note the time in their log folder, :class:`tests.support.rig.SentLog`),
and the tick's **own** remainder (wall minus that wait): reading and decoding what
arrived, the quiet period that ends the burst, the queue read, deciding, remembering. On
two cores the rig's simulated workers answer one after another; real workers on their own
machines answer at once, so the own remainder is what a tick over real workers would
approach.
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

from tests.support.rig import ROOT, WORKERS_PER_PROCESS, plan, start_rig

SIZES = [(125, 125), (250, 250), (500, 500), (1000, 1000), (2000, 200)]
QUEUES_PER_TARGET = 20
CONCURRENCY = 2


def measure(url: str, workers: int, queues: int, runs: int,
            profile: bool = False, per_process: int = WORKERS_PER_PROCESS,
            plain_rig: bool = False) -> dict[str, Any]:
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
    from celery_ondemand.observe import observer as observer_module

    read = {"events": 0, "replies": 0}
    windows: dict[str, list[tuple[float, float]]] = {"wake": [], "reply": []}
    _count_reads(read, heard_workers)
    _time_broadcasts(windows, heard_workers, observer_module)
    producer = producer_app(url)
    rig = None
    try:
        # The tasks first, then the workers: each takes its prefetch as it starts.
        # Published into 2,000 waiting consumers, each task woke a rig process (on a busy
        # machine, over 8 minutes at 2,000 x 200 on Redis before the first tick).
        with producer.producer_or_acquire() as publisher:
            for i in range(workers * 2 * CONCURRENCY + queues):  # every slot held, more wait
                producer.send_task("tests.sleep", args=(600,), queue=names[i % queues],
                                   producer=publisher)
        rig = start_rig(url, layout, concurrency=CONCURRENCY, per_process=per_process,
                        plain=plain_rig)
        _await_prefetch(producer, names)
        targets = [{"name": f"t{i}", "queues": names[start:start + QUEUES_PER_TARGET],
                    "scaler": "local", "command": "-", "worker_concurrency": CONCURRENCY,
                    "max_workers": workers}
                   for i, start in enumerate(range(0, queues, QUEUES_PER_TARGET))]
        settings = settings_from_mapping({"broker_url": url, "targets": targets})
        times, cpu, gaps, waits = [], [], [], []
        with tempfile.TemporaryDirectory() as state:
            ticker = Ticker(settings, observer=Observer(url), scalers={},
                            store=SQLiteStateStore(Path(state) / "state.db"))
            for _ in range(runs):
                read.update(events=0, replies=0)
                windows.update(wake=[], reply=[])
                began, began_cpu = time.perf_counter(), time.process_time()
                result = _profiled(ticker.tick) if profile else ticker.tick()
                times.append(time.perf_counter() - began)
                cpu.append(time.process_time() - began_cpu)
                gaps.append(_gaps(result, layout, names))
                waits.append(_rig_wait(rig, windows, read["replies"]))
                gaps[-1] = "; ".join(filter(None, [gaps[-1], waits[-1].pop("gap")]))
            stored = len(encode_status(result.status(), time.time()))
            ticker.close()
        own = [wall - wait["wait"] for wall, wait in zip(times, waits, strict=True)]
        own_rest = [wall - wait["burst_window"] - wait["round_window"]
                    for wall, wait in zip(times, waits, strict=True)]
        return {"workers": workers, "queues": queues, "median": statistics.median(times),
                "worst": max(times), "cpu": statistics.median(cpu),
                "wait": statistics.median(wait["wait"] for wait in waits),
                "wait_burst": statistics.median(wait["burst"] for wait in waits),
                "wait_round": statistics.median(wait["round"] for wait in waits),
                "own": statistics.median(own), "own_worst": max(own),
                "own_burst": statistics.median(w["burst_window"] - w["burst"] for w in waits),
                "own_round": statistics.median(w["round_window"] - w["round"] for w in waits),
                "own_rest": statistics.median(own_rest),
                "peak_mb": resource.getrusage(
                    resource.RUSAGE_SELF).ru_maxrss / 1024,
                "events": read["events"], "replies": read["replies"],
                "gaps": [gap for gap in gaps if gap], "status_kb": stored / 1024}
    finally:
        if rig is not None:
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


def _time_broadcasts(windows: dict[str, list[tuple[float, float]]], heard_workers: Any,
                     observer_module: Any) -> None:
    """Note the epoch time each burst and each control round began and ended: the rig's
    answers to it are those it sent in that window."""
    listen, gather = observer_module.listen, heard_workers.gather

    def timed(kind: str, call: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            began = time.time()
            try:
                return call(*args, **kwargs)
            finally:
                windows[kind].append((began, time.time()))
        return run

    observer_module.listen = timed("wake", listen)
    heard_workers.gather = timed("reply", gather)


def _await_prefetch(producer: Any, names: list[str], most: float = 60.0) -> None:
    """Wait until the rig has taken its prefetch: the queues' ready count holds still for
    a second (on a busy machine two seconds were not always enough, and tasks delivered
    after the workers answered read as unaccounted for)."""
    time.sleep(2.0)
    deadline, last = time.monotonic() + most, -1
    with producer.connection_for_read() as connection:
        channel = connection.channel()

        def ready_in(name: str) -> int:
            nonlocal channel
            try:
                return int(channel.queue_declare(name, passive=True).message_count)
            except connection.channel_errors:  # Redis: an emptied queue is no queue
                channel = connection.channel()  # (RabbitMQ closes the channel on a 404)
                return 0

        while time.monotonic() < deadline:
            ready = sum(ready_in(name) for name in names)
            if ready == last:
                return
            last = ready
            time.sleep(1.0)


def _rig_wait(rig: Any, windows: dict[str, list[tuple[float, float]]],
              replies_read: int) -> dict[str, Any]:
    """Seconds from each broadcast to the last answer the rig sent for it (the burst's
    wake-up beats, each round's replies), capped at the window's end (a later answer was
    not waited for); and a gap if the observer read fewer replies than the rig sent.

    The rig's processes write their notes once idle: read them until they account for
    every reply read, or for at most 5 s."""
    deadline = time.monotonic() + 5.0
    while True:
        waits = {"burst": 0.0, "round": 0.0, "burst_window": 0.0, "round_window": 0.0}
        sent_replies = 0
        for kind, key in (("wake", "burst"), ("reply", "round")):
            for began, ended in windows[kind]:
                waits[f"{key}_window"] += ended - began
                sent = rig.sent(kind, began, ended)
                if sent.last is not None:
                    waits[key] += min(sent.last, ended) - began
                if kind == "reply":
                    sent_replies += sent.count
        if sent_replies >= replies_read or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    gap = "" if sent_replies == replies_read else \
        f"the rig sent {sent_replies} replies, {replies_read} read"
    return {**waits, "wait": waits["burst"] + waits["round"], "gap": gap}


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
    parser.add_argument("--per-process", type=int, default=WORKERS_PER_PROCESS,
                        help="simulated workers per rig process")
    parser.add_argument("--rig-plain", action="store_true",
                        help="the rig reads and sends as kombu does (Redis: unbatched)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child: url,workers,queues
    args = parser.parse_args()
    if args.one:
        url, workers, queues = args.one.rsplit(",", 2)
        print(json.dumps(measure(url, int(workers), int(queues), args.runs, args.profile,
                                 args.per_process, args.rig_plain)))
        return
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    print(f"\none tick at scale (load rig, private brokers), {args.runs} warm ticks each")
    print("wall = waiting for the rig's answers (burst + control round) + the tick's own")
    print("own = after the rig's last answer in the burst (its quiet period included) + in "
          "the control rounds + the rest (queue read, decide, remember)")
    print(f"{'broker':9} {'workers':>7} {'queues':>6} {'median':>8} {'worst':>8} "
          f"{'rig wait':>17} {'own':>8} {'own max':>8} {'own split':>17} "
          f"{'cpu':>6} {'peak RSS':>9} {'events':>7} {'replies':>7} {'status':>8}  gaps")
    for label in args.brokers.split(","):
        try:
            with private_broker(label) as url:
                for workers, queues in sizes:
                    try:
                        child = subprocess.run(
                            [sys.executable, "-m", "tests.bench.large", "--runs",
                             str(args.runs), "--per-process", str(args.per_process),
                             *(["--rig-plain"] if args.rig_plain else []),
                             "--one", f"{url},{workers},{queues}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
                    except subprocess.TimeoutExpired:
                        print(f"{label:9} {workers:7} {queues:6} timed out (900 s)",
                              flush=True)
                        continue
                    if child.returncode != 0:
                        print(f"{label:9} {workers:7} {queues:6} failed:\n"
                              f"{child.stderr[-2000:]}", flush=True)
                        continue
                    r = json.loads(child.stdout.strip().splitlines()[-1])
                    wait = f"{r['wait']:.2f}s ({r['wait_burst']:.2f}+{r['wait_round']:.2f})"
                    split = f"{r['own_burst']:.2f}+{r['own_round']:.2f}+{r['own_rest']:.2f}"
                    print(f"{label:9} {workers:7} {queues:6} {r['median']:7.2f}s "
                          f"{r['worst']:7.2f}s {wait:>17} {r['own']:7.2f}s "
                          f"{r['own_worst']:7.2f}s {split:>17} "
                          f"{r['cpu']:5.2f}s {r['peak_mb']:7.0f}MB "
                          f"{r['events']:7} {r['replies']:7} {r['status_kb']:6.0f}KB  "
                          f"{'; '.join(r['gaps']) or 'none'}", flush=True)
        except pytest.skip.Exception as exc:
            print(f"{label}: no private broker ({exc})")
    print("goal: <= 2 s and <= 256 MB per tick; the status item <= 400 KB (DynamoDB)")


if __name__ == "__main__":
    main()
