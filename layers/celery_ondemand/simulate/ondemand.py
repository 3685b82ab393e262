"""celery-ondemand's own policies in the simulator: ``capacity`` and ``cwod``.

The observation the simulator builds goes through the same
:func:`celery_ondemand.decide.decide` the tick uses, with its memory and a simulated clock.
No second implementation: with a load history (a :class:`~..decide.load.LoadLog`), each
tick also learns the forecast when it runs out and adds its sample, as the tick does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import settings_from_mapping
from ..decide import TargetMemory, build_agents, decide, forecast
from ..decide.load import LoadLog, loads_of
from ..model import Observation, QueueStatus, WorkerStatus
from .engine import SimConfig, Snapshot


class OnDemandPolicy:
    """celery-ondemand's decision code, as the tick runs it."""

    def __init__(self, config: SimConfig, policy: str = "capacity",
                 target: Mapping[str, Any] | None = None, history: LoadLog | None = None,
                 clock: float = 0.0, name: str | None = None) -> None:
        """``target``: more of the target's settings (``tolerance``, ...), as in a config;
        ``history``: the load history to keep and forecast from (what came before the
        trace may already be in it); ``clock``: the instant the trace's second 0 is, on
        the history's clock."""
        self.name = name or policy
        self.history, self.clock = history, clock
        self.settings = settings_from_mapping({
            "broker_url": "sim://", "tick_interval_seconds": config.tick_seconds,
            "targets": [{
                "name": "sim", "queues": ["q"], "scaler": "local", "command": "-",
                "policy": policy, "max_workers": config.max_workers,
                "worker_concurrency": config.concurrency,
                "target_wait_seconds": config.wait_target, **(target or {})}]})
        self.agents = build_agents(self.settings)
        self.memory: dict[str, TargetMemory] = {}

    def desired(self, snapshot: Snapshot) -> int:
        workers = [WorkerStatus(w.name, alive=True, active=w.running,
                                processed=w.processed, queues=["q"],
                                concurrency=self.settings.targets[0].worker_concurrency)
                   for w in snapshot.workers]
        running = sum(w.running for w in snapshot.workers)
        observation = Observation(broker="sim://", observed_at=float(snapshot.now),
                                  sources=["broker", "events", "control"],
                                  workers={w.hostname: w for w in workers})
        observation.queues["q"] = QueueStatus("q", size=snapshot.ready, workers=workers,
                                              hidden=running, running=running, reserved=0,
                                              oldest_age=snapshot.oldest_age)
        now = self.clock + snapshot.now
        decisions, self.memory = decide(observation, self.settings, self.memory, now,
                                        current={"sim": snapshot.current}, agents=self.agents)
        if self.history is not None:  # after deciding, as the tick does
            forecast.refresh(self.settings, self.memory, self.history, now)
            self.history.add_load("sim", loads_of(decisions, self.memory, now))
        return decisions[0].desired
