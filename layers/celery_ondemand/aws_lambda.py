"""The Lambda face: configuration and secrets from AWS, ticks until the next schedule.

One scheduled invocation (EventBridge Scheduler, every minute) runs a tick every
``tick_interval_seconds`` until shortly before the next invocation is due, reusing the
broker connection, the agents and the scalers of the warm container; then it releases the
lease and returns a summary. Each tick prints its metrics (EMF) and logs its decisions.

The schedule's payload carries the time it was scheduled for (``scheduled_time``, filled in
by EventBridge Scheduler) and its period (``period_seconds``): the last tick ends before the
next invocation is due however long this one took to start (a cold start's init counts).

Environment:

- ``ONDEMAND_CONFIG_PARAMETER``: SSM parameter holding the YAML config, else
  ``ONDEMAND_CONFIG_FILE`` (default ``ondemand.yaml`` beside the handler);
- ``ONDEMAND_CONFIG_MAX_AGE``: seconds the config and the broker secret are cached by a warm
  container (default 300: a change reaches the ticks within five minutes);
- ``ONDEMAND_BROKER_SECRET``: Secrets Manager name or ARN of the broker URL (overrides the
  config's ``broker_url_secret``);
- ``ONDEMAND_STATE_TABLE``: the stack's DynamoDB table (overrides ``state_table``);
- ``ONDEMAND_DEPLOYMENT``: the stack's deployment name (overrides ``deployment``), the
  dimension its alarms watch;
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
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import parameters

from . import metrics
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


@dataclass(frozen=True)
class _Getters:
    parameter: Any
    secret: Any


@cache
def _getters(endpoint: str | None, region: str | None) -> _Getters:
    """Powertools' caching SSM and Secrets Manager getters, on clients of boto3's default
    session (shared with every other client of the container, so endpoint rules and models
    are read once) with our retry and timeout settings. Built once per endpoint and region
    (a warm Lambda has one; a test may point at another)."""
    import boto3

    from .act.base import AWS_CLIENT_CONFIG

    return _Getters(
        parameters.SSMProvider(boto3_client=boto3.client("ssm", config=AWS_CLIENT_CONFIG)),
        parameters.SecretsProvider(boto3_client=boto3.client("secretsmanager",
                                                             config=AWS_CLIENT_CONFIG)))


def _cached(kind: str, name: str) -> str:
    """A parameter's or a secret's value, cached for ``ONDEMAND_CONFIG_MAX_AGE`` seconds."""
    getters = _getters(os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_REGION"))
    max_age = int(os.environ.get("ONDEMAND_CONFIG_MAX_AGE", "300"))
    return str(getattr(getters, kind).get(name, max_age=max_age))


def load_lambda_settings() -> Settings:
    """The config from SSM (cached) or the bundled file, with the stack's overrides."""
    overrides = {key: os.environ[variable] for key, variable in (
        ("broker_url_secret", "ONDEMAND_BROKER_SECRET"), ("state_table", "ONDEMAND_STATE_TABLE"),
        ("deployment", "ONDEMAND_DEPLOYMENT")) if os.environ.get(variable)}
    name = os.environ.get("ONDEMAND_CONFIG_PARAMETER")
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

    def close(self) -> None:
        self.observer.close()


def _ticker(settings: Settings) -> Ticker:
    """The warm container's Ticker, rebuilt only when the config or broker URL changed."""
    global _warm
    broker_url = resolve_broker_url(settings, _secret)
    if _warm is None or _warm.settings != settings or _warm.broker_url != broker_url:
        if _warm is not None:
            _warm.ticker.close()
        observer: Any = Observer(broker_url)
        tracer = _tracer()
        if tracer is not None:
            observer = _TracedObserver(observer, tracer)
        ticker = Ticker(settings, observer=observer, store=store_for(settings))
        _warm = _Warm(settings, broker_url, ticker)
    return _warm.ticker


def run_schedule(context: Any, event: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Tick until shortly before the next schedule; returns the invocation's summary.

    Ticks start on the schedule's grid (scheduled time + k * ``tick_interval_seconds``); a
    tick starts only if, taking as long as the slowest so far, it ends before the next
    invocation is due and before the Lambda's timeout reserve. The first tick always runs.
    """
    started = clock()
    event = event or {}
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", metrics.DEFAULT_NAMESPACE)
    try:
        settings = load_lambda_settings()
        ticker = _ticker(settings)
    except OnDemandError as exc:  # a missing or invalid config: nothing to tick, say why
        logger.error(str(exc))
        metrics.publish_failure(os.environ.get("ONDEMAND_DEPLOYMENT", "default"), namespace)
        return {"ticks": 0, "ok": False, "lease_lost": False, "errors": [str(exc)],
                "decisions": []}
    period = _period(event)
    scheduled = scheduled_time(event)
    origin = scheduled if scheduled is not None and scheduled <= started else started
    end = min(origin + period - NEXT_SCHEDULE_MARGIN_SECONDS,
              started + context.get_remaining_time_in_millis() / 1000 - TIMEOUT_RESERVE_SECONDS)
    interval = settings.tick_interval_seconds
    results: list[TickResult] = []
    slowest = 0.0
    try:
        while True:
            tick_started = clock()
            result = ticker.tick(now=tick_started)
            duration = clock() - tick_started
            slowest = max(slowest, duration)
            results.append(result)
            report_tick(result, settings, duration, namespace)
            now = clock()
            next_start = origin + interval * math.ceil((now - origin) / interval)
            if next_start + slowest > end:
                break
            sleep(max(0.0, next_start - now))
    finally:
        ticker.release_lease()
    last = results[-1]
    return {"ticks": len(results), "ok": all(r.ok for r in results),
            "lease_lost": any(r.lease_lost for r in results),
            "errors": sorted({e for r in results for e in _errors(r)}),
            "decisions": last.serializer()["decisions"]}


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
    """Every tick's account: its metrics (EMF), its decisions, each error and each gap."""
    metrics.publish(result, settings, duration, namespace)
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
    """The scheduled autoscaler: ticks until the next schedule."""
    tracer = _tracer()
    if tracer is None:
        return run_schedule(context, event)

    @tracer.capture_lambda_handler(capture_response=False)
    def traced(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return run_schedule(context, event)

    summary: dict[str, Any] = traced(event, context)
    return summary


@logger.inject_lambda_context
def status_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The status URL: the last tick's status in cwod's JSON shape, plus its decisions."""
    try:
        settings = load_lambda_settings()
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


__all__ = ["DynamoDBStateStore", "autoscaler_handler", "run_schedule", "scheduled_time",
           "status_handler"]
