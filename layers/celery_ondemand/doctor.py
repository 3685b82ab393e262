"""``ondemand doctor``: a pre-flight check of a deployment, before it loses work.

It reads the config, observes the broker once, asks the live workers for their settings
(``conf``), pool (``stats``) and running tasks (``active``), and looks at the targets'
ECS task definitions. Each finding says what is wrong and how to fix it. An ``error`` is
something that would lose work (or run it twice); a ``warning`` makes scaling less exact.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .act import scaler_for
from .act.ecs import ECSScaler
from .config import Settings
from .model import Observation
from .observe import Observer

REDIS_DEFAULT_VISIBILITY = 3600.0
"""kombu's Redis ``visibility_timeout`` when the app sets none."""


@dataclass(frozen=True)
class Finding:
    """One thing the doctor found: how bad, about what, what is wrong, how to fix it."""

    severity: str  # "error" (would lose or repeat work) or "warning"
    subject: str
    problem: str
    fix: str

    def render(self) -> str:
        return f"{self.severity.upper():7} {self.subject}: {self.problem}\n        fix: {self.fix}"


@dataclass
class WorkerFacts:
    """What one live worker says about itself."""

    hostname: str
    conf: Mapping[str, Any]
    stats: Mapping[str, Any]
    running_seconds: list[float]


def examine(settings: Settings, observer: Observer, *, aws: bool = True) -> list[Finding]:
    """Every finding for this deployment, errors first."""
    observation = observer.observe(settings.queues, ping=True)
    facts = ask_workers(observer, observation)
    findings = [*worker_findings(facts, observation, settings),
                *coverage_findings(observation, settings)]
    if aws:
        findings += ecs_findings(settings, facts)
    return sorted(findings, key=lambda f: (f.severity != "error", f.subject))


def ask_workers(observer: Observer, observation: Observation) -> list[WorkerFacts]:
    """``conf``, ``stats`` and ``active`` from every live worker, in one round each."""
    hosts = sorted(observation.live_workers)
    if not hosts:
        return []
    inspect = observer.app.control.inspect(destination=hosts, limit=len(hosts), timeout=2.0,
                                           connection=observer.probe.connection)
    confs = inspect.conf(with_defaults=True) or {}
    stats = inspect.stats() or {}
    active = inspect.active() or {}
    now = time.time()
    return [WorkerFacts(host, confs.get(host) or {}, stats.get(host) or {},
                        [now - float(t["time_start"]) for t in active.get(host) or []
                         if isinstance(t, dict) and t.get("time_start")])
            for host in hosts]


def worker_findings(facts: Iterable[WorkerFacts], observation: Observation,
                    settings: Settings) -> list[Finding]:
    found: dict[tuple[str, str, str], list[str]] = {}

    def note(severity: str, problem: str, fix: str, host: str) -> None:
        found.setdefault((severity, problem, fix), []).append(host)

    for worker in facts:
        conf, host = worker.conf, worker.hostname
        if not conf.get("task_acks_late"):
            note("error", "task_acks_late is off: a task is acknowledged when received, so "
                 "one running on a worker that is stopped or dies is lost",
                 "set task_acks_late=True and task_reject_on_worker_lost=True", host)
        elif not conf.get("task_reject_on_worker_lost"):
            note("warning", "task_reject_on_worker_lost is off: a task whose worker process "
                 "dies is acknowledged as failed instead of redelivered",
                 "set task_reject_on_worker_lost=True", host)
        prefetch = int(conf.get("worker_prefetch_multiplier") or 4)
        if prefetch > 1:
            note("warning", f"worker_prefetch_multiplier is {prefetch}: each worker takes "
                 f"up to {prefetch} times its slots off the queue, so waiting work hides on busy "
                 "workers and scale-in waits for it",
                 "set worker_prefetch_multiplier=1", host)
        if worker.stats.get("autoscaler"):
            note("warning", "the pool autoscales (--autoscale): a worker's capacity is not "
                 "fixed, so the number of workers needed cannot be computed",
                 "drop --autoscale and set -c/--concurrency (worker_concurrency)", host)
        if not conf.get("worker_send_task_events") and observation.workers.get(host) \
                and observation.workers[host].heard_by == "control":
            note("warning", "heartbeats and events are off (--without-heartbeat, no -E): "
                 "the worker is found by a ping that costs every tick a second, and task "
                 "times are unknown", "drop --without-heartbeat", host)
        longest = max(worker.running_seconds, default=0.0)
        if _is_redis(observation.broker):
            options = conf.get("broker_transport_options") or {}
            visibility = float(options.get("visibility_timeout") or REDIS_DEFAULT_VISIBILITY)
            if longest > 0.8 * visibility:
                note("error", f"a task has run {longest:.0f}s against a Redis "
                     f"visibility_timeout of {visibility:.0f}s: past it, Redis delivers it "
                     "again and it runs twice",
                     "raise broker_transport_options['visibility_timeout'] above the "
                     "longest task (with margin)", host)
    return [Finding(sev, f"workers {', '.join(sorted(hosts))}", problem, fix)
            for (sev, problem, fix), hosts in found.items()]


def coverage_findings(observation: Observation, settings: Settings) -> list[Finding]:
    """Queues no target claims; targets whose queues no worker consumes."""
    consumed = {name for w in observation.live_workers.values() for name in w.queues}
    findings = [Finding("warning", f"queue {name}", "consumed by live workers but claimed by "
                        "no target: nobody scales the workers that serve it",
                        "add it to a target's queues (or ignore it if those workers are "
                        "fixed)")
                for name in sorted(consumed - set(settings.queues))]
    for target in settings.targets:
        if not observation.workers_for(target.queues):
            findings.append(Finding(
                "warning", f"target {target.name}", "no live worker consumes its queues "
                f"({', '.join(target.queues)}); fine at zero workers, otherwise its workers "
                "consume other queues", "check the workers' -Q against the target's queues"))
    return findings


def ecs_findings(settings: Settings, facts: Iterable[WorkerFacts]) -> list[Finding]:
    """The ECS stop timeout against the longest task running now: a warm shutdown that
    outlasts it ends in SIGKILL, cutting the task."""
    longest = max((s for w in facts for s in w.running_seconds), default=0.0)
    findings = []
    for target in settings.targets:
        if target.scaler != "ecs":
            continue
        scaler = scaler_for(target)
        assert isinstance(scaler, ECSScaler)
        timeout = scaler.stop_timeout()
        if longest > timeout:
            findings.append(Finding(
                "error", f"target {target.name}", f"a task has run {longest:.0f}s but ECS "
                f"stops a container {timeout:.0f}s after SIGTERM: a worker stopped by a "
                "deployment or scale-in is killed with the task unfinished",
                "raise the container's stopTimeout (at most 120 s) and keep tasks shorter, "
                "or rely on task_acks_late to run them again"))
    return findings


def _is_redis(broker: str) -> bool:
    return broker.startswith(("redis", "rediss", "valkey"))
