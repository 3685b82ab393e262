"""One tick: lease → observe → read capacity → decide → act → remember.

:class:`Ticker` runs ticks for one deployment, so the Lambda, ``ondemand tick`` / ``run``,
``CeleryWorkerOnDemand.run()`` and the tests share one loop. What can fail is contained:

- another tick holds the lease → this one does nothing and says so (``lease_lost``);
- the broker cannot be read → observation None: every target holds (blind means hold);
- one target's scaler fails → that target is reported and left alone, the others act;
- a dry run decides from the stored memory but writes and changes nothing.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .act import Scaler, scaler_for
from .config import Settings, TargetConfig
from .decide import Agent, Decision, TargetMemory, build_agents, decide, forecast
from .decide.load import MINUTE, LoadMinute, loads_of
from .errors import (
    BrokerAuthFailed,
    BrokerUnavailable,
    ConfigError,
    LeaseLost,
    OnDemandError,
    ScaleInHeld,
    StateError,
)
from .model import Observation, WorkerStatus
from .observe import Observer
from .remember import DynamoDBStateStore, SQLiteStateStore, StateStore

FORECAST_BUDGET_SECONDS = 20.0
"""A tick learns no more forecasts once it has run this long (the rest wait a tick): the
Lambda's timeout is 60 s and the lease 60 s or more."""
UNSENT_MINUTES = 60
"""Ended minutes kept per target while the store refuses writes (an hour's worth)."""


@dataclass
class TickResult:
    """What one tick saw, decided and did, and what went wrong."""

    observation: Observation | None
    decisions: list[Decision]
    error: str | None = None
    target_errors: dict[str, str] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)
    replaced: dict[str, list[str]] = field(default_factory=dict)
    lease_lost: bool = False
    started_at: float = field(default_factory=time.time)
    credentials_refused: bool = False
    """The broker refused our credentials (a secret rotated since we read it?)."""
    forecast_error: str | None = None
    """Why the forecast could not be learnt this tick (the policy then only reacts)."""
    load_error: str | None = None
    """Why this tick could not write the load history (its minutes are retried)."""
    drained: dict[str, list[str]] = field(default_factory=dict)
    """Per target, the workers this tick told to drain for a rollout."""
    drain_errors: dict[str, str] = field(default_factory=dict)
    """Per target, why its rollout's workers could not be drained this tick."""

    @property
    def ok(self) -> bool:
        """No error. Losing the lease to a concurrent tick before acting is no error."""
        return self.error is None and not self.target_errors

    def at_rest(self, settings: Settings) -> bool:
        """Every target at rest at its floor after a clean read (see
        :meth:`Decision.at_rest`): nothing will change before new work arrives."""
        if self.observation is None or not self.ok or self.lease_lost:
            return False
        return all(d.at_rest() for d in self.decisions)

    def warnings(self) -> list[str]:
        """What this tick read only in part, or found odd, without it being an error.

        Each incomplete read held its target (no scale-down); a queue the broker does not
        know was read as empty, unless none of its target's queues was found while its
        workers run (then a gap). Broker outages and scaler errors are errors, not here.
        """
        noted = [e for e in (self.forecast_error, self.load_error) if e]
        if self.observation is None:
            return noted
        found = [*self.observation.warnings, *noted]
        found += [f"queue {q.name} does not exist on the broker"
                 for q in self.observation.queues.values() if q.missing]
        found += [f"target {d.target}: {d.reason}" for d in self.decisions
                  if d.rule in ("rollout", "protection")]
        found += [f"target {d.target}: {d.inputs['near_redelivery']} running tasks near or "
                  f"past the broker's {d.inputs['redelivery_timeout']:.0f}s redelivery "
                  "timeout: a copy is handed out again (Redis, SQS) or the channel closed "
                  "(RabbitMQ); copies are not counted as demand"
                  for d in self.decisions if d.inputs.get("near_redelivery")]
        for d in self.decisions:
            done = self.replaced.get(d.target, [])
            found += [f"target {d.target}: worker {name} is a zombie (alive, takes nothing "
                      f"while tasks wait): {'replaced' if name in done else 'not replaced'}"
                      for name in d.zombies]
        found += [f"target {name}: draining {', '.join(hosts)}: a rollout replaces their "
                  "tasks, and busy they would hold it up" for name, hosts in self.drained.items()]
        found += [f"{why} (the rollout waits for its busy workers)"
                  for why in self.drain_errors.values()]
        found += [f"target {d.target}: read incomplete, not scaling down "
                  f"({'; '.join(d.inputs['problems'])})"
                  for d in self.decisions if d.inputs.get("problems")]
        return found

    def status(self) -> dict[str, Any]:
        """cwod's status JSON of this tick plus its decisions: what the status URL serves."""
        observed = self.observation.serializer() if self.observation else {
            "queues": {}, "workers": {}}
        return {**observed, "decisions": self.serializer()["decisions"],
                "error": self.error, "tick_at": self.started_at}

    def serializer(self) -> dict[str, Any]:
        """``{"status": <cwod-shaped status>, "decisions": [...]}`` plus what went wrong."""
        return {
            "status": self.observation.serializer() if self.observation else None,
            "decisions": [{**d.serializer(), "applied": d.target in self.applied,
                           "replaced": self.replaced.get(d.target, []),
                           "error": self.target_errors.get(d.target)}
                          for d in self.decisions],
            "error": self.error,
            "lease_lost": self.lease_lost,
        }


class Ticker:
    """Runs ticks for one deployment."""

    def __init__(self, settings: Settings, *, observer: Observer | None = None,
                 broker_url: str | None = None, store: StateStore | None = None,
                 scalers: Mapping[str, Scaler] | None = None,
                 agents: Mapping[str, Agent] | None = None) -> None:
        self.settings = settings
        self.agents = dict(agents) if agents is not None else build_agents(settings)
        self.scalers = dict(scalers) if scalers is not None else {
            t.name: scaler_for(t, self.agents[t.name], f"targets[{i}].scaler")
            for i, t in enumerate(settings.targets)}
        self.store = store
        self.observer = observer or Observer(broker_url or resolve_broker_url(settings),
                                             transport_options=settings.broker_transport_options)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = max(60.0, 3 * settings.tick_interval_seconds)
        self.memory: dict[str, TargetMemory] = {}
        self.previous: Observation | None = None
        self.recorded: dict[str, tuple[Any, ...]] = {}
        self.unwritten_load: dict[str, LoadMinute] = {}
        """Per target, the minute of load this Ticker has summed but not yet written."""
        self.unsent_load: dict[str, dict[int, LoadMinute]] = {}
        """Per target, the minutes that ended but could not be written yet."""
        self.credentials_refused = False
        """Per target, what its last decision written to the history said."""

    def tick(self, now: float | None = None, dry_run: bool = False) -> TickResult:
        """One tick. Never raises for a broker, scaler or lease problem: it reports them."""
        now = time.time() if now is None else now
        began = time.monotonic()  # ``now`` may be a simulated clock: measure on top of it
        deployment = self.settings.deployment
        try:
            if self.store is not None and not dry_run and not self.store.acquire_lease(
                    deployment, self.owner, now, self.lease_seconds):
                return TickResult(None, [], lease_lost=True, started_at=now)
            memory = self.store.load_memory(deployment) if self.store else self.memory
        except StateError as exc:  # no lease, no memory: acting now would be blind
            return TickResult(None, [], f"{exc}; not acting", started_at=now)
        self.credentials_refused = False
        observation, error = self._observe()
        current, running, target_errors, rollouts, bounds = self._capacities(observation)
        decisions, memory = decide(observation, self.settings, memory, now, current=current,
                                   running=running, agents=self.agents, dry_run=dry_run,
                                   platform_bounds=bounds)
        decisions = [_hold_during_rollout(d, rollouts.get(d.target)) for d in decisions]
        result = TickResult(observation, decisions, error, target_errors, started_at=now,
                            credentials_refused=self.credentials_refused)
        if not dry_run and not self._lease_still_ours(now, began):
            result.lease_lost = True
            result.error = ("the lease ran out while this tick read the broker and another "
                            "tick may hold it now: not acting")
            return result
        if not dry_run:
            self._act(result)
            _remember_what_was_done(memory, result)
            if self.store is not None:  # after acting: the forecast applies from next tick
                failed = forecast.refresh(self.settings, memory, self.store, now,
                                          deadline=began + FORECAST_BUDGET_SECONDS)
                result.forecast_error = "; ".join(failed) or None
            self.memory = memory
            if self.store is not None:
                try:
                    self.store.save_memory(deployment, self.owner,
                                           now + time.monotonic() - began, memory)
                    fresh = self._unrecorded(decisions)
                    self.store.record(deployment, list(fresh.values()), now)
                    self.recorded.update({name: _said(d) for name, d in fresh.items()})
                    self.store.save_status(deployment, result.status(), now)
                except LeaseLost as exc:
                    result.lease_lost, result.error = True, str(exc)
                except StateError as exc:  # acted, but this tick's memory is not kept
                    result.error = str(exc)
                if not result.lease_lost:  # another tick measures this minute now
                    result.load_error = self._write_load(
                        deployment, loads_of(decisions, memory, now), now)
        if observation is not None:
            self.previous = observation
        return result

    def _lease_still_ours(self, now: float, began: float) -> bool:
        """Whether this tick may act: its lease, taken at ``now``, cannot have run out yet,
        or renewing it now succeeds.

        A tick slowed past half its lease (a stalled broker, a slow control round) renews
        before it acts, so it never scales beside a tick that took over an expired lease;
        a tick of the usual second or two costs no extra write.
        """
        elapsed = time.monotonic() - began
        if self.store is None or elapsed < self.lease_seconds / 2:
            return True
        try:
            return self.store.renew_lease(self.settings.deployment, self.owner,
                                          now + elapsed, self.lease_seconds)
        except StateError:
            return False

    def _write_load(self, deployment: str, loads: dict[str, LoadMinute],
                    now: float) -> str | None:
        """Write the minutes that ended, and those a failed write left: the history is no
        reason to fail a tick (the policy does not need it). A failure is a warning; its
        minutes wait for the next tick (the last ``UNSENT_MINUTES`` of each target)."""
        for target, ended in self._ended_minutes(loads, now).items():
            waiting = self.unsent_load.setdefault(target, {})
            if ended.minute in waiting:
                waiting[ended.minute].add(ended)
            else:
                waiting[ended.minute] = ended
        assert self.store is not None
        failed: str | None = None
        for target, waiting in list(self.unsent_load.items()):
            for minute in sorted(waiting):
                if failed:
                    break
                try:  # one target a call: a retry never adds a written minute again
                    self.store.add_load(deployment, {target: waiting[minute]})
                except StateError as exc:
                    failed = (f"load history not written ({exc}); its minutes are "
                              "retried next tick")
                    break
                del waiting[minute]
            for minute in sorted(waiting)[:-UNSENT_MINUTES]:
                del waiting[minute]
            if not waiting:
                del self.unsent_load[target]
        return failed

    def _ended_minutes(self, loads: dict[str, LoadMinute], now: float) -> dict[str, LoadMinute]:
        """This tick's load samples join their minute here; a minute is handed to the store
        once a later tick shows it has ended: one write per busy target a minute rather than
        one a tick (each is billed). A container that Lambda destroys takes at most its last
        minute with it, which the forecaster reads as no load, like any minute without an
        item (one minute of one day does not move its median of days)."""
        ended: dict[str, LoadMinute] = {}
        for target, sample in loads.items():
            held = self.unwritten_load.get(target)
            if held is not None and held.minute == sample.minute:
                held.add(sample)
                continue
            if held is not None:
                ended[target] = held
            self.unwritten_load[target] = sample
        this_minute = now // MINUTE * MINUTE
        for target, held in list(self.unwritten_load.items()):
            if held.minute < this_minute:
                ended[target] = self.unwritten_load.pop(target)
        return ended

    def _unrecorded(self, decisions: list[Decision]) -> dict[str, Decision]:
        """The decisions the history lacks: those whose counts, rule or work changed since
        the last one written for their target (a steady target writes nothing: each write
        is billed)."""
        return {d.target: d for d in decisions if self.recorded.get(d.target) != _said(d)}

    def _observe(self) -> tuple[Observation | None, str | None]:
        try:
            return self.observer.observe(self.settings.queues, previous=self.previous), None
        except BrokerAuthFailed as exc:
            self.credentials_refused = True
            return None, str(exc)
        except BrokerUnavailable as exc:
            return None, str(exc)
        except Exception as exc:  # a bug of ours, or a broker answer nobody foresaw: hold
            with suppress(Exception):
                self.observer.close()  # the next tick starts on a fresh connection
            where = traceback.extract_tb(exc.__traceback__)[-1]
            # The message is left out: it could quote a URL with its password.
            return None, (f"observing failed unexpectedly: {type(exc).__name__} at "
                          f"{Path(where.filename).name}:{where.lineno}; holding every target")

    def _capacities(self, observation: Observation | None) -> tuple[
            dict[str, int], dict[str, int], dict[str, str], dict[str, str],
            dict[str, tuple[int, int]]]:
        """Each target's count and what runs of it, the targets whose count could not be
        read, the targets in a rollout (with why), and the platform's own bounds."""
        current, running, errors, rollouts, bounds = {}, {}, {}, {}, {}
        for target in self.settings.targets:
            scaler = self.scalers.get(target.name)
            if scaler is None:
                continue  # no scaler (a dry look): the target counts its live workers
            try:
                scaler.observed(observation)
                capacity = scaler.current(workers_of(target, observation))
            except Exception as exc:
                errors[target.name] = _target_error(target.name, "reading", exc)
                continue
            current[target.name] = capacity.desired
            running[target.name] = capacity.running
            if capacity.rollout:
                rollouts[target.name] = capacity.rollout
            if capacity.bounds:
                bounds[target.name] = capacity.bounds
        return current, running, errors, rollouts, bounds

    def _act(self, result: TickResult) -> None:
        for i, decision in enumerate(result.decisions):
            name = decision.target
            if name in result.target_errors:
                # The count could not be read: the decision stands as a record, not an act.
                result.decisions[i] = replace(decision, desired=decision.current,
                                              rule="scaler-error",
                                              reason=result.target_errors[name])
                continue
            if decision.action == "hold":
                self._keep_shielded(result, i)
                continue
            if decision.dry_run or name not in self.scalers:
                continue
            target = self.settings.target(name)
            try:
                self.scalers[name].apply(decision.desired, decision.current,
                                         workers_of(target, result.observation))
                result.applied.append(name)
            except ScaleInHeld as exc:  # a busy worker could not be shielded: no scale-in
                result.decisions[i] = replace(decision, desired=decision.current,
                                              rule="protection", reason=str(exc))
            except Exception as exc:
                result.target_errors[name] = _target_error(name, "scaling", exc)
        self._replace_zombies(result)
        self._drain_outgoing(result)

    def _replace_zombies(self, result: TickResult) -> None:
        for decision in result.decisions:
            name = decision.target
            if not decision.zombies or decision.dry_run or name in result.target_errors \
                    or name not in self.scalers:
                continue
            workers = workers_of(self.settings.target(name), result.observation)
            zombies = [w for w in workers if w.hostname in decision.zombies]
            try:
                result.replaced[name] = self.scalers[name].replace(zombies, workers)
            except Exception as exc:
                result.target_errors[name] = _target_error(name, "replacing", exc)

    def _keep_shielded(self, result: TickResult, i: int) -> None:
        """A hold while more workers live than the count asked for: the platform has not
        finished a scale-in (a ceiling fell below the busy workers; a rollout). Protection
        set at the scale-in would expire under a busy task (ECS, an hour) or keep an idle
        instance for good, so it is set again for the busy and lifted for the idle. A
        busy worker that cannot be shielded is said as at a scale-in (rule ``protection``)."""
        decision = result.decisions[i]
        name = decision.target
        if decision.dry_run or name not in self.scalers or decision.inputs.get("problems") \
                or int(decision.inputs.get("live") or 0) <= decision.desired:
            return
        try:
            self.scalers[name].keep_shielded(
                workers_of(self.settings.target(name), result.observation))
        except ScaleInHeld as exc:
            result.decisions[i] = replace(decision, rule="protection", reason=str(exc))
        except Exception as exc:
            result.target_errors[name] = _target_error(name, "shielding", exc)

    def _drain_outgoing(self, result: TickResult) -> None:
        """Drain the workers a rollout is replacing (see :meth:`Scaler.outgoing`), each
        once: busy, they would hold their protection and the rollout with it. Those
        draining consume none of the target's queues: the scaler counts them from the
        observation (after a cold start too) against how many may drain at a time."""
        drain = getattr(self.observer, "drain", None)
        if result.observation is None or drain is None:  # (cwod's service reads elsewhere)
            return
        for decision in result.decisions:
            name = decision.target
            if decision.dry_run or name in result.target_errors or name not in self.scalers:
                continue
            target = self.settings.target(name)
            workers = workers_of(target, result.observation)
            heard = {w.hostname for w in workers}
            quiet = [w for w in result.observation.live_workers.values()
                     if w.hostname not in heard]
            try:
                leaving = self.scalers[name].outgoing(workers, quiet)
                if leaving:
                    drain(leaving)
            except Exception as exc:  # after acting: a warning, not the target's error
                result.drain_errors[name] = _target_error(name, "draining", exc)
                continue
            if leaving:
                result.drained[name] = leaving

    def release_lease(self) -> None:
        """Let a later tick take the lease at once instead of waiting for it to expire."""
        if self.store is not None:
            with suppress(StateError):  # it expires by itself
                self.store.release_lease(self.settings.deployment, self.owner)

    def close(self, interrupted: bool = False) -> None:
        """Release the lease and the broker connection.

        ``interrupted``: a tick was cut short (Ctrl-C) perhaps mid-read, so the connection
        is dropped without its closing handshake — a broker that stalled would make that
        wait, and a frame read in half leaves nothing a handshake could parse.
        """
        if interrupted:  # the connection first: dropping it cannot wait on anything
            self.observer.close(failed=True)
            self.release_lease()
        else:
            self.release_lease()
            self.observer.close()  # an observer of the caller's may know no ``failed``


def _said(decision: Decision) -> tuple[Any, ...]:
    """What a decision says that the history keeps: its counts, its rule, the work seen."""
    inputs = decision.inputs
    return (decision.current, decision.desired, decision.rule, inputs.get("ready"),
            inputs.get("hidden"), inputs.get("live"), inputs.get("busy"), decision.zombies)


def _remember_what_was_done(memory: dict[str, TargetMemory], result: TickResult) -> None:
    """A decision held or failed after ``decide`` (a rollout, a shield that failed, a
    scaler error) left the count where it was: the memory must say so, or the next tick
    would take the workers that did not leave for workers expected to leave."""
    for decision in result.decisions:
        unchanged = decision.action == "hold" or decision.dry_run \
            or decision.target in result.target_errors
        if unchanged and decision.target in memory:
            memory[decision.target].last_desired = decision.current


def _hold_during_rollout(decision: Decision, rollout: str | None) -> Decision:
    """No scale-in while the target rolls out a new version; scale-out goes ahead."""
    if rollout is None or decision.action != "down":
        return decision
    return replace(decision, desired=decision.current, rule="rollout",
                   reason=f"{rollout}: holding scale-in (wanted {decision.desired}: "
                          f"{decision.reason})")


def _target_error(target: str, doing: str, exc: Exception) -> str:
    """Our own errors already name the target; anything else (a user's scaler) is named."""
    if isinstance(exc, OnDemandError):
        return str(exc)
    return f"target {target}: {doing} failed: {type(exc).__name__}: {exc}"


def workers_of(target: TargetConfig, observation: Observation | None) -> list[WorkerStatus]:
    """The target's live workers; none when the broker could not be read."""
    return observation.workers_for(target.queues) if observation else []


def store_for(settings: Settings) -> StateStore:
    """The state store the settings name: a SQLite file, or the DynamoDB table."""
    store: StateStore
    if settings.state_file:
        store = SQLiteStateStore(settings.state_file)
    else:
        store = DynamoDBStateStore(settings.state_table)
    store.history_days = settings.history_days
    store.load_days = settings.load_history_days
    return store


def resolve_broker_url(settings: Settings,
                       fetch_secret: Callable[[str], str] | None = None) -> str:
    """The broker URL, from the config or from Secrets Manager.

    The secret holds the URL itself, or JSON with a ``broker_url`` key. ``fetch_secret``
    reads a secret's string by name (the Lambda passes Powertools' cached ``get_secret``).
    """
    if settings.broker_url:
        return settings.broker_url
    name = str(settings.broker_url_secret)
    try:
        value = (fetch_secret or _secret_string)(name).strip()
    except OnDemandError:
        raise
    except Exception as exc:
        raise ConfigError(f"broker_url_secret: cannot read secret {name!r}: {exc}") from exc
    if value.startswith("{"):
        try:
            value = str(json.loads(value).get("broker_url") or "")
        except (ValueError, AttributeError):
            value = ""
    if "://" not in value:
        raise ConfigError(f"broker_url_secret: secret {name!r} holds no broker URL "
                          "(expected the URL, or JSON with a broker_url key)")
    return value


def _secret_string(name: str) -> str:
    import boto3

    from .act.base import AWS_CLIENT_CONFIG

    client = boto3.client("secretsmanager", config=AWS_CLIENT_CONFIG)
    return str(client.get_secret_value(SecretId=name).get("SecretString") or "")
