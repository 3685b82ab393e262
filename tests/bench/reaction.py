"""``make bench`` (reaction): from a task published into an empty queue with no worker to
the UpdateService call that starts one.

Real Redis, an ECS service on a moto server on 127.0.0.1, and the real tick (observation,
decision, scaler, SQLite state) on a 15 s grid, as the Lambda keeps it. TARGETS queues, each
with its own ECS service at zero; each round publishes one task to every queue at an
independent random instant of a tick interval, so every phase against the grid is sampled.
The UpdateService call is timed at the boto3 client as it is made (``before-parameter-build``).
After each round the queues are emptied and the services set back to zero between ticks.
Goal: p95 <= 15 s (one tick interval). A tick listens to workers first and reads the queues
last, so what it sees is at most one interval old when it acts: p95 ≈ 0.95 x 15 s plus the
call itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from celery_ondemand.act.ecs import ECSScaler
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.remember import SQLiteStateStore
from celery_ondemand.tick import Ticker
from tests.bench.observe import require_broker_or_exit
from tests.support.aws import ECSWithProtection
from tests.support.brokers import Queues, producer_app

INTERVAL = 15.0


class Grid(threading.Thread):
    """Ticks on a fixed grid (t0, t0 + 15 s, ...) until stopped; ``quiet`` holds the lock
    while no tick runs, for changing the world between ticks."""

    def __init__(self, ticker: Ticker) -> None:
        super().__init__(daemon=True)
        self.ticker, self.stop, self.quiet = ticker, threading.Event(), threading.Lock()
        self.starts: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        origin = time.time()
        k = 0
        while not self.stop.is_set():
            due = origin + k * INTERVAL
            if self.stop.wait(max(0.0, due - time.time())):
                break
            with self.quiet:
                self.starts.append(time.time())
                result = self.ticker.tick()
                if not result.ok:
                    self.errors.append(str(result.error or result.target_errors))
            k += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = require_broker_or_exit("redis://127.0.0.1:6379/0")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    import boto3

    ecs = boto3.client("ecs", region_name="us-east-1")
    ecs.create_cluster(clusterName="bench")
    ecs.register_task_definition(family="worker", containerDefinitions=[
        {"name": "worker", "image": "celery", "memory": 256}])
    calls: list[tuple[float, str, int]] = []

    def timed(params: dict[str, Any], **_: Any) -> None:
        calls.append((time.time(), params["service"], params["desiredCount"]))

    ecs.meta.events.register("before-parameter-build.ecs.UpdateService", timed)
    queues, producer = Queues(url), producer_app(url)
    names = [queues.new("reaction") for _ in range(args.targets)]
    for i in range(args.targets):
        ecs.create_service(cluster="bench", serviceName=f"s{i}", taskDefinition="worker",
                           desiredCount=0)
    settings = settings_from_mapping({"broker_url": url, "tick_interval_seconds": INTERVAL,
                                      "targets": [
        {"name": f"t{i}", "queues": [names[i]], "scaler": "ecs", "cluster": "bench",
         "service": f"s{i}", "worker_concurrency": 4, "max_workers": 4}
        for i in range(args.targets)]})
    client = ECSWithProtection(ecs)
    samples: list[float] = []
    waits: list[float] = []
    within: list[float] = []
    with tempfile.TemporaryDirectory() as state:
        ticker = Ticker(settings, store=SQLiteStateStore(Path(state) / "state.db"),
                        scalers={t.name: ECSScaler(t, client) for t in settings.targets})
        grid = Grid(ticker)
        grid.start()
        rng = random.Random()
        try:
            for _ in range(args.rounds):
                began = time.time()
                plan = sorted((rng.uniform(0, INTERVAL), i) for i in range(args.targets))
                published: dict[str, float] = {}
                for offset, i in plan:
                    time.sleep(max(0.0, began + offset - time.time()))
                    producer.send_task("tests.sleep", args=(0,), queue=names[i])
                    published[f"s{i}"] = time.time()
                deadline = time.time() + 3 * INTERVAL
                seen: dict[str, float] = {}
                while len(seen) < args.targets and time.time() < deadline:
                    for at, service, desired in list(calls):
                        if service in published and at >= published[service] and desired >= 1:
                            seen.setdefault(service, at)
                    time.sleep(0.05)
                if len(seen) < args.targets:
                    raise SystemExit(f"bench: no UpdateService for "
                                     f"{sorted(set(published) - set(seen))} within "
                                     f"{3 * INTERVAL:.0f}s ({grid.errors[-1:]})")
                for service, at in seen.items():
                    samples.append(at - published[service])
                    tick = max(s for s in grid.starts if s <= at)
                    waits.append(tick - published[service])
                    within.append(at - tick)
                with grid.quiet:  # between ticks: empty the queues, services back to zero
                    queues.delete_all()
                    for i in range(args.targets):
                        ecs.update_service(cluster="bench", service=f"s{i}", desiredCount=0)
                    calls.clear()
        finally:
            grid.stop.set()
            grid.join(timeout=3 * INTERVAL)
            ticker.close()
            producer.close()
            queues.delete_all()
            server.stop()
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    print(f"== reaction: {len(samples)} tasks published into empty queues with no worker "
          f"(real Redis, moto ECS, {INTERVAL:.0f}s ticks)")
    print(f"publish -> UpdateService: p50 {statistics.median(samples):.2f}s, "
          f"p95 {p95:.2f}s, max {max(samples):.2f}s; the acting tick took "
          f"{statistics.median(within):.2f}s (p50) from its start to the call, its queue "
          f"read last: {sum(1 for w in waits if w < 0)} of {len(waits)} tasks were "
          f"published while that tick was already listening to workers, and still seen")
    print(f"goal: p95 <= {INTERVAL:.0f}s {'met' if p95 <= INTERVAL else 'MISSED'}")


if __name__ == "__main__":
    main()
