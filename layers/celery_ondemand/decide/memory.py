"""What a target remembers from tick to tick, as plain data that survives a cold start.

The decision is a pure function of (observation, memory, config, now); this is the memory
part. It round-trips through :meth:`TargetMemory.to_dict` / :meth:`TargetMemory.from_dict`
so the state store (DynamoDB) can keep it between Lambda invocations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class TargetMemory:
    """One target's memory.

    - ``recommendations``: ``[time, workers]`` pairs inside the stabilization window; a
      scale-down goes only as low as the highest of them.
    - ``idle_since``: when the target was first seen with no work and no running task; None
      while it has work.
    - ``workers_seen``: live workers of the target at the last complete read; one missing
      from the next burst makes that read partial (hold, do not shrink).
    - ``processed`` / ``observed_at`` / ``work`` / ``ready`` / ``running``: counters, time,
      total, waiting and running work of the last complete read, for measuring rates.
    - ``service_rate``: tasks one fully busy worker finishes per second.
    - ``arrival_rate``: tasks arriving per second for the target.
    - ``arrivals_sum`` / ``elapsed_sum`` / ``finished_sum`` / ``busy_slot_seconds``: the
      decaying sums the two rates are ratios of; ``arrival_ticks`` / ``arrivals_sq_sum``:
      the decaying count of measured ticks and sum of their squared arrivals, for the
      spread of arrivals (:meth:`arrival_deviation`).
    - ``failed_reads``: incomplete reads in a row.
    - ``stalled_since``: per live worker, since when it has run nothing and finished
      nothing while a queue it consumes held ready tasks (a zombie in the making).
    - ``unheard_since``: since when the platform has run more workers than were heard.
    - ``concurrency``: slots per worker the workers last reported, for when none is live
      to say (from zero).
    - ``last_up_at`` / ``last_down_at`` / ``last_desired``: the last decisions taken.
    - ``last_tick``: what this tick measured, ``[seconds, arrived, finished, busy
      slot-seconds]``, None when it measured nothing: the load history's sample.
    - ``forecast``: the arrivals the forecast expects, ``{"start", "rates", "days"}`` (see
      :mod:`.forecast`); ``forecast_checks``: pre-scales waiting to be proven, ``[due,
      expected rate, rate when taken]``; ``forecast_off_until``: the forecast stepped back
      after a wrong one, until then; ``forecast_retry_at``: a read of the history failed,
      none again before then.
    """

    recommendations: list[list[float]] = field(default_factory=list)
    idle_since: float | None = None
    workers_seen: list[str] = field(default_factory=list)
    processed: dict[str, int] = field(default_factory=dict)
    observed_at: float | None = None
    work: int | None = None
    ready: int | None = None
    running: int | None = None
    service_rate: float | None = None
    arrival_rate: float | None = None
    arrivals_sum: float = 0.0
    elapsed_sum: float = 0.0
    finished_sum: float = 0.0
    busy_slot_seconds: float = 0.0
    arrival_ticks: float = 0.0
    arrivals_sq_sum: float = 0.0
    failed_reads: int = 0
    stalled_since: dict[str, float] = field(default_factory=dict)
    unheard_since: float | None = None
    concurrency: int | None = None
    last_up_at: float | None = None
    last_down_at: float | None = None
    last_desired: int | None = None
    last_tick: list[float] | None = None
    forecast: dict[str, Any] | None = None
    forecast_checks: list[list[float]] = field(default_factory=list)
    forecast_off_until: float | None = None
    forecast_retry_at: float | None = None

    def arrival_deviation(self, seconds: float) -> float:
        """Standard deviation of the tasks arriving over ``seconds``, from the per-tick
        counts (ticks taken as independent); 0 until three ticks were measured.

        Poisson arrivals give about sqrt(λ·seconds); bursts (many tasks at once, then
        none) give more, and that is what it is for.
        """
        if self.arrival_ticks < 3 or self.elapsed_sum <= 0:
            return 0.0
        mean = self.arrivals_sum / self.arrival_ticks
        variance = max(0.0, self.arrivals_sq_sum / self.arrival_ticks - mean * mean)
        tick = self.elapsed_sum / self.arrival_ticks
        return math.sqrt(variance * seconds / tick)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TargetMemory:
        """Rebuild from :meth:`to_dict` output; unknown keys (from a newer version) are dropped."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})
