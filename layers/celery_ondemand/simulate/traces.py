"""Arrival traces and service-time distributions: what the simulator replays."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path


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


def service_times(spec: str) -> tuple[Callable[[random.Random], float], float]:
    """``fixed:S``, ``exp:MEAN`` or ``lognormal:MEAN:SIGMA`` → (sampler, mean)."""
    kind, *numbers = spec.split(":")
    try:
        values = [float(n) for n in numbers]
    except ValueError:
        values = []
    if any(v <= 0 for v in values):
        values = []
    if kind == "fixed" and len(values) == 1:
        return (lambda rng: values[0]), values[0]
    if kind == "exp" and len(values) == 1:
        return (lambda rng: rng.expovariate(1 / values[0])), values[0]
    if kind == "lognormal" and len(values) == 2:
        mean, sigma = values
        mu = math.log(mean) - sigma**2 / 2
        return (lambda rng: rng.lognormvariate(mu, sigma)), mean
    raise ValueError(f"service time {spec!r}: expected fixed:S, exp:MEAN or "
                     "lognormal:MEAN:SIGMA with positive numbers")
