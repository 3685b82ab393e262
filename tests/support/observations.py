"""Observations and settings built by hand, for the pure decision tests."""

from __future__ import annotations

from typing import Any

from celery_ondemand import Observation, QueueStatus, WorkerStatus
from celery_ondemand.config import Settings, settings_from_mapping


def worker(hostname: str, queues: list[str], *, active: int = 0, processed: int = 0,
           concurrency: int = 4) -> WorkerStatus:
    return WorkerStatus(hostname, alive=True, active=active, processed=processed,
                        concurrency=concurrency, queues=list(queues), last_heartbeat_at=0.0)


def observation(queues: dict[str, tuple[int, int]], workers: list[WorkerStatus] = (),  # type: ignore[assignment]
                *, ages: dict[str, float] | None = None, problems: list[str] | None = None,
                at: float = 0.0) -> Observation:
    """``queues`` maps a name to (ready, hidden); workers serve queues by their lists."""
    result = Observation(broker="redis://test/0", observed_at=at,
                         sources=["broker", "events", "control"], problems=problems or [])
    for w in workers:
        result.workers[w.hostname] = w
    for name, (ready, hidden) in queues.items():
        result.queues[name] = QueueStatus(
            name, size=ready, hidden=hidden, running=hidden, reserved=0,
            workers=[w for w in workers if name in w.queues],
            oldest_age=(ages or {}).get(name))
    return result


def settings(**target: Any) -> Settings:
    """One target, ``t``, serving queue ``q`` (unless overridden), with local workers."""
    base = {"name": "t", "queues": ["q"], "scaler": "local", "command": "celery worker"}
    return settings_from_mapping({"broker_url": "redis://test/0",
                                  "targets": [{**base, **target}]})


class ScriptedObserver:
    """Hands the Ticker observations prepared by a test, one per tick.

    Observation itself is tested against real brokers and workers elsewhere; the tick tests
    that use this study what the Ticker does with an observation (lease, memory, acting).
    """

    def __init__(self, *observations: Observation | None) -> None:
        self.observations = list(observations)

    def observe(self, queues: Any = None, previous: Any = None) -> Observation:
        from celery_ondemand import BrokerUnavailable

        observed = self.observations.pop(0) if len(self.observations) > 1 \
            else self.observations[0]
        if observed is None:
            raise BrokerUnavailable("failed connecting to redis://test/0: scripted outage")
        return observed

    def close(self) -> None:
        pass
