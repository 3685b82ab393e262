"""ECS services: the desired count of one service.

Read: ``DescribeServices`` (desired, running, pending). Set: ``UpdateService(desiredCount)``.
ECS stops tasks of its own choosing, so before a scale-in the tick protects the tasks whose
workers are busy and lifts protection from idle ones (``UpdateTaskProtection``), so ECS
stops idle tasks. A busy worker not matched to its task, or a task whose protection ECS
did not confirm, holds the scale-in (:class:`~celery_ondemand.errors.ScaleInHeld`). A
worker is matched to its task by the task ARN its bootstep reports, else by a host name
equal to the task id, or the task's private IP or DNS name (run workers with
``-n celery@$HOSTNAME``, which is ``ip-10-…`` on awsvpc networking).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import TargetConfig
from ..errors import ScaleInHeld, ScalerError
from ..model import WorkerStatus
from .base import (
    AWS_CLIENT_CONFIG,
    PROTECTION_MINUTES,
    Capacity,
    Scaler,
    identities,
    replaceable,
    shield_plan,
)


class ECSScaler(Scaler):
    """Sets ``desiredCount`` of ``cluster``/``service``."""

    def __init__(self, target: TargetConfig, client: Any = None) -> None:
        super().__init__(target)
        self._client = client
        self._service: dict[str, Any] = {}
        """The service as last read (its counts and deployments)."""
        self._described: list[dict[str, Any]] | None = None
        """Its running tasks, described once a tick (a rollout's drain and the shield
        both need them), forgotten at the next read."""

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("ecs", config=AWS_CLIENT_CONFIG)
        return self._client

    def _read(self, workers: Sequence[WorkerStatus]) -> Capacity:
        found = self.client.describe_services(cluster=self.target.cluster,
                                              services=[self.target.service])
        services = [s for s in found.get("services", []) if s.get("status") != "INACTIVE"]
        if not services:
            reasons = ", ".join(f.get("reason", "?") for f in found.get("failures", []))
            raise ScalerError(f"target {self.target.name}: ECS service {self.target.service!r}"
                              f" not found in cluster {self.target.cluster!r}"
                              f"{f' ({reasons})' if reasons else ''}")
        service = services[0]
        self._service, self._described = service, None
        return Capacity(int(service["desiredCount"]), int(service.get("runningCount", 0)),
                        int(service.get("pendingCount", 0)), _rollout(service))

    def _set_desired(self, desired: int, current: int, workers: Sequence[WorkerStatus]) -> None:
        self.client.update_service(cluster=self.target.cluster, service=self.target.service,
                                   desiredCount=desired)

    def _replace(self, zombies: Sequence[WorkerStatus],
                 workers: Sequence[WorkerStatus]) -> list[str]:
        """Stop each zombie's task: the service starts a new one to keep its count."""
        tasks = replaceable(zombies, workers, self._tasks())
        for hostname, arn in sorted(tasks.items()):
            self.client.stop_task(cluster=self.target.cluster, task=arn,
                                  reason=f"celery-ondemand: zombie worker {hostname}")
        return sorted(tasks)

    def _before_scale_in(self, busy: list[WorkerStatus], idle: list[WorkerStatus]) -> None:
        busy_tasks, idle_tasks = shield_plan(self.target.name, busy, idle, self._tasks(),
                                             "ECS tasks")
        for arns, enabled in ((busy_tasks, True), (idle_tasks, False)):
            for start in range(0, len(arns), 10):  # the API takes ten tasks a call
                kwargs: dict[str, Any] = {"cluster": self.target.cluster,
                                          "tasks": arns[start:start + 10],
                                          "protectionEnabled": enabled}
                if enabled:
                    kwargs["expiresInMinutes"] = PROTECTION_MINUTES
                answer = self.client.update_task_protection(**kwargs)
                if enabled:
                    self._check_protected(kwargs["tasks"], answer)

    def _check_protected(self, arns: list[str], answer: dict[str, Any]) -> None:
        """ECS answers a task it could not protect in ``failures`` (HTTP 200): that task
        could be the one it stops, so the scale-in waits. An idle task left protected
        only keeps a worker a while longer."""
        confirmed = {t.get("taskArn") for t in answer.get("protectedTasks", [])
                     if t.get("protectionEnabled")}
        failed = {f.get("arn"): f.get("reason", "?") for f in answer.get("failures", [])}
        missing = [arn for arn in arns if arn not in confirmed]
        if missing:
            reasons = ", ".join(f"{arn.rsplit('/', 1)[-1]} ({failed.get(arn, 'not confirmed')})"
                                for arn in missing)
            raise ScaleInHeld(f"target {self.target.name}: holding scale-in: ECS did not "
                              f"protect busy tasks: {reasons}")

    def stop_timeout(self) -> float:
        """Seconds ECS waits after SIGTERM before SIGKILL, for the service's containers
        (the shortest, when they differ; ECS's default 30 s where none is set)."""
        with self.errors("reading the task definition of"):
            found = self.client.describe_services(cluster=self.target.cluster,
                                                  services=[self.target.service])
            services = found.get("services") or []
            if not services:
                raise ScalerError(f"target {self.target.name}: ECS service "
                                  f"{self.target.service!r} not found")
            definition = self.client.describe_task_definition(
                taskDefinition=services[0]["taskDefinition"])["taskDefinition"]
        timeouts = [float(c.get("stopTimeout", 30)) for c in
                    definition.get("containerDefinitions", [])]
        return min(timeouts, default=30.0)

    def _outgoing(self, workers: Sequence[WorkerStatus],
                  quiet: Sequence[WorkerStatus]) -> list[str]:
        """Workers running tasks on tasks started by a deployment the service is moving
        away from (an ``ACTIVE`` one beside the ``PRIMARY``; ECS names the deployment that
        started a task in its ``startedBy``). At a time, as many as the service runs over
        its desired count (what the rollout added), at least one (a ``maximumPercent`` of
        100 adds none: one at a time), less those still draining: the quiet workers on
        this service's tasks, whatever they report (an older bootstep says nothing, a
        ``stats`` reply may be late); none while the new deployment has failed (a rollback
        keeps the old tasks)."""
        deployments = self._service.get("deployments") or []
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
        old = {d.get("id") for d in deployments if d.get("status") == "ACTIVE"}
        busy = [w for w in workers if w.machine and w.active > 0]
        if primary is None or primary.get("rolloutState") == "FAILED" or not old or not busy:
            return []
        ours = {task["taskArn"] for task in self._running()}
        draining = [w for w in quiet if w.machine in ours]
        surplus = int(self._service.get("runningCount") or 0) \
            - int(self._service.get("desiredCount") or 0)
        room = max(1, surplus) - len(draining)
        if room <= 0:
            return []
        leaving = {task["taskArn"] for task in self._running()
                   if task.get("startedBy") in old}
        return sorted(w.hostname for w in busy if w.machine in leaving)[:room]

    def _tasks(self) -> dict[str, set[str]]:
        """The service's running tasks: ARN → the names its worker may carry."""
        tasks: dict[str, set[str]] = {}
        for task in self._running():
            details = [d.get("value") for a in task.get("attachments", [])
                       for d in a.get("details", [])
                       if d.get("name") in ("privateIPv4Address", "privateDnsName")]
            task_id = task["taskArn"].rsplit("/", 1)[-1]
            tasks[task["taskArn"]] = identities(task_id, *details)
        return tasks

    def _running(self) -> list[dict[str, Any]]:
        """The service's running tasks, described (once a tick)."""
        if self._described is None:
            self._described = self._describe_running()
        return self._described

    def _describe_running(self) -> list[dict[str, Any]]:
        arns: list[str] = []
        for page in self.client.get_paginator("list_tasks").paginate(
                cluster=self.target.cluster, serviceName=self.target.service,
                desiredStatus="RUNNING"):
            arns += page.get("taskArns", [])
        found: list[dict[str, Any]] = []
        for start in range(0, len(arns), 100):
            described = self.client.describe_tasks(cluster=self.target.cluster,
                                                   tasks=arns[start:start + 100])
            found += described.get("tasks", [])
        return found


def _rollout(service: dict[str, Any]) -> str | None:
    """A deployment under way: old and new task sets side by side, or the primary one not
    yet at steady state. Scaling in then could stop the new tasks the rollout is waiting
    for, or fight the rollout's own scale-in of the old ones."""
    deployments = service.get("deployments") or []
    live = [d for d in deployments if d.get("status") in ("PRIMARY", "ACTIVE")]
    rolling = [d for d in deployments if d.get("rolloutState") == "IN_PROGRESS"]
    if len(live) > 1 or rolling:
        which = (rolling or live)[0].get("id", "?")
        return f"ECS deployment {which} in progress"
    return None
