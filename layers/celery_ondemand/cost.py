"""What the autoscaler itself costs a month on AWS, from what its ticks were measured to use.

The bill has a line per service the stack uses; each is a named price (:data:`PRICES`, with
where AWS publishes it) times a quantity that comes from a measured tick (:class:`TickUsage`:
its billed seconds, the DynamoDB units its writes and reads take, the bytes it logs) and
from the deployment's shape (:class:`Deployment`: memory, tick interval, how much of the
month some target has work). A month is 730 hours, as AWS bills it.

Prices are us-east-1 list prices without free tiers, as AWS published them in 2025; check
them against the pages named before relying on a figure.

Example
-------
>>> busy = TickUsage(seconds=0.6, write_units=11, read_units=1, log_bytes=3000,
...                  metric_streams=17)
>>> bill = monthly_bill(busy, busy, Deployment(busy_fraction=1.0))
>>> round(bill.total, 2) > 0
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

HOURS_A_MONTH = 730
MINUTES_A_MONTH = HOURS_A_MONTH * 60


@dataclass(frozen=True)
class Price:
    dollars: float
    per: str
    source: str


PRICES: dict[str, Price] = {
    "lambda_gb_second": Price(0.0000133334, "GB-second of an arm64 function",
                              "https://aws.amazon.com/lambda/pricing/"),
    "lambda_request": Price(0.20 / 1e6, "request", "https://aws.amazon.com/lambda/pricing/"),
    "scheduler_invocation": Price(1.00 / 1e6, "scheduled invocation",
                                  "https://aws.amazon.com/eventbridge/pricing/"),
    "sqs_request": Price(0.40 / 1e6, "SQS standard request",
                         "https://aws.amazon.com/sqs/pricing/"),
    "dynamodb_write_unit": Price(0.625 / 1e6, "on-demand write request unit",
                                 "https://aws.amazon.com/dynamodb/pricing/on-demand/"),
    "dynamodb_read_unit": Price(0.125 / 1e6, "on-demand read request unit",
                                "https://aws.amazon.com/dynamodb/pricing/on-demand/"),
    "metric_month": Price(0.30, "custom metric stream a month (prorated by the hour)",
                          "https://aws.amazon.com/cloudwatch/pricing/"),
    "log_ingested_gb": Price(0.50, "GB of logs ingested",
                             "https://aws.amazon.com/cloudwatch/pricing/"),
    "log_stored_gb_month": Price(0.03, "GB of logs stored a month",
                                 "https://aws.amazon.com/cloudwatch/pricing/"),
    "alarm_month": Price(0.10, "standard alarm a month",
                         "https://aws.amazon.com/cloudwatch/pricing/"),
    "dashboard_month": Price(3.00, "dashboard a month (an account's first three are free)",
                             "https://aws.amazon.com/cloudwatch/pricing/"),
    "secret_month": Price(0.40, "secret a month",
                          "https://aws.amazon.com/secrets-manager/pricing/"),
    "secret_call": Price(0.05 / 1e4, "Secrets Manager API call",
                         "https://aws.amazon.com/secrets-manager/pricing/"),
    "xray_trace": Price(5.00 / 1e6, "trace recorded", "https://aws.amazon.com/xray/pricing/"),
}

LAMBDA_REPORT_BYTES = 350
"""The START, END and REPORT lines Lambda logs for each invocation."""

SQS_POLLS_A_MINUTE = 15
"""Long polls of an idle queue by Lambda's event source mapping: five pollers, each a
20-second ``ReceiveMessage`` (an estimate from Lambda's documentation, not a measurement)."""

SECRET_CALLS_A_HOUR = 12
"""The broker secret is cached for ``ONDEMAND_CONFIG_MAX_AGE`` (300 s) by a warm container."""

ALARMS = 5
"""The stack's alarms (errors, function errors, no successful tick, queue over its wait,
scale-in held by a lasting gap in the read)."""


@dataclass(frozen=True)
class TickUsage:
    """What one tick used, as measured (see :mod:`celery_ondemand.metering`)."""

    seconds: float
    """Billed duration of an invocation that runs one tick."""
    write_units: float
    read_units: float
    log_bytes: int
    """Bytes the tick printed: its log lines and its metrics (EMF)."""
    metric_streams: int
    """Distinct metric streams its EMF names (a name with one set of dimension values)."""


@dataclass(frozen=True)
class Deployment:
    """The shape of a deployment, as far as the bill is concerned."""

    memory_mb: int = 256
    tick_interval_seconds: float = 15.0
    busy_fraction: float = 0.0
    """Share of the month some target has work or sits above its floor."""
    idle_return: bool = True
    tracing: bool = False
    dashboard: bool = True
    secret: bool = True


@dataclass(frozen=True)
class Bill:
    """Dollars a month, by line."""

    lines: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.lines.values())

    def table(self) -> str:
        width = max(len(name) for name in self.lines)
        rows = [f"{name:<{width}}  ${dollars:8.2f}" for name, dollars in self.lines.items()]
        return "\n".join([*rows, f"{'total':<{width}}  ${self.total:8.2f}"])


def monthly_bill(busy: TickUsage, at_rest: TickUsage, deployment: Deployment) -> Bill:
    """The bill of a month in which some target has work ``busy_fraction`` of the time.

    Busy, a minute holds ``60 / tick_interval_seconds`` ticks, each its own invocation
    (the scheduled one queues the others); at rest, one (with ``idle_return``).
    """
    p = {name: price.dollars for name, price in PRICES.items()}
    per_minute = 60 / deployment.tick_interval_seconds
    busy_minutes = MINUTES_A_MONTH * deployment.busy_fraction
    rest_minutes = MINUTES_A_MONTH - busy_minutes
    rest_ticks_a_minute = 1 if deployment.idle_return else per_minute
    busy_ticks = busy_minutes * per_minute
    rest_ticks = rest_minutes * rest_ticks_a_minute
    ticks = busy_ticks + rest_ticks
    gb = deployment.memory_mb / 1024
    seconds = busy_ticks * busy.seconds + rest_ticks * at_rest.seconds
    queued = busy_ticks - busy_minutes + rest_ticks - rest_minutes
    sqs_requests = (MINUTES_A_MONTH * SQS_POLLS_A_MINUTE
                    + (busy_minutes + (rest_minutes if not deployment.idle_return else 0))
                    + 2 * queued)
    log_bytes = (busy_ticks * busy.log_bytes + rest_ticks * at_rest.log_bytes
                 + ticks * LAMBDA_REPORT_BYTES)
    always = at_rest.metric_streams
    while_busy = max(0, busy.metric_streams - always)
    lines = {
        "Lambda duration": seconds * gb * p["lambda_gb_second"],
        "Lambda requests": ticks * p["lambda_request"],
        "EventBridge Scheduler": MINUTES_A_MONTH * p["scheduler_invocation"],
        "SQS (queued ticks, polling)": sqs_requests * p["sqs_request"],
        "DynamoDB": (busy_ticks * busy.write_units + rest_ticks * at_rest.write_units)
        * p["dynamodb_write_unit"]
        + (busy_ticks * busy.read_units + rest_ticks * at_rest.read_units)
        * p["dynamodb_read_unit"],
        "CloudWatch metrics": (always + while_busy * deployment.busy_fraction)
        * p["metric_month"],
        "CloudWatch Logs": log_bytes / 1e9 * (p["log_ingested_gb"] + p["log_stored_gb_month"]),
        "CloudWatch alarms": ALARMS * p["alarm_month"],
        "CloudWatch dashboard": p["dashboard_month"] if deployment.dashboard else 0.0,
        "Secrets Manager": (p["secret_month"] + HOURS_A_MONTH * SECRET_CALLS_A_HOUR
                            * p["secret_call"]) if deployment.secret else 0.0,
        "X-Ray": ticks * p["xray_trace"] if deployment.tracing else 0.0,
    }
    return Bill(lines)


def metric_streams(emf_lines: Iterable[str]) -> set[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """The distinct streams (namespace, metric, dimension values) printed EMF lines name."""
    streams = set()
    for line in emf_lines:
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        if not isinstance(blob, dict) or "_aws" not in blob:
            continue
        for directive in blob["_aws"].get("CloudWatchMetrics", []):
            for dimension_set in directive.get("Dimensions", []):
                values = tuple((name, str(blob.get(name))) for name in dimension_set)
                for metric in directive.get("Metrics", []):
                    streams.add((directive["Namespace"], metric["Name"], values))
    return streams


# DynamoDB's capacity arithmetic, as its developer guide gives it: an item's size is the
# UTF-8 length of each attribute name plus its value's size; a write takes a unit per KB
# (two in a transaction), a strongly consistent read a unit per 4 KB (half eventually).

def attribute_bytes(value: Mapping[str, Any]) -> int:
    """The size DynamoDB counts for one typed attribute value (``{"S": ...}`` etc.)."""
    (kind, data), = value.items()
    if kind == "S":
        return len(str(data).encode())
    if kind == "B":
        return len(data)
    if kind == "N":
        digits = Decimal(str(data)).normalize().as_tuple().digits
        return math.ceil(len(digits) / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_bytes({kind[0]: item}) for item in data)
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_bytes(v) + 1 for k, v in data.items())
    if kind == "L":
        return 3 + sum(attribute_bytes(v) + 1 for v in data)
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_bytes(item: Mapping[str, Mapping[str, Any]]) -> int:
    return sum(len(name.encode()) + attribute_bytes(value) for name, value in item.items())


def write_units(operation: str, params: Mapping[str, Any]) -> float:
    """Write units a DynamoDB call takes, from its parameters (an item deleted or checked,
    whose size the call does not carry, counts as one KB)."""
    if operation == "PutItem":
        return max(1, math.ceil(item_bytes(params["Item"]) / 1024))
    if operation in ("DeleteItem", "UpdateItem"):
        return 1
    if operation == "TransactWriteItems":
        units = 0
        for entry in params["TransactItems"]:
            (kind, body), = entry.items()
            size = item_bytes(body["Item"]) if kind == "Put" else 0
            units += 2 * max(1, math.ceil(size / 1024))
        return units
    return 0


def read_units(operation: str, params: Mapping[str, Any], response: Mapping[str, Any]) -> float:
    """Read units a DynamoDB read took, from the items it returned."""
    if operation == "Query":
        items = response.get("Items", [])
    elif operation == "GetItem":
        items = [response["Item"]] if "Item" in response else []
    else:
        return 0
    size = sum(item_bytes(item) for item in items)
    units = max(1, math.ceil(size / 4096))
    return units if params.get("ConsistentRead") else units / 2
