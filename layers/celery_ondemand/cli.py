"""The ``ondemand`` command line: a face over the library, with no logic of its own.

Every failure we foresee (bad URL, unreachable broker, refused credentials) is one line on
stderr and exit status 2, never a traceback; no output ever holds a broker password.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .config import load_settings, parse_transport_options
from .decide import Decision
from .errors import ConfigError, OnDemandError
from .model import Observation
from .observe.observer import DEFAULT_BURST_SECONDS, DEFAULT_CONNECT_TIMEOUT, Observer
from .tick import Ticker, TickResult, resolve_broker_url, store_for

EXIT_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("status",) and not args.broker:
        parser.error("no broker: pass --broker URL or set CELERY_BROKER_URL")
    try:
        status: int = args.run(args)
        return status
    except OnDemandError as exc:
        print(f"ondemand: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def status_command(args: argparse.Namespace) -> int:
    """``ondemand status``: one observation, as a table or as cwod's JSON."""
    options = parse_transport_options(args.transport_options) if args.transport_options \
        else None
    with Observer(args.broker, transport_options=options, burst_seconds=args.burst,
                  connect_timeout=args.connect_timeout) as observer:
        observation = observer.observe(args.queue or None)
    if args.json:
        print(json.dumps(observation.serializer(), indent=2, sort_keys=False))
    else:
        print(render_table(observation))
    return 0


def tick_command(args: argparse.Namespace) -> int:
    """``ondemand tick``: one tick — what the Lambda does each time it runs."""
    ticker = _ticker(args)
    try:
        result = ticker.tick(dry_run=args.dry_run)
    except BaseException:
        ticker.close(interrupted=True)
        raise
    ticker.close()
    _print_result(result, args.json)
    return 0 if result.ok else EXIT_ERROR


def run_command(args: argparse.Namespace) -> int:
    """``ondemand run``: tick every ``--interval`` seconds until stopped (cwod's service).

    SIGTERM (``docker stop``, systemd, Kubernetes) stops it as Ctrl-C does: the lease is
    released for the next process, not left to expire; the exit status is 143.
    """
    ticker = _ticker(args)
    interval = args.interval or ticker.settings.tick_interval_seconds
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        while True:
            started = time.monotonic()
            _print_result(ticker.tick(dry_run=args.dry_run), args.json)
            sys.stdout.flush()
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    finally:  # only an interrupt ends the loop
        ticker.close(interrupted=True)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _ticker(args: argparse.Namespace) -> Ticker:
    settings = load_settings(args.config)
    if args.state:
        settings = replace(settings, state_file=args.state)
    store = None if args.dry_run else store_for(settings)
    return Ticker(settings, broker_url=args.broker, store=store)


def _print_result(result: TickResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.serializer(), indent=2))
    else:
        if result.observation is not None:
            print(render_table(result.observation))
            print()
        print(render_decisions(result.decisions, result.applied))
    if result.error:
        print(f"ondemand: error: {result.error}; holding every target", file=sys.stderr)
    for error in result.target_errors.values():
        print(f"ondemand: error: {error}", file=sys.stderr)
    for warning in result.warnings():
        print(f"ondemand: warning: {warning}", file=sys.stderr)
    if result.lease_lost and not result.error:
        print("ondemand: another tick holds this deployment's lease: this one did nothing",
              file=sys.stderr)


def doctor_command(args: argparse.Namespace) -> int:
    """``ondemand doctor``: pre-flight findings; exit 1 when something would lose work."""
    from .doctor import examine

    settings = load_settings(args.config)
    broker = args.broker or resolve_broker_url(settings)
    with Observer(broker, transport_options=settings.broker_transport_options) as observer:
        findings = examine(settings, observer, aws=not args.no_aws)
    for finding in findings:
        print(finding.render())
    errors = sum(1 for f in findings if f.severity == "error")
    print(f"{errors} errors, {len(findings) - errors} warnings" if findings
          else "no findings: nothing here would lose work")
    return 1 if errors else 0


def cost_command(args: argparse.Namespace) -> int:
    """``ondemand cost``: the deployment's own AWS bill, from a measured tick."""
    from . import cost, metrics
    from .metering import Meter

    settings = load_settings(args.config)
    broker = args.broker or resolve_broker_url(settings)
    with Meter(settings, broker) as meter:
        meter.tick()  # the first tick has no previous read to lean on: not typical
        measured = meter.tick()
    usage, result = measured.usage, measured.result
    at_rest_now = result.at_rest(settings)
    ages = any(q.oldest_age is not None for q in (
        result.observation.queues.values() if result.observation else []))
    busy = usage if not at_rest_now else replace(
        usage, metric_streams=metrics.streams_while_busy(settings, ages))
    at_rest = replace(usage, metric_streams=len(metrics.ALWAYS_PRINTED))
    shape = cost.Deployment(memory_mb=args.memory_mb,
                            tick_interval_seconds=settings.tick_interval_seconds,
                            busy_fraction=args.busy_fraction, idle_return=settings.idle_return,
                            tracing=args.tracing, dashboard=not args.no_dashboard)
    bills = {f"{args.busy_fraction:.0%} busy": cost.monthly_bill(busy, at_rest, shape),
             "at rest all month": cost.monthly_bill(busy, at_rest,
                                                    replace(shape, busy_fraction=0.0)),
             "busy all month": cost.monthly_bill(busy, at_rest,
                                                 replace(shape, busy_fraction=1.0))}
    if args.json:
        print(json.dumps({"measured": usage.__dict__, "at_rest_now": at_rest_now,
                          "bills": {k: {**b.lines, "total": b.total}
                                    for k, b in bills.items()}}, indent=2))
        return 0
    state = "at rest" if at_rest_now else "with work"
    print(f"a tick of {settings.deployment!r} measured now ({state}): "
          f"{usage.seconds:.2f} s, {usage.write_units:g} DynamoDB write and "
          f"{usage.read_units:g} read units, {usage.log_bytes} bytes logged, "
          f"{usage.metric_streams} metric streams (busy: {busy.metric_streams}, at rest: "
          f"{at_rest.metric_streams})")
    for name, bill in bills.items():
        print(f"\n{name}, a month (us-east-1 list prices, no free tier; {args.memory_mb} MB):")
        print(bill.table())
    return 0


def demo_command(args: argparse.Namespace) -> int:
    """``ondemand demo``: the whole loop on this machine; non-zero if anything went wrong."""
    from .demo import DemoOptions, run_demo

    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # stop its workers, as Ctrl-C does
    report = run_demo(DemoOptions(broker=args.broker, duration=args.duration,
                                  rate=args.rate, max_workers=args.max_workers,
                                  png=args.png, live_view=not args.no_live))
    return 0 if report.ok else 1


def simulate_command(args: argparse.Namespace) -> int:
    """``ondemand simulate``: our policy and its peers over a trace, or over a target's
    own recorded traffic (``--history``), side by side."""
    from .simulate import POLICIES, SimConfig, compare, read_counts

    unknown = [p for p in args.policy or [] if p not in POLICIES]
    if unknown:
        raise ConfigError(f"--policy: unknown {', '.join(unknown)}; choose from "
                          f"{', '.join(POLICIES)}")
    if bool(args.trace) == bool(args.history):
        raise ConfigError("simulate: give exactly one of --trace FILE or --history")
    if args.history:
        return replay_command(args)
    if args.set or args.tune:
        raise ConfigError("--set and --tune replay a target's history: add --history")
    try:
        counts = read_counts(args.trace, args.start, args.length)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--trace {args.trace}: {exc}") from exc
    config = SimConfig(concurrency=args.concurrency, startup_seconds=int(args.startup),
                       tick_seconds=int(args.tick), wait_target=args.wait_target,
                       max_workers=args.max_workers,
                       minimum_billed_seconds=args.minimum_billing)
    try:
        comparison = compare(counts, config, args.service_time or "exp:20", args.scale,
                             args.policy or list(POLICIES), keep_timeline=bool(args.plot),
                             warmup=args.warmup)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return _show(comparison, args)


def replay_command(args: argparse.Namespace) -> int:
    """``ondemand simulate --history``: the policies over a target's recorded traffic, with
    candidate settings (``--set``), or a search for the cheapest that meets its target."""
    from .simulate import POLICIES, SimConfig, compare
    from .simulate import replay as replaying
    from .simulate.ondemand import OnDemandPolicy

    if not args.config or not args.target:
        raise ConfigError("--history needs --config FILE and --target NAME")
    settings = load_settings(args.config)
    if args.state:
        settings = replace(settings, state_file=args.state)
    elif args.table:  # the deployed stack's table comes from its environment, not the YAML
        settings = replace(settings, state_table=args.table, state_file=None)
    if args.deployment:
        settings = replace(settings, deployment=args.deployment)
    try:
        target = settings.target(args.target)
    except KeyError:
        raise ConfigError(f"--target {args.target}: no such target; the config has "
                          f"{', '.join(t.name for t in settings.targets)}") from None
    now = time.time()
    since, until = _instant(args.since, now, "--since"), _instant(args.until, now, "--until")
    if until <= since:
        raise ConfigError("--until must come after --since")
    base = replaying.policy_settings(target)
    candidate = _settings_set(args.set or [])
    try:  # checked as the config checks a target's settings
        OnDemandPolicy(SimConfig(), "capacity", {**base, **candidate})
    except ConfigError as exc:
        raise ConfigError(f"--set {str(exc).removeprefix('targets[0].')}") from None
    traffic = replaying.recorded(
        store_for(settings), settings, target, since, until, startup=args.startup,
        concurrency=args.concurrency, service_time=args.service_time,
        forecast=bool(base.get("forecast") or candidate.get("forecast")))
    config = replace(traffic.config, minimum_billed_seconds=args.minimum_billing)
    print(f"replaying {target.name}: {sum(traffic.counts)} tasks from "
          f"{replaying.when(since)} to {replaying.when(until)} ({len(traffic.minutes)} "
          f"minutes recorded), service {traffic.service}, {config.concurrency} slots a "
          f"worker, {config.startup_seconds} s startup, {config.tick_seconds} s ticks, "
          f"wait target {config.wait_target:g} s" + (
              f", starts billed {config.minimum_billed_seconds:g} s at least"
              if config.minimum_billed_seconds else ""), file=sys.stderr)
    try:
        if args.tune:
            return _print_tuning(replaying.tune(
                traffic.counts, config, traffic.service, {**base, **candidate}, args.warmup,
                history=traffic.history, clock=since), target.name)
        comparison = compare(traffic.counts, config, traffic.service, 1.0,
                             args.policy or list(POLICIES), keep_timeline=bool(args.plot),
                             warmup=args.warmup, target=base,
                             candidates={"candidate": candidate} if candidate else None,
                             history=traffic.history, clock=since)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if candidate:
        print("candidate: " + ", ".join(f"{k}={v}" for k, v in candidate.items()),
              file=sys.stderr)
    return _show(comparison, args)


def _show(comparison: Any, args: argparse.Namespace) -> int:
    from .simulate import plot, render

    if args.json:
        print(json.dumps(comparison.as_dict(), indent=2))
    else:
        print(render(comparison))
    if args.plot:
        drawn = plot(comparison, args.plot)
        print(f"plot: {drawn}" if drawn else "plot: matplotlib is not installed",
              file=sys.stderr)
    return 0


def _print_tuning(tuning: Any, target: str) -> int:
    """The trials, then the settings to paste (exit 1 when none met the target)."""
    print(f"{'stabilization':>13} {'tolerance':>9} {'wait':>6} {'worker-min':>10} "
          f"{'p95':>7} {'p99':>7}  meets {tuning.goal:g}s at p95")
    for settings, result in sorted(tuning.trials, key=lambda t: t[1].worker_seconds):
        print(f"{settings['stabilization_seconds']:13g} {settings['tolerance']:9g} "
              f"{settings['target_wait_seconds']:6g} {result.worker_minutes:10.1f} "
              f"{result.percentile(0.95):6.1f}s {result.percentile(0.99):6.1f}s  "
              f"{'yes' if result.meets(tuning.goal) else 'no'}")
    if tuning.result is None:
        print(f"\nnone of the settings tried meets a p95 wait of {tuning.goal:g}s on this "
              "traffic: raise max_workers or the wait target")
        return 1
    print(f"\ncheapest that meets the target: {tuning.result.worker_minutes:.1f} "
          f"worker-minutes, p95 wait {tuning.result.percentile(0.95):.1f}s. Paste into "
          f"the target {target!r} of your config:\n")
    for name, value in tuning.settings.items():
        print(f"    {name}: {value:g}")
    return 0


def _settings_set(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs, each value read as YAML (numbers, true/false); the
    policy's settings only (each is checked as the config checks it when replayed)."""
    import yaml

    from .simulate.replay import POLICY_SETTINGS

    chosen: dict[str, Any] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        if key not in POLICY_SETTINGS:
            raise ConfigError(f"--set {key}: not a setting the policy reads; one of "
                              f"{', '.join(POLICY_SETTINGS)}")
        try:
            chosen[key] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: unreadable value {text!r}") from None
    return chosen


def _instant(text: str | None, now: float, option: str) -> float:
    """An instant: ISO 8601 (UTC unless it says otherwise), or ``7d`` / ``12h`` / ``30m``
    ago; None is now."""
    from datetime import UTC, datetime

    if text is None:
        return now
    units = {"d": 86400, "h": 3600, "m": 60}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected an ISO 8601 time "
                          "(2026-11-20T08:00) or a span ago (7d, 12h, 30m)") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def render_decisions(decisions: Sequence[Decision], applied: Sequence[str] = ()) -> str:
    """One line per target: the count, the action and why."""
    rows = [["TARGET", "CURRENT", "DESIRED", "ACTION", "RULE", "REASON"]]
    for decision in decisions:
        action = decision.action + (" (dry run)" if decision.dry_run else "")
        if decision.target in applied:
            action += " ✓"
        rows.append([decision.target, str(decision.current), str(decision.desired), action,
                     decision.rule, decision.reason])
    return _table(rows)


def render_table(observation: Observation) -> str:
    """A readable picture of one observation: queues first, then workers."""
    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.1f}s"
        return str(value)

    queue_rows = [["QUEUE", "READY", "HIDDEN", "RUNNING", "RESERVED", "OLDEST", "WORKERS",
                   "CONSUMERS"]]
    for queue in observation.queues.values():
        name = f"{queue.name} (missing)" if queue.missing else queue.name
        queue_rows.append([name, cell(queue.size), cell(queue.hidden), cell(queue.running),
                           cell(queue.reserved), cell(queue.oldest_age),
                           cell(queue.many_workers), cell(queue.consumers)])
    worker_rows = [["WORKER", "BUSY", "ACTIVE", "SLOTS", "RESERVED", "PROCESSED", "QUEUES"]]
    for worker in observation.workers.values():
        worker_rows.append([worker.hostname, "yes" if worker.busy else "no",
                            cell(worker.active), cell(worker.concurrency),
                            cell(worker.reserved), cell(worker.processed),
                            ",".join(worker.queues)])
    sources = ", ".join(observation.sources)
    footer = (f"{observation.broker} · {len(observation.live_workers)} live workers · "
              f"observed in {observation.duration:.2f}s from {sources}")
    return "\n".join([_table(queue_rows), "", _table(worker_rows), "", footer])


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ondemand", description="Queue-driven autoscaling for Celery workers.")
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser(
        "status", help="observe every queue and worker once",
        description="Observe the broker's queues and workers in one short burst.")
    status.add_argument("--broker", default=os.environ.get("CELERY_BROKER_URL"),
                        help="broker URL (default: $CELERY_BROKER_URL)")
    status.add_argument("--queue", action="append", metavar="NAME",
                        help="a queue to read (repeatable); default: every queue a live "
                             "worker consumes")
    status.add_argument("--burst", type=_positive, default=DEFAULT_BURST_SECONDS,
                        metavar="SECONDS", help="longest wait for worker heartbeats "
                        f"(default {DEFAULT_BURST_SECONDS})")
    status.add_argument("--connect-timeout", type=_positive, default=DEFAULT_CONNECT_TIMEOUT,
                        metavar="SECONDS", help="give up on an unreachable broker after this "
                        f"long (default {DEFAULT_CONNECT_TIMEOUT})")
    status.add_argument("--transport-options", metavar="JSON",
                        help="the workers' broker_transport_options, as a JSON mapping "
                             "(key prefix, priority steps, SQS queue prefix, region, ...)")
    status.add_argument("--json", action="store_true",
                        help='print {"queues": ..., "workers": ...} as JSON')
    status.set_defaults(run=status_command)

    for name, summary in (("tick", "observe, decide and act once (what the Lambda does)"),
                          ("run", "tick in a loop until stopped (cwod's service mode)")):
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument("--config", required=True, metavar="FILE",
                             help="the YAML (or JSON) configuration")
        command.add_argument("--broker", help="broker URL, overriding the config's")
        command.add_argument("--state", metavar="FILE",
                             help="keep state in this SQLite file instead of DynamoDB")
        command.add_argument("--dry-run", action="store_true",
                             help="decide from an empty memory; change and write nothing")
        command.add_argument("--json", action="store_true",
                             help='print {"status": ..., "decisions": [...]} as JSON')
        if name == "run":
            command.add_argument("--interval", type=_positive, metavar="SECONDS",
                                 help="seconds between ticks (default: the config's "
                                      "tick_interval_seconds)")
        command.set_defaults(run=tick_command if name == "tick" else run_command)
    doctor = commands.add_parser(
        "doctor", help="check a deployment before it loses work",
        description="Check the workers' settings, the targets and the ECS stop timeout "
                    "against what scaling needs; exit 1 when something would lose work.")
    doctor.add_argument("--config", required=True, metavar="FILE",
                        help="the YAML (or JSON) configuration")
    doctor.add_argument("--broker", help="broker URL, overriding the config's")
    doctor.add_argument("--no-aws", action="store_true",
                        help="skip the checks that call AWS (the ECS stop timeout)")
    doctor.set_defaults(run=doctor_command)

    costs = commands.add_parser(
        "cost", help="what this deployment costs a month on AWS, from a measured tick",
        description="Measure one tick of the deployment (nothing is scaled; its state goes "
                    "to an in-process moto) and price a month of them.")
    costs.add_argument("--config", required=True, metavar="FILE",
                       help="the YAML (or JSON) configuration")
    costs.add_argument("--broker", help="broker URL, overriding the config's")
    costs.add_argument("--busy-fraction", type=_fraction, default=0.5, metavar="F",
                       help="share of the month some target has work (default 0.5)")
    costs.add_argument("--memory-mb", type=int, default=256, metavar="MB",
                       help="the function's memory (the stack's MemorySize, default 256)")
    costs.add_argument("--tracing", action="store_true", help="X-Ray tracing on")
    costs.add_argument("--no-dashboard", action="store_true",
                       help="leave the dashboard out (an account's first three are free)")
    costs.add_argument("--json", action="store_true")
    costs.set_defaults(run=cost_command)

    demo = commands.add_parser(
        "demo", help="the whole loop on this machine: embedded broker, real workers",
        description="Scale real local workers under a slice of a real trace, then report.")
    demo.add_argument("--broker", help="use this broker instead of an embedded Valkey")
    demo.add_argument("--duration", type=_positive, default=120.0, metavar="SECONDS",
                      help="how long the load lasts (default 120)")
    demo.add_argument("--rate", type=_positive, default=4.0, metavar="TASKS",
                      help="mean tasks per second (default 4)")
    demo.add_argument("--max-workers", type=int, default=8, metavar="N")
    demo.add_argument("--png", type=Path, metavar="FILE", help="where to draw the timeline")
    demo.add_argument("--no-live", action="store_true", help="no live view, just lines")
    demo.set_defaults(run=demo_command)

    sim = commands.add_parser(
        "simulate", help="our policy and its peers over an arrival trace or your traffic",
        description="Drive the real policy code and its peers over a per-second trace, "
                    "or over a target's traffic recorded in the state store (--history).")
    sim.add_argument("--trace", help="per-second counts (text or .tbz2)")
    sim.add_argument("--history", action="store_true",
                     help="replay a target's recorded load from the state store (DynamoDB "
                          "table, or the SQLite file with --state) instead of a trace")
    sim.add_argument("--config", metavar="FILE", help="--history: the configuration")
    sim.add_argument("--state", metavar="FILE",
                     help="--history: the SQLite state file (ondemand run --state)")
    sim.add_argument("--table", metavar="NAME",
                     help="--history: the DynamoDB table (a deployed stack's: its "
                          "StateTableName output), instead of the config's state_table")
    sim.add_argument("--deployment", metavar="NAME",
                     help="--history: the deployment whose load to read, instead of the "
                          "config's (a deployed stack's: its DeploymentName parameter)")
    sim.add_argument("--target", metavar="NAME", help="--history: the target to replay")
    sim.add_argument("--since", metavar="WHEN", default="7d",
                     help="--history: from (ISO 8601 time, UTC by default, or 7d/12h/30m "
                          "ago; default 7d)")
    sim.add_argument("--until", metavar="WHEN", help="--history: until (default now)")
    sim.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="--history: a candidate setting for the target (repeatable), "
                          "replayed as one more row, 'candidate'")
    sim.add_argument("--tune", action="store_true",
                     help="--history: search stabilization_seconds, tolerance and "
                          "target_wait_seconds for the cheapest that meets the target's "
                          "wait target at p95; print the settings to paste")
    sim.add_argument("--start", type=int, default=0, help="first second of the window")
    sim.add_argument("--length", type=int, help="seconds in the window (default: all)")
    sim.add_argument("--scale", type=_positive, default=1.0, help="multiply the rate")
    sim.add_argument("--warmup", type=int, default=0, metavar="SECONDS",
                     help="first seconds of the window that only warm the policies up "
                          "(neither billed nor counted)")
    sim.add_argument("--service-time",
                     help="fixed:S | exp:MEAN | lognormal:MEAN:SIGMA (default exp:20; with "
                          "--history, exponential around the mean the history measured)")
    sim.add_argument("--concurrency", type=int, default=4)
    sim.add_argument("--startup", type=_positive, default=60.0, metavar="SECONDS")
    sim.add_argument("--tick", type=_positive, default=15.0, metavar="SECONDS")
    sim.add_argument("--wait-target", type=_positive, default=60.0, metavar="SECONDS")
    sim.add_argument("--max-workers", type=int, default=200)
    sim.add_argument("--minimum-billing", type=_non_negative, default=0.0, metavar="SECONDS",
                     help="bill every worker started at least this long: 60 for Fargate "
                          "and EC2 Linux (default 0: by the second)")
    sim.add_argument("--policy", action="append", help="repeatable; default: all")
    sim.add_argument("--json", action="store_true")
    sim.add_argument("--plot", type=Path, metavar="FILE.png")
    sim.set_defaults(run=simulate_command)
    return parser


def _number(text: str, valid: Callable[[float], bool], rule: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"must be {rule}: {text!r}")
    return value


def _positive(text: str) -> float:
    return _number(text, lambda v: v > 0, "> 0")


def _non_negative(text: str) -> float:
    return _number(text, lambda v: 0 <= v < math.inf, ">= 0")


def _fraction(text: str) -> float:
    return _number(text, lambda v: 0 <= v <= 1, "between 0 and 1")


if __name__ == "__main__":
    sys.exit(main())
