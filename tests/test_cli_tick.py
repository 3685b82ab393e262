"""``ondemand tick --dry-run``: observe the live broker once and print every decision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.brokers import Queues, producer_app
from tests.support.cli import SECRET, assert_clean_failure, closed_port, ondemand
from tests.support.workers import Fleet


def write_config(path: Path, broker_url: str, targets: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"broker_url": broker_url, "targets": targets}))
    return path


@pytest.mark.broker
def test_tick_decides_every_target_from_the_live_broker(broker_url: str, fleet: Fleet,
                                                        tmp_path: Path) -> None:
    queues = Queues(broker_url)
    busy, idle = queues.new("busy"), queues.new("idle")
    producer = producer_app(broker_url)
    try:
        worker = fleet.start([idle], name="idle")
        for _ in range(6):
            producer.send_task("tests.sleep", args=(0,), queue=busy)
        config = write_config(tmp_path / "c.json", broker_url, [
            {"name": "busy", "queues": [busy], "scaler": "local", "command": "celery worker",
             "worker_concurrency": 2, "max_workers": 5, "state_dir": str(tmp_path / "local")},
            {"name": "idle", "queues": [idle], "scaler": "tests.support.agents:RecordingDemand",
             "policy": "cwod"},
        ])
        result = ondemand("tick", "--config", str(config), "--dry-run", "--json")
        assert result.returncode == 0, result.stderr
        output = json.loads(result.stdout)
        assert output["status"]["queues"][busy]["size"] == 6
        assert output["status"]["queues"][idle]["workers"] == [worker.hostname]
        decisions = {d["target"]: d for d in output["decisions"]}
        assert {"target", "current", "desired", "action", "reason", "dry_run"} <= set(
            decisions["busy"])
        assert (decisions["busy"]["current"], decisions["busy"]["desired"]) == (0, 3)
        assert decisions["busy"]["action"] == "up" and decisions["busy"]["dry_run"] is True
        assert decisions["idle"]["action"] == "down", "cwod: empty and served"

        table = ondemand("tick", "--config", str(config), "--dry-run")
        assert table.returncode == 0 and "up (dry run)" in table.stdout
    finally:
        queues.delete_all()
        producer.close()


def test_a_bad_config_is_refused_before_anything_is_observed(tmp_path: Path) -> None:
    # The broker is unreachable: had the tick connected first, the error would say so.
    broker = f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0"
    config = write_config(tmp_path / "c.json", broker, [
        {"name": "t", "queues": ["q"], "scaler": "ecs", "cluster": "c", "service": "s",
         "max_workers": 2, "min_workers": 3}])
    result = ondemand("tick", "--config", str(config), "--dry-run")
    assert_clean_failure(result, "targets[0].max_workers")

    config.write_text(json.dumps({"broker_url": broker, "targets": [
        {"name": "t", "queues": ["q"], "scaler": "local", "command": "c",
         "policy": "tests.support.agents:NotAnAgent"}]}))
    assert_clean_failure(ondemand("tick", "--config", str(config), "--dry-run"),
                         "not a subclass of agent")
    assert_clean_failure(ondemand("tick", "--config", str(tmp_path / "absent.yaml"),
                                  "--dry-run"), "cannot read")


def test_an_unreachable_broker_holds_every_target_and_fails(tmp_path: Path) -> None:
    broker = f"amqp://guest:{SECRET}@127.0.0.1:{closed_port()}//"
    config = write_config(tmp_path / "c.json", broker, [
        {"name": "t", "queues": ["q"], "scaler": "local", "command": "c"}])
    result = ondemand("tick", "--config", str(config), "--dry-run", "--json")
    assert result.returncode == 2 and SECRET not in result.stdout + result.stderr
    output = json.loads(result.stdout)
    assert output["status"] is None and "refused" in output["error"]
    assert output["decisions"][0]["action"] == "hold"


@pytest.mark.broker
def test_a_dry_run_names_the_schedule_that_set_the_count(redis_url: str,
                                                         tmp_path: Path) -> None:
    queues = Queues(redis_url)
    empty = queues.new("scheduled")
    try:
        config = write_config(tmp_path / "c.json", redis_url, [{
            "name": "office", "queues": [empty], "scaler": "local", "command": "celery worker",
            "state_dir": str(tmp_path / "local"), "schedules": [{
                "timezone": "Pacific/Kiritimati", "days": "daily", "from": "00:00",
                "to": "00:00", "min_workers": 2}]}])  # every day, all day
        result = ondemand("tick", "--config", str(config), "--dry-run")
        assert result.returncode == 0, result.stderr
        line = next(line for line in result.stdout.splitlines() if "office" in line)
        assert "schedule" in line and "at least 2" in line, result.stdout
    finally:
        queues.delete_all()
