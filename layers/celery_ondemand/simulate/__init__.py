"""Simulate: our real policy code and its peers over a real arrival trace, second by second.

>>> from celery_ondemand.simulate import compare, SimConfig   # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import SimConfig, SimResult, arrivals_from, busy_bound_minutes, simulate
from .policies import KedaPolicy, OnDemandPolicy, OraclePolicy, TargetTrackingPolicy

POLICIES = ("capacity", "cwod", "keda", "aws-target-tracking", "oracle")


def read_counts(path: str | Path, start: int = 0, length: int | None = None) -> list[int]:
    """Per-second counts from a whitespace-separated file, or from the ``.tbz2`` archives
    of shared/traces (their one member)."""
    path = Path(path)
    if path.name.endswith((".tbz2", ".tar.bz2")):
        import tarfile

        with tarfile.open(path, "r:bz2") as archive:
            member = next(m for m in archive.getmembers() if m.isfile())
            extracted = archive.extractfile(member)
            text = extracted.read().decode() if extracted else ""
    else:
        text = path.read_text()
    counts = [int(x) for x in text.split()]
    return counts[start:start + length if length else None]


def plot(rows: Sequence[Row], path: Path) -> Path | None:
    """Load and each policy's workers over time, one panel per policy."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(len(rows), 1, figsize=(11, 2.2 * len(rows)), sharex=True,
                                squeeze=False)
    for axis, row in zip(axes[:, 0], rows, strict=True):
        times = [t / 3600 for t, *_ in row.result.timeline]
        axis.plot(times, [n for *_, n in row.result.timeline], label="workers (desired)")
        axis.plot(times, [b for _, _, b, _ in row.result.timeline], label="busy", alpha=0.7)
        axis.plot(times, [r for _, r, _, _ in row.result.timeline], label="ready", alpha=0.5)
        axis.set_title(f"{row.result.policy}: {row.result.worker_minutes:.0f} worker-min, "
                       f"p95 wait {row.result.percentile(0.95):.0f}s", fontsize=9)
        axis.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("hours")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def service_times(spec: str) -> tuple[Callable[[random.Random], float], float]:
    """``fixed:S``, ``exp:MEAN`` or ``lognormal:MEAN:SIGMA`` → (sampler, mean)."""
    kind, *numbers = spec.split(":")
    values = [float(n) for n in numbers]
    if kind == "fixed" and len(values) == 1:
        return (lambda rng: values[0]), values[0]
    if kind == "exp" and len(values) == 1:
        return (lambda rng: rng.expovariate(1 / values[0])), values[0]
    if kind == "lognormal" and len(values) == 2:
        import math

        mean, sigma = values
        mu = math.log(mean) - sigma**2 / 2
        return (lambda rng: rng.lognormvariate(mu, sigma)), mean
    raise ValueError(f"service time {spec!r}: expected fixed:S, exp:MEAN or "
                     "lognormal:MEAN:SIGMA")


@dataclass
class Row:
    """One policy's line of the comparison table."""

    result: SimResult
    oracle_minutes: float
    bound_minutes: float
    wait_target: float

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {"policy": r.policy, "worker_minutes": round(r.worker_minutes, 1),
                "vs_oracle": round(r.worker_minutes / max(self.oracle_minutes, 1e-9), 3),
                "vs_busy_bound": round(r.worker_minutes / max(self.bound_minutes, 1e-9), 3),
                "p50_wait": r.percentile(0.50), "p95_wait": r.percentile(0.95),
                "p99_wait": r.percentile(0.99),
                "over_target": round(r.share_over(self.wait_target), 4),
                "actions": r.actions, "unserved": r.unserved}


def compare(counts: Sequence[int], config: SimConfig, service: str = "exp:20",
            scale: float = 1.0, policies: Sequence[str] = POLICIES, seed: int = 1,
            keep_timeline: bool = False) -> tuple[list[Row], float]:
    """Every policy over the same tasks; returns the rows and the busy-time bound."""
    sampler, mean = service_times(service)
    tasks = arrivals_from(list(counts), scale, sampler, seed)
    bound = busy_bound_minutes(tasks, config.concurrency)
    builders: dict[str, Callable[[], Any]] = {
        "capacity": lambda: OnDemandPolicy(config, "capacity"),
        "cwod": lambda: OnDemandPolicy(config, "cwod"),
        "keda": lambda: KedaPolicy(config),
        "aws-target-tracking": lambda: TargetTrackingPolicy(config, mean),
        "oracle": lambda: OraclePolicy(tasks, config),
    }
    results = {name: simulate(tasks, builders[name](), config, len(counts), keep_timeline)
               for name in dict.fromkeys([*policies, "oracle"])}
    oracle = results["oracle"].worker_minutes
    rows = [Row(results[name], oracle, bound, config.wait_target) for name in policies]
    return rows, bound


def render(rows: Sequence[Row], bound: float) -> str:
    header = (f"{'policy':20} {'worker-min':>10} {'vs-oracle':>9} {'vs-bound':>8} {'p50':>6} "
              f"{'p95':>7} {'p99':>7} {'>target':>8} {'actions':>7}")
    lines = [header]
    for row in rows:
        d = row.as_dict()
        lines.append(f"{d['policy']:20} {d['worker_minutes']:10.1f} {d['vs_oracle']:9.3f} "
                     f"{d['vs_busy_bound']:8.3f} {d['p50_wait']:5.0f}s {d['p95_wait']:6.0f}s "
                     f"{d['p99_wait']:6.0f}s {d['over_target']:7.1%} {d['actions']:7}"
                     + (f"  ({d['unserved']} never served)" if d["unserved"] else ""))
    lines.append(f"busy-time bound: {bound:.1f} worker-minutes")
    return "\n".join(lines)


__all__ = ["POLICIES", "Row", "SimConfig", "compare", "read_counts", "render",
           "service_times"]
