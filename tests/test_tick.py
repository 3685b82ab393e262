"""The tick as a whole: lease, memory across ticks, history, isolated failures."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from celery_ondemand import TargetMemory, metrics
from celery_ondemand.act import scaler_for
from celery_ondemand.remember import DynamoDBStateStore, SQLiteStateStore, StateStore
from celery_ondemand.remember.dynamodb import create_table
from celery_ondemand.tick import Ticker
from tests.support.agents import FileCountScaler, RecordingDown, RecordingUp
from tests.support.aws import auto_scaling_group, ecs_service_with_tasks, fake_credentials
from tests.support.faults import emf
from tests.support.observations import ScriptedObserver, observation, settings, worker


def settle(*tickers: Ticker) -> None:
    """Wait for the UpWorker / DownWorker threads the ticks started (cwod runs them as
    threads; the tick does not wait for them)."""
    for ticker in tickers:
        for scaler in ticker.scalers.values():
            if hasattr(scaler, "join"):
                assert scaler.join(10), "a recording thread is still running"


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(FileCountScaler, "path", str(tmp_path / "count.json"))
    return settings(scaler="tests.support.agents:FileCountScaler", command=None,
                    worker_concurrency=4, max_workers=20)


def test_a_tick_inside_anothers_lease_does_nothing(store: StateStore) -> None:
    config = settings(scaler="tests.support.agents:RecordingDemand", command=None,
                      policy="cwod")
    RecordingUp.started.clear()
    first, second = (Ticker(config, observer=ScriptedObserver(observation({"q": (5, 0)})),
                            store=store) for _ in range(2))  # type: ignore[arg-type]
    assert not first.tick(now=1000.0).lease_lost
    overlapping = second.tick(now=1010.0)
    settle(first, second)
    assert overlapping.lease_lost and overlapping.ok, "the loser exits cleanly"
    assert overlapping.decisions == [] and RecordingUp.started == ["q"]
    first.release_lease()
    assert not second.tick(now=1020.0).lease_lost, "a released lease is free at once"


class SlowObserver(ScriptedObserver):
    """A broker read that takes ``seconds`` (a stalled node, a slow control round) while
    ``meanwhile`` runs: what another invocation does in that time."""

    def __init__(self, seconds: float, meanwhile: Any, *observations: Any) -> None:
        super().__init__(*observations)
        self.seconds, self.meanwhile = seconds, meanwhile

    def observe(self, queues: Any = None, previous: Any = None) -> Any:
        time.sleep(self.seconds)
        self.meanwhile()
        return super().observe(queues, previous)


@pytest.mark.parametrize("release", [False, True], ids=["held", "taken-and-released"])
def test_a_tick_that_outlives_its_lease_does_not_act_beside_the_next(
        store: StateStore, release: bool) -> None:
    """A read slowed past the lease: another tick takes the expired lease and acts; the
    slow tick, renewing before it acts, finds the lease gone and changes nothing."""
    config = settings(scaler="tests.support.agents:RecordingDemand", command=None,
                      policy="cwod")
    RecordingUp.started.clear()
    deployment = config.deployment

    def another_takes_over() -> None:  # the lease (0.4 s from 1000.0) has expired by then
        assert store.acquire_lease(deployment, "next-invocation", 1000.5, 60.0)
        if release:  # it acted, and let the lease go at the end of its tick
            store.release_lease(deployment, "next-invocation")

    slow = Ticker(config, observer=SlowObserver(0.3, another_takes_over,
                                                observation({"q": (5, 0)})),
                  store=store)  # type: ignore[arg-type]
    slow.lease_seconds = 0.4
    result = slow.tick(now=1000.0)
    settle(slow)
    assert result.lease_lost and "not acting" in (result.error or "")
    assert RecordingUp.started == [], "a tick whose lease ran out started a worker"


def test_a_slow_tick_whose_lease_is_still_free_renews_it_and_acts(store: StateStore) -> None:
    config = settings(scaler="tests.support.agents:RecordingDemand", command=None,
                      policy="cwod")
    RecordingUp.started.clear()
    slow = Ticker(config, observer=SlowObserver(0.3, lambda: None,
                                                observation({"q": (5, 0)})),
                  store=store)  # type: ignore[arg-type]
    slow.lease_seconds = 0.4
    result = slow.tick(now=1000.0)
    settle(slow)
    assert not result.lease_lost and result.ok and RecordingUp.started == ["q"]
    assert not store.acquire_lease(config.deployment, "other", 1000.5, 60.0), \
        "the renewal did not extend the lease past its first 0.4 s"


def test_two_racing_ticks_never_both_act(tmp_path: Path) -> None:
    """A real race, on SQLite: moto's in-process DynamoDB does not make conditional writes
    atomic across threads (real DynamoDB does), so the race runs on the store that is."""
    store = SQLiteStateStore(tmp_path / "state.db")
    config = settings(scaler="tests.support.agents:RecordingDemand", command=None,
                      policy="cwod")
    RecordingUp.started.clear()
    barrier, results, tickers = threading.Barrier(2), [], []

    def one_tick() -> None:
        ticker = Ticker(config, observer=ScriptedObserver(observation({"q": (5, 0)})),
                        store=store)  # type: ignore[arg-type]
        tickers.append(ticker)
        barrier.wait()
        results.append(ticker.tick(now=1000.0))

    threads = [threading.Thread(target=one_tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    settle(*tickers)
    assert sorted(r.lease_lost for r in results) == [False, True]
    loser = next(r for r in results if r.lease_lost)
    assert loser.decisions == [] and loser.ok, "the loser exits cleanly"
    assert RecordingUp.started == ["q"], "exactly one tick started a worker"


def test_memory_carried_across_cold_starts_changes_the_decision(store: StateStore,
                                                                counted: Any) -> None:
    # A 45 s stabilization window: the need a cold start must remember to hold its count.
    counted = replace(counted, targets=[replace(counted.targets[0],
                                                stabilization_seconds=45.0)])
    busy = observation({"q": (36, 4)}, [worker("w0", ["q"], active=4)])
    calm = observation({"q": (0, 8)}, [worker(f"w{i}", ["q"], active=4) for i in range(2)])

    def cold_tick(observed: Any, now: float, with_store: StateStore | None) -> Any:
        ticker = Ticker(counted, observer=ScriptedObserver(observed), store=with_store)
        result = ticker.tick(now=now)
        ticker.close()
        return result.decisions[0]

    first = cold_tick(busy, 1000.0, store)
    assert (first.current, first.desired) == (0, 10)
    remembered = cold_tick(calm, 1015.0, store)
    assert (remembered.desired, remembered.rule) == (10, "stabilizing")
    forgetful = cold_tick(calm, 1030.0, None)
    assert forgetful.desired == 3, "without memory the same tick would shrink at once"
    history = store.history("default")
    assert [(h["desired"], h["rule"]) for h in history][:2] == [(10, "stabilizing"),
                                                               (10, "from-zero")]
    assert all(h["expires_at"] == int(h["at"] + 7 * 86400) for h in history)


def test_a_broker_outage_holds_and_is_remembered(store: StateStore, counted: Any) -> None:
    """The outage comes after the target has been idle far past scale_down_delay_seconds,
    so only the blind rule stands between it and a scale-down to zero."""
    idle = observation({"q": (0, 0)}, [worker("w0", ["q"]), worker("w1", ["q"])])
    ticker = Ticker(counted, store=store, observer=ScriptedObserver(  # type: ignore[arg-type]
        observation({"q": (8, 0)}), idle, None, None, idle))
    assert ticker.tick(now=1000.0).decisions[0].desired == 2
    assert ticker.tick(now=1015.0).decisions[0].rule == "idle-wait", "the idle clock starts"
    outage = ticker.tick(now=1015.0 + 3600)
    assert outage.error and "scripted outage" in outage.error and not outage.ok
    decision = outage.decisions[0]
    assert (decision.desired, decision.rule, decision.action) == (2, "blind", "hold")
    assert Path(FileCountScaler.path).read_text() == "2"
    ticker.tick(now=1030.0 + 3600)
    assert store.load_memory("default")["t"].failed_reads == 2
    healthy = ticker.tick(now=1045.0 + 3600)
    assert (healthy.decisions[0].desired, healthy.decisions[0].rule) == (0, "idle"), \
        "read again, the long idle target scales in: the hold was the blind rule's"
    assert Path(FileCountScaler.path).read_text() == "0"


def test_one_targets_aws_error_does_not_stop_another(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_credentials(monkeypatch)
    with mock_aws():
        autoscaling = boto3.client("autoscaling", region_name="us-east-1")
        auto_scaling_group(autoscaling, boto3.client("ec2", region_name="us-east-1"), desired=1)
        boto3.client("ecs", region_name="us-east-1").create_cluster(clusterName="prod")
        from celery_ondemand.config import settings_from_mapping

        config = settings_from_mapping({"broker_url": "redis://test/0", "targets": [
            {"name": "ecs-missing", "queues": ["a"], "scaler": "ecs", "cluster": "prod",
             "service": "absent"},
            {"name": "asg", "queues": ["b"], "scaler": "asg", "auto_scaling_group": "workers",
             "worker_concurrency": 1, "max_workers": 5}]})
        ticker = Ticker(config, observer=ScriptedObserver(  # type: ignore[arg-type]
            observation({"a": (9, 0), "b": (3, 0)})),
            scalers={t.name: scaler_for(t) for t in config.targets})
        result = ticker.tick(now=1000.0)
        assert "ECS service 'absent' not found" in result.target_errors["ecs-missing"]
        decisions = {d.target: d for d in result.decisions}
        assert decisions["ecs-missing"].rule == "scaler-error"
        assert decisions["asg"].desired == 3 and result.applied == ["asg"]
        group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["workers"])
        assert group["AutoScalingGroups"][0]["DesiredCapacity"] == 3


def test_a_dry_run_changes_and_writes_nothing(store: StateStore, counted: Any) -> None:
    ticker = Ticker(counted, observer=ScriptedObserver(observation({"q": (8, 0)})),
                    store=store)  # type: ignore[arg-type]
    result = ticker.tick(now=1000.0, dry_run=True)
    assert result.decisions[0].action == "up" and result.applied == []
    assert not Path(FileCountScaler.path).exists()
    assert store.load_memory("default") == {} and store.history("default") == []


def test_cwod_down_worker_is_handed_an_idle_worker_only() -> None:
    config = settings(scaler="tests.support.agents:RecordingDemand", command=None,
                      policy="cwod", min_workers=0)
    RecordingDown.stopped.clear()
    observed = observation({"q": (0, 0)}, [worker("busy", ["q"], active=1), worker("idle", ["q"])])
    # cwod's flag_down fires (nothing waits); the busy floor keeps one worker: stop one.
    ticker = Ticker(config, observer=ScriptedObserver(observed))  # type: ignore[arg-type]
    result = ticker.tick(now=1000.0)
    settle(ticker)
    assert (result.decisions[0].current, result.decisions[0].desired) == (2, 1)
    assert RecordingDown.stopped == ["idle"]


class ThrottledDynamoDB:
    """moto cannot throttle: this wraps a moto client and fails every call with DynamoDB's
    own throttling error, at the client boundary."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        from botocore.exceptions import ClientError

        def throttled(**_: Any) -> Any:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                         "Message": "Rate of requests exceeds the allowed "
                                                    "throughput."}}, name)

        return throttled


def test_a_throttled_state_table_means_no_action_and_a_clear_error(
        monkeypatch: pytest.MonkeyPatch, counted: Any) -> None:
    fake_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "state")
        throttled = DynamoDBStateStore("state", ThrottledDynamoDB(client))
        ticker = Ticker(counted, observer=ScriptedObserver(observation({"q": (8, 0)})),
                        store=throttled)  # type: ignore[arg-type]
        result = ticker.tick(now=1000.0)
        assert not result.ok and "ProvisionedThroughputExceeded" in (result.error or "")
        assert result.decisions == [] and not Path(FileCountScaler.path).exists()
        healthy = Ticker(counted, observer=ScriptedObserver(observation({"q": (8, 0)})),
                         store=DynamoDBStateStore("state", client))  # type: ignore[arg-type]
        assert healthy.tick(now=1015.0).applied == ["t"], "the next healthy tick recovers"


@pytest.mark.parametrize(("scaler", "doing"), [("BrokenScaler", "reading"),
                                               ("BrokenWhenScaling", "scaling")])
def test_a_users_scaler_that_raises_is_reported_for_its_target_only(
        scaler: str, doing: str) -> None:
    """Whether it fails reading its count or applying the change."""
    from celery_ondemand.config import settings_from_mapping

    config = settings_from_mapping({"broker_url": "redis://test/0", "targets": [
        {"name": "broken", "queues": ["a"], "scaler": f"tests.support.agents:{scaler}"},
        {"name": "fine", "queues": ["b"], "scaler": "tests.support.agents:RecordingDemand",
         "policy": "cwod"}]})
    RecordingUp.started.clear()
    ticker = Ticker(config, observer=ScriptedObserver(  # type: ignore[arg-type]
        observation({"a": (3, 0), "b": (3, 0)})))
    result = ticker.tick(now=1000.0)
    settle(ticker)
    assert result.target_errors == {"broken": f"target broken: {doing} failed: KeyError: 'oops'"}
    assert result.applied == ["fine"] and RecordingUp.started == ["b"]


class BuggyObserver:
    """An observer that trips over something nobody foresaw."""

    closed = False

    def observe(self, queues: Any = None, previous: Any = None) -> Any:
        raise TypeError("'NoneType' object is not iterable (redis://:hunter2@broker)")

    def close(self) -> None:
        self.closed = True


def test_an_unforeseen_error_while_observing_holds_every_target(counted: Any) -> None:
    Path(FileCountScaler.path).write_text("3")
    observer = BuggyObserver()
    result = Ticker(counted, observer=observer).tick(now=1000.0)  # type: ignore[arg-type]
    assert not result.ok and "TypeError" in (result.error or "")
    assert "hunter2" not in (result.error or ""), "its message may quote a URL: left out"
    assert (result.decisions[0].desired, result.decisions[0].action) == (3, "hold")
    assert observer.closed, "the next tick starts on a fresh connection"


@pytest.mark.parametrize("work", [0, 12], ids=["scale-in held", "scale-out goes ahead"])
def test_an_ecs_rollout_holds_scale_in_only(work: int, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A held scale-in is counted in ``ScaleInHeld``, which the stack's alarm watches: a
    deployment that never finishes would hold the fleet for good."""
    fake_credentials(monkeypatch)
    with mock_aws():
        ecs = boto3.client("ecs", region_name="us-east-1")
        ecs_service_with_tasks(ecs, boto3.client("ec2", region_name="us-east-1"), tasks=3,
                               rolling_out=True)
        config = settings(scaler="ecs", cluster="prod", service="workers", command=None,
                          worker_concurrency=1, max_workers=6, scale_down_delay_seconds=0)
        idle = TargetMemory(idle_since=0.0)
        ticker = Ticker(config, observer=ScriptedObserver(  # type: ignore[arg-type]
            observation({"q": (work, 0)})))
        ticker.memory = {"t": idle}
        result = ticker.tick(now=1000.0)
        capsys.readouterr()
        metrics.publish(result, config, 0.1)
        held = [blob.get("ScaleInHeld", [0]) for blob in emf(capsys.readouterr().out)
                if set(blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) == {"deployment"}]
        assert held == [[0 if work else 1]]
        decision = result.decisions[0]
        desired = ecs.describe_services(cluster="prod", services=["workers"])
        if work:
            assert decision.action == "up" and result.applied == ["t"]
            assert desired["services"][0]["desiredCount"] == decision.desired > 3
            return
        assert (decision.desired, decision.rule) == (3, "rollout")
        assert "in progress" in decision.reason and "wanted 0" in decision.reason
        assert any("holding scale-in" in w for w in result.warnings())
        assert desired["services"][0]["desiredCount"] == 3


def test_an_asg_instance_refresh_holds_scale_in(
        monkeypatch: pytest.MonkeyPatch, instance_refreshes: Any) -> None:
    """moto lacks DescribeInstanceRefreshes: the refresh is answered at the client
    boundary (tests.support.aws.InstanceRefreshes); the group itself is moto's."""
    fake_credentials(monkeypatch)
    instance_refreshes.refreshes = [{"InstanceRefreshId": "r-1", "Status": "InProgress"}]
    with mock_aws():
        auto_scaling_group(boto3.client("autoscaling", region_name="us-east-1"),
                           boto3.client("ec2", region_name="us-east-1"), desired=3)
        config = settings(scaler="asg", auto_scaling_group="workers", command=None,
                          worker_concurrency=1, scale_down_delay_seconds=0)
        ticker = Ticker(config, observer=ScriptedObserver(  # type: ignore[arg-type]
            observation({"q": (0, 0)})))
        ticker.memory = {"t": TargetMemory(idle_since=0.0)}
        held = ticker.tick(now=1000.0).decisions[0]
        assert (held.desired, held.rule) == (3, "rollout") and "r-1" in held.reason
        instance_refreshes.refreshes = [{"InstanceRefreshId": "r-1", "Status": "Successful"}]
        assert ticker.tick(now=1015.0).decisions[0].desired == 0, "done: scale in"


def test_ticks_write_the_load_history(store: StateStore, counted: Any) -> None:
    """Every measured tick adds its arrivals, completions and busy time to its minute; the
    first (nothing to measure from) and a blind one add nothing. A minute is written once,
    when a tick of a later minute shows it has ended."""
    w = [worker("w0", ["q"], active=4, processed=0)]
    ticker = Ticker(counted, store=store, observer=ScriptedObserver(  # type: ignore[arg-type]
        observation({"q": (6, 4)}, w),
        observation({"q": (10, 4)}, [worker("w0", ["q"], active=4, processed=5)]),
        None,
        observation({"q": (3, 4)}, [worker("w0", ["q"], active=4, processed=12)]),
        observation({"q": (3, 4)}, [worker("w0", ["q"], active=4, processed=13)])))
    for now in (6000.0, 6015.0, 6030.0, 6045.0):
        ticker.tick(now=now)
    assert store.load_history("default", "t", 6000, 6119) == [], "the minute has not ended"
    ticker.tick(now=6060.0)
    [minute] = store.load_history("default", "t", 6000, 6119)
    # 6000→6015: 5 finished, work 10 → 14: 9 arrived; 6030 blind; 6015→6045: 7 finished,
    # work 14 → 7: 0 arrived.
    assert (minute.seconds, minute.arrivals, minute.completions, minute.ticks) == (
        45.0, 9.0, 12.0, 2)
    assert minute.busy_seconds == 4 * 45.0, "four slots busy throughout"


def test_a_tick_learns_the_forecast_from_the_stored_history(tmp_path: Path,
                                                            counted: Any) -> None:
    """Eight past days of office hours in the store: the tick before 09:00 forecasts the
    rise, keeps the forecast in the target's memory, and pre-scales for it. (SQLite only:
    the DynamoDB store's reads are the same contract, tested in remember/, and 640 writes
    to moto take 8 s.)"""
    from celery_ondemand.decide.load import LoadMinute

    store = SQLiteStateStore(tmp_path / "state.db")

    day, nine = 86400, 8 * 86400 + 9 * 3600
    for past in range(1, 9):  # the forecast reads these hours of each day, no more
        for minute in range(nine - past * day - 600, nine - past * day + 4200, 60):
            rate = 4.0 if minute % day >= 9 * 3600 else 0.4
            store.add_load("default", {"t": LoadMinute(minute, 60.0, rate * 60, ticks=4)})
    forecasting = replace(counted, targets=[replace(counted.targets[0], forecast=True)])
    busy = [worker("w0", ["q"], active=2, processed=0)]
    ticker = Ticker(forecasting, store=store, observer=ScriptedObserver(  # type: ignore[arg-type]
        observation({"q": (0, 2)}, busy),
        observation({"q": (0, 2)}, [worker("w0", ["q"], active=2, processed=6)])))
    ticker.tick(now=nine - 120.0)
    decision = ticker.tick(now=nine - 105.0).decisions[0]
    kept = store.load_memory("default")["t"].forecast
    assert kept is not None and kept["days"] > 7.9 and kept["start"] == nine - 120 - 180
    assert kept["rates"][3] == pytest.approx(0.4) and kept["rates"][-1] == pytest.approx(4.0)
    assert decision.rule == "forecast" and decision.desired > 1, decision.reason


def test_an_unreadable_load_history_leaves_the_policy_reacting(tmp_path: Path,
                                                               counted: Any) -> None:
    from celery_ondemand.errors import StateError

    class Unreadable(SQLiteStateStore):
        def load_history(self, *args: Any) -> Any:
            raise StateError("DynamoDB table t: query failed: throttled")

    forecasting = replace(counted, targets=[replace(counted.targets[0], forecast=True)])
    ticker = Ticker(forecasting, store=Unreadable(tmp_path / "s.db"),
                    observer=ScriptedObserver(observation({"q": (8, 0)})))  # type: ignore[arg-type]
    result = ticker.tick(now=1000.0)
    assert result.ok and result.decisions[0].desired == 2, "decided and acted as without"
    assert any("forecast not learnt" in w and "throttled" in w for w in result.warnings())


def test_a_failed_load_write_is_a_warning_and_its_minute_is_written_later(
        tmp_path: Path, counted: Any) -> None:
    """The history is no reason to fail a tick: the tick stays ok (no error alarm, at rest
    when idle), says why in its warnings, and writes the minute once the store recovers."""
    from celery_ondemand.errors import StateError

    class Flaky(SQLiteStateStore):
        broken = True

        def add_load(self, *args: Any) -> None:
            if self.broken:
                raise StateError("DynamoDB table t: update failed: throttled")
            super().add_load(*args)

    store = Flaky(tmp_path / "s.db")
    ticker = Ticker(counted, store=store, observer=ScriptedObserver(  # type: ignore[arg-type]
        observation({"q": (6, 4)}, [worker("w0", ["q"], active=4, processed=0)]),
        observation({"q": (10, 4)}, [worker("w0", ["q"], active=4, processed=5)]),
        observation({"q": (10, 4)}, [worker("w0", ["q"], active=4, processed=5)]),
        observation({"q": (10, 4)}, [worker("w0", ["q"], active=4, processed=5)])))
    ticker.tick(now=6000.0)
    ticker.tick(now=6015.0)
    failed = ticker.tick(now=6060.0)  # minute 6000 ended: its write fails
    assert failed.ok and failed.error is None, failed.error
    assert any("load history not written" in w and "throttled" in w
               for w in failed.warnings())
    assert store.load_history("default", "t", 6000, 6000) == []
    store.broken = False
    recovered = ticker.tick(now=6075.0)
    assert recovered.ok and recovered.load_error is None
    [minute] = store.load_history("default", "t", 6000, 6000)
    assert (minute.seconds, minute.arrivals, minute.completions) == (15.0, 9.0, 5.0)
    assert store.load_history("default", "t", 6060, 6060) == [], "6060 has not ended"
