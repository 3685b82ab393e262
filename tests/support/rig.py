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

Each process also notes, in its log folder and never in a reply, when it sent its replies
(by ticket) and its wake-up beats (:class:`SentLog`): :meth:`RigProcesses.sent` tells how
long a round waited for the rig itself, apart from the observer's own work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from celery import Celery
from celery.worker.heartbeat import load_average
from celery.worker.state import SOFTWARE_INFO
from kombu import Connection, Consumer, Message, Producer, Queue

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_SECONDS = 2.0
WORKERS_PER_PROCESS = 50
"""kombu's Redis poller walks every channel of a connection on each read (two a worker),
and a broadcast takes one read per worker: a process's round costs the square of its
workers. A thousand a process answered in seconds; fifty answer sooner than a hundred
(tests/bench/large.py at 500 x 500 on Redis, 2026-11-29: the wait for the rig's replies
1.9 s against 2.7 s, 3.6 s against 4.4-5.0 s on a busier machine)."""


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


class SentLog:
    """When this process sent what: replies by ticket, wake-up beats, each as a count and the
    epoch times of the first and the last sent.

    Kept in memory and written to ``path`` (one JSON line per ticket) only when the process
    is idle, so that noting a reply costs a clock read, not a write: the log must not slow
    the answers it measures. Epoch time, as the observer's process reads it on this machine.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.pending: dict[str, list[float]] = {}
        self.oldest = 0.0

    def note(self, key: str) -> None:
        now = time.time()
        seen = self.pending.get(key)
        if seen is None:
            if not self.pending:
                self.oldest = time.monotonic()
            self.pending[key] = [1, now, now]
        else:
            seen[0] += 1
            seen[2] = now

    def flush(self, force: bool = False) -> None:
        """Write what is noted, when idle (``force``) or once it is a second old."""
        if not self.pending or self.path is None or not (
                force or time.monotonic() - self.oldest > 1.0):
            return
        with self.path.open("a") as out:
            for key, (count, first, last) in self.pending.items():
                out.write(json.dumps({"key": key, "count": int(count), "first": first,
                                      "last": last}) + "\n")
        self.pending = {}


class RedisBatch:
    """Redis: what a process sends (replies, events) pushed in one pipeline after each
    socket read, not one or two round trips a message.

    kombu's Redis channel sends a reply with a ``SMEMBERS`` of the reply exchange's
    bindings and then an ``LPUSH``, and an event with a ``PUBLISH``, each on a client it
    builds for the call: at a hundred workers a process those were most of the rig's time
    in a round (1.5 ms a reply on a busy machine). Here a replying channel's ``_lookup`` of
    a reply route is kept once found (a tick's reply queue is bound before its broadcast
    goes out), its ``_put`` and an events channel's ``_put_fanout`` queue the message, and
    :meth:`flush` sends them, in order, with the same keys, payloads and expiry kombu's
    would. What the broker receives is unchanged, only sooner."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.pending: list[tuple[str, Any, tuple[Any, ...]]] = []
        self.clients: dict[int, Any] = {}
        self.note = note
        self.notes: list[str] = []
        """What to note as sent (:class:`SentLog`) once the pipeline has gone out."""

    def adopt_replies(self, channel: Any) -> None:
        """Send this channel's replies (to direct exchanges) through the batch."""
        lookup, routes = channel._lookup, {}

        def cached_lookup(exchange: str, routing_key: str, default: Any = None) -> Any:
            found = routes.get((exchange, routing_key))
            if found is None:
                found = lookup(exchange, routing_key, default)
                if found and found != [default] and found != [channel.deadletter_queue]:
                    routes[(exchange, routing_key)] = found
            return found

        channel._lookup = cached_lookup
        channel._put = lambda queue, message, **_: self.pending.append(
            ("put", channel, (queue, message)))

    def adopt_events(self, channel: Any) -> None:
        """Send this channel's events (to fanout exchanges) through the batch."""
        channel._put_fanout = lambda exchange, message, routing_key, **_: \
            self.pending.append(("fanout", channel, (exchange, message, routing_key)))

    def _client(self, channel: Any) -> Any:
        client = self.clients.get(id(channel.pool))
        if client is None:
            import redis

            client = self.clients[id(channel.pool)] = redis.Redis(
                connection_pool=channel.pool)
        return client

    def flush(self) -> None:
        if not self.pending:
            return
        from kombu.utils.json import dumps

        pending, self.pending = self.pending, []
        pipes: dict[int, Any] = {}
        for kind, channel, args in pending:
            pipe = pipes.get(id(channel.pool))
            if pipe is None:
                pipe = pipes[id(channel.pool)] = self._client(channel).pipeline(
                    transaction=False)
            if kind == "put":  # kombu's Channel._put
                queue, message = args
                pri = channel._get_message_priority(message, reverse=False)
                pipe.lpush(channel._q_for_pri(queue, pri), dumps(message))
                if channel._expires and queue in channel._expires:
                    for step in channel.priority_steps:
                        pipe.pexpire(channel._q_for_pri(queue, step),
                                     channel._expires[queue])
            else:  # kombu's Channel._put_fanout
                exchange, message, routing_key = args
                payload = dumps(message)
                for topic in channel._get_publish_topics(exchange, routing_key):
                    pipe.publish(topic, payload)
        for pipe in pipes.values():
            pipe.execute()
            pipe.reset()
        notes = list(self.notes)
        self.notes.clear()  # in place: the nodes hold its ``append``
        for key in notes:
            self.note(key)


@dataclass
class Sent:
    """What the rig sent in a window of time: how many, and when the last one went out."""

    count: int = 0
    last: float | None = None


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


def _read_every_ready_socket(connection: Connection, after_each: Callable[[], None]) -> None:
    """Redis: one read handles every socket the poll found ready, not only the first.

    kombu's ``MultiChannelPoller.get`` handles the first ready socket and returns; the next
    read walks every channel of the connection again (two a worker) before it polls. A
    broadcast makes one socket a worker ready, so a process's round cost the square of its
    workers. Here the poll hands kombu the first event as before, and its handler then
    handles the others found ready by the same poll, each as kombu would: the same
    messages read, the same replies sent, with one walk instead of one a worker.
    ``after_each`` runs after each socket (the batch goes out): a process's replies held
    until all fifty workers had answered went silent for over a second on a busy machine,
    and the observer's round took that silence for its end."""
    cycle = connection.transport.cycle
    rest: list[tuple[int, int]] = []
    poll, handle_event = cycle.poller.poll, cycle.handle_event

    def first_of_poll(timeout: float | None) -> Any:
        events = poll(timeout)
        rest[:] = list(events or [])[1:]
        return list(events or [])[:1]

    def handle_all(fileno: int, event: int) -> Any:
        result = handle_event(fileno, event)
        after_each()
        others, rest[:] = list(rest), []
        for other in others:
            handle_event(*other)
            after_each()
        return result

    cycle.poller.poll = first_of_poll
    cycle.handle_event = handle_all


def _noting(send: Callable[..., Any], note: Callable[[str], None],
            key: Callable[..., str]) -> Callable[..., Any]:
    """``send``, then note it under ``key(*its arguments)``: after it went out."""
    def sent(*args: Any, **kwargs: Any) -> Any:
        result = send(*args, **kwargs)
        note(key(*args, **kwargs))
        return result
    return sent


def _reply_with(producer: Producer, mailbox: Any, data: Any, exchange: str,
                routing_key: str, ticket: str, **_: Any) -> None:
    """kombu's ``Node.reply``, through ``producer`` instead of the app's pool."""
    mailbox._publish_reply(data, exchange, routing_key, ticket, producer=producer,
                           channel=producer.channel,
                           serializer=mailbox.serializer)


def run(broker_url: str, specs: list[tuple[str, list[str]]], concurrency: int,
        prefetch: int, ready_file: Path | None = None, timings: Path | None = None,
        plain: bool = False) -> None:
    """Serve ``specs`` (hostname, queue names) until SIGTERM; note what is sent in
    ``timings`` (:class:`SentLog`). ``plain``: read and send as kombu does, one socket a
    read and one message a send (to compare; the same messages either way)."""
    log = SentLog(timings)
    batch = RedisBatch(log.note)
    app = Celery("ondemand-tests", broker=broker_url, set_as_current=False)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    # Events go out on a connection of their own, as a real worker's do: py-amqp reads the
    # socket on every publish, which on the consumers' connection would run their
    # callbacks (and their replies) re-entrantly inside a heartbeat.
    with Connection(broker_url, heartbeat=0) as connection, \
            Connection(broker_url, heartbeat=0) as events_connection:
        events_channel = events_connection.channel()
        replier = None
        batched = not plain and connection.transport.driver_type == "redis"
        if batched:
            # One producer on a channel of its own for every reply of the process, and the
            # events, batched (:class:`RedisBatch`); elsewhere the app's producer pool, as
            # Celery's, and a publish a message.
            replier = Producer(connection.channel(), auto_declare=False)
            batch.adopt_replies(replier.channel)
            batch.adopt_events(events_channel)
            _read_every_ready_socket(connection, batch.flush)
        note = batch.notes.append if batched else log.note
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
            handlers = worker.handlers()
            handlers["heartbeat"] = _noting(handlers["heartbeat"], note,
                                            lambda *_, **__: "wake")
            node = app.control.mailbox.Node(hostname, state=worker, channel=control,
                                            handlers=handlers)
            if replier is not None:
                node.reply = partial(_reply_with, replier, node.mailbox)  # type: ignore[method-assign]
            node.reply = _noting(  # type: ignore[method-assign]
                node.reply, note,
                lambda *_, ticket=None, **__: f"reply:{ticket}")
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
            batch.flush()
            # Beats go out in batches a tenth of a second apart: each read walks every
            # channel (kombu's Redis poller), so waking for each beat cost more than the
            # beats (a few ms late on a 2 s period is nothing).
            try:
                connection.drain_events(timeout=max(0.001, min(0.1, next_beat + 0.1 - now)))
                batch.flush()
                log.flush()
            except TimeoutError:
                batch.flush()
                log.flush(force=True)  # idle: nothing to answer, the write delays nobody
        log.flush(force=True)
        for worker in workers:  # as a warm shutdown says
            worker.dispatcher.send("worker-offline", **SOFTWARE_INFO)
        batch.flush()


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

    def sent(self, kind: str, since: float, until: float) -> Sent:
        """What every process sent (``kind``: ``reply`` or ``wake``) from ``since`` to
        ``until`` (epoch): replies by tickets first sent in that window, counted whole
        even if late. A process writes its notes once idle: read them a moment after."""
        found = Sent()
        for path in self.logdir.glob("timings*.jsonl"):
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if entry["key"].split(":")[0] != kind or not since <= entry["first"] <= until:
                    continue
                found.count += entry["count"]
                found.last = max(found.last or entry["last"], entry["last"])
        return found

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                # A process restores its workers' deliveries as it closes (1,000 workers
                # took 21 s on a busy machine): killed sooner, they stay in Redis'
                # ``unacked`` hash and the next observer of that broker counts them.
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def start_rig(broker_url: str, workers: list[tuple[str, list[str]]], *, concurrency: int = 2,
              prefetch: int | None = None, per_process: int = WORKERS_PER_PROCESS,
              timeout: float = 300.0, plain: bool = False) -> RigProcesses:
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
                 str(prefetch or 2 * concurrency), "--ready", str(ready),
                 "--timings", str(logdir / f"timings{index}.jsonl"),
                 *(["--plain"] if plain else [])],
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
    parser.add_argument("--timings", type=Path, help="where to note when replies went out")
    parser.add_argument("--plain", action="store_true",
                        help="read and send as kombu does (Redis: unbatched, to compare)")
    args = parser.parse_args()
    specs = [(hostname, list(names)) for hostname, names in json.loads(args.spec.read_text())]
    run(args.broker_url, specs, args.concurrency, args.prefetch, args.ready, args.timings,
        args.plain)


if __name__ == "__main__":
    main()
