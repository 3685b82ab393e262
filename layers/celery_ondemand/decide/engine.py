"""The decision: a pure function of (observation, memory, settings, now).

For every target: build its view of the observation, update its memory (rates, idleness,
failed reads), ask its policy for a recommendation, then apply the safety rails that hold
for every policy, cwod's and a user's included:

1. blind means hold: a read with any gap never shrinks the target (a configured
   ``fallback_workers`` may raise it after ``fallback_after_failures`` blind ticks);
2. never below the number of busy workers;
3. ``min_workers ≤ desired ≤ max_workers``, always.

``paused`` targets decide nothing; ``dry_run`` targets decide, marked not to be applied.
No I/O happens here, so the Lambda, the command line and a simulator with a simulated
clock all drive this same code.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..config import Settings, TargetConfig
from ..errors import ConfigError
from ..imports import load_class
from ..model import Observation
from ..schedules import Window
from ..schedules import bounds as schedule_bounds
from .agent import Agent
from .capacity import CapacityAgent
from .decision import Decision, Recommendation
from .memory import TargetMemory
from .view import TargetView

SMOOTHING = 0.2
"""Weight of the newest tick in the measured rates: older ticks fade by 1 - SMOOTHING each."""

POLICIES: dict[str, type[Agent]] = {"capacity": CapacityAgent, "cwod": Agent}


def build_agents(settings: Settings) -> dict[str, Agent]:
    """One policy object per target; a user's ``package.module:Class`` is imported here."""
    agents = {}
    for i, target in enumerate(settings.targets):
        cls = POLICIES.get(target.policy) or load_class(target.policy, Agent,
                                                         f"targets[{i}].policy")
        if target.forecast and not issubclass(cls, CapacityAgent):
            raise ConfigError(f"targets[{i}].forecast: policy {target.policy} has no forecast "
                              "(only capacity and its subclasses have one)")
        agents[target.name] = cls(target)
    return agents


def decide(observation: Observation | None, settings: Settings,
           memory: Mapping[str, TargetMemory], now: float, *,
           current: Mapping[str, int] | None = None,
           running: Mapping[str, int] | None = None,
           agents: Mapping[str, Agent] | None = None,
           dry_run: bool = False,
           platform_bounds: Mapping[str, tuple[int, int]] | None = None,
           ) -> tuple[list[Decision], dict[str, TargetMemory]]:
    """Decide every target's worker count.

    ``observation`` is None when the broker could not be read at all. ``current`` holds
    the scalers' counts by target; a target missing from it counts its live workers.
    ``running`` holds what the platform says runs (ECS tasks, InService instances), where
    known: more running than heard for ``startup_grace_seconds`` is a gap in the read.
    ``platform_bounds`` holds the counts a platform accepts at the least and the most (an
    Auto Scaling group's MinSize and MaxSize): the bounds narrow to them.
    Returns the decisions and the new memory (the input memory is not changed).
    """
    agents = agents if agents is not None else build_agents(settings)
    decisions, remembered = [], {}
    for configured in settings.targets:
        target, windows = scheduled(configured, now)
        target = within(target, (platform_bounds or {}).get(target.name))
        before = memory.get(target.name) or TargetMemory()
        view = target_view(target, observation, before, now, current,
                           (running or {}).get(target.name),
                           transport_options=settings.broker_transport_options)
        view = replace(view, memory=remember(view, before),
                       tick_seconds=settings.tick_interval_seconds)
        if target.paused:
            decision = Decision(target.name, view.current, view.current, "paused",
                                "paused: deciding nothing", dry_run=True, paused=True,
                                inputs=view.inputs())
        else:
            recommendation = agents[target.name].recommend(view)
            decision = apply_rails(view, recommendation, dry_run or target.dry_run)
            decision = _name_the_schedule(decision, configured, target, windows)
            decision = replace(decision, inputs={**decision.inputs,
                                                 "floor": target.min_workers})
            decision = replace(decision, zombies=tuple(w.hostname for w in view.zombies))
            _note(view, recommendation, decision)
        decisions.append(decision)
        remembered[target.name] = view.memory
    return decisions, remembered


def scheduled(target: TargetConfig, now: float) -> tuple[TargetConfig, list[Window]]:
    """The target with the bounds its open schedule windows set, and those windows."""
    if not target.schedules:
        return target, []
    low, high, windows = schedule_bounds(target.schedules, now, target.min_workers,
                                         target.max_workers)
    return replace(target, min_workers=low, max_workers=high), windows


def within(target: TargetConfig, bounds: tuple[int, int] | None) -> TargetConfig:
    """The target with its bounds narrowed to what the platform accepts."""
    if bounds is None:
        return target
    low, high = bounds
    ceiling = max(0, min(target.max_workers, high))
    return replace(target, min_workers=min(max(target.min_workers, low), ceiling),
                   max_workers=ceiling)


def _name_the_schedule(decision: Decision, configured: TargetConfig, target: TargetConfig,
                       windows: list[Window]) -> Decision:
    """A count held at a bound a schedule set is the schedule's decision: say which."""
    if decision.rule != "bounds" or not windows:
        return decision
    raised = decision.desired == target.min_workers > configured.min_workers
    lowered = decision.desired == target.max_workers < configured.max_workers
    if not (raised or lowered):
        return decision
    which = "; ".join(w.describe() for w in windows)
    return replace(decision, rule="schedule", reason=f"{decision.reason} ({which})")


def target_view(target: TargetConfig, observation: Observation | None, memory: TargetMemory,
                now: float, current: Mapping[str, int] | None = None,
                running: int | None = None, *,
                transport_options: Mapping[str, Any] | None = None) -> TargetView:
    """What ``target`` looks like in ``observation``, with every gap listed as a problem."""
    if observation is None:
        count = (current or {}).get(target.name, 0)
        return TargetView(target, [], [], count, now, memory, ["broker not read"])
    problems = observation.problems_for(target.queues)
    queues = []
    for name in target.queues:
        if name in observation.queues:
            queues.append(observation.queues[name])
        else:
            problems.append(f"queue {name} not read")
    workers = observation.workers_for(target.queues)
    audible = workers_audible(observation)
    heard = {w.hostname for w in workers}
    draining = observation.draining_from(target.queues)
    unheard = sorted(set(memory.workers_seen) - heard - set(draining))
    if len(unheard) > _expected_to_leave(memory):
        problems.append(f"not heard this tick: {', '.join(unheard)}")
    if audible and running is not None and running > len(workers) + len(draining) \
            and memory.unheard_since is not None \
            and now - memory.unheard_since >= target.startup_grace_seconds:
        problems.append(f"{running} running on the target but {len(workers)} workers heard "
                        f"for {now - memory.unheard_since:.0f}s"
                        + (f" ({len(draining)} draining)" if draining else ""))
    count = (current or {}).get(target.name, len(workers))
    missing = [q.name for q in queues if q.missing]
    if missing and len(missing) == len(target.queues) and count > 0:
        # Workers declare the queues they consume, so a target none of whose queues the
        # broker can find while workers run is more likely looked for in the wrong place
        # (an SQS region or prefix, a vhost) than idle: read as empty, its fleet would be
        # scaled in. One queue of several gone is a retired queue: empty, as read.
        problems.append(f"queue {', '.join(missing)} not found on the broker while "
                        f"{count} workers run for it: a wrong region, prefix or vhost?")
    return TargetView(target, queues, workers, count, now, memory, problems,
                      redelivery_timeout(target, observation.broker, transport_options),
                      running, draining,
                      workers_audible=audible)


def workers_audible(observation: Observation) -> bool:
    """Whether this broker lets workers be heard at all: SQS carries no events and no
    control replies, so there liveness comes from the platform and busyness from the
    queue's in-flight count (see :attr:`TargetView.busy`)."""
    return "events" in observation.sources or "control" in observation.sources


REDELIVERY_DEFAULTS = {"redis": 3600.0, "rediss": 3600.0, "sqs": 1800.0, "amqp": 1800.0,
                       "amqps": 1800.0, "pyamqp": 1800.0}
"""Each broker's default: kombu's Redis ``visibility_timeout``, Celery's SQS one, and
RabbitMQ's ``consumer_timeout`` (30 minutes)."""


def redelivery_timeout(target: TargetConfig, broker: str,
                       transport_options: Mapping[str, Any] | None = None) -> float:
    """When a running task of ``target`` is handed out again: the target's setting, else
    the workers' ``visibility_timeout`` (Redis, SQS), else the broker's default."""
    if target.redelivery_timeout_seconds:
        return target.redelivery_timeout_seconds
    scheme = broker.split(":", 1)[0].split("+")[0]
    visibility = (transport_options or {}).get("visibility_timeout")
    if visibility and scheme in ("redis", "rediss", "sqs"):
        return float(visibility)
    return REDELIVERY_DEFAULTS.get(scheme, 3600.0)


def _expected_to_leave(memory: TargetMemory) -> int:
    """Workers the last decision removed: their silence is no gap in the read."""
    if memory.last_desired is None:
        return 0
    return max(0, len(memory.workers_seen) - memory.last_desired)


def remember(view: TargetView, before: TargetMemory) -> TargetMemory:
    """The memory after this tick's read: failed reads, idleness, rates, workers seen."""
    after = copy.deepcopy(before)
    after.last_tick = None
    if view.problems == ["broker not read"]:
        after.failed_reads += 1
        return after
    after.workers_seen = sorted(w.hostname for w in view.workers)
    after.concurrency = view.reported_concurrency or before.concurrency
    # Before the early return below: the gap this measures is itself a problem, and must
    # end the moment the platform and the workers agree again.
    unheard = view.platform_running is not None \
        and view.platform_running > view.live + len(view.draining)
    after.unheard_since = (before.unheard_since or view.now) if unheard else None
    if not view.complete:
        after.failed_reads += 1
        return after
    after.failed_reads = 0
    processed = {w.hostname: w.processed for w in view.workers}
    finished = sum(max(0, count - before.processed[host])
                   for host, count in processed.items() if host in before.processed)
    if before.observed_at is not None and view.now > before.observed_at:
        _measure_rates(after, before, view, finished)
    after.stalled_since = _stalled(view, before)
    # Idle means nothing waited, ran or finished since the last tick: sparse tasks that
    # come and go between two ticks are still load.
    idle = view.work == 0 and view.busy == 0 and finished == 0
    after.idle_since = (before.idle_since or view.now) if idle else None
    after.processed, after.observed_at, after.work = processed, view.now, view.work
    after.ready, after.running = view.ready, view.running
    return after


def _stalled(view: TargetView, before: TargetMemory) -> dict[str, float]:
    """Workers that ran and finished nothing since the last tick although a queue they
    consume held ready tasks, with when that began. A worker holding tasks back under a
    rate limit is taking work at the pace it was told to: not stalled."""
    ready = {q.name: q.size for q in view.queues}
    stalled = {}
    for worker in view.workers:
        waiting = any(ready.get(name, 0) > 0 for name in worker.queues)
        finished_nothing = before.processed.get(worker.hostname) == worker.processed
        if waiting and finished_nothing and worker.active == 0 and not worker.rate_limited:
            stalled[worker.hostname] = before.stalled_since.get(worker.hostname, view.now)
    return stalled


def _measure_rates(after: TargetMemory, before: TargetMemory, view: TargetView,
                   finished: int) -> None:
    """Arrivals from conservation of work, service from Little's law over busy slots.

    Tasks that arrived = tasks finished + growth of the work. A busy slot finishes tasks
    at (tasks finished) / (slot-seconds busy), where busy slots are sampled at each tick.
    Both rates are ratios of decaying sums rather than averages of per-tick ratios: one
    tick's sample of a few short tasks is noisy, many ticks' sums are not.
    """
    elapsed = view.now - before.observed_at  # type: ignore[operator]
    keep = 1 - SMOOTHING
    if before.work is not None:
        arrived = max(0, finished + view.work - before.work)
        after.arrivals_sum = keep * before.arrivals_sum + arrived
        after.elapsed_sum = keep * before.elapsed_sum + elapsed
        after.arrival_rate = after.arrivals_sum / after.elapsed_sum
        after.arrival_ticks = keep * before.arrival_ticks + 1
        after.arrivals_sq_sum = keep * before.arrivals_sq_sum + arrived * arrived
        after.last_tick = [elapsed, arrived, finished, 0.0]
    mean_running = ((before.running or 0) + view.running) / 2
    if after.last_tick is not None:
        after.last_tick[3] = elapsed * mean_running
    after.finished_sum = keep * before.finished_sum + finished
    after.busy_slot_seconds = keep * before.busy_slot_seconds + elapsed * mean_running
    if after.finished_sum > 0 and after.busy_slot_seconds > 0:
        per_slot = after.finished_sum / after.busy_slot_seconds
        after.service_rate = per_slot * view.concurrency


def apply_rails(view: TargetView, recommendation: Recommendation, dry_run: bool) -> Decision:
    """The rails every policy obeys, in order: blind hold, busy floor, bounds."""
    config = view.config
    desired, rule, reason = recommendation.desired, recommendation.rule, recommendation.reason
    if not view.complete:
        fallback = config.fallback_workers
        if fallback is not None and view.memory.failed_reads >= config.fallback_after_failures \
                and fallback > desired:
            desired, rule = fallback, "fallback"
            reason = f"{view.memory.failed_reads} incomplete reads in a row: fallback {fallback}"
        if desired < view.current:
            desired, rule = view.current, "blind"
            reason = f"read incomplete ({'; '.join(view.problems)}): not scaling down"
    if desired < view.busy:
        desired, rule = view.busy, "busy-floor"
        reason = f"{reason}; {view.busy} workers are running tasks"
    # A ceiling below the running count (a schedule's window, a lowered max_workers)
    # waits for a whole read: blind, nobody can tell which workers are busy.
    ceiling = config.max_workers if view.complete else max(config.max_workers, view.current)
    bounded = min(max(desired, config.min_workers), ceiling)
    if bounded != desired:
        desired, rule = bounded, "bounds"
        reason = f"{reason}; kept within [{config.min_workers}, {config.max_workers}]"
    if ceiling > config.max_workers and desired > config.max_workers:
        reason = f"{reason}; above max_workers {config.max_workers} until a whole read"
    return Decision(config.name, view.current, desired, rule, reason, dry_run=dry_run,
                    inputs=view.inputs())


def _note(view: TargetView, recommendation: Recommendation, decision: Decision) -> None:
    """Record the raw need in the stabilization window and the decision taken."""
    memory = view.memory
    needed = recommendation.needed if recommendation.needed is not None \
        else recommendation.desired
    if not view.complete:
        needed = decision.desired  # a blind need is unknown: remember what was held
    horizon = view.now - view.config.stabilization_seconds
    memory.recommendations = [r for r in memory.recommendations if r[0] > horizon]
    memory.recommendations.append([view.now, needed])
    memory.last_desired = decision.desired
    if not decision.dry_run:
        if decision.action == "up":
            memory.last_up_at = view.now
        elif decision.action == "down":
            memory.last_down_at = view.now
