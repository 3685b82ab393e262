"""A load rig: many simulated Celery workers per process, speaking Celery's wire protocol.

A thousand ``celery worker`` processes do not fit on a 2-core machine; a thousand workers
as seen from the broker do. Each simulated worker here is what the broker and our observer
see of a real one:

- a channel of its own with a consumer on its task queues (prefetch twice its
  concurrency by default, no ack: what it takes it holds, as a worker busy with long tasks
  does, so ``active`` and ``reserved`` list real deliveries with their ``delivery_info``);
- on a second channel, a pidbox consumer (:meth:`kombu.pidbox.Mailbox.Node`, as
  ``celery worker`` uses) on the ``celery.pidbox`` broadcast exchange, replying to the reply
  exchange through the app's producer pool, as Celery's own mailbox does;
- a ``worker-heartbeat`` every ``freq`` seconds from Celery's own event
  :class:`~celery.events.Dispatcher` (hostname, utcoffset, pid, clock, timestamp, freq,
  active, processed, loadavg, sw_ident, sw_ver, sw_sys), and the short wake-up beat the
  ``heartbeat`` control command asks for.

It answers ``ping``, ``heartbeat``, ``active_queues``, ``active``, ``reserved``,
``scheduled`` and ``stats`` (the commands :mod:`celery_ondemand.observe.workers` sends) with
the reply shapes of ``celery worker -P threads`` (``tests/test_rig.py`` compares them key by
key with a real worker's). Run it against a private broker only: :func:`start_rig` starts
``python -m tests.support.rig`` processes and :meth:`RigProcesses.stop` stops them by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from celery.worker.heartbeat import load_average
from celery.worker.state import SOFTWARE_INFO
from kombu import Connection, Consumer, Message, Queue

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_SECONDS = 2.0
WORKERS_PER_PROCESS = 100
"""kombu's Redis poller walks every channel of a connection on each read: a hundred
workers a process answer a broadcast in milliseconds, a thousand in seconds."""


@dataclass
class SimulatedWorker:
    """One worker as the broker sees it: its consumers, what it holds, what it says."""

    hostname: str
    queues: list[Queue]
    concurrency: int
    prefetch: int
    started: float = field(default_factory=time.monotonic)
    active: list[tuple[Message, dict[str, Any]]] = field(default_factory=list)
    reserved: list[tuple[Message, dict[str, Any]]] = field(default_factory=list)
    processed: int = 0
    dispatcher: Any = None

    def on_task(self, body: Any, message: Message) -> None:
        """Hold the delivery: running while a slot is free, reserved (prefetched) after."""
        headers = message.headers or {}
        args, kwargs = (body[0], body[1]) if isinstance(body, list | tuple) and len(
            body) >= 2 else ([], {})
        info = {
            "id": headers.get("id"),
            "name": headers.get("task"),
            "args": args,
            "kwargs": kwargs,
            "type": headers.get("task"),
            "hostname": self.hostname,
            "time_start": None,
            "acknowledged": False,
            "delivery_info": {
                "exchange": message.delivery_info.get("exchange"),
                "routing_key": message.delivery_info.get("routing_key"),
                "priority": (message.properties or {}).get("priority"),
                "redelivered": message.delivery_info.get("redelivered", False),
            },
            "worker_pid": None,
        }
        if len(self.active) < self.concurrency:
            # Celery's Request.on_accepted turns the pool's monotonic stamp into epoch time.
            info.update(time_start=time.time(), worker_pid=os.getpid())
            self.active.append((message, info))
            self.processed += 1
        else:
            self.reserved.append((message, info))

    def beat(self, wake_up: bool = False) -> None:
        """A ``worker-heartbeat``: the scheduled one with counters, or the wake-up one
        (``freq=5``, no counters), as Celery's ``Heart`` and ``heartbeat`` command send."""
        if wake_up:
            self.dispatcher.send("worker-heartbeat", freq=5, **SOFTWARE_INFO)
        else:
            self.dispatcher.send("worker-heartbeat", freq=HEARTBEAT_SECONDS,
                                 active=len(self.active), processed=self.processed,
                                 loadavg=load_average(), **SOFTWARE_INFO)

    # -- control commands: ``handler(worker, **arguments)`` as kombu's Node calls them.

    def ping(self, **_: Any) -> dict[str, str]:
        return {"ok": "pong"}

    def heartbeat(self, **_: Any) -> None:
        self.beat(wake_up=True)

    def active_queues(self, **_: Any) -> list[dict[str, Any]]:
        return [dict(queue.as_dict(recurse=True)) for queue in self.queues]

    def active_tasks(self, safe: bool = False, **_: Any) -> list[dict[str, Any]]:
        return [info for _, info in self.active]

    def reserved_tasks(self, **_: Any) -> list[dict[str, Any]]:
        return [info for _, info in self.reserved]

    def scheduled_tasks(self, **_: Any) -> list[dict[str, Any]]:
        return []

    def stats(self, **_: Any) -> dict[str, Any]:
        """The keys of ``celery worker -P threads``'s ``stats`` reply."""
        totals: dict[str, int] = {}
        for _, info in self.active:
            totals[info["name"]] = totals.get(info["name"], 0) + 1
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "total": totals,
            "pid": os.getpid(),
            "clock": str(self.dispatcher.clock.value if self.dispatcher else 0),
            "uptime": int(time.monotonic() - self.started),
            "pool": {"implementation": "celery.concurrency.thread:TaskPool",
                     "max-concurrency": self.concurrency, "threads": self.concurrency},
            "broker": {"hostname": "127.0.0.1", "userid": None, "virtual_host": "/",
                       "port": 0, "insist": False, "ssl": False, "transport": "rig",
                       "connect_timeout": 4, "transport_options": {},
                       "login_method": None, "uri_prefix": None, "heartbeat": 120.0,
                       "failover_strategy": "round-robin", "alternates": [],
                       "credential_provider": None},
            "prefetch_count": self.prefetch,
            "rusage": {name: getattr(usage, f"ru_{name}") for name in (
                "utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt",
                "nswap", "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw",
                "nivcsw")},
        }

    def handlers(self) -> dict[str, Any]:
        def bind(method: Any) -> Any:
            return lambda _state, **arguments: method(**arguments)
        return {"ping": bind(self.ping), "heartbeat": bind(self.heartbeat),
                "active_queues": bind(self.active_queues), "active": bind(self.active_tasks),
                "reserved": bind(self.reserved_tasks),
                "scheduled": bind(self.scheduled_tasks), "stats": bind(self.stats)}


def plan(workers: int, queues: Sequence[str], per_worker: int = 3,
         prefix: str = "rig") -> list[tuple[str, list[str]]]:
    """Hostnames and their queues: worker ``i`` consumes ``per_worker`` consecutive queues
    from ``i * step``, so every queue has a consumer and the load is even."""
    per_worker = max(per_worker, math.ceil(len(queues) / max(workers, 1)))
    per_worker = min(per_worker, len(queues))
    step = max(1, len(queues) // max(workers, 1))
    run = os.getpid()
    return [(f"{prefix}{i}-{run}@rig",
             [queues[(i * step + j) % len(queues)] for j in range(per_worker)])
            for i in range(workers)]


def run(broker_url: str, specs: list[tuple[str, list[str]]], concurrency: int,
        prefetch: int, ready_file: Path | None = None) -> None:
    """Serve ``specs`` (hostname, queue names) until SIGTERM."""
    app = Celery("ondemand-tests", broker=broker_url, set_as_current=False)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    # Events go out on a connection of their own, as a real worker's do: py-amqp reads the
    # socket on every publish, which on the consumers' connection would run their
    # callbacks (and their replies) re-entrantly inside a heartbeat.
    with Connection(broker_url, heartbeat=0) as connection, \
            Connection(broker_url, heartbeat=0) as events_connection:
        events_channel = events_connection.channel()
        workers: list[SimulatedWorker] = []
        for hostname, names in specs:
            # Two channels, as a real worker has: on Redis a channel whose prefetch is
            # full stops delivering its broadcasts too.
            channel, control = connection.channel(), connection.channel()
            channel.basic_qos(0, prefetch, False)
            queues = [Queue(name, routing_key=name) for name in names]
            worker = SimulatedWorker(hostname, queues, concurrency, prefetch)
            worker.dispatcher = app.events.Dispatcher(
                events_connection, hostname=hostname, channel=events_channel, groups=["worker"],
                enabled=True)
            Consumer(channel, queues, callbacks=[worker.on_task], accept=["json"]).consume()
            node = app.control.mailbox.Node(hostname, state=worker, channel=control,
                                            handlers=worker.handlers())
            node.listen()
            workers.append(worker)
        # Beats spread evenly over the period, as independent workers' beats are.
        period = HEARTBEAT_SECONDS / max(len(workers), 1)
        next_beat = time.monotonic()
        turn = 0
        if ready_file is not None:
            ready_file.write_text("ready")
        parent = os.getppid()
        while not stopping and os.getppid() == parent:  # an orphan stops
            now = time.monotonic()
            while next_beat <= now and workers:
                workers[turn % len(workers)].beat()
                turn += 1
                next_beat += period
            # Beats go out in batches a tenth of a second apart: each read walks every
            # channel (kombu's Redis poller), so waking for each beat cost more than the
            # beats (a few ms late on a 2 s period is nothing).
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=max(0.001, min(0.1, next_beat + 0.1 - now)))
        for worker in workers:  # as a warm shutdown says
            worker.dispatcher.send("worker-offline", **SOFTWARE_INFO)


@dataclass
class RigProcesses:
    """The rig's processes; :meth:`stop` ends them by PID."""

    broker_url: str
    workers: list[tuple[str, list[str]]]
    processes: list[subprocess.Popen[bytes]]
    logdir: Path

    @property
    def hostnames(self) -> list[str]:
        return [hostname for hostname, _ in self.workers]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def start_rig(broker_url: str, workers: list[tuple[str, list[str]]], *, concurrency: int = 2,
              prefetch: int | None = None, per_process: int = WORKERS_PER_PROCESS,
              timeout: float = 300.0) -> RigProcesses:
    """Start the simulated ``workers`` over as many processes as need be; wait until every
    one consumes and answers a broadcast."""
    logdir = Path(tempfile.mkdtemp(prefix="rig-"))
    processes = []
    readies = []
    for index, start in enumerate(range(0, len(workers), per_process)):
        spec = logdir / f"spec{index}.json"
        spec.write_text(json.dumps(workers[start:start + per_process]))
        ready = logdir / f"ready{index}"
        readies.append(ready)
        with (logdir / f"rig{index}.log").open("wb") as out:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "tests.support.rig", broker_url, str(spec),
                 "--concurrency", str(concurrency), "--prefetch",
                 str(prefetch or 2 * concurrency), "--ready", str(ready)],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
                stderr=subprocess.STDOUT))
    rig = RigProcesses(broker_url, workers, processes, logdir)
    deadline = time.monotonic() + timeout
    try:
        while not all(ready.exists() for ready in readies):
            for index, process in enumerate(processes):
                if process.poll() is not None:
                    log = (logdir / f"rig{index}.log").read_text(errors="replace")
                    raise RuntimeError(f"rig process {index} exited:\n{log[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"rig not ready within {timeout:.0f}s")
            time.sleep(0.1)
        _await_pings(broker_url, set(rig.hostnames), deadline)
    except BaseException:
        rig.stop()
        raise
    return rig


def _await_pings(broker_url: str, hostnames: set[str], deadline: float) -> None:
    """Wait until every worker answers a broadcast ``ping``.

    A process's ready file says its consumers are declared, not that they hear a
    broadcast: on Redis the ``celery.pidbox`` fanout is pub/sub, and kombu sends the
    ``SUBSCRIBE`` only at the process's first read. A broadcast sent before it is lost
    for that whole process (seen on a loaded CI: thirty workers silent for a round)."""
    app = Celery("ondemand-tests", broker=broker_url, set_as_current=False)
    heard: set[str] = set()
    try:
        while not hostnames <= heard:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(hostnames - heard)} rig workers never answered a "
                                   f"ping, e.g. {sorted(hostnames - heard)[:3]}")
            for reply in app.control.ping(timeout=1.0) or []:
                heard.update(reply)
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve simulated Celery workers.")
    parser.add_argument("broker_url")
    parser.add_argument("spec", type=Path, help="JSON list of [hostname, [queues]]")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=4)
    parser.add_argument("--ready", type=Path)
    args = parser.parse_args()
    specs = [(hostname, list(names)) for hostname, names in json.loads(args.spec.read_text())]
    run(args.broker_url, specs, args.concurrency, args.prefetch, args.ready)


if __name__ == "__main__":
    main()
