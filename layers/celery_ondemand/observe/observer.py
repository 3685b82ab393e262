"""One observation: every queue's depth and every worker, in about a third of a second.

The :class:`Observer` owns one broker connection and reuses it from tick to tick (a warm
Lambda keeps it). Each :meth:`Observer.observe` call:

1. checks the connection (an unreachable broker fails here, within ``connect_timeout``);
2. listens to a short burst of worker events and asks the workers heard what they hold
   (see :mod:`.workers`), where the broker carries events at all;
3. reads the depth of the queues asked for, or of every queue a live worker consumes;
4. attributes the tasks workers hold to queues by routing key: the work the broker hides.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from celery import Celery
from kombu import Connection

from ..errors import BrokerUnavailable
from ..model import Observation, QueueStatus, WorkerStatus
from ..urls import safe_url, scheme_of
from .brokers import BrokerProbe, QueueDepth, probe_class
from .workers import HeardWorker, ask, discover, listen

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_BURST_SECONDS = 2.5
DEFAULT_QUIET_SECONDS = 0.25
DEFAULT_CONTROL_ROUND_SECONDS = 20.0
"""The longest a control round may last, however many replies keep coming: a tick must
end well inside the Lambda's 60 s (a round at 2,000 workers on Redis took 43-64 s on the
load rig). Workers not answered by then are a gap, as a silent worker is."""
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
FOREIGN_AFTER_SECONDS = 60.0
"""A worker that beats but answers no control command this long is taken for another
app's (see :meth:`Observer._scope_silent`)."""
FORGET = 3600.0
"""The queues a worker listed are forgotten this long after it last answered."""


class Observer:
    """Observes one Celery broker: queues and workers.

    Example
    -------
    >>> with Observer("redis://127.0.0.1:6379/0") as observer:   # doctest: +SKIP
    ...     status = observer.observe()
    ...     status.queues["celery"].size
    """

    def __init__(self, broker_url: str | None = None, *, app: Celery | None = None,
                 transport_options: Mapping[str, Any] | None = None,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 burst_seconds: float = DEFAULT_BURST_SECONDS,
                 quiet_seconds: float = DEFAULT_QUIET_SECONDS,
                 control_timeout: float = 1.0,
                 control_round_seconds: float = DEFAULT_CONTROL_ROUND_SECONDS) -> None:
        own_app = app is None
        if app is None:
            app = Celery("celery-ondemand", broker=broker_url, set_as_current=False)
        if transport_options:
            # Where the workers' app puts them, so Celery hands them to kombu exactly as
            # it does for the workers (key separator, priority steps, key prefix, SQS
            # queue prefix, predefined queues, region, ...).
            app.conf.broker_transport_options = {
                **(app.conf.broker_transport_options or {}), **transport_options}
        self.app = app
        self.broker_url: str = broker_url or str(app.conf.broker_url or "")
        self.probe_class = probe_class(self.broker_url)  # an unknown scheme fails here
        self.connect_timeout = connect_timeout
        self.burst_seconds = burst_seconds
        self.quiet_seconds = quiet_seconds
        self.control_timeout = control_timeout
        self.control_round_seconds = control_round_seconds
        self.blocked: str | None = None
        """Why RabbitMQ blocks our publishing connection (``connection.blocked``), if it
        does: a memory or disk alarm."""
        self._probe: BrokerProbe | None = None
        self._worker_queues: dict[str, tuple[list[str], float]] = {}
        """Hostname → the queues it last listed, and when."""
        self._silent_since: dict[str, float] = {}
        self._pinged_for: frozenset[tuple[str, str]] = frozenset()
        """The unheard consumers (queue, counts) the last ping looked for."""
        if own_app and scheme_of(self.broker_url) in AMQP_SCHEMES:
            # Control commands go out on the app's producer pool, not on the connection
            # we read from: bound it too, and hear when the broker blocks it. (An app of
            # the caller's own keeps its settings: only our reads are bounded then.)
            app.conf.broker_transport_options = {
                **self._timeouts(), **(app.conf.broker_transport_options or {})}

    @property
    def url(self) -> str:
        """The broker URL with its password masked."""
        return safe_url(self.broker_url)

    @property
    def probe(self) -> BrokerProbe:
        """The broker probe, with a connection opened on first use and kept."""
        if self._probe is None:
            self._probe = self.probe_class(self._connect())
        return self._probe

    def _connect(self) -> Connection:
        connection: Connection = self.app.connection_for_read(
            self.broker_url, connect_timeout=self.connect_timeout, heartbeat=0,
            transport_options=self._timeouts())
        return connection

    def _timeouts(self) -> dict[str, Any]:
        """Transport options that bound every broker call by ``connect_timeout``.

        Without them a server that accepts the connection but never answers would block
        the tick forever. The app's own options are kept; ours only fill gaps.
        """
        scheme = scheme_of(self.broker_url)
        own = dict(self.app.conf.broker_transport_options or {})
        if scheme in ("redis", "rediss"):
            return {"socket_timeout": own.get("socket_timeout", self.connect_timeout),
                    "socket_connect_timeout": own.get("socket_connect_timeout",
                                                      self.connect_timeout)}
        if scheme == "sqs":
            client_config = {"connect_timeout": self.connect_timeout,
                             "read_timeout": self.connect_timeout,
                             "retries": {"max_attempts": 2, "mode": "standard"},
                             **(own.get("client-config") or {})}
            return {"client-config": client_config}
        if scheme in AMQP_SCHEMES:
            # py-amqp's socket timeouts: a broker that stops answering (stalled, or a
            # peer gone without a FIN) fails the call instead of hanging the tick.
            return {"read_timeout": own.get("read_timeout", self.connect_timeout),
                    "write_timeout": own.get("write_timeout", self.connect_timeout),
                    "on_blocked": own.get("on_blocked", self._on_blocked),
                    "on_unblocked": own.get("on_unblocked", self._on_unblocked)}
        return {}

    def _on_blocked(self, reason: str) -> None:
        self.blocked = reason or "connection blocked"

    def _on_unblocked(self) -> None:
        self.blocked = None

    def observe(self, queues: Sequence[str] | None = None,
                previous: Observation | None = None, *, ping: bool = False) -> Observation:
        """Observe the broker once.

        ``queues`` limits the depth reads to those names; without it, every queue a live
        worker consumes is read. ``previous`` is the last observation, if any: the burst
        waits for the workers it saw, and their task-event times are carried over.
        ``ping`` also looks for workers that send no events, whatever the burst heard (a
        second more; ``ondemand doctor`` wants every worker).
        """
        observation = Observation(broker=self.url, observed_at=time.time())
        started = time.monotonic()
        try:
            probe = self.probe
            probe.check()
            heard: dict[str, HeardWorker] = {}
            if probe.supports_workers:
                # Workers found by control never beat: waiting for them in the burst
                # would only wait out its whole window.
                expected = [name for name, worker in previous.live_workers.items()
                            if worker.heard_by == "events"] if previous else []
                with probe.errors("listening to workers on"):
                    heard = listen(self.app, probe.connection, expected=expected,
                                   max_seconds=self.burst_seconds, quiet=self.quiet_seconds)
                    observation.sources.append("events")
                    unheard = frozenset(_unheard_consumers(previous)) if previous \
                        else frozenset()
                    if ping or _worth_a_ping(heard, previous, self._pinged_for):
                        found = discover(self.app, probe.connection, heard,
                                         timeout=self.control_timeout,
                                         max_seconds=self.control_round_seconds)
                        heard.update(found)
                        if found:
                            observation.sources.append("ping")
                        self._pinged_for = unheard
                    elif not unheard:
                        self._pinged_for = frozenset()
                    undecodable = ask(self.app, probe.connection, heard,
                                      timeout=self.control_timeout,
                                      max_seconds=self.control_round_seconds)
                    if undecodable:
                        observation.warnings.append(
                            f"{undecodable} control replies in a serializer not accepted "
                            "(another app's workers on the same control exchange?): dropped")
                    if any(worker.replied for worker in heard.values()):
                        observation.sources.append("control")
                    self._scope_silent(observation, heard)
                    if self.blocked:
                        observation.add_problem(
                            f"RabbitMQ blocks publishing ({self.blocked}: a memory or disk "
                            "alarm): workers can neither beat nor answer, so none is heard")
            names = list(queues) if queues else _consumed_queues(heard.values())
            held = sum(len(w.running) + len(w.waiting) + len(w.scheduled) + w.rate_limited
                       for w in heard.values())
            depths = probe.depths(names, held_by_workers=held if probe.supports_workers
                                  and all(w.replied for w in heard.values()) else None)
            if probe.unattributed:
                observation.add_problem(
                    f"{probe.unattributed} unacknowledged messages beyond the "
                    "bounded read, not attributed to a queue: they could be any queue's "
                    "stranded tasks")
            observation.sources.insert(0, "broker")
        except BrokerUnavailable:
            self.close(failed=True)  # the next observation starts on a fresh connection
            raise
        _fill(observation, names, depths, heard, previous)
        for queue, problem in _unheard_consumers(observation):
            observation.add_problem(problem, [queue])
        observation.duration = time.monotonic() - started
        return observation

    def _scope_silent(self, observation: Observation, heard: dict[str, HeardWorker]) -> None:
        """A worker heard beating but silent to control hides what it runs: a gap for the
        targets of the queues it consumes.

        Its queues are those it last listed (to this observer). Unknown, on RabbitMQ the
        queues' consumer counts already show an unheard consumer on any queue we read;
        on Redis it holds every target, until it has stayed silent for
        :data:`FOREIGN_AFTER_SECONDS`: a worker that beats on our events exchange but
        never answers our control commands belongs to another app (a control exchange
        of its own), and must not blind ours for good.
        """
        now = observation.observed_at
        for name in [n for n, (_, at) in self._worker_queues.items() if now - at > FORGET]:
            del self._worker_queues[name]  # gone long ago: a bounded memory
        self._silent_since = {name: at for name, at in self._silent_since.items()
                              if name in heard}
        for name, worker in heard.items():
            if worker.replied:
                self._worker_queues[name] = ([q["name"] for q in worker.queues
                                              if isinstance(q, dict) and "name" in q], now)
                self._silent_since.pop(name, None)
                continue
            problem = f"{name} did not answer control"
            known = self._worker_queues.get(name, ([], now))[0]
            since = self._silent_since.setdefault(name, now)
            if known:
                observation.add_problem(f"{problem} (it consumes {', '.join(known)})", known)
            elif scheme_of(self.broker_url) in AMQP_SCHEMES:
                observation.warnings.append(f"{problem}; its queues unknown (a queue of "
                                            "ours it consumes shows in the consumer counts)")
            elif now - since < FOREIGN_AFTER_SECONDS:
                observation.add_problem(f"{problem}; its queues unknown: every target held")
            else:
                observation.warnings.append(
                    f"{problem} for {now - since:.0f}s though it beats: taken for another "
                    "app's worker (a control exchange of its own), not held on")

    def drain(self, hostnames: Sequence[str]) -> None:
        """Tell these workers to finish what they run and exit (the bootstep's
        ``ondemand_drain``), on the connection the reads use; no reply is awaited."""
        if hostnames:
            self.app.control.broadcast("ondemand_drain", destination=list(hostnames),
                                       connection=self.probe.connection)

    def close(self, failed: bool = False) -> None:
        """Release the broker connection; the next observation opens a new one.

        After a failure the connection is dropped without the closing handshake: a broker
        that stopped answering would make the handshake wait too.
        """
        if self._probe is not None:
            probe, self._probe = self._probe, None
            with contextlib.suppress(Exception):
                if failed:
                    probe.connection.collect()
                else:
                    probe.connection.release()

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def observe(broker_url: str, queues: Sequence[str] | None = None, *,
            burst_seconds: float = DEFAULT_BURST_SECONDS,
            connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
            previous: Observation | None = None) -> Observation:
    """Observe a broker once with a connection of its own (see :class:`Observer`)."""
    with Observer(broker_url, burst_seconds=burst_seconds,
                  connect_timeout=connect_timeout) as observer:
        return observer.observe(queues, previous=previous)


def _worth_a_ping(heard: dict[str, HeardWorker], previous: Observation | None,
                  pinged_for: frozenset[tuple[str, str]] = frozenset()) -> bool:
    """Whether workers that send no events may be out there: the burst heard nobody, a
    worker last found by ping is missing (it never beats, so it is never heard), or the
    last read found a queue with more consumers than workers heard (RabbitMQ: one that
    sends no events answered the control round too late to be counted) — once for the
    same unheard consumers (``pinged_for``): a consumer no ping answers (a shovel, a
    ``-P solo`` worker deep in a task) would cost every tick a second."""
    if not heard:
        return True
    if previous is None:
        return False
    missing = any(w.heard_by == "control" and w.hostname not in heard
                  for w in previous.live_workers.values())
    unheard = frozenset(_unheard_consumers(previous))
    return missing or (bool(unheard) and unheard != pinged_for)


def _unheard_consumers(observation: Observation) -> list[tuple[str, str]]:
    """A queue the broker says more consumers read than the workers heard: someone we
    cannot see is working, so the read has a gap (RabbitMQ keeps consumer counts)."""
    return [(queue.name, f"queue {queue.name}: {queue.consumers} consumers on the broker, "
                         f"{queue.many_workers} workers heard")
            for queue in observation.queues.values()
            if queue.consumers is not None and queue.consumers > queue.many_workers]


def _consumed_queues(workers: Iterable[HeardWorker]) -> list[str]:
    names = {queue["name"] for worker in workers for queue in worker.queues
             if isinstance(queue, dict) and queue.get("name")}
    return sorted(names)


def _queue_for(delivery_info: Any, routes: dict[tuple[str, str], str],
               names: set[str]) -> str | None:
    """The queue a task came from, by its delivery's exchange and routing key."""
    if not isinstance(delivery_info, dict):
        return None
    routing_key = str(delivery_info.get("routing_key") or "")
    exchange = str(delivery_info.get("exchange") or "")
    return routes.get((exchange, routing_key)) or routes.get(("", routing_key)) or (
        routing_key if routing_key in names else None)


def _routes(workers: Iterable[HeardWorker]) -> dict[tuple[str, str], str]:
    """(exchange, routing key) → queue name, from the queues the workers declared."""
    routes: dict[tuple[str, str], str] = {}
    for worker in workers:
        for queue in worker.queues:
            if not isinstance(queue, dict) or not queue.get("name"):
                continue
            exchange = queue.get("exchange") or {}
            exchange_name = exchange.get("name", "") if isinstance(exchange, dict) else ""
            routing_key = str(queue.get("routing_key") or queue["name"])
            routes.setdefault((exchange_name or "", routing_key), queue["name"])
            routes.setdefault(("", routing_key), queue["name"])
    return routes


def _fill(observation: Observation, names: list[str], depths: dict[str, QueueDepth],
          heard: dict[str, HeardWorker], previous: Observation | None) -> None:
    """Turn what was read into cwod's QueueStatus and WorkerStatus records."""
    before = previous.workers if previous else {}
    for hostname, worker in sorted(heard.items()):
        status = WorkerStatus(
            hostname=hostname,
            last_heartbeat_at=worker.last_heartbeat_at,
            alive=True,
            active=worker.active,
            reserved=len(worker.waiting),
            processed=worker.processed,
            concurrency=worker.concurrency,
            queues=[q["name"] for q in worker.queues if isinstance(q, dict) and "name" in q],
            heartbeat_interval=worker.heartbeat_interval,
            machine=worker.machine,
            scheduled=len(worker.scheduled),
            heard_by="events" if worker.by_events else "control",
            rate_limited=worker.rate_limited,
        )
        old = before.get(hostname)
        # A drain is for good: a stats reply missing this round does not undo it.
        reported = worker.draining if worker.draining is not None \
            else (old.draining if old else None)
        status.draining = reported or None
        for name in ("last_task_received_at", "last_task_started_at", "last_task_succeeded_at"):
            latest = worker.task_times.get(name, getattr(old, name, None) if old else None)
            setattr(status, name, latest)
        observation.workers[hostname] = status

    has_replies = "events" in observation.sources  # no worker heard: nothing runs
    serving: dict[str, list[WorkerStatus]] = {}  # one pass, not a scan per queue
    for status in observation.workers.values():
        for served in dict.fromkeys(status.queues):
            serving.setdefault(served, []).append(status)
    for name in names:
        depth = depths.get(name, QueueDepth(ready=0))
        observation.queues[name] = QueueStatus(
            name=name,
            size=depth.ready,
            workers=serving.get(name, []),
            running=0 if has_replies else None,
            reserved=0 if has_replies else None,
            delayed=depth.delayed,
            oldest_age=(max(0.0, observation.observed_at - depth.oldest_published_at)
                        if depth.oldest_published_at is not None else None),
            consumers=depth.consumers,
            missing=depth.missing,
            hidden=0,
        )
        if depth.unreadable:
            observation.add_problem(f"queue {name} not read: {depth.unreadable}", [name])
        if depth.foreign:
            observation.warnings.append(
                f"queue {name}: its oldest message is not a Celery task message (foreign or "
                "corrupt); counted as work, no age read from it")

    routes = _routes(heard.values())
    known = set(observation.queues)
    for worker in heard.values():
        for tasks, part in ((worker.running, "running"), (worker.waiting, "reserved")):
            for task in tasks:
                queue_name = _queue_for(task.get("delivery_info") if isinstance(task, dict)
                                        else None, routes, known)
                queue = observation.queues.get(queue_name or "")
                if queue is not None:
                    setattr(queue, part, (getattr(queue, part) or 0) + 1)
                    queue.hidden += 1
                    started = task.get("time_start") if part == "running" else None
                    if isinstance(started, int | float):
                        queue.running_ages.append(max(0.0, observation.observed_at - (
                            started + worker.clock_offset)))
    scheduled: dict[str, int] = {}
    for worker in heard.values():
        for task in worker.scheduled:
            queue_name = _queue_for(task.get("delivery_info"), routes, known)
            if queue_name is not None:
                scheduled[queue_name] = scheduled.get(queue_name, 0) + 1
    for name, queue in observation.queues.items():
        if name in scheduled:
            queue.delayed = (queue.delayed or 0) + scheduled[name]
        # The broker's unacknowledged count covers the workers' tasks under acks_late
        # (ETA tasks held until due included: those are not runnable work), and also those
        # of a worker that died holding them: the larger of the two counts.
        in_flight = depths.get(name, QueueDepth(ready=0)).in_flight or 0
        queue.hidden = max(queue.hidden, in_flight - scheduled.get(name, 0))
