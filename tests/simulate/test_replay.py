"""``ondemand simulate --history``: a target's recorded traffic read back from the state
store (the SQLite file of ``ondemand run``, a DynamoDB table on moto) and replayed, with a
candidate setting, and ``--tune``'s settings to paste."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from celery_ondemand.cli import main
from celery_ondemand.decide.load import LoadMinute
from celery_ondemand.remember import DynamoDBStateStore, SQLiteStateStore, StateStore
from celery_ondemand.remember.dynamodb import create_table
from celery_ondemand.simulate.replay import counts_from
from tests.support.aws import fake_credentials

START = 1_790_000_040  # a minute's first second
SERVICE = 8.0


def record(store: StateStore, minutes: int = 60) -> int:
    """An hour of traffic: 1 task a second, 4 a second for ten minutes in the middle,
    8 s tasks (as the ticks would have measured them). Returns the tasks recorded."""
    total = 0
    for i in range(minutes):
        arrivals = 240 if 25 <= i < 35 else 60
        total += arrivals
        store.add_load("default", {"t": LoadMinute(
            START + 60 * i, 60.0, arrivals, arrivals, arrivals * SERVICE,
            desired_sum=12, live_sum=12, ticks=4)})
    return total


def config(tmp_path: Path, target: dict[str, Any] | None = None, **top: Any) -> Path:
    """The configuration file of one local target 't' on queue 'q', 4 slots a worker;
    ``target`` replaces its other settings (default: at most 30 workers, a 60 s wait)."""
    settings = {"max_workers": 30, "target_wait_seconds": 60} if target is None else target
    path = tmp_path / "ondemand.yaml"
    path.write_text(yaml.safe_dump({"broker_url": "redis://localhost/0", **top, "targets": [
        {"name": "t", "queues": ["q"], "scaler": "local", "command": "true",
         "worker_concurrency": 4, **settings}]}))
    return path


def replay(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str,
           **top: Any) -> tuple[int, str, str]:
    status = main(["simulate", "--history", "--config", str(config(tmp_path, **top)),
                   "--target", "t", "--since", "2026-09-21T14:14", "--until",
                   "2026-09-21T15:14", "--startup", "30", *extra])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_a_sqlite_history_replays_with_a_candidate_setting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    total = record(SQLiteStateStore(tmp_path / "state.db"))
    status, out, err = replay(tmp_path, capsys, "--policy", "capacity", "--policy", "keda",
                              "--set", "target_wait_seconds=20", "--json",
                              state_file=str(tmp_path / "state.db"))
    assert status == 0, err
    report = json.loads(out)
    assert report["tasks"] == total, "every recorded arrival replayed"
    assert f"service exp:{SERVICE:g}" in err and "candidate: target_wait_seconds=20" in err
    rows = {p["policy"]: p for p in report["policies"]}
    assert list(rows) == ["capacity", "keda", "candidate"]
    assert rows["candidate"]["p95_wait"] < rows["capacity"]["p95_wait"], \
        "planning for 20 s waits less than planning for 60 s"
    assert rows["candidate"]["worker_minutes"] > rows["capacity"]["worker_minutes"]


def test_a_replay_bills_the_minimum_charge_when_asked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record(SQLiteStateStore(tmp_path / "state.db"))
    costs = {}
    for minimum in ("0", "36000"):  # ten hours: more than the replay bills by the second
        status, out, err = replay(tmp_path, capsys, "--policy", "cwod", "--json",
                                  "--minimum-billing", minimum,
                                  state_file=str(tmp_path / "state.db"))
        assert status == 0, err
        costs[minimum] = json.loads(out)["policies"][0]
    assert "starts billed 36000 s at least" in err
    by_second, at_least = costs["0"], costs["36000"]
    assert by_second["started"] == at_least["started"] > 0, "the same decisions"
    assert by_second["worker_minutes"] < 600 * at_least["started"] <= \
        at_least["worker_minutes"], "every worker started is billed ten hours at least"


def test_tune_prints_the_cheapest_settings_that_meet_the_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record(SQLiteStateStore(tmp_path / "state.db"))
    status, out, _ = replay(tmp_path, capsys, "--tune", "--state", str(tmp_path / "state.db"))
    assert status == 0, out
    table, pasted = out.split("Paste into the target 't' of your config:")
    chosen = yaml.safe_load(pasted)
    assert set(chosen) == {"stabilization_seconds", "tolerance", "target_wait_seconds"}
    rows = [line.split() for line in table.splitlines()[1:] if line.strip()[:1].isdigit()]
    meeting = [r for r in rows if r[-1] == "yes"]
    cheapest = min(meeting, key=lambda r: float(r[3]))
    assert [float(v) for v in cheapest[:3]] == [chosen["stabilization_seconds"],
                                                chosen["tolerance"],
                                                chosen["target_wait_seconds"]]
    assert float(cheapest[4].rstrip("s")) <= 60
    assert len(rows) > 6, "several settings were tried"


def test_a_dynamodb_history_replays(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake_credentials(monkeypatch)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "ondemand-state")
        total = record(DynamoDBStateStore("ondemand-state", client))
        status, out, err = replay(tmp_path, capsys, "--policy", "capacity", "--json",
                                  state_table="ondemand-state")
    assert status == 0, err
    assert json.loads(out)["tasks"] == total


@pytest.mark.parametrize("extra, words", [
    (["--set", "tolerence=0.2"], "not a setting the policy reads"),
    (["--set", "tolerance"], "expected key=value"),
    (["--set", "tolerance=2"], "--set tolerance: must be ≤ 0.99"),
    (["--since", "last tuesday"], "expected an iso 8601 time"),
    (["--target", "other"], "no such target"),
])
def test_bad_replay_input_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           extra: list[str], words: str) -> None:
    record(SQLiteStateStore(tmp_path / "state.db"), minutes=5)
    status, _, err = replay(tmp_path, capsys, "--policy", "capacity", *extra,
                            state_file=str(tmp_path / "state.db"))
    assert status == 2 and err.startswith("ondemand: error: ")
    assert words in err.lower() and "Traceback" not in err


def test_no_history_in_range_says_where_it_looked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    SQLiteStateStore(tmp_path / "empty.db")
    status, _, err = replay(tmp_path, capsys, state_file=str(tmp_path / "empty.db"))
    assert status == 2 and "no load history for target 't'" in err and "empty.db" in err


def test_minutes_spread_evenly_over_their_seconds() -> None:
    minutes = [LoadMinute(120, 60.0, 90.0), LoadMinute(240, 30.0, 10.0)]  # half measured
    counts = counts_from(minutes, 100, 300)
    assert len(counts) == 240 and sum(counts[60:120]) == 90 and sum(counts[180:]) == 20
    assert set(counts[60:120]) == {1, 2} and counts[:60] == [0] * 60


def test_a_forecast_target_replays_with_the_history_before_since(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Office hours (1 task/s, 10/s from 09:00) recorded for four past mornings and the
    replayed one: with the history before --since known, the target's forecast readies
    workers for 09:00 and fewer tasks wait long than with the forecast off."""
    store = SQLiteStateStore(tmp_path / "state.db")
    day = 86400
    nine = int(datetime(2026, 9, 24, 9, tzinfo=UTC).timestamp())  # the replayed morning
    for past in range(5):  # 07:30-10:10 of four past days and of the replayed one
        for minute in range(nine - past * day - 5400, nine - past * day + 4200, 60):
            if past == 0 and minute >= nine + 1800:
                break
            rate = 10.0 if minute % day >= 9 * 3600 else 1.0
            store.add_load("default", {"t": LoadMinute(minute, 60.0, rate * 60, rate * 60,
                                                       rate * 60 * 4.0, ticks=4)})
    path = config(tmp_path, {"max_workers": 40, "forecast": True, "forecast_min_days": 3},
                  state_file=str(tmp_path / "state.db"))
    status = main(["simulate", "--history", "--config", str(path), "--target", "t",
                   "--since", "2026-09-24T08:00", "--until", "2026-09-24T09:30", "--warmup",
                   "1800", "--policy", "capacity", "--set", "forecast=false", "--json"])
    out = capsys.readouterr()
    assert status == 0, out.err
    rows = {p["policy"]: p for p in json.loads(out.out)["policies"]}
    assert rows["capacity"]["p99_wait"] < rows["candidate"]["p99_wait"]
    assert rows["capacity"]["max_wait"] < rows["candidate"]["max_wait"]


def test_a_forecast_target_replays_with_the_default_policies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cwod has no forecast: its row replays the target without it instead of refusing."""
    record(SQLiteStateStore(tmp_path / "state.db"))
    path = config(tmp_path, {"max_workers": 30, "forecast": True, "forecast_min_days": 3},
                  state_file=str(tmp_path / "state.db"))
    status = main(["simulate", "--history", "--config", str(path), "--target", "t",
                   "--since", "2026-09-21T14:14", "--until", "2026-09-21T15:14", "--json"])
    out = capsys.readouterr()
    assert status == 0, out.err
    rows = {p["policy"].split(" ")[0] for p in json.loads(out.out)["policies"]}
    assert {"capacity", "cwod", "keda", "oracle"} <= rows


def test_a_deployed_stacks_table_and_deployment_are_given_on_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack sets its table and deployment in the Lambda's environment, not in the
    YAML: --table and --deployment read its history all the same."""
    fake_credentials(monkeypatch)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "stack-state")
        store = DynamoDBStateStore("stack-state", client)
        total = record(store)
        for minute in store.load_history("default", "t", 0, 2e9):  # twice the load
            store.add_load("prod", {"t": replace(minute, arrivals=2 * minute.arrivals)})
        status, out, err = replay(tmp_path, capsys, "--policy", "capacity", "--json",
                                  "--table", "stack-state", "--deployment", "prod",
                                  state_table="celery-ondemand")
    assert status == 0, err
    assert json.loads(out)["tasks"] == 2 * total, "prod's minutes, not default's"
