"""``ondemand doctor``: a pre-flight check of a deployment, before it loses work.

It reads the config, observes the broker once, asks the live workers for their settings
(``conf``), pool and prefetch count (``stats``), running tasks (``active``) and ETA tasks
(``scheduled``), and looks at the targets' ECS task definitions. What a worker runs with
is read from the worker itself where it can be: ``--prefetch-multiplier`` on the command
line does not show in its configuration, and only the celery-ondemand bootstep can say
whether it embeds beat (``-B``). Each finding says what is wrong and how to fix it. An ``error`` is
something that would lose work (or run it twice); a ``warning`` makes scaling less exact.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .act import scaler_for
from .act.ecs import ECSScaler
from .config import Settings
from .decide.engine import REDELIVERY_DEFAULTS, redelivery_timeout
from .model import Observation
from .observe import Observer
from .observe.workers import gather

DEFAULT_VISIBILITY = {"redis": 3600.0, "rediss": 3600.0, "valkey": 3600.0, "sqs": 1800.0}
"""kombu's ``visibility_timeout`` when the app sets none (Redis; Celery's SQS)."""

CONSUMER_TIMEOUT_SCHEMES = ("amqp", "amqps", "pyamqp")
"""Brokers whose redelivery is RabbitMQ's ``consumer_timeout``."""


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
    due_in: list[float] = field(default_factory=list)
    """Seconds until each ETA/countdown task it holds is due."""
    answered: bool = True
    """Whether it answered ``conf``: without an answer its settings are unknown, not off."""

    @property
    def prefetch_multiplier(self) -> float | None:
        """The multiplier the worker runs with, from its consumer's prefetch count (what
        ``--prefetch-multiplier`` set, whatever the configuration says): each ETA task
        it holds raised the count by one, and is taken out."""
        count, pool = self.stats.get("prefetch_count"), self.stats.get("pool") or {}
        processes = pool.get("processes") if isinstance(pool, dict) else None
        slots = len(processes) if isinstance(processes, list) and processes else (
            pool.get("max-concurrency") if isinstance(pool, dict) else None)
        if not isinstance(count, int) or not isinstance(slots, int) or slots <= 0:
            return None
        return max(0, count - len(self.due_in)) / slots


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
    """``conf``, ``stats``, ``active`` and ``scheduled`` from every live worker, in one
    round."""
    hosts = sorted(observation.live_workers)
    if not hosts:
        return []
    # One round, read until every worker has answered (Celery's inspect with limit= counts
    # reads, and a read left over on the observer's connection took a reply's place).
    replies = gather(observer.app, observer.probe.connection, hosts, {
        "conf": {"with_defaults": True}, "stats": {}, "active": {"safe": None},
        "scheduled": {}}, timeout=2.0)
    confs, stats = replies["conf"], replies["stats"]
    active, scheduled = replies["active"], replies["scheduled"]
    now = time.time()
    return [WorkerFacts(host, confs.get(host) or {}, stats.get(host) or {},
                        [now - float(t["time_start"]) for t in active.get(host) or []
                         if isinstance(t, dict) and t.get("time_start")],
                        [due - now for due in map(_when, scheduled.get(host) or [])
                         if due is not None], answered=host in confs)
            for host in hosts]


def _when(entry: Any) -> float | None:
    """When a ``scheduled()`` entry is due, in seconds since the epoch."""
    eta = entry.get("eta") if isinstance(entry, dict) else None
    try:
        return datetime.fromisoformat(str(eta)).timestamp() if eta else None
    except ValueError:
        return None


def worker_findings(facts: Iterable[WorkerFacts], observation: Observation,
                    settings: Settings) -> list[Finding]:
    found: dict[tuple[str, str, str], list[str]] = {}

    def note(severity: str, problem: str, fix: str, host: str) -> None:
        found.setdefault((severity, problem, fix), []).append(host)

    for worker in facts:
        conf, host = worker.conf, worker.hostname
        if not worker.answered:  # its settings unknown: not "off"
            note("warning", "no control reply (worker_enable_remote_control off?): its "
                 "settings cannot be checked, and the observer cannot see what it runs",
                 "set worker_enable_remote_control=True and use the observer's "
                 "control_exchange", host)
            continue
        if not conf.get("task_acks_late"):
            note("error", "task_acks_late is off: a task is acknowledged when received, so "
                 "one running on a worker that is stopped or dies is lost",
                 "set task_acks_late=True and task_reject_on_worker_lost=True", host)
        elif not conf.get("task_reject_on_worker_lost"):
            note("warning", "task_reject_on_worker_lost is off: a task whose worker process "
                 "dies is acknowledged as failed instead of redelivered",
                 "set task_reject_on_worker_lost=True", host)
        prefetch = worker.prefetch_multiplier
        if prefetch is None:  # a worker too old to report it: its configuration
            prefetch = float(conf.get("worker_prefetch_multiplier") or 4)
        if prefetch > 1:
            note("warning", f"the effective prefetch multiplier is {prefetch:g}: each worker "
                 f"takes up to {prefetch:g} times its slots off the queue, so waiting work "
                 "hides on busy workers and scale-in waits for it",
                 "set worker_prefetch_multiplier=1 and drop --prefetch-multiplier", host)
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
        scheme = observation.broker.split(":", 1)[0]
        if scheme in DEFAULT_VISIBILITY:
            options = conf.get("broker_transport_options") or {}
            visibility = float(options.get("visibility_timeout") or DEFAULT_VISIBILITY[scheme])
            if longest > 0.8 * visibility:
                note("error", f"a task has run {longest:.0f}s against a Redis "
                     f"visibility_timeout of {visibility:.0f}s: past it, Redis delivers it "
                     "again and it runs twice",
                     "raise broker_transport_options['visibility_timeout'] above the "
                     "longest task (with margin)", host)
            furthest = max(worker.due_in, default=0.0)
            if furthest > visibility:
                note("error", f"an ETA/countdown task is due in {furthest:.0f}s, beyond the "
                     f"visibility_timeout of {visibility:.0f}s: the broker delivers it "
                     "again before it is due, and it runs twice",
                     "raise broker_transport_options['visibility_timeout'] above the "
                     "furthest ETA or countdown, or schedule far tasks with beat", host)
        elif scheme in CONSUMER_TIMEOUT_SCHEMES:
            _consumer_timeout_findings(worker, observation, settings, note)
        for target in _targets_of(observation, settings, host):
            if _runs_beat(worker) and target.min_workers == 0:
                note("error", f"an embedded beat (-B) runs on target {target.name}, which can "
                     "scale to zero: at zero no periodic task is sent",
                     "run celery beat as its own service, outside scaled targets", host)
            elif _runs_beat(worker) and target.max_workers > 1:
                note("error", f"an embedded beat (-B) runs on target {target.name}, which can "
                     "run several workers: each sends every periodic task, which runs "
                     "once per worker", "run celery beat as its own single service", host)
    return [Finding(sev, f"workers {', '.join(sorted(hosts))}", problem, fix)
            for (sev, problem, fix), hosts in found.items()]


def _runs_beat(worker: WorkerFacts) -> bool:
    """Whether the worker embeds beat (``-B``), as the celery-ondemand bootstep reports."""
    ondemand = worker.stats.get("ondemand")
    return isinstance(ondemand, Mapping) and bool(ondemand.get("beat"))


def _consumer_timeout_findings(worker: WorkerFacts, observation: Observation,
                               settings: Settings, note: Any) -> None:
    """RabbitMQ closes the channel of a consumer that holds a delivery unacknowledged past
    its ``consumer_timeout`` (30 minutes by default): every task the worker holds is then
    delivered again. It holds an ETA task until it is due, and with ``task_acks_late`` (which
    ``install()`` sets) a task until it ends. The broker's value is not visible to a client:
    a target's ``redelivery_timeout_seconds`` says it, else the default is assumed."""
    host = worker.hostname
    limit = min((redelivery_timeout(t, observation.broker)
                 for t in _targets_of(observation, settings, host)),
                default=REDELIVERY_DEFAULTS["amqp"])
    fix = ("raise the broker's consumer_timeout (rabbitmq.conf, or the x-consumer-timeout "
           "queue argument) and set redelivery_timeout_seconds to match")
    furthest = max(worker.due_in, default=0.0)
    if furthest > limit:
        note("error", f"an ETA/countdown task is due in {furthest:.0f}s, beyond RabbitMQ's "
             f"consumer_timeout of {limit:.0f}s: the broker closes the worker's channel "
             "before it is due, and every task the worker holds runs again",
             f"{fix}, or schedule far tasks with beat", host)
    longest = max(worker.running_seconds, default=0.0)
    if worker.conf.get("task_acks_late") and longest > 0.8 * limit:
        note("error", f"a task has run {longest:.0f}s with task_acks_late against RabbitMQ's "
             f"consumer_timeout of {limit:.0f}s: past it, the broker closes the worker's "
             "channel and the task runs twice", f"{fix} above the longest task", host)


def _targets_of(observation: Observation, settings: Settings, host: str) -> list[Any]:
    worker = observation.workers.get(host)
    consumed = set(worker.queues) if worker else set()
    return [t for t in settings.targets if consumed.intersection(t.queues)]


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
