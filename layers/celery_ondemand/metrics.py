"""CloudWatch metrics for one tick, printed as EMF lines by Powertools.

Three dimension sets, one EMF blob each (so every metric carries the dimensions a
dashboard or alarm needs):

- ``deployment``: ``TickDuration`` (ms), ``SuccessfulTicks``, ``Errors``, ``LeaseLost``,
  ``BrokerUnavailable``, ``QueuesOverWaitTarget``, ``Warnings`` (each line of
  :meth:`TickResult.warnings`);
- ``deployment, target``: ``CurrentWorkers``, ``DesiredWorkers``, ``LiveWorkers``,
  ``BusyWorkers``, ``ScaleUp``, ``ScaleDown``, ``TargetErrors``, ``IncompleteReads`` (the read
  had a gap, so the target was held), ``ZombieWorkers``, ``TasksNearRedelivery``;
- ``deployment, target, queue``: ``Ready``, ``Hidden``, ``QueueMissing``,
  ``OldestAgeSeconds`` (where known).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import Settings

if TYPE_CHECKING:
    from .tick import TickResult

DEFAULT_NAMESPACE = "CeleryOnDemand"


def publish(result: TickResult, settings: Settings, duration: float,
            namespace: str = DEFAULT_NAMESPACE) -> None:
    """Print the tick's metrics as EMF (CloudWatch reads them from the Lambda's log)."""
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    count, seconds = MetricUnit.Count, MetricUnit.Seconds

    def emit(dimensions: dict[str, str], values: list[tuple[str, float, MetricUnit]]) -> None:
        metrics = EphemeralMetrics(namespace=namespace)
        for name, value in dimensions.items():
            metrics.add_dimension(name=name, value=value)
        for metric, number, unit in values:
            metrics.add_metric(name=metric, unit=unit, value=number)
        metrics.flush_metrics()

    deployment = settings.deployment
    observation = result.observation
    over_wait = 0
    decisions = {d.target: d for d in result.decisions}
    for target in settings.targets:
        workers = observation.workers_for(target.queues) if observation else []
        decision = decisions.get(target.name)
        if decision is not None:
            emit({"deployment": deployment, "target": target.name}, [
                ("CurrentWorkers", decision.current, count),
                ("DesiredWorkers", decision.desired, count),
                ("LiveWorkers", len(workers), count),
                ("BusyWorkers", sum(1 for w in workers if w.busy), count),
                ("ScaleUp", int(decision.action == "up"), count),
                ("ScaleDown", int(decision.action == "down"), count),
                ("TargetErrors", int(target.name in result.target_errors), count),
                ("IncompleteReads", int(bool(decision.inputs.get("problems"))), count),
                ("ZombieWorkers", len(decision.zombies), count),
                ("TasksNearRedelivery", int(decision.inputs.get("near_redelivery") or 0),
                 count)])
        for name in target.queues:
            queue = observation.queues.get(name) if observation else None
            if queue is None:
                continue
            values: list[tuple[str, float, MetricUnit]] = [
                ("Ready", queue.size, count), ("Hidden", queue.hidden, count),
                ("QueueMissing", int(queue.missing), count)]
            if queue.oldest_age is not None:
                values.append(("OldestAgeSeconds", queue.oldest_age, seconds))
                over_wait += int(queue.oldest_age > target.target_wait_seconds)
            emit({"deployment": deployment, "target": target.name, "queue": name}, values)
    errors = int(result.error is not None and not result.lease_lost) + len(result.target_errors)
    emit({"deployment": deployment}, [
        ("TickDuration", duration * 1000, MetricUnit.Milliseconds),
        ("SuccessfulTicks", int(result.ok and not result.lease_lost), count),
        ("Errors", errors, count),
        ("LeaseLost", int(result.lease_lost), count),
        ("BrokerUnavailable", int(observation is None and not result.lease_lost), count),
        ("QueuesOverWaitTarget", over_wait, count),
        ("Warnings", len(result.warnings()), count)])


def publish_failure(deployment: str, namespace: str = DEFAULT_NAMESPACE) -> None:
    """An invocation that could not tick at all (its config is missing or invalid)."""
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    metrics = EphemeralMetrics(namespace=namespace)
    metrics.add_dimension(name="deployment", value=deployment)
    metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="SuccessfulTicks", unit=MetricUnit.Count, value=0)
    metrics.flush_metrics()
