"""The Lambda face: configuration and secrets from AWS, ticks until the next schedule.

One scheduled invocation (EventBridge Scheduler, every minute) ticks, and while any target
has work or sits above its floor it plans a tick every ``tick_interval_seconds`` until
shortly before the next invocation is due: queued on the stack's tick queue, each delayed
to its slot and run by an invocation of its own, so the waits are not billed. A deployment
at rest ticks once a minute (``idle_return``). Invocations of a warm container reuse the
broker connection, the agents and the scalers. Each tick prints its metrics (EMF) and logs
its decisions.

The schedule's payload carries the time it was scheduled for (``scheduled_time``, filled in
by EventBridge Scheduler) and its period (``period_seconds``): the last tick ends before the
next invocation is due however long this one took to start (a cold start's init counts).

A stack of several deployments (``ONDEMAND_DEPLOYMENTS``) fans out: the scheduled
invocation invokes the function once per deployment, and each of those ticks its
deployment as above (see :mod:`celery_ondemand.fanout`).

Environment:

- ``ONDEMAND_DEPLOYMENTS``: the stack's deployments, comma-separated (empty: one
  deployment, ``ONDEMAND_DEPLOYMENT``); each reads its configuration from
  ``<ONDEMAND_CONFIG_PARAMETER>/<name>``, and names its own broker;
- ``ONDEMAND_RESERVED_CONCURRENCY``, ``ONDEMAND_QUEUED_TICK_CONCURRENCY``: the stack's
  reserved concurrency and its tick queue's, which the dispatcher checks against the
  number of deployments;
- ``ONDEMAND_CONFIG_PARAMETER``: SSM parameter holding the YAML config, else
  ``ONDEMAND_CONFIG_FILE`` (default ``ondemand.yaml`` beside the handler);
- ``ONDEMAND_CONFIG_MAX_AGE``: seconds the config and the broker secret are cached by a warm
  container (default: 60 for the config, so ``paused: true`` or a lower ``max_workers``
  reaches the ticks within a minute, for one free ``GetParameter`` a minute; 300 for the
  secret, which changes only with a rotation, and whose refusal is retried at once);
- ``ONDEMAND_BROKER_SECRET``: Secrets Manager name or ARN of the broker URL (overrides the
  config's ``broker_url_secret``);
- ``ONDEMAND_STATE_TABLE``: the stack's DynamoDB table (overrides ``state_table``);
- ``ONDEMAND_DEPLOYMENT``: the stack's deployment name (overrides ``deployment``), the
  dimension its alarms watch (with ``ONDEMAND_DEPLOYMENTS``: the stack's own name, under
  which the dispatcher counts the deployments it starts and those that ticked);
- ``ONDEMAND_IDLE_RETURN``, ``ONDEMAND_METRICS_DETAIL``: the stack's choices for
  ``idle_return`` and ``metrics_detail``, when not empty;
- ``ONDEMAND_TICK_QUEUE_URL``: the SQS queue a scheduled invocation queues its period's
  further ticks on (without one, it runs them itself, sleeping between);
- ``ONDEMAND_EVENT_BUS``: the EventBridge bus that receives scale events (see
  :mod:`celery_ondemand.scale_events`); unset, none are published;
- ``ONDEMAND_SCHEDULE_SECONDS``: the schedule's period when the payload does not say
  (default 60);
- ``POWERTOOLS_METRICS_NAMESPACE``: the metrics namespace (default ``CeleryOnDemand``);
- ``POWERTOOLS_TRACE_DISABLED``: ``false`` turns X-Ray tracing on; only then is the X-Ray
  SDK imported (it costs about 0.2 s of every cold start).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import parameters

from . import fanout, metrics, scale_events
from .config import Settings, load_settings, parse_settings
from .errors import OnDemandError
from .model import Observation
from .observe import Observer
from .remember import DynamoDBStateStore
from .tick import Ticker, TickResult, resolve_broker_url, store_for

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

logger = Logger(service="celery-ondemand")

NEXT_SCHEDULE_MARGIN_SECONDS = 1.0
"""The last tick ends this long before the next invocation is due."""

TIMEOUT_RESERVE_SECONDS = 10.0
"""A tick never starts with less than this left of the Lambda's time."""


@dataclass
class _Warm:
    """What a warm container keeps between invocations."""

    settings: Settings
    broker_url: str
    ticker: Ticker


_warm: _Warm | None = None
"""The stack's one deployment's (without ``ONDEMAND_DEPLOYMENTS``)."""

_warm_listed: dict[str, _Warm] = {}
"""Each listed deployment's: a container may serve several of them in turn."""


class _Clients:
    """The function's own AWS clients, made on first use: Powertools' caching getters for
    the configuration and the broker secret, and the tick queue's client. They come from
    boto3's default session (shared with every other client of the container, so endpoint
    rules and models are read once), with our retry and timeout settings."""

    @cached_property
    def parameter(self) -> Any:
        return parameters.SSMProvider(boto3_client=_client("ssm"))

    @cached_property
    def secret(self) -> Any:
        return parameters.SecretsProvider(boto3_client=_client("secretsmanager"))

    @cached_property
    def tick_queue(self) -> Any:
        return _client("sqs")

    @cached_property
    def events(self) -> Any:
        return _client("events")

    @cached_property
    def invoker(self) -> Any:
        return _client("lambda")


def _client(service: str) -> Any:
    import boto3

    from .act.base import AWS_CLIENT_CONFIG

    return boto3.client(service, config=AWS_CLIENT_CONFIG)  # type: ignore[call-overload]


@cache
def _clients_for(endpoint: str | None, region: str | None) -> _Clients:
    """One set per endpoint and region: a warm Lambda has one; a test may point at
    another."""
    return _Clients()


def _clients() -> _Clients:
    return _clients_for(os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_REGION"))


CONFIG_MAX_AGE = 60
SECRET_MAX_AGE = 300


def _cached(kind: str, name: str) -> str:
    """A parameter's or a secret's value, cached for ``ONDEMAND_CONFIG_MAX_AGE`` seconds."""
    default = CONFIG_MAX_AGE if kind == "parameter" else SECRET_MAX_AGE
    max_age = int(os.environ.get("ONDEMAND_CONFIG_MAX_AGE", str(default)))
    return str(getattr(_clients(), kind).get(name, max_age=max_age))


def load_lambda_settings(deployment: str | None = None) -> Settings:
    """The config from SSM (cached) or the bundled file, with the stack's overrides.

    ``deployment``: one of the stack's listed deployments, whose configuration is its own
    parameter under ``ONDEMAND_CONFIG_PARAMETER``; the stack imposes its name, and no
    broker (each deployment may watch a broker of its own).
    """
    overrides: dict[str, Any] = {key: os.environ[variable] for key, variable in (
        ("broker_url_secret", "ONDEMAND_BROKER_SECRET"), ("state_table", "ONDEMAND_STATE_TABLE"),
        ("deployment", "ONDEMAND_DEPLOYMENT"), ("metrics_detail", "ONDEMAND_METRICS_DETAIL"))
        if os.environ.get(variable)}
    if os.environ.get("ONDEMAND_IDLE_RETURN"):
        overrides["idle_return"] = os.environ["ONDEMAND_IDLE_RETURN"].lower() == "true"
    name = os.environ.get("ONDEMAND_CONFIG_PARAMETER")
    if deployment is not None:
        if not name:
            raise OnDemandError("ONDEMAND_DEPLOYMENTS needs ONDEMAND_CONFIG_PARAMETER: "
                                "each deployment's configuration is a parameter under it")
        name = fanout.config_parameter(name, deployment)
        overrides["deployment"] = deployment
        overrides.pop("broker_url_secret", None)
    if name:
        try:
            text = _cached("parameter", name)
        except parameters.exceptions.GetParameterError as exc:
            raise OnDemandError(f"config parameter {name!r}: {exc}") from exc
        settings = parse_settings(text, source=f"SSM parameter {name}", overrides=overrides)
    else:
        default = Path(os.environ.get("LAMBDA_TASK_ROOT", ".")) / "ondemand.yaml"
        settings = load_settings(os.environ.get("ONDEMAND_CONFIG_FILE", str(default)),
                                 overrides=overrides)
    if "state_table" in overrides:
        settings = replace(settings, state_file=None)
    return settings


def _secret(name: str) -> str:
    return _cached("secret", name)


@cache
def _tracer() -> Tracer | None:
    """Powertools' Tracer when tracing is on, else None (and the X-Ray SDK not imported)."""
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").lower() in ("true", "1"):
        return None
    from aws_lambda_powertools import Tracer

    return Tracer(service="celery-ondemand")


class _TracedObserver:
    """The observer with each broker round in an X-Ray subsegment."""

    def __init__(self, observer: Observer, tracer: Tracer) -> None:
        self.observer, self.tracer = observer, tracer

    def observe(self, queues: Any = None, previous: Observation | None = None) -> Observation:
        with self.tracer.provider.in_subsegment("## broker observe"):
            return self.observer.observe(queues, previous=previous)

    def drain(self, hostnames: Any) -> None:
        self.observer.drain(hostnames)

    def close(self) -> None:
        self.observer.close()


def _ticker(settings: Settings, listed: bool = False) -> Ticker:
    """The warm container's Ticker for this deployment (``listed``: one of the stack's
    several), rebuilt only when its config or broker URL changed."""
    global _warm
    broker_url = resolve_broker_url(settings, _secret)
    warm = _warm_listed.get(settings.deployment) if listed else _warm
    if warm is None or warm.settings != settings or warm.broker_url != broker_url:
        if warm is not None:
            warm.ticker.close()
        observer: Any = Observer(broker_url,
                                 transport_options=settings.broker_transport_options)
        tracer = _tracer()
        if tracer is not None:
            observer = _TracedObserver(observer, tracer)
        ticker = Ticker(settings, observer=observer, store=store_for(settings))
        warm = _Warm(settings, broker_url, ticker)
        if listed:
            _warm_listed[settings.deployment] = warm
        else:
            _warm = warm
    return warm.ticker


def run_schedule(context: Any, event: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """A scheduled invocation: a tick now, then the period's further ticks, on the
    schedule's grid (scheduled time + k * ``tick_interval_seconds``).

    With a tick queue (``ONDEMAND_TICK_QUEUE_URL``, as the stack sets), the further ticks
    are queued as messages delayed to their slots, each a short invocation of its own
    (:func:`run_queued`): nothing is billed while waiting. Without one, they run here,
    sleeping between, and none starts inside the Lambda's timeout reserve. Either way a
    tick is planned only if, as slow as the slowest so far, it ends before the next
    invocation is due; and with ``idle_return`` a deployment at rest plans none: the next
    schedule wakes it.

    In a stack of several deployments the payload names the one to tick (the dispatcher's
    invocation, :func:`run_dispatch`), which must be one the stack lists.
    """
    started = clock()
    event = event or {}
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", metrics.DEFAULT_NAMESPACE)
    deployment = None
    try:
        deployment = fanout.deployment_for(event, fanout.listed_deployments())
        settings, ticker, stale = _settings_and_ticker(deployment, namespace)
    except OnDemandError as exc:  # a missing or invalid config: nothing to tick, say why
        return _failed(exc, namespace, deployment)
    scheduled = scheduled_time(event)
    origin = scheduled if scheduled is not None and scheduled <= started else started
    next_schedule = origin + _period(event) - NEXT_SCHEDULE_MARGIN_SECONDS
    timeout = started + context.get_remaining_time_in_millis() / 1000 - TIMEOUT_RESERVE_SECONDS
    interval = settings.tick_interval_seconds
    queue_url = os.environ.get("ONDEMAND_TICK_QUEUE_URL")
    results: list[TickResult] = []
    queued: list[float] = []
    slowest = 0.0
    try:
        while True:
            result, duration = _tick(ticker, settings, namespace, clock)
            results.append(result)
            slowest = max(slowest, duration)
            if settings.idle_return and result.at_rest(settings):
                break
            now = clock()
            if queue_url:  # each queued tick has an invocation, and a timeout, of its own
                slots = _slots(origin, interval, now, next_schedule - slowest)
                queued = _queue_ticks(queue_url, settings.deployment, slots, now) \
                    if slots else []
                break
            slots = _slots(origin, interval, now, min(next_schedule, timeout) - slowest)
            if not slots:
                break
            sleep(max(0.0, slots[0] - now))
    finally:
        _end_invocation(ticker)
        if deployment is not None:  # counted against the dispatcher's minute
            metrics.publish_deployment_ticked(
                _stack_deployment(), any(r.ok and not r.lease_lost for r in results),
                origin, namespace)
    return _with_stale_config({**_summary(results), "queued": queued}, stale)


def run_dispatch(context: Any, event: dict[str, Any],
                 deployments: tuple[str, ...]) -> dict[str, Any]:
    """A scheduled invocation of a stack of several deployments: the function invoked
    asynchronously once per deployment (each ticks its own), nothing ticked here."""
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", metrics.DEFAULT_NAMESPACE)
    problem = fanout.concurrency_problem(deployments)
    if problem:
        logger.error(problem)
    done = fanout.dispatch(_clients().invoker, context.function_name, event, deployments)
    for name, why in done.failed.items():
        logger.error(f"deployment {name}: its invocation failed: {why}")
    logger.info("dispatched", extra={"deployments": done.invoked})
    due = scheduled_time(event)
    metrics.publish_dispatch(_stack_deployment(), len(deployments), len(done.failed),
                             due if due is not None else time.time(), namespace)
    errors = [*([problem] if problem else []),
              *(f"deployment {name}: {why}" for name, why in done.failed.items())]
    return {"dispatched": done.invoked, "ok": not errors, "errors": errors}


def _stack_deployment() -> str:
    return os.environ.get("ONDEMAND_DEPLOYMENT", "default")


def run_queued(context: Any, event: dict[str, Any],
               clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """A tick queued by a scheduled invocation for its slot: one tick, unless the slot is
    stale (the next one is due already: a late or repeated delivery)."""
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", metrics.DEFAULT_NAMESPACE)
    deployment = None
    try:
        listed = fanout.listed_deployments()
        if listed:  # a queued tick names its deployment (the queue holds one message)
            deployment = fanout.deployment_for(_body(event.get("Records", [{}])[0]), listed)
        settings, ticker, stale = _settings_and_ticker(deployment, namespace)
    except OnDemandError as exc:
        return _failed(exc, namespace, deployment)
    slots = [_slot(record) for record in event.get("Records", [])]
    due = [slot for slot in slots if slot is not None
           and clock() < slot + settings.tick_interval_seconds]
    if not due:
        logger.info("queued tick skipped: its slot has passed", extra={"slots": slots})
        return {**_summary([]), "skipped": "stale"}
    try:
        result, _ = _tick(ticker, settings, namespace, clock)
    finally:
        _end_invocation(ticker)
    return _with_stale_config(_summary([result]), stale)


def _end_invocation(ticker: Ticker) -> None:
    """Release the lease, and close the broker connection: Lambda freezes a container
    between invocations and may destroy it without a word, and a connection it leaves
    half-open (AMQP without heartbeats, a broker without TCP keepalive) would stay on the
    broker. The next invocation connects again (milliseconds); the Ticker's memory of the
    last read stays."""
    ticker.release_lease()
    ticker.observer.close()


def _tick(ticker: Ticker, settings: Settings, namespace: str,
          clock: Callable[[], float]) -> tuple[TickResult, float]:
    began = clock()
    result = ticker.tick(now=began)
    duration = clock() - began
    report_tick(result, settings, duration, namespace)
    if result.credentials_refused and settings.broker_url_secret:
        # A rotated secret: read it afresh next tick rather than after its cache expires.
        _clients().secret.clear_cache()
    return result, duration


def _slots(origin: float, interval: float, now: float, latest: float) -> list[float]:
    """The grid's slots after ``now`` up to ``latest``."""
    first = origin + interval * math.ceil((now - origin) / interval)
    return [first + k * interval for k in range(int((latest - first) // interval) + 1)
            if first <= latest]


def _queue_ticks(queue_url: str, deployment: str, slots: list[float],
                 now: float) -> list[float]:
    """One message per slot, delayed until it (SQS takes whole seconds, at most 900)."""
    entries = [{"Id": str(i), "DelaySeconds": max(0, min(900, round(slot - now))),
                "MessageBody": json.dumps({"source": "celery-ondemand.tick",
                                           "deployment": deployment, "slot": slot})}
               for i, slot in enumerate(slots)]
    try:
        for start in range(0, len(entries), 10):  # a batch holds ten messages
            answer = _clients().tick_queue.send_message_batch(QueueUrl=queue_url,
                                                      Entries=entries[start:start + 10])
            for failure in answer.get("Failed", []):
                logger.warning("a queued tick was not accepted", extra={"failure": failure})
    except Exception as exc:  # the next schedule ticks anyway: say so, do not fail
        logger.error(f"queueing the period's ticks failed: {type(exc).__name__}: {exc}")
        return []
    return slots


def _body(record: dict[str, Any]) -> dict[str, Any]:
    try:
        body = json.loads(record.get("body") or "{}")
    except (ValueError, AttributeError):
        return {}
    return body if isinstance(body, dict) else {}


def _slot(record: dict[str, Any]) -> float | None:
    slot = _body(record).get("slot")
    return float(slot) if isinstance(slot, int | float) else None


def _settings_and_ticker(deployment: str | None,
                         namespace: str) -> tuple[Settings, Ticker, str | None]:
    """The deployment's settings and warm Ticker, and None; or, when the configuration
    cannot be read now (a bad edit of the parameter, SSM unavailable) but this container
    ticked with a valid one, that one's settings and Ticker, and why: a bad push must not
    freeze every target, a queue at zero workers included. The error is still logged and
    counted in ``Errors``, so the alarm fires until the parameter is fixed."""
    try:
        settings = load_lambda_settings(deployment)
    except OnDemandError as exc:
        warm = _warm_listed.get(deployment) if deployment is not None else _warm
        if warm is None:
            raise
        stale = (f"{exc}; ticking with the last valid configuration this container read "
                 "until it is fixed")
        logger.error(stale)
        metrics.publish_failure(warm.settings.deployment, namespace)
        return warm.settings, warm.ticker, stale
    return settings, _ticker(settings, listed=deployment is not None), None


def _with_stale_config(summary: dict[str, Any], stale: str | None) -> dict[str, Any]:
    if stale is None:
        return summary
    return {**summary, "ok": False, "errors": sorted({*summary["errors"], stale})}


def _failed(exc: OnDemandError, namespace: str,
            deployment: str | None = None) -> dict[str, Any]:
    logger.error(str(exc))
    metrics.publish_failure(deployment or _stack_deployment(), namespace)
    return {"ticks": 0, "ok": False, "lease_lost": False, "errors": [str(exc)],
            "decisions": []}


def _summary(results: list[TickResult]) -> dict[str, Any]:
    return {"ticks": len(results), "ok": all(r.ok for r in results),
            "lease_lost": any(r.lease_lost for r in results),
            "errors": sorted({e for r in results for e in _errors(r)}),
            "decisions": results[-1].serializer()["decisions"] if results else []}


def scheduled_time(event: dict[str, Any]) -> float | None:
    """The time the schedule was due, from EventBridge Scheduler's ``scheduled_time``
    (ISO 8601); None for an invocation that does not carry one (a manual test)."""
    value = event.get("scheduled_time")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _period(event: dict[str, Any]) -> float:
    value = event.get("period_seconds") or os.environ.get("ONDEMAND_SCHEDULE_SECONDS", "60")
    try:
        period = float(value)
    except (TypeError, ValueError):
        period = 60.0
    return period if period > 0 else 60.0


def _errors(result: TickResult) -> list[str]:
    return [*([result.error] if result.error else []), *result.target_errors.values()]


def report_tick(result: TickResult, settings: Settings, duration: float,
                namespace: str = metrics.DEFAULT_NAMESPACE) -> None:
    """Every tick's account: its metrics (EMF), its decisions, each error and each gap,
    and its scale events on ``ONDEMAND_EVENT_BUS`` when set."""
    metrics.publish(result, settings, duration, namespace)
    bus = os.environ.get("ONDEMAND_EVENT_BUS")
    if bus:
        scale_events.publish(result, settings.deployment, bus, lambda: _clients().events)
    if result.lease_lost and not result.error:
        logger.info("another tick holds the lease: this one did nothing")
        return
    logger.info("tick", extra={
        "duration_ms": round(duration * 1000, 1),
        "decisions": [{k: d.serializer()[k] for k in
                       ("target", "current", "desired", "action", "rule", "reason")}
                      for d in result.decisions],
        "applied": result.applied})
    for error in _errors(result):
        logger.error(error)
    for warning in result.warnings():
        logger.warning(warning)


@logger.inject_lambda_context
def autoscaler_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The autoscaler: a scheduled invocation, or a tick it queued (an SQS record); in a
    stack of several deployments, the schedule's invocation dispatches, and each invocation
    it makes names its deployment."""
    def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event.get("Records"):
            return run_queued(context, event)
        try:
            listed = fanout.listed_deployments()
        except OnDemandError as exc:
            return _failed(exc, os.environ.get("POWERTOOLS_METRICS_NAMESPACE",
                                               metrics.DEFAULT_NAMESPACE))
        if listed and "deployment" not in event:
            return run_dispatch(context, event, listed)
        return run_schedule(context, event)

    tracer = _tracer()
    if tracer is not None:
        run = tracer.capture_lambda_handler(run, capture_response=False)
    summary: dict[str, Any] = run(event, context)
    return summary


@logger.inject_lambda_context
def status_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The status URL: the last tick's status in cwod's JSON shape, plus its decisions (in
    a stack of several deployments, of the one named by ``?deployment=``)."""
    try:
        listed = fanout.listed_deployments()
        deployment = fanout.deployment_for(event.get("queryStringParameters") or {}, listed)
    except OnDemandError as exc:  # none named, or one the stack does not list
        return _response(400, {"error": str(exc)})
    try:
        settings = load_lambda_settings(deployment)
        status = store_for(settings).load_status(settings.deployment)
    except OnDemandError as exc:  # no config, or the table unreadable: said, not a crash
        logger.error(str(exc))
        return _response(503, {"error": "state unavailable"})
    if status is None:
        return _response(404, {"error": "no tick has run yet"})
    return _response(200, status)


def _response(code: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": code, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body)}


__all__ = ["DynamoDBStateStore", "autoscaler_handler", "run_dispatch", "run_queued",
           "run_schedule",
           "scheduled_time", "status_handler"]
