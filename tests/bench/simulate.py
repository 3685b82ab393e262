"""``make bench`` (policies): our policy and its peers over slices of both shared traces.

NASA 1995: three days from day 2, scaled to need tens of workers; Twitter 2021: one day,
scaled likewise. Service times exponential with a 20 s mean, 4 slots per worker, 60 s
startup, 15 s ticks, 60 s wait target. The goal for ``capacity``: p95 wait within the
target, fewer worker-minutes than every baseline that also meets it, within 1.10x of the
oracle.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from celery_ondemand.simulate import SimConfig, compare, read_counts, render

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
SLICES = [
    ("NASA 1995, days 2-4", "nasa-1995-per-second.tbz2", 86400 * 2, 86400 * 3, 10.0),
    ("Twitter 2021, day 2", "twitter-per-second.tbz2", 86400, 86400, 0.1),
]


def main() -> None:
    config = SimConfig(concurrency=4, startup_seconds=60, tick_seconds=15, wait_target=60,
                       max_workers=300)
    for title, name, start, length, scale in SLICES:
        path = TRACES / name
        if not path.exists():
            sys.exit(f"bench: {path} not found (shared/traces sits beside the project)")
        began = time.perf_counter()
        rows, bound = compare(read_counts(path, start, length), config, "exp:20", scale)
        print(f"\n== {title}: scale {scale}, exp:20 service, 4 slots, 60 s startup, "
              f"15 s ticks, 60 s wait target ({time.perf_counter() - began:.0f}s to run)")
        print(render(rows, bound))
        by = {row.result.policy: row for row in rows}
        ours = by["capacity"].result
        meets = [r.result for r in rows if r.result.policy not in ("capacity", "oracle")
                 and r.result.unserved == 0 and r.result.percentile(0.95) <= config.wait_target]
        ratio = ours.worker_minutes / by["oracle"].result.worker_minutes
        beaten = [r.policy for r in meets if ours.worker_minutes < r.worker_minutes]
        print(f"goal: p95 {ours.percentile(0.95):.0f}s <= 60s "
              f"{'met' if ours.percentile(0.95) <= 60 else 'MISSED'}; "
              f"{ratio:.3f}x oracle {'met' if ratio <= 1.10 else 'MISSED'} (<= 1.10); "
              f"fewer worker-minutes than {', '.join(beaten) or 'none'} of the baselines "
              f"meeting the target ({', '.join(r.policy for r in meets) or 'none'})")

if __name__ == "__main__":
    main()
