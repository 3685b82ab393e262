"""Simulate: our real policy code, its peers and clairvoyant plans over a real arrival
trace, in continuous time.

- :mod:`.engine`: the queue, the workers and the clock (event-driven, exact service times);
- :mod:`.ondemand`: our own policies, through the tick's decision code;
- :mod:`.baselines`: KEDA and AWS target tracking, as documented;
- :mod:`.planners`: clairvoyant planners; the oracle is the cheapest of their plans;
- :mod:`.traces`: per-second arrival traces and service-time distributions;
- :mod:`.compare`: all of them over the same tasks, as a table.

>>> from celery_ondemand.simulate import compare, SimConfig   # doctest: +SKIP
"""

from __future__ import annotations

from .compare import POLICIES, Comparison, Row, compare, plot, render
from .engine import SimConfig, SimResult, arrivals_from, busy_bound_minutes, simulate
from .traces import read_counts, service_times

__all__ = ["POLICIES", "Comparison", "Row", "SimConfig", "SimResult", "arrivals_from",
           "busy_bound_minutes", "compare", "plot", "read_counts", "render",
           "service_times", "simulate"]
