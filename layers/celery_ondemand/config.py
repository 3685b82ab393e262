"""One configuration document, parsed once into frozen, typed settings.

The document is YAML (JSON is accepted: it is YAML too). Every field is declared once, with
its type, default and limits, in :data:`TARGET_FIELDS` / :data:`TOP_FIELDS`; validation runs
right after parsing and every error names its path and why
(``targets[1].max_workers: must be ≥ min_workers (4), got 2``). An unknown key is an error
with a "did you mean" hint, because a typo must never silently become a default.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import schedules
from .errors import ConfigError
from .schedules import Window

BUILTIN_SCALERS = ("ecs", "asg", "local")
BUILTIN_POLICIES = ("capacity", "cwod")
MAX_FORECAST_LEAD = 1800.0
"""The longest forecast lead: a worker that takes longer to start is not what a minute-by-
minute forecast an hour ahead is for."""
_CLASS_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class TargetConfig:
    """One scaling target: a group of identical workers serving some queues.

    Field meanings and defaults are in :data:`TARGET_FIELDS`.
    """

    name: str
    queues: tuple[str, ...]
    scaler: str
    cluster: str | None = None
    service: str | None = None
    auto_scaling_group: str | None = None
    command: str | None = None
    state_dir: str | None = None
    min_workers: int = 0
    max_workers: int = 10
    policy: str = "capacity"
    worker_concurrency: int | None = None
    target_wait_seconds: float = 60.0
    scale_down_delay_seconds: float = 300.0
    # 45 s = three 15 s ticks: the measured rates are already smoothed over ~5 ticks, and
    # a longer window holds every minute-scale peak longer (`make bench`: 60 s cost 1.10x
    # the oracle on Twitter, 45 s 1.09x, with +10 % scale actions).
    stabilization_seconds: float = 0.0
    tolerance: float = 0.1
    scale_up_max_step: int = 4
    scale_up_max_percent: float = 100.0
    fallback_workers: int | None = None
    fallback_after_failures: int = 3
    zombie_after_seconds: float = 180.0
    redelivery_timeout_seconds: float | None = None
    startup_grace_seconds: float = 180.0
    forecast: bool = False
    forecast_lead_seconds: float = 60.0
    forecast_min_days: float = 7.0
    forecast_timezone: str | None = None
    dry_run: bool = False
    paused: bool = False
    schedules: tuple[Window, ...] = ()

    @property
    def forecast_zone(self) -> str:
        """The time zone the forecast compares days in: ``forecast_timezone``, else the
        first schedule's, else UTC."""
        return self.forecast_timezone or (self.schedules[0].timezone if self.schedules
                                          else "UTC")


@dataclass(frozen=True)
class Settings:
    """The whole deployment: where the broker is, where state lives, and the targets."""

    targets: tuple[TargetConfig, ...]
    broker_url: str | None = None
    broker_url_secret: str | None = None
    deployment: str = "default"
    state_table: str = "celery-ondemand"
    state_file: str | None = None
    history_days: float = 7.0
    load_history_days: int = 28
    tick_interval_seconds: float = 15.0
    metrics_detail: str = "target"
    idle_return: bool = True
    broker_transport_options: dict[str, Any] = field(default_factory=dict)
    """Celery's ``broker_transport_options``, as the workers set them: the observer opens
    its connection with them, so it reads the keys and queues the workers use."""

    @property
    def queues(self) -> list[str]:
        """Every queue some target serves, each once, in config order."""
        return list(dict.fromkeys(q for target in self.targets for q in target.queues))

    def target(self, name: str) -> TargetConfig:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)


@dataclass(frozen=True)
class Field:
    """How to read one key: its kind, default, limits and a line saying what it is for."""

    kind: str  # "str", "int", "float", "bool", "queues", "list", "mapping"
    help: str
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # None is allowed
    choices: tuple[str, ...] = ()


TARGET_FIELDS: dict[str, Field] = {
    "name": Field("str", "unique name of the target", required=True),
    "queues": Field("queues", "queues its workers consume", required=True),
    "scaler": Field("str", "ecs | asg | local | package.module:ClassName", required=True),
    "cluster": Field("str", "ECS cluster (scaler: ecs)", optional=True),
    "service": Field("str", "ECS service (scaler: ecs)", optional=True),
    "auto_scaling_group": Field("str", "Auto Scaling group (scaler: asg)", optional=True),
    "command": Field("str", "worker command line (scaler: local)", optional=True),
    "state_dir": Field("str", "folder tracking local worker processes (scaler: local)",
                       optional=True),
    "min_workers": Field("int", "never fewer workers", 0, minimum=0),
    "max_workers": Field("int", "never more workers", 10, minimum=1),
    "policy": Field("str", "capacity | cwod | package.module:AgentSubclass", "capacity"),
    "worker_concurrency": Field("int", "tasks one worker runs at once (default: as the "
                                "workers report, else as they last reported, else 1)", None,
                                minimum=1, optional=True),
    "target_wait_seconds": Field("float", "how long a task may wait before it starts", 60.0,
                                 minimum=1),
    "scale_down_delay_seconds": Field("float", "idle time before scaling to min_workers",
                                      300.0, minimum=0),
    "stabilization_seconds": Field("float", "scale down to the highest recommendation of "
                                   "this window", 0.0, minimum=0),
    "tolerance": Field("float", "share of the wait goal held back when scaling down "
                       "(hysteresis)", 0.1, minimum=0, maximum=0.99),
    "scale_up_max_step": Field("int", "most workers added in one tick", 4, minimum=1),
    "scale_up_max_percent": Field("float", "most workers added in one tick, as a percentage "
                                  "of the current count", 100.0, minimum=1),
    "fallback_workers": Field("int", "count to apply after fallback_after_failures failed "
                              "reads (default: hold)", None, minimum=0, optional=True),
    "fallback_after_failures": Field("int", "failed reads in a row before the fallback", 3,
                                     minimum=1),
    "zombie_after_seconds": Field("float", "a live worker that takes nothing while its queues "
                                  "hold work this long is a zombie, replaced (0: never)",
                                  180.0, minimum=0),
    "redelivery_timeout_seconds": Field(
        "float", "after this long a running task is delivered again (Redis/SQS "
        "visibility_timeout, RabbitMQ consumer_timeout); default: the visibility_timeout "
        "in broker_transport_options, else the broker's, 3600 s (Redis) or 1800 s (SQS, "
        "RabbitMQ)", None, minimum=1, optional=True),
    "startup_grace_seconds": Field(
        "float", "a task or instance the platform runs this long without its worker heard "
        "makes the read incomplete (never read as idle)", 180.0, minimum=0),
    "schedules": Field("list", "time windows that set a floor (min_workers) and/or a "
                       "ceiling (max_workers): days/from/to or cron/duration_minutes, with "
                       "a timezone", optional=True),
    "forecast": Field("bool", "pre-scale ahead of the rises the load history's daily and "
                      "weekly shape forecasts (capacity policy)", False),
    "forecast_lead_seconds": Field("float", "how long before a forecast rise to have its "
                                   "workers: a new worker's startup", 60.0, minimum=0,
                                   maximum=MAX_FORECAST_LEAD),
    "forecast_min_days": Field("float", "days of load history before the forecast acts",
                               7.0, minimum=3),
    "forecast_timezone": Field("str", "the time zone whose days the load repeats in (a "
                               "09:00 rise stays at 09:00 across a DST change); default: "
                               "the first schedule's timezone, else UTC", optional=True),
    "dry_run": Field("bool", "decide but never act", False),
    "paused": Field("bool", "decide nothing", False),
}

TOP_FIELDS: dict[str, Field] = {
    "broker_url": Field("str", "Celery broker URL", optional=True),
    "broker_url_secret": Field("str", "Secrets Manager name or ARN holding the broker URL",
                               optional=True),
    "deployment": Field("str", "name of this deployment in the state (one lease each)",
                        "default"),
    "state_table": Field("str", "DynamoDB table for the tick's memory", "celery-ondemand"),
    "state_file": Field("str", "SQLite file for the tick's memory instead of DynamoDB",
                        optional=True),
    "history_days": Field("float", "days a decision stays in the history", 7.0,
                          minimum=0.01),
    "load_history_days": Field("int", "days each target's per-minute load is kept (what "
                               "the forecast learns from and simulate --history replays)",
                               28, minimum=1),
    "tick_interval_seconds": Field("float", "seconds between ticks while any target has "
                                   "work or is above its floor (an idle deployment ticks "
                                   "once a schedule period)", 15.0, minimum=1),
    "broker_transport_options": Field("mapping", "Celery's broker_transport_options, as the "
                                      "workers set them", optional=True),
    "idle_return": Field("bool", "when every target is at rest at its floor, tick once a "
                         "schedule period instead of every tick_interval_seconds", True),
    "metrics_detail": Field("str", "target: the metrics the dashboard and alarms read; "
                            "queue: per-queue metrics too (each is billed by CloudWatch)",
                            "target", choices=("target", "queue")),
    "targets": Field("list", "the scaling targets", required=True),
}

_SCALER_NEEDS = {"ecs": ("cluster", "service"), "asg": ("auto_scaling_group",),
                 "local": ("command",)}


def load_settings(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read and validate a configuration file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_settings(text, source=str(path), overrides=overrides)


class ConfigLoader(yaml.SafeLoader):
    """YAML as configs are written: ``to: 18:00`` is the text ``18:00``, not the integer
    1080 that YAML 1.1's base-60 numbers make of it (PyYAML follows 1.1). Every other
    implicit type (numbers, booleans, null) reads as ``yaml.safe_load`` reads it."""


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_DECIMAL_ONLY = {
    _INT: re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)"
                     r"|[-+]?0x[0-9a-fA-F_]+)$"),
    _FLOAT: re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"
                       r"|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
                       r"|\.(?:nan|NaN|NAN))$")}
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, _DECIMAL_ONLY.get(tag, regexp)) for tag, regexp in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def load_yaml(text: str) -> Any:
    """One YAML (or JSON) document, read by :class:`ConfigLoader`."""
    return yaml.load(text, Loader=ConfigLoader)  # a SafeLoader subclass: safe


def parse_settings(text: str, source: str = "config",
                   overrides: Mapping[str, Any] | None = None) -> Settings:
    """Parse a YAML or JSON document into validated :class:`Settings`."""
    try:
        document = load_yaml(text)
    except yaml.YAMLError as exc:
        # The problem and its place only: PyYAML's own message quotes the offending line,
        # which may hold a broker password.
        problem = getattr(exc, "problem", None) or type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML or JSON: {problem}{where}") from None
    return settings_from_mapping(document, source, overrides)


def settings_from_mapping(document: Any, source: str = "config",
                          overrides: Mapping[str, Any] | None = None) -> Settings:
    """Validate an already-parsed document.

    ``overrides`` are top-level settings the environment imposes (a stack's secret, table,
    deployment name), applied before validation; a broker secret replaces any broker URL.
    """
    if not isinstance(document, Mapping):
        raise ConfigError(f"{source}: must be a mapping of settings, got "
                          f"{type(document).__name__}")
    if overrides:
        document = {**document, **overrides}
        if overrides.get("broker_url_secret"):
            document.pop("broker_url", None)
    values = _read(document, TOP_FIELDS, "")
    if bool(values["broker_url"]) == bool(values["broker_url_secret"]):
        raise ConfigError("broker_url: give exactly one of broker_url or broker_url_secret")
    raw_targets = values.pop("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise ConfigError("targets: must be a non-empty list of targets")
    targets = tuple(_target(raw, f"targets[{i}]") for i, raw in enumerate(raw_targets))
    _check_across(targets)
    for i, target in enumerate(targets):
        if target.forecast and values["load_history_days"] < target.forecast_min_days:
            raise ConfigError(
                f"targets[{i}].forecast_min_days: the forecast needs "
                f"{target.forecast_min_days:g} days of load history, but load_history_days "
                f"keeps {values['load_history_days']}: raise load_history_days")
    values["broker_transport_options"] = _transport_options(
        values["broker_transport_options"] or {}, "broker_transport_options")
    return Settings(targets=targets, **values)


def _target(raw: Any, path: str) -> TargetConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: must be a mapping, got {type(raw).__name__}")
    values = _read(raw, TARGET_FIELDS, f"{path}.")
    if values["max_workers"] < values["min_workers"]:
        raise ConfigError(f"{path}.max_workers: must be ≥ min_workers "
                          f"({values['min_workers']}), got {values['max_workers']}")
    fallback = values["fallback_workers"]
    if fallback is not None and not values["min_workers"] <= fallback <= values["max_workers"]:
        raise ConfigError(f"{path}.fallback_workers: must lie between min_workers and "
                          f"max_workers, got {fallback}")
    if values["forecast"] and values["policy"] == "cwod":
        raise ConfigError(f"{path}.forecast: the cwod policy has no forecast; use policy: "
                          "capacity (or a subclass of it)")
    if values["forecast_timezone"] is not None:
        schedules.check_zone(values["forecast_timezone"], f"{path}.forecast_timezone")
    values["schedules"] = schedules.parse(values["schedules"] or [], f"{path}.schedules",
                                          values["max_workers"])
    scaler = values["scaler"]
    if scaler in _SCALER_NEEDS:
        for needed in _SCALER_NEEDS[scaler]:
            if not values[needed]:
                raise ConfigError(f"{path}.{needed}: required with scaler: {scaler}")
    elif not _CLASS_PATH.match(scaler):
        raise ConfigError(f"{path}.scaler: unknown scaler {scaler!r}; expected one of "
                          f"{', '.join(BUILTIN_SCALERS)} or package.module:ClassName")
    policy = values["policy"]
    if policy not in BUILTIN_POLICIES and not _CLASS_PATH.match(policy):
        raise ConfigError(f"{path}.policy: unknown policy {policy!r}; expected one of "
                          f"{', '.join(BUILTIN_POLICIES)} or package.module:AgentSubclass")
    return TargetConfig(**values)


def _check_across(targets: tuple[TargetConfig, ...]) -> None:
    names: dict[str, int] = {}
    owners: dict[str, str] = {}
    for i, target in enumerate(targets):
        if target.name in names:
            raise ConfigError(f"targets[{i}].name: {target.name!r} is already the name of "
                              f"targets[{names[target.name]}]")
        names[target.name] = i
        for queue in target.queues:
            if queue in owners:
                raise ConfigError(f"targets[{i}].queues: {queue!r} is already served by "
                                  f"target {owners[queue]!r}; a queue belongs to one target")
            owners[queue] = target.name


def _read(raw: Mapping[Any, Any], schema: dict[str, Field], prefix: str) -> dict[str, Any]:
    """Every field of ``schema`` from ``raw``, typed and checked; unknown keys are errors."""
    for key in raw:
        if key not in schema:
            hint = difflib.get_close_matches(str(key), schema, n=1)
            did_you_mean = f" (did you mean {hint[0]}?)" if hint else ""
            raise ConfigError(f"{prefix}{key}: unknown setting{did_you_mean}; known: "
                              f"{', '.join(schema)}")
    values = {}
    for name, spec in schema.items():
        path = f"{prefix}{name}"
        if name not in raw or raw[name] is None:
            if spec.required:
                raise ConfigError(f"{path}: required ({spec.help})")
            values[name] = spec.default
            continue
        values[name] = _convert(raw[name], spec, path)
    return values


def _convert(value: Any, spec: Field, path: str) -> Any:
    converters: dict[str, Callable[[Any, str], Any]] = {
        "str": _as_str, "int": _as_int, "float": _as_float, "bool": _as_bool,
        "queues": _as_queues, "list": lambda v, p: v, "mapping": _as_mapping,
    }
    converted = converters[spec.kind](value, path)
    if spec.choices and converted not in spec.choices:
        raise ConfigError(f"{path}: must be one of {', '.join(spec.choices)}, got {value!r}")
    if isinstance(converted, int | float) and not isinstance(converted, bool):
        if spec.minimum is not None and converted < spec.minimum:
            raise ConfigError(f"{path}: must be ≥ {spec.minimum:g}, got {converted}")
        if spec.maximum is not None and converted > spec.maximum:
            raise ConfigError(f"{path}: must be ≤ {spec.maximum:g}, got {converted}")
    return converted


def _as_str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: must be a non-empty string, got {value!r}")
    return value.strip()


def _as_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}: must be a whole number, got {value!r}")
    return value


def _as_float(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(f"{path}: must be a number, got {value!r}")
    if value in (float("inf"), float("-inf")):
        raise ConfigError(f"{path}: must be finite, got {value!r}")
    return float(value)


def _as_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: must be true or false, got {value!r}")
    return value


def _as_mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{path}: must be a mapping with string keys, got "
                          f"{type(value).__name__}")
    return dict(value)


TRANSPORT_OPTION_KINDS: dict[str, Callable[[Any, str], Any]] = {
    "sep": _as_str,
    "global_keyprefix": lambda v, p: v if isinstance(v, str) else _as_str(v, p),
    "unacked_key": _as_str,
    "unacked_index_key": _as_str,
    "queue_name_prefix": lambda v, p: v if isinstance(v, str) else _as_str(v, p),
    "region": _as_str,
    "priority_steps": lambda v, p: _as_priority_steps(v, p),
    "visibility_timeout": lambda v, p: _positive(_as_float(v, p), p),
    "predefined_queues": lambda v, p: _as_predefined_queues(v, p),
}
"""The transport options whose form the observer relies on, checked here so a wrong one
is refused with its path instead of surfacing as an odd read; any other option passes
through to kombu unchanged, as it would from a worker's configuration."""


def parse_transport_options(text: str, source: str = "--transport-options") -> dict[str, Any]:
    """Transport options given as a JSON (or YAML) mapping, checked as in a config file."""
    try:
        value = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid JSON or YAML: {exc}") from exc
    return _transport_options(_as_mapping(value, source), source)


def _transport_options(options: dict[str, Any], path: str) -> dict[str, Any]:
    checked = dict(options)
    for key, check in TRANSPORT_OPTION_KINDS.items():
        if key in checked:
            checked[key] = check(checked[key], f"{path}.{key}")
    return checked


def _positive(value: float, path: str) -> float:
    if value <= 0:
        raise ConfigError(f"{path}: must be > 0, got {value:g}")
    return value


def _as_priority_steps(value: Any, path: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(
            isinstance(step, int) and not isinstance(step, bool) for step in value):
        raise ConfigError(f"{path}: must be a non-empty list of whole numbers, got {value!r}")
    if value != sorted(set(value)):
        raise ConfigError(f"{path}: must be in ascending order without repeats, got {value!r}")
    return list(value)


def _as_predefined_queues(value: Any, path: str) -> dict[str, Any]:
    queues = _as_mapping(value, path)
    for name, queue in queues.items():
        if not isinstance(queue, Mapping) or not isinstance(queue.get("url"), str):
            # The entry may hold credentials: name the queue, never echo the entry.
            raise ConfigError(f"{path}.{name}: must be a mapping with a url")
    return queues


def _as_queues(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{path}: must be a non-empty list of queue names")
    names = tuple(_as_str(item, f"{path}[{i}]") for i, item in enumerate(value))
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: lists a queue twice")
    return names

