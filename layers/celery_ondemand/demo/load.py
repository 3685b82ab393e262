"""The demo's load: a slice of a real arrival trace, compressed into a few minutes."""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources

TRACE = "nasa-1995-slice.txt"


@dataclass(frozen=True)
class Arrival:
    """One task: when to publish it (seconds from the start) and how long it runs."""

    at: float
    seconds: float


def read_trace(name: str = TRACE) -> list[int]:
    """Per-second arrival counts shipped with the package (``#`` lines are comments)."""
    text = resources.files(__package__).joinpath(name).read_text()
    return [int(x) for line in text.splitlines() if not line.startswith("#")
            for x in line.split()]


def schedule(duration: float, mean_rate: float, seed: int = 7,
             counts: list[int] | None = None) -> list[Arrival]:
    """Arrivals following the trace's shape, squeezed into ``duration`` seconds, at
    ``mean_rate`` tasks a second on average; each task runs 0.5 to 2.5 s (seeded)."""
    counts = counts if counts is not None else read_trace()
    step = duration / len(counts)
    scale = mean_rate * duration / max(1, sum(counts))
    rng = random.Random(seed)
    arrivals, carry = [], 0.0
    for i, count in enumerate(counts):
        carry += count * scale
        whole = int(carry)
        carry -= whole
        arrivals += [Arrival(i * step + (j + 0.5) * step / max(whole, 1),
                             round(rng.uniform(0.5, 2.5), 2)) for j in range(whole)]
    return arrivals
