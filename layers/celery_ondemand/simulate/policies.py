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
  startup delay: at a tick at t it asks for ceil(max in-service / concurrency) over
  [t + startup, t + startup + tick), where in-service(s) counts tasks that would be running
  at s had each started the moment it arrived. It pays for zero waits, never for idle time
  it could foresee.
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
    """Clairvoyant: provisions for zero waits, exactly when needed, under the same delays."""

    name = "oracle"

    def __init__(self, tasks: list[tuple[int, float]], config: SimConfig) -> None:
        self.config = config
        horizon = max((a + math.ceil(s) for a, s in tasks), default=0) + 1
        delta = [0] * (horizon + 1)
        for arrival, service in tasks:
            delta[arrival] += 1
            delta[arrival + math.ceil(service)] -= 1
        self.in_service, level = [], 0
        for change in delta:
            level += change
            self.in_service.append(level)

    def desired(self, snapshot: Snapshot) -> int:
        start = snapshot.now + self.config.startup_seconds
        window = self.in_service[start:start + self.config.tick_seconds]
        busy = max(window, default=0)
        # tasks already waiting (the oracle's own startup delay) must be served too
        return math.ceil((busy + snapshot.ready) / self.config.concurrency)


def describe(policy: Any) -> str:
    return str(policy.name)
