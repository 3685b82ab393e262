"""The policies the simulator compares, each with its source.

- ``capacity`` and ``cwod``: celery-ondemand's own code — the observation the simulator
  builds goes through the same :func:`celery_ondemand.decide.decide` the tick uses, with
  its memory and a simulated clock. No second implementation.
- ``keda``: KEDA's queue scalers under the Kubernetes HPA (keda.sh/docs, scalers
  rabbitmq-queue / redis-lists; kubernetes.io HPA): metric = queue length (ready + unacked)
  polled every 30 s, replicas = ceil(metric / target) with target = concurrency, scale-up
  limited to the larger of 4 pods or 100 % per 15 s, scale-down to the highest
  recommendation of the last 300 s, activation 0 → 1 on any message and back to 0 after the
  300 s cooldown.
- ``aws-target-tracking``: the "backlog per instance" recipe (AWS Auto Scaling docs, "Scaling
  based on Amazon SQS"): metric = ready / instances every 60 s, target = wait target / mean
  service time; scale out when the metric is above target for 3 consecutive minutes, in
  when below 90 % of it for 15; new capacity = ceil(current * metric / target); 300 s
  cooldown after any change.
- ``oracle``: knows every future arrival and service time and obeys the same tick and
  startup delay. It plans ahead, window by window: the decision at tick t covers
  [t + startup, t + startup + tick), and asks for the fewest slots with which
  first-come-first-served service (continuing from the earlier windows) starts every task
  whose deadline (arrival + wait target) falls in that window by its deadline. It uses the
  whole wait budget, so it pays for no capacity a waiting task could do without.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from ..config import settings_from_mapping
from ..decide import TargetMemory, build_agents, decide
from ..model import Observation, QueueStatus, WorkerStatus
from .engine import SimConfig, Snapshot


class OnDemandPolicy:
    """celery-ondemand's decision code, as the tick runs it."""

    def __init__(self, config: SimConfig, policy: str = "capacity") -> None:
        self.name = policy
        self.settings = settings_from_mapping({"broker_url": "sim://", "targets": [{
            "name": "sim", "queues": ["q"], "scaler": "local", "command": "-",
            "policy": policy, "max_workers": config.max_workers,
            "worker_concurrency": config.concurrency,
            "target_wait_seconds": config.wait_target}]})
        self.agents = build_agents(self.settings)
        self.memory: dict[str, TargetMemory] = {}

    def desired(self, snapshot: Snapshot) -> int:
        workers = [WorkerStatus(w.name, alive=True, active=len(w.running),
                                processed=w.processed, queues=["q"],
                                concurrency=self.settings.targets[0].worker_concurrency)
                   for w in snapshot.workers]
        running = sum(len(w.running) for w in snapshot.workers)
        observation = Observation(broker="sim://", observed_at=float(snapshot.now),
                                  sources=["broker", "events", "control"],
                                  workers={w.hostname: w for w in workers})
        observation.queues["q"] = QueueStatus("q", size=snapshot.ready, workers=workers,
                                              hidden=running, running=running, reserved=0,
                                              oldest_age=snapshot.oldest_age)
        decisions, self.memory = decide(observation, self.settings, self.memory,
                                        float(snapshot.now), current={"sim": snapshot.current},
                                        agents=self.agents)
        return decisions[0].desired


class KedaPolicy:
    """KEDA queue-length scaling under the HPA's default behaviour."""

    name = "keda"

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.last = 0
        self.recommendations: deque[tuple[int, int]] = deque()
        self.last_active = -10**9

    def desired(self, snapshot: Snapshot) -> int:
        if snapshot.now % 30:  # KEDA polls every 30 s; the HPA keeps the last answer
            return self.last
        metric = snapshot.ready + sum(len(w.running) for w in snapshot.workers)
        current = snapshot.current
        if metric > 0:
            self.last_active = snapshot.now
        if current == 0:
            wanted = 1 if metric > 0 else 0
        elif metric == 0 and snapshot.now - self.last_active >= 300:
            wanted = 0  # cooldownPeriod
        else:
            wanted = max(1, math.ceil(metric / self.config.concurrency))
        if wanted > current:
            wanted = min(wanted, current + max(4, current))  # 4 pods or 100 % per 15 s
        self.recommendations.append((snapshot.now, wanted))
        while self.recommendations[0][0] < snapshot.now - 300:
            self.recommendations.popleft()
        if wanted < current and wanted > 0:
            wanted = min(current, max(r for _, r in self.recommendations))
        self.last = wanted
        return wanted


class TargetTrackingPolicy:
    """AWS target tracking on backlog per instance."""

    name = "aws-target-tracking"

    def __init__(self, config: SimConfig, mean_service: float) -> None:
        self.target = max(1.0, config.wait_target / mean_service) * config.concurrency
        self.minutes: deque[float] = deque(maxlen=15)
        self.last = 0
        self.changed_at = -10**9

    def desired(self, snapshot: Snapshot) -> int:
        if snapshot.now % 60:
            return self.last
        current = snapshot.current
        metric = snapshot.ready / max(current, 1)
        self.minutes.append(metric)
        cooling = snapshot.now - self.changed_at < 300
        wanted = current
        if current == 0 and snapshot.ready > 0:
            wanted = 1
        elif len(self.minutes) >= 3 and all(m > self.target for m in list(self.minutes)[-3:]):
            wanted = max(current + 1, math.ceil(current * metric / self.target))
        elif not cooling and len(self.minutes) == 15 and \
                all(m < 0.9 * self.target for m in self.minutes):
            wanted = math.ceil(current * metric / self.target)
        if wanted != current:
            self.changed_at = snapshot.now
        self.last = wanted
        return wanted


class OraclePolicy:
    """Clairvoyant and lazy: the fewest slots that still start every task within the wait
    target, window by window, under the same tick and startup delay."""

    name = "oracle"

    def __init__(self, tasks: list[tuple[int, float]], config: SimConfig) -> None:
        self.config = config
        self.plan = _lazy_plan(sorted((a, math.ceil(s)) for a, s in tasks), config)

    def desired(self, snapshot: Snapshot) -> int:
        # A count set now shrinks at once but grows only after the startup delay: keep what
        # the windows already planned between now and then still need.
        tick = snapshot.now // self.config.tick_seconds
        ahead = math.ceil(self.config.startup_seconds / self.config.tick_seconds)
        slots = max(self.plan.get(k, 0) for k in range(tick - ahead, tick + 1))
        return math.ceil(slots / self.config.concurrency)


def _lazy_plan(tasks: list[tuple[int, int]], config: SimConfig) -> dict[int, int]:
    """Slots per tick: the decision at tick k covers [k*tick + startup, (k+1)*tick + startup).

    Window by window, the least slot count m with which first-come-first-served service,
    continuing from the previous windows, starts every task whose deadline (arrival + wait
    target) falls in the window by that deadline. Slots still busy from earlier windows
    count against m (a worker is never stopped mid-task).
    """
    tick, startup, wait = config.tick_seconds, config.startup_seconds, config.wait_target
    limit = config.max_workers * config.concurrency
    running: list[int] = []  # end times of started tasks
    index, plan, k = 0, {}, 0
    while index < len(tasks) or running:
        begin = k * tick + startup
        end = begin + tick

        low, high = 0, limit
        while low < high:  # feasibility only grows with slots
            middle = (low + high) // 2
            if _serve(tasks, running, index, begin, end, middle, wait)[0]:
                high = middle
            else:
                low = middle + 1
        _, running, index = _serve(tasks, running, index, begin, end, low, wait)
        busy_at_start = sum(1 for e in running if e > begin)
        plan[k] = max(low, min(busy_at_start, limit)) if low else 0
        k += 1
        if k * tick > (tasks[-1][0] if tasks else 0) + 10 * (wait + tick + startup) + 10**6:
            break
    return plan


def _serve(tasks: list[tuple[int, int]], running: list[int], index: int, begin: int,
           end: int, slots: int, wait: float) -> tuple[bool, list[int], int]:
    """FIFO service over [begin, end) with ``slots``: (every deadline kept, busy slots'
    end times, next task waiting)."""
    ends, i = [e for e in running if e > begin], index
    for second in range(begin, end):
        ends = [e for e in ends if e > second]
        while i < len(tasks) and tasks[i][0] <= second and len(ends) < slots:
            if second > tasks[i][0] + wait:
                return False, ends, i
            ends.append(second + tasks[i][1])
            i += 1
    late = i < len(tasks) and tasks[i][0] + wait < end
    return not late, ends, i


def describe(policy: Any) -> str:
    return str(policy.name)
