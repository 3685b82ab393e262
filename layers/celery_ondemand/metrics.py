"""CloudWatch metrics for one tick, printed as EMF lines by Powertools.

CloudWatch bills each metric stream (a name with one set of dimension values) for every
hour it receives a point, so a tick prints what the dashboard and the alarms read, and only
when it says something:

- ``deployment``: ``SuccessfulTicks`` every tick (the no-tick alarm counts them) and
  ``TickDuration`` (ms); only when not zero: ``Errors``, ``LeaseLost``,
  ``BrokerUnavailable``, ``QueuesOverWaitTarget``, ``Warnings`` (each line of
  :meth:`TickResult.warnings`), ``IncompleteReads`` (targets held for a gap in the read) and
  ``ScaleInHeld`` (targets whose scale-in is held: a gap in the read, a rollout under way,
  a busy worker that could not be shielded; the held-scale-in alarm watches it);
- ``deployment, target``, while the target is not at rest at its floor, and once more when
  it comes to rest: ``DesiredWorkers``, ``LiveWorkers``, ``BusyWorkers``, ``Ready`` (its
  queues summed); only when not zero: ``TargetErrors``, ``IncompleteReads``,
  ``ZombieWorkers``, ``TasksNearRedelivery``, ``QueueMissing``. (A scale action shows as a
  step of ``DesiredWorkers``, and in the logs with its rule and reason);
- with ``metrics_detail: queue``, also ``Hidden`` and ``OldestAgeSeconds`` per target, and
  per ``deployment, target, queue``: ``Ready``, ``Hidden``, ``OldestAgeSeconds`` and (not
  zero) ``QueueMissing``.

A metric left out means zero (the alarms treat missing data as not breaching, except the
no-tick alarm, which counts ``SuccessfulTicks``).

A stack of several deployments (:mod:`celery_ondemand.fanout`) also prints, under the
stack's own ``deployment`` name and stamped with the schedule's due time (so that both fall
in the same minute however late an invocation ran): ``DeploymentsScheduled`` (the
dispatcher: how many deployments it was to start) and ``DeploymentsTicked`` (1 from each
deployment's scheduled invocation in which a tick succeeded). Its no-tick alarm fires when
the second falls short of the first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Settings, TargetConfig

if TYPE_CHECKING:
    from .decide import Decision
    from .model import Observation
    from .tick import TickResult

DEFAULT_NAMESPACE = "CeleryOnDemand"

ALWAYS_PRINTED = ("TickDuration", "SuccessfulTicks")
"""The deployment's metrics every tick prints."""

TARGET_STEADY = ("DesiredWorkers", "LiveWorkers", "BusyWorkers", "Ready")
"""A target's metrics printed every tick while it is not at rest."""

TARGET_DETAIL = ("Hidden", "OldestAgeSeconds")
"""Added per target with ``metrics_detail: queue`` (the age only where the broker tells
it)."""

WHEN_NOT_ZERO = frozenset({
    "Errors", "LeaseLost", "BrokerUnavailable", "QueuesOverWaitTarget", "Warnings",
    "IncompleteReads", "ScaleInHeld", "TargetErrors", "ZombieWorkers",
    "TasksNearRedelivery", "QueueMissing"})
"""Metrics printed only when not zero: absent, they read as zero."""

HELD_RULES = ("rollout", "protection")
"""Decisions whose scale-in the platform's state held, besides a gap in the read."""

_last_printed: dict[tuple[str, str, str], tuple[float, ...]] = {}
"""Per namespace, deployment and target: the values last printed (a warm container's
memory), so a target coming to rest is printed once more and then no longer."""


def publish(result: TickResult, settings: Settings, duration: float,
            namespace: str = DEFAULT_NAMESPACE) -> None:
    """Print the tick's metrics as EMF (CloudWatch reads them from the Lambda's log)."""
    deployment = settings.deployment
    observation = result.observation
    decisions = {d.target: d for d in result.decisions}
    over_wait = incomplete = held = 0
    for target in settings.targets:
        decision = decisions.get(target.name)
        if decision is None:
            continue
        over_wait += _over_wait(target, observation)
        incomplete += int(bool(decision.inputs.get("problems")))
        held += int(bool(decision.inputs.get("problems")) or decision.rule in HELD_RULES)
        values = _target_values(target, decision, result, observation,
                                settings.metrics_detail == "queue")
        key = (namespace, deployment, target.name)
        steady = {k: v for k, v in values.items() if k not in WHEN_NOT_ZERO}
        signature = tuple(steady.values())
        if decision.at_rest() and _last_printed.get(key) == signature \
                and not any(values[k] for k in values if k in WHEN_NOT_ZERO):
            continue  # at rest and said so already: nothing billed for it this hour
        _emit(namespace, {"deployment": deployment, "target": target.name}, values)
        _last_printed[key] = signature
        if settings.metrics_detail == "queue":
            for name in target.queues:
                queue = observation.queues.get(name) if observation else None
                if queue is not None:
                    queue_values: dict[str, float] = {
                        "Ready": queue.size, "Hidden": queue.hidden,
                        "QueueMissing": int(queue.missing)}
                    if queue.oldest_age is not None:
                        queue_values["OldestAgeSeconds"] = queue.oldest_age
                    _emit(namespace, {"deployment": deployment, "target": target.name,
                                      "queue": name}, queue_values)
    errors = int(result.error is not None and not result.lease_lost) + len(result.target_errors)
    _emit(namespace, {"deployment": deployment}, {
        "TickDuration": duration * 1000,
        "SuccessfulTicks": int(result.ok and not result.lease_lost),
        "Errors": errors,
        "LeaseLost": int(result.lease_lost),
        "BrokerUnavailable": int(observation is None and not result.lease_lost),
        "QueuesOverWaitTarget": over_wait,
        "Warnings": len(result.warnings()),
        "IncompleteReads": incomplete,
        "ScaleInHeld": held})


def streams_while_busy(settings: Settings, ages: bool = True) -> int:
    """The metric streams a tick prints when every target works (``ages``: the broker
    tells the oldest task's age): what CloudWatch bills by the hour while busy."""
    detail = settings.metrics_detail == "queue"
    extra = (len(TARGET_DETAIL) - (0 if ages else 1)) if detail else 0
    per_queue = (3 - (0 if ages else 1)) if detail else 0
    return (len(ALWAYS_PRINTED) + (len(TARGET_STEADY) + extra) * len(settings.targets)
            + per_queue * len(settings.queues))


def publish_failure(deployment: str, namespace: str = DEFAULT_NAMESPACE) -> None:
    """An invocation that could not tick at all (its config is missing or invalid)."""
    _emit(namespace, {"deployment": deployment}, {"Errors": 1, "SuccessfulTicks": 0})


def publish_dispatch(stack_deployment: str, scheduled: int, failed: int,
                     due: float, namespace: str = DEFAULT_NAMESPACE) -> None:
    """The dispatcher's minute: how many deployments it was to start, and how many of their
    invocations were refused (``Errors``)."""
    _emit(namespace, {"deployment": stack_deployment},
          {"DeploymentsScheduled": scheduled, "Errors": failed}, timestamp=due)


def publish_deployment_ticked(stack_deployment: str, ticked: bool, due: float,
                              namespace: str = DEFAULT_NAMESPACE) -> None:
    """One deployment's scheduled invocation: whether a tick of it succeeded."""
    _emit(namespace, {"deployment": stack_deployment}, {"DeploymentsTicked": int(ticked)},
          timestamp=due)


def _target_values(target: TargetConfig, decision: Decision, result: TickResult,
                   observation: Observation | None, detail: bool) -> dict[str, float]:
    queues = [observation.queues[name] for name in target.queues
              if observation and name in observation.queues]
    workers = observation.workers_for(target.queues) if observation else []
    values: dict[str, float] = {
        "DesiredWorkers": decision.desired,
        "LiveWorkers": len(workers),
        "BusyWorkers": sum(1 for w in workers if w.busy),
        "Ready": sum(q.size for q in queues),
    }
    ages = [q.oldest_age for q in queues if q.oldest_age is not None]
    if detail:
        values["Hidden"] = sum(q.hidden for q in queues)
        if ages:
            values["OldestAgeSeconds"] = max(ages)
    values.update({
        "TargetErrors": int(target.name in result.target_errors),
        "IncompleteReads": int(bool(decision.inputs.get("problems"))),
        "ZombieWorkers": len(decision.zombies),
        "TasksNearRedelivery": int(decision.inputs.get("near_redelivery") or 0),
        "QueueMissing": sum(1 for q in queues if q.missing)})
    return values


def _over_wait(target: TargetConfig, observation: Observation | None) -> int:
    if observation is None:
        return 0
    return sum(1 for name in target.queues if name in observation.queues
               and (observation.queues[name].oldest_age or 0) > target.target_wait_seconds)


def _emit(namespace: str, dimensions: dict[str, str], values: dict[str, float],
          timestamp: float | None = None) -> None:
    """One EMF blob: these dimensions, every value not left out for being zero, at
    ``timestamp`` (seconds; default now)."""
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    units: dict[str, Any] = {"TickDuration": MetricUnit.Milliseconds,
                             "OldestAgeSeconds": MetricUnit.Seconds}
    printed = {name: value for name, value in values.items()
               if value or name not in WHEN_NOT_ZERO}
    if not printed:
        return
    metrics = EphemeralMetrics(namespace=namespace)
    for dimension, label in dimensions.items():
        metrics.add_dimension(name=dimension, value=label)
    for name, value in printed.items():
        metrics.add_metric(name=name, unit=units.get(name, MetricUnit.Count), value=value)
    if timestamp is not None:
        metrics.set_timestamp(int(timestamp * 1000))
    metrics.flush_metrics()
