"""A queue and its workers in continuous time, driven by a scaling policy.

Tasks arrive at their second of the trace and wait in FIFO order for a free slot; a task
holds its slot for exactly its service time (0.3 s is 0.3 s) and frees it at that instant.
A worker serves ``concurrency`` tasks at once, starts serving ``startup_seconds`` after
the scale-up call and is billed from that call until it stops (``minimum_billed_seconds``
at least). Every ``tick_seconds`` — after every event up to and including that instant —
the policy sees what a burst would (ready, running, workers with their counters, the
oldest task's age) and returns a worker count. Scale-in cancels workers still starting
(the newest first), then stops idle ones, then drains busy ones (the one finishing first
first): a draining worker takes no new task and stops when its last task ends, so no task
is ever cut.

The run is event-driven: between ticks only arrivals, completions and workers becoming
ready change anything, each handled at its own instant. :class:`Fleet` is the whole state,
so a clairvoyant planner can replay what-ifs from it (see :mod:`.planners`).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

Task = tuple[float, float]
"""(arrival instant, service seconds)."""


@dataclass(frozen=True)
class SimConfig:
    concurrency: int = 4
    startup_seconds: int = 60
    tick_seconds: int = 15
    wait_target: float = 60.0
    max_workers: int = 200
    minimum_billed_seconds: float = 0.0
    """Each worker started is billed at least this long, as Fargate and EC2 (Linux) bill a
    minute at least; 0 bills by the second, a start taken back at once costing nothing.
    The minimum is charged to the start: a worker started in the warm-up is billed by the
    second from ``measure_from``, one still running at the end its whole minimum."""


@dataclass(eq=False)
class SimWorker:
    """One worker; ``ends`` holds the end instants of the tasks it runs now."""

    serial: int
    billed_from: float
    ready_at: float
    ends: list[float] = field(default_factory=list)
    processed: int = 0
    draining: bool = False

    @property
    def name(self) -> str:
        return f"w{self.serial}"

    @property
    def running(self) -> int:
        return len(self.ends)


@dataclass(frozen=True)
class Snapshot:
    """What the policy sees at a tick."""

    now: int
    ready: int
    oldest_age: float | None
    workers: list[SimWorker]  # serving (ready, not draining)
    current: int  # asked for: serving + starting
    fleet: Fleet | None = None
    """The whole simulated state, future tasks included: for clairvoyant planners only."""


class Policy(Protocol):
    name: str

    def desired(self, snapshot: Snapshot) -> int: ...


@dataclass
class SimResult:
    policy: str
    worker_seconds: float = 0.0
    waits: list[float] = field(default_factory=list)
    actions: int = 0
    unserved: int = 0
    timeline: list[tuple[int, int, int, int]] = field(default_factory=list)  # t, ready, busy, n
    started: int = 0
    """Workers started (measured part), of which ``cancelled`` stopped before serving."""
    cancelled: int = 0
    startup_seconds: float = 0.0
    """Of ``worker_seconds``, those billed to workers not serving yet."""
    minimum_seconds: float = 0.0
    """Of ``worker_seconds``, those billed only to make up ``minimum_billed_seconds``."""

    @property
    def worker_minutes(self) -> float:
        return self.worker_seconds / 60

    @property
    def max_wait(self) -> float:
        return max(self.waits, default=0.0)

    def percentile(self, q: float) -> float:
        if not self.waits:
            return 0.0
        ordered = sorted(self.waits)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def share_over(self, target: float) -> float:
        return sum(1 for w in self.waits if w > target + 1e-9) / max(1, len(self.waits))

    def meets(self, target: float) -> bool:
        """Every task served and the p95 wait within ``target``."""
        return self.unserved == 0 and self.percentile(0.95) <= target + 1e-9


ServiceTimes = Callable[[random.Random], float]


def arrivals_from(counts: Sequence[int], scale: float, service: ServiceTimes,
                  seed: int = 1) -> list[Task]:
    """(arrival instant, service seconds) for every task, in arrival order.

    A trace counts the tasks that arrived during each second, so each arrives at a uniform
    random instant within its second (were they all at its start, every tick would find a
    whole second's arrivals just started, and a policy sampling running tasks would read
    service times half a second too long). Fractional counts carry over to the next second.
    """
    rng, carry, tasks = random.Random(seed), 0.0, []
    for second, count in enumerate(counts):
        carry += count * scale
        whole = int(carry)
        carry -= whole
        instants = sorted(second + rng.random() for _ in range(whole))
        tasks += [(instant, service(rng)) for instant in instants]
    return tasks


class Fleet:
    """The queue, the workers and the clock; :meth:`advance` runs events, :meth:`scale`
    applies a decision."""

    def __init__(self, tasks: Sequence[Task], config: SimConfig,
                 measure_from: float = 0.0) -> None:
        self.tasks, self.config = tasks, config
        self.measure_from = measure_from  # bill, count waits and actions from here on
        self.now = 0.0
        self.next_task = 0  # index of the first task not yet arrived
        self.waiting: deque[int] = deque()  # indices of arrived tasks not started
        self.workers: dict[int, SimWorker] = {}  # not stopped, by serial
        self.serial = 0
        self.completions: list[tuple[float, int]] = []  # (end, serial)
        self.readiness: list[tuple[float, int]] = []  # (ready_at, serial)
        self.free: list[int] = []  # serials that may have a free slot (checked on use)
        self.waits: list[float] = []
        self.starts: dict[int, float] = {}
        self.worker_seconds = 0.0
        self.startup_seconds = 0.0
        self.minimum_seconds = 0.0
        self.started = self.cancelled = 0
        self.actions = 0
        self.last_end = 0.0  # the latest task end so far
        self.keep_starts = False

    # -- events ---------------------------------------------------------------------------

    def advance(self, until: float) -> None:
        """Handle every event at or before ``until``, each at its own instant."""
        tasks, inf = self.tasks, math.inf
        while True:
            arrival = tasks[self.next_task][0] if self.next_task < len(tasks) else inf
            done = self.completions[0][0] if self.completions else inf
            ready = self.readiness[0][0] if self.readiness else inf
            at = min(arrival, done, ready)
            if at > until:
                break
            self.now = at
            if done == at:
                self._complete(*heapq.heappop(self.completions))
            elif ready == at:
                self._ready(heapq.heappop(self.readiness)[1])
            else:
                self._arrive(self.next_task)
                self.next_task += 1
        self.now = max(self.now, until)

    def _arrive(self, index: int) -> None:
        worker = self._free_worker()
        if worker is None:
            self.waiting.append(index)
        else:
            self._start(index, worker)

    def _complete(self, end: float, serial: int) -> None:
        worker = self.workers[serial]
        worker.ends.remove(end)
        worker.processed += 1
        self.last_end = end
        if worker.draining:
            if not worker.ends:
                self._stop(worker)
        elif self.waiting:
            self._start(self.waiting.popleft(), worker)
        else:
            heapq.heappush(self.free, serial)

    def _ready(self, serial: int) -> None:
        worker = self.workers.get(serial)
        if worker is None or worker.draining:
            return  # cancelled while starting
        while self.waiting and len(worker.ends) < self.config.concurrency:
            self._start(self.waiting.popleft(), worker)
        if len(worker.ends) < self.config.concurrency:
            heapq.heappush(self.free, serial)

    def _free_worker(self) -> SimWorker | None:
        """The oldest serving worker with a free slot: work packs onto the oldest workers,
        which leaves the newest idle and removable."""
        while self.free:
            worker = self.workers.get(self.free[0])
            if worker is not None and not worker.draining and worker.ready_at <= self.now \
                    and len(worker.ends) < self.config.concurrency:
                return worker
            heapq.heappop(self.free)
        return None

    def _start(self, index: int, worker: SimWorker) -> None:
        arrival, service = self.tasks[index]
        if arrival >= self.measure_from:
            self.waits.append(self.now - arrival)
        if self.keep_starts:
            self.starts[index] = self.now
        end = self.now + service
        worker.ends.append(end)
        heapq.heappush(self.completions, (end, worker.serial))

    def _stop(self, worker: SimWorker) -> None:
        del self.workers[worker.serial]
        billed_from = max(worker.billed_from, self.measure_from)
        billed = max(0.0, self.now - billed_from)
        if worker.billed_from >= self.measure_from:
            self.minimum_seconds += max(0.0, self.config.minimum_billed_seconds - billed)
            billed = max(billed, self.config.minimum_billed_seconds)
        self.worker_seconds += billed
        self.startup_seconds += max(0.0, min(self.now, worker.ready_at) - billed_from)
        if worker.draining and worker.billed_from >= self.measure_from:
            self.cancelled += self.now < worker.ready_at  # taken back before it served

    # -- decisions ------------------------------------------------------------------------

    @property
    def active(self) -> list[SimWorker]:
        """Serving and starting workers: what the scaler counts."""
        return [w for w in self.workers.values() if not w.draining]

    def serving(self) -> list[SimWorker]:
        return [w for w in self.workers.values()
                if not w.draining and w.ready_at <= self.now]

    def snapshot(self) -> Snapshot:
        oldest = self.now - self.tasks[self.waiting[0]][0] if self.waiting else None
        return Snapshot(int(self.now), len(self.waiting), oldest, self.serving(),
                        len(self.active), self)

    def removal_order(self) -> list[SimWorker]:
        """Whom a scale-in takes first: starting (newest first), idle, then busy (the one
        finishing first first)."""
        now = self.now
        starting = sorted((w for w in self.active if w.ready_at > now),
                          key=lambda w: -w.serial)
        idle = sorted((w for w in self.active if w.ready_at <= now and not w.ends),
                      key=lambda w: -w.serial)
        busy = sorted((w for w in self.active if w.ready_at <= now and w.ends),
                      key=lambda w: (max(w.ends), -w.serial))
        return starting + idle + busy

    def scale(self, desired: int) -> None:
        """Set the worker count now: start new workers, or take ``removal_order``'s first."""
        desired = max(0, min(self.config.max_workers, desired))
        active = self.active
        if desired != len(active) and self.now >= self.measure_from:
            self.actions += 1
        for _ in range(desired - len(active)):
            self.serial += 1
            worker = SimWorker(self.serial, self.now, self.now + self.config.startup_seconds)
            self.workers[worker.serial] = worker
            self.started += self.now >= self.measure_from
            if worker.ready_at <= self.now:
                self._ready(worker.serial)
            else:
                heapq.heappush(self.readiness, (worker.ready_at, worker.serial))
        for worker in self.removal_order()[:max(0, len(active) - desired)]:
            worker.draining = True
            if not worker.ends:
                self._stop(worker)  # starting or idle: stops at once

    @property
    def drained(self) -> bool:
        """Every task arrived, started and finished."""
        return self.next_task >= len(self.tasks) and not self.waiting and not self.completions

    def close(self, at: float) -> None:
        """Stop every worker left, billing it until ``at``."""
        self.now = at
        for worker in list(self.workers.values()):
            self._stop(worker)


def simulate(tasks: Sequence[Task], policy: Policy, config: SimConfig, horizon: int,
             keep_timeline: bool = False, measure_from: int = 0) -> SimResult:
    """Run ``policy`` over ``tasks`` for ``horizon`` seconds, then until every task is done.

    The trace is a window of a load that goes on, so its edges are not measured: the
    seconds before ``measure_from`` warm the policy up (its memory, its fleet) and neither
    their billing, their tasks' waits nor their actions count; billing ends at the later of
    the horizon and the last task's end (what a policy keeps after the trace stops is no
    cost of serving it).
    """
    fleet, result = Fleet(tasks, config, measure_from), SimResult(policy.name)
    tick, t = config.tick_seconds, 0
    give_up = horizon * 2 + 3600
    while t < horizon or not fleet.drained:
        fleet.advance(t)
        if fleet.drained and t >= horizon:
            break
        if t > give_up:  # a policy that cannot keep up: stop, count what is left
            left = [i for i in [*fleet.waiting, *range(fleet.next_task, len(tasks))]
                    if tasks[i][0] >= measure_from]
            result.unserved = len(left)
            fleet.waits += [t - tasks[i][0] for i in left]
            break
        snapshot = fleet.snapshot()
        desired = max(0, min(config.max_workers, policy.desired(snapshot)))
        fleet.scale(desired)
        if keep_timeline:
            result.timeline.append((t, snapshot.ready,
                                    sum(1 for w in snapshot.workers if w.ends), desired))
        t += tick
    fleet.close(max(float(horizon), fleet.last_end) if fleet.drained else fleet.now)
    result.worker_seconds, result.waits, result.actions = (
        fleet.worker_seconds, fleet.waits, fleet.actions)
    result.started, result.cancelled, result.startup_seconds = (
        fleet.started, fleet.cancelled, fleet.startup_seconds)
    result.minimum_seconds = fleet.minimum_seconds
    return result


def busy_bound_minutes(tasks: Sequence[Task], concurrency: int) -> float:
    """The physical floor: every second of service, packed perfectly into slots."""
    return sum(s for _, s in tasks) / concurrency / 60
