"""What the demo shows at the end: the numbers, each scale action, and a timeline PNG."""

from __future__ import annotations

import sqlite3
import statistics
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Sample:
    """The picture at one moment of the demo."""

    at: float
    ready: int
    hidden: int
    desired: int
    live: int
    busy: int


@dataclass
class DemoReport:
    published: int = 0
    completed: int = 0
    duplicates: int = 0
    peak_workers: int = 0
    worker_minutes: float = 0.0
    wait_p50: float | None = None
    wait_p95: float | None = None
    actions: list[str] = field(default_factory=list)
    busy_stopped: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    png: Path | None = None

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing run twice, no busy worker stopped."""
        return self.completed == self.published and not self.duplicates \
            and not self.busy_stopped

    def read_results(self, db: Path) -> None:
        """Completions and waits from the rows the demo's tasks wrote."""
        if not db.exists():
            return
        with sqlite3.connect(db, timeout=30) as conn:
            rows = conn.execute("SELECT id, started - published FROM done").fetchall()
        self.completed = len({task for task, _ in rows})
        self.duplicates = len(rows) - self.completed
        waits = sorted(wait for _, wait in rows)
        if len(waits) >= 2:
            cuts = statistics.quantiles(waits, n=20)
            self.wait_p50, self.wait_p95 = statistics.median(waits), cuts[18]

    def text(self) -> str:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}s"

        lines = [
            "", "== celery-ondemand demo: summary ==",
            f"tasks published   {self.published}",
            f"tasks completed   {self.completed}"
            + ("  (none lost)" if self.completed == self.published else "  (LOST TASKS)"),
            f"ran twice         {self.duplicates}",
            f"peak workers      {self.peak_workers}",
            f"worker-minutes    {self.worker_minutes:.2f}",
            f"task wait         p50 {seconds(self.wait_p50)}, p95 {seconds(self.wait_p95)}",
            f"busy workers stopped by the autoscaler: {len(self.busy_stopped)}",
            f"scale actions     {len(self.actions)}:",
            *[f"  {action}" for action in self.actions],
        ]
        if self.png:
            lines.append(f"timeline          {self.png}")
        lines.append("result            " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)

    def plot(self, path: Path) -> Path | None:
        """Queue depth and workers (desired, live, busy) over time, as a PNG."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        times = [s.at for s in self.samples]
        figure, (queue, workers) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
        queue.plot(times, [s.ready for s in self.samples], label="ready")
        queue.plot(times, [s.hidden for s in self.samples], label="hidden (reserved + running)")
        queue.set_ylabel("tasks")
        queue.legend(loc="upper right")
        queue.set_title("celery-ondemand demo")
        workers.step(times, [s.desired for s in self.samples], where="post", label="desired")
        workers.plot(times, [s.live for s in self.samples], label="live")
        workers.plot(times, [s.busy for s in self.samples], label="busy")
        workers.set_ylabel("workers")
        workers.set_xlabel("seconds")
        workers.legend(loc="upper right")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        self.png = path
        return path
