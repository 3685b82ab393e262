"""Every policy over the same tasks, side by side with the oracle and the busy floor."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..decide.load import LoadLog
from .baselines import JudoscalePolicy, KedaPolicy, TargetTrackingPolicy
from .engine import Policy, SimConfig, SimResult, arrivals_from, busy_bound_minutes, simulate
from .ondemand import OnDemandPolicy
from .planners import oracle_of, plan_all
from .traces import service_times

POLICIES = ("capacity", "cwod", "keda", "aws-target-tracking", "judoscale", "oracle")


@dataclass
class Row:
    """One policy's line of the comparison table."""

    result: SimResult
    oracle_minutes: float
    bound_minutes: float
    wait_target: float
    oracle_actions: int = 0

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {"policy": r.policy, "worker_minutes": round(r.worker_minutes, 1),
                "vs_oracle": round(r.worker_minutes / max(self.oracle_minutes, 1e-9), 3),
                "vs_busy_bound": round(r.worker_minutes / max(self.bound_minutes, 1e-9), 3),
                "p50_wait": round(r.percentile(0.50), 2),
                "p95_wait": round(r.percentile(0.95), 2),
                "p99_wait": round(r.percentile(0.99), 2), "max_wait": round(r.max_wait, 2),
                "over_target": round(r.share_over(self.wait_target), 4),
                "actions": r.actions, "started": r.started, "cancelled": r.cancelled,
                "actions_vs_oracle": round(r.actions / max(self.oracle_actions, 1), 2),
                "unserved": r.unserved, "meets_target": r.meets(self.wait_target)}


@dataclass
class Comparison:
    """The rows asked for, every planner's plan, the oracle (the cheapest plan on time)
    and the busy floor (total service time ÷ slots)."""

    rows: list[Row]
    plans: dict[str, SimResult]
    oracle: SimResult
    bound_minutes: float
    wait_target: float
    tasks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def by_policy(self) -> dict[str, SimResult]:
        return {row.result.policy.split(" ")[0]: row.result for row in self.rows}

    def as_dict(self) -> dict[str, Any]:
        return {"busy_bound_minutes": round(self.bound_minutes, 1), "tasks": self.tasks,
                "oracle": self.oracle.policy,
                "plans": {name: {"worker_minutes": round(r.worker_minutes, 1),
                                 "max_wait": round(r.max_wait, 2), "actions": r.actions}
                          for name, r in self.plans.items()},
                "policies": [row.as_dict() for row in self.rows]}


def compare(counts: Sequence[int], config: SimConfig, service: str = "exp:20",
            scale: float = 1.0, policies: Sequence[str] = POLICIES, seed: int = 1,
            keep_timeline: bool = False, warmup: int = 0,
            target: Mapping[str, Any] | None = None,
            candidates: Mapping[str, Mapping[str, Any]] | None = None,
            history: Callable[[], LoadLog] | None = None,
            clock: float = 0.0) -> Comparison:
    """Every policy and every planner over the same tasks; the first ``warmup`` seconds
    of ``counts`` only warm them up (see :func:`.engine.simulate`).

    ``target``: the target's own settings for our policies (a replay's); ``candidates``:
    more ``capacity`` rows, each with those settings changed, by name; ``history`` makes
    the load history each of our policies starts from (for a forecast), ``clock`` being
    the instant of the trace's second 0 on its clock."""
    sampler, mean = service_times(service)
    tasks = arrivals_from(counts, scale, sampler, seed)
    horizon = len(counts)
    bound = busy_bound_minutes([t for t in tasks if t[0] >= warmup], config.concurrency)

    def ours(policy: str, settings: Mapping[str, Any] | None, name: str | None = None
             ) -> Callable[[], Policy]:
        return lambda: OnDemandPolicy(config, policy, settings,
                                      history() if history else None, clock, name)

    builders: dict[str, Callable[[], Policy]] = {
        "capacity": ours("capacity", target),
        "cwod": ours("cwod", without_forecast(target)),
        "keda": lambda: KedaPolicy(config),
        "aws-target-tracking": lambda: TargetTrackingPolicy(config, mean),
        "judoscale": lambda: JudoscalePolicy(config),
    }
    for name, changed in (candidates or {}).items():
        builders[name] = ours("capacity", {**(target or {}), **changed}, name)
    policies = [*policies, *(candidates or {})]
    plans = plan_all(tasks, config, horizon, keep_timeline, warmup)
    oracle = oracle_of(plans, config.wait_target)
    results = {name: oracle if name == "oracle" else
               simulate(tasks, builders[name](), config, horizon, keep_timeline, warmup)
               for name in policies}
    rows = [Row(results[name], oracle.worker_minutes, bound, config.wait_target,
                oracle.actions) for name in policies]
    return Comparison(rows, plans, oracle, bound, config.wait_target,
                      sum(1 for t in tasks if t[0] >= warmup))


def without_forecast(target: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A target's settings for the cwod policy, which has no forecast (the config refuses
    ``forecast`` with it): the target replays as cwod would run it."""
    if target is None:
        return None
    return {k: v for k, v in target.items() if not k.startswith("forecast")}


def render(comparison: Comparison) -> str:
    header = (f"{'policy':20} {'worker-min':>10} {'vs-oracle':>9} {'vs-bound':>8} {'p50':>7} "
              f"{'p95':>7} {'p99':>7} {'max':>7} {'>target':>8} {'actions':>7}")
    lines = [header]
    for row in comparison.rows:
        d = row.as_dict()
        lines.append(f"{d['policy']:20} {d['worker_minutes']:10.1f} {d['vs_oracle']:9.3f} "
                     f"{d['vs_busy_bound']:8.3f} {d['p50_wait']:6.1f}s {d['p95_wait']:6.1f}s "
                     f"{d['p99_wait']:6.1f}s {d['max_wait']:6.1f}s {d['over_target']:7.1%} "
                     f"{d['actions']:7}"
                     + (f"  ({d['unserved']} never served)" if d["unserved"] else ""))
    plans = ", ".join(f"{name} {r.worker_minutes:.1f} (max wait {r.max_wait:.0f}s)"
                      for name, r in comparison.plans.items())
    lines.append(f"clairvoyant plans: {plans}; the oracle is the cheapest on time")
    lines.append(f"busy-time bound: {comparison.bound_minutes:.1f} worker-minutes "
                 f"({comparison.tasks} tasks)")
    return "\n".join(lines)


def plot(comparison: Comparison, path: Path) -> Path | None:
    """Load and each policy's workers over time, one panel per policy."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = comparison.rows
    figure, axes = plt.subplots(len(rows), 1, figsize=(11, 2.2 * len(rows)), sharex=True,
                                squeeze=False)
    for axis, row in zip(axes[:, 0], rows, strict=True):
        timeline = row.result.timeline
        times = [t / 3600 for t, *_ in timeline]
        axis.plot(times, [n for *_, n in timeline], label="workers (desired)")
        axis.plot(times, [b for _, _, b, _ in timeline], label="busy", alpha=0.7)
        axis.plot(times, [r for _, r, _, _ in timeline], label="ready", alpha=0.5)
        axis.set_title(f"{row.result.policy}: {row.result.worker_minutes:.0f} worker-min, "
                       f"p95 wait {row.result.percentile(0.95):.0f}s", fontsize=9)
        axis.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("hours")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
