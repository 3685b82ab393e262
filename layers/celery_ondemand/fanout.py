"""Several deployments in one stack: the scheduled invocation fans out.

A large estate splits into deployments (one per broker, or per group of targets), each with
its own lease, memory, history, status and metrics. A stack lists them (its ``Deployments``
parameter, ``ONDEMAND_DEPLOYMENTS`` in the function's environment). The schedule then
invokes the function once a minute, as for one deployment, and that invocation (the
*dispatcher*) ticks nothing itself: it invokes the same function asynchronously
(``InvocationType=Event``) once per listed deployment, with the schedule's payload and the
deployment's name. Each of those invocations runs the usual loop for its deployment only,
its configuration read from ``<ONDEMAND_CONFIG_PARAMETER>/<name>``, and queues its further
ticks with its name on them.

The event never chooses what is read or which lease is taken: a payload (or a queued tick)
naming a deployment the stack does not list is refused with :class:`UnknownDeployment`.

Concurrency: at a minute's start the dispatcher, one invocation per deployment and the
queued ticks still running (the tick queue's poller runs at most
``ONDEMAND_QUEUED_TICK_CONCURRENCY`` at once) may all run together; a reserved concurrency
(``ONDEMAND_RESERVED_CONCURRENCY``) below that sum throttles some of them, which
:func:`concurrency_problem` says.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, UnknownDeployment

DEPLOYMENTS_VARIABLE = "ONDEMAND_DEPLOYMENTS"

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""A deployment's name: it ends an SSM parameter name and is a metric dimension's value."""

SCHEDULE_KEYS = ("source", "scheduled_time", "period_seconds")
"""What a fanned invocation keeps of the schedule's payload (the dispatcher adds the
deployment): the time it was due and its period bound its ticks as they bound one
deployment's."""


def listed_deployments(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The stack's deployments, in order; empty for a stack of one deployment."""
    raw = environ.get(DEPLOYMENTS_VARIABLE, "")
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    for name in names:
        if not NAME.match(name):
            raise ConfigError(f"{DEPLOYMENTS_VARIABLE}: {name!r} is not a deployment name "
                              "(letters, digits, '_', '.', '-'; at most 64)")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"{DEPLOYMENTS_VARIABLE}: listed twice: {', '.join(duplicates)}")
    return names


def deployment_for(payload: Mapping[str, Any], listed: tuple[str, ...]) -> str | None:
    """The deployment an invocation's payload (or a queued tick's body) is for: None for a
    stack of one deployment, else the name it carries, which must be listed."""
    if not listed:
        return None
    name = payload.get("deployment")
    if not isinstance(name, str) or name not in listed:
        raise UnknownDeployment(f"deployment {name!r} is not one this stack lists "
                                f"({', '.join(listed)}): refused")
    return name


def config_parameter(prefix: str, deployment: str) -> str:
    """The SSM parameter holding one listed deployment's configuration."""
    return f"{prefix.rstrip('/')}/{deployment}"


def payload_for(event: Mapping[str, Any], deployment: str) -> dict[str, Any]:
    """The payload of one deployment's invocation: the schedule's, and its name."""
    return {**{key: event[key] for key in SCHEDULE_KEYS if key in event},
            "deployment": deployment}


@dataclass
class Dispatch:
    """What one dispatcher invocation did."""

    invoked: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Deployment → why its invocation was not accepted."""


def dispatch(client: Any, function_name: str, event: Mapping[str, Any],
             deployments: tuple[str, ...]) -> Dispatch:
    """Invoke ``function_name`` asynchronously once per deployment. One refused invocation
    does not keep the others from starting: each deployment ticks on its own."""
    done = Dispatch()
    for name in deployments:
        try:
            answer = client.invoke(FunctionName=function_name, InvocationType="Event",
                                   Payload=json.dumps(payload_for(event, name)).encode())
        except Exception as exc:  # the others still tick; the caller reports this one
            done.failed[name] = f"{type(exc).__name__}: {exc}"
            continue
        if answer.get("StatusCode") != 202:
            done.failed[name] = f"invocation not accepted (status {answer.get('StatusCode')})"
        else:
            done.invoked.append(name)
    return done


def concurrency_needed(deployments: int, queued_concurrency: int) -> int:
    """Invocations that may run at once: the dispatcher, one per deployment, and the
    queued ticks the tick queue's poller runs together."""
    return 1 + deployments + queued_concurrency


def concurrency_problem(deployments: tuple[str, ...],
                        environ: Mapping[str, str] = os.environ) -> str | None:
    """Why the function's reserved concurrency cannot hold every deployment's invocation,
    or None (no reservation, or enough)."""
    reserved = environ.get("ONDEMAND_RESERVED_CONCURRENCY", "")
    if not reserved.strip():
        return None
    queued = int(environ.get("ONDEMAND_QUEUED_TICK_CONCURRENCY", "2") or 2)
    needed = concurrency_needed(len(deployments), queued)
    if int(reserved) >= needed:
        return None
    return (f"ReservedConcurrency {reserved} is below the {needed} invocations that may run "
            f"at once (the dispatcher, {len(deployments)} deployments, {queued} queued "
            "ticks): some ticks are throttled; raise it or leave it empty")


__all__ = ["DEPLOYMENTS_VARIABLE", "Dispatch", "UnknownDeployment", "concurrency_needed",
           "concurrency_problem", "config_parameter", "deployment_for", "dispatch",
           "listed_deployments", "payload_for"]
