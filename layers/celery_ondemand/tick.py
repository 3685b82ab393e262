"""One tick: observe → decide (→ act and remember, as those parts land).

:class:`Ticker` keeps what a tick hands to the next (the last observation, each target's
memory) so that the Lambda, the ``ondemand`` command and tests run the same loop. A broker
that cannot be read makes an observation of None: the decision then holds every target
(blind means hold) and the error is reported, never raised past the tick.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from .config import Settings
from .decide import Decision, TargetMemory, build_agents, decide
from .errors import BrokerUnavailable, ConfigError
from .model import Observation
from .observe import Observer


@dataclass
class TickResult:
    """What one tick saw and decided, and the error that blinded it, if any."""

    observation: Observation | None
    decisions: list[Decision]
    error: str | None = None
    started_at: float = field(default_factory=time.time)

    def serializer(self) -> dict[str, Any]:
        """``{"status": <cwod-shaped status>, "decisions": [...]}``, plus ``error``."""
        return {
            "status": self.observation.serializer() if self.observation else None,
            "decisions": [decision.serializer() for decision in self.decisions],
            "error": self.error,
        }


class Ticker:
    """Runs ticks for one deployment, carrying memory from one to the next."""

    def __init__(self, settings: Settings, observer: Observer | None = None,
                 broker_url: str | None = None) -> None:
        self.settings = settings
        self.agents = build_agents(settings)  # a bad policy class fails before any I/O
        self.observer = observer or Observer(broker_url or resolve_broker_url(settings))
        self.memory: dict[str, TargetMemory] = {}
        self.previous: Observation | None = None

    def tick(self, now: float | None = None, dry_run: bool = False) -> TickResult:
        """Observe every target's queues once and decide every target."""
        now = time.time() if now is None else now
        error = None
        try:
            observation: Observation | None = self.observer.observe(
                self.settings.queues, previous=self.previous)
        except BrokerUnavailable as exc:
            observation, error = None, str(exc)
        decisions, self.memory = decide(observation, self.settings, self.memory, now,
                                        agents=self.agents, dry_run=dry_run)
        if observation is not None:
            self.previous = observation
        return TickResult(observation, decisions, error, started_at=now)

    def close(self) -> None:
        self.observer.close()


def resolve_broker_url(settings: Settings, secrets_client: Any = None) -> str:
    """The broker URL, from the config or from Secrets Manager.

    The secret holds the URL itself, or JSON with a ``broker_url`` key.
    """
    if settings.broker_url:
        return settings.broker_url
    from botocore.exceptions import BotoCoreError, ClientError

    name = settings.broker_url_secret
    try:
        if secrets_client is None:
            import boto3

            secrets_client = boto3.client("secretsmanager")
        secret = secrets_client.get_secret_value(SecretId=name)
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"broker_url_secret: cannot read secret {name!r}: {exc}") from exc
    value = str(secret.get("SecretString") or "").strip()
    if value.startswith("{"):
        try:
            value = str(json.loads(value).get("broker_url") or "")
        except (ValueError, AttributeError):
            value = ""
    if "://" not in value:
        raise ConfigError(f"broker_url_secret: secret {name!r} holds no broker URL "
                          "(expected the URL, or JSON with a broker_url key)")
    return value
