"""The peers our policy is measured against, each as its documentation describes it.

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
- ``judoscale``: queue-time scaling as Judoscale describes it (judoscale.com/docs, "Tuning
  your application"): metric = the oldest waiting task's age; above the range's top, up by
  ``jump`` workers (its default: one), at most once per upscale frequency (set to the
  startup, as the docs advise); down by one only after the metric has stayed below the
  range's bottom for the downscale delay (its default: 10 minutes), and then once per
  delay. The range is ours to choose, as it is a user's: by default up above a quarter of
  the wait target, down below one second.
"""

from __future__ import annotations

import math
from collections import deque

from .engine import SimConfig, Snapshot


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
        metric = snapshot.ready + sum(w.running for w in snapshot.workers)
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


class JudoscalePolicy:
    """Judoscale's queue-time range: up in jumps when the oldest task waits too long, down
    one at a time once it has stayed short for the downscale delay."""

    name = "judoscale"

    def __init__(self, config: SimConfig, jump: int = 1, upscale_above: float | None = None,
                 downscale_below: float = 1.0, downscale_delay: float = 600.0) -> None:
        """The range's top defaults to a quarter of the wait target: a new worker takes
        its startup to help, so waiting until tasks are late would be too late; its
        bottom to a second: a queue that has drained."""
        self.jump, self.downscale_delay = jump, downscale_delay
        self.upscale_above = config.wait_target / 4 if upscale_above is None else upscale_above
        self.downscale_below = downscale_below
        self.upscale_every = config.startup_seconds
        self.last_up = self.last_down = -10**9
        self.short_since: float | None = None

    def desired(self, snapshot: Snapshot) -> int:
        now, current = snapshot.now, snapshot.current
        queue_time = snapshot.oldest_age or 0.0
        if queue_time >= self.downscale_below:
            self.short_since = None
        elif self.short_since is None:
            self.short_since = now
        from_zero = current == 0 and snapshot.ready > 0  # workers scaled to zero: at once
        may_go_up = now - self.last_up >= self.upscale_every
        if from_zero or (queue_time > self.upscale_above and may_go_up):
            self.last_up = now
            return current + self.jump
        settled = self.short_since is not None and \
            now - self.short_since >= self.downscale_delay
        may_go_down = now - self.last_down >= self.downscale_delay
        idle = not snapshot.ready and not any(w.running for w in snapshot.workers)
        if settled and may_go_down and (current > 1 or (current == 1 and idle)):
            self.last_down = now
            return current - 1
        return current
