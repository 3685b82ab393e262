"""``ondemand doctor`` against real brokers and real workers: a sound deployment passes,
and each setting that would lose work, or make scaling inexact, is found with its fix."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
import redis
import yaml
from celery import Celery
from moto import mock_aws

from celery_ondemand import Observer
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.doctor import examine
from tests.support.aws import fake_credentials
from tests.support.brokers import Queues, unique
from tests.support.cli import ondemand
from tests.support.waiting import wait_until
from tests.support.workers import Fleet

pytestmark = pytest.mark.broker


def config_file(tmp_path: Path, broker_url: str, targets: dict[str, list[str]]) -> Path:
    path = tmp_path / "ondemand.yaml"
    path.write_text(yaml.safe_dump({"broker_url": broker_url, "targets": [
        {"name": name, "queues": names, "scaler": "local", "command": "celery worker"}
        for name, names in targets.items()]}))
    return path


def finding(out: str, head: str, problem: str, subject: str) -> bool:
    """Whether a finding line ``<head><subjects><problem>...`` names ``subject``."""
    for line in out.splitlines():
        subjects, _, rest = line.removeprefix(head).partition(": ")
        if line.startswith(head) and f": {rest}".startswith(problem) \
                and subject in subjects.split(", "):
            return True
    return False


def test_a_sound_deployment_passes(broker_url: str, queues: Queues, fleet: Fleet,
                                   tmp_path: Path) -> None:
    name = queues.new("sound")
    worker = fleet.start([name], name="sound")  # acks late, reject on lost, prefetch 1
    result = ondemand("doctor", "--config",
                      str(config_file(tmp_path, broker_url, {"sound": [name]})), "--no-aws")
    assert result.returncode == 0, result.stdout + result.stderr
    # The broker is shared with other tests' workers: only ours must be clean.
    for subject in (worker.hostname, name, "target sound"):
        assert subject not in result.stdout, result.stdout


def test_what_would_lose_work_or_blur_scaling_is_found_with_its_fix(
        broker_url: str, queues: Queues, fleet: Fleet, tmp_path: Path) -> None:
    served, stray, unserved = queues.new("served"), queues.new("stray"), queues.new("none")
    careless = fleet.start([served], name="careless", pool="prefork", prefetch=4,
                           env={"ONDEMAND_TEST_ACKS_LATE": "0"}, options=["--autoscale=2,1"])
    quiet = fleet.start([stray], name="quiet", options=["--without-heartbeat"])
    config = config_file(tmp_path, broker_url, {"main": [served], "empty": [unserved]})
    result = ondemand("doctor", "--config", str(config), "--no-aws")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    # A finding names every worker it fits, other tests' workers on the shared broker too.
    assert finding(out, "ERROR   workers ", ": task_acks_late is off", careless.hostname)
    assert "fix: set task_acks_late=True and task_reject_on_worker_lost=True" in out
    # 4 a slot, and more under --autoscale: Celery sizes the prefetch for the most processes
    assert "the effective prefetch multiplier is " in out
    assert "the pool autoscales (--autoscale)" in out
    assert finding(out, "WARNING workers ", ": heartbeats and events are off", quiet.hostname)
    assert f"WARNING queue {stray}: consumed by live workers but claimed by no target" in out
    assert "WARNING target empty: no live worker consumes its queues" in out


def test_a_task_outliving_the_visibility_and_the_ecs_stop_timeout(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    queues, fleet = Queues(redis_url), Fleet(redis_url)
    name = queues.new("long")
    release = unique("ondemand-release")
    fleet.start([name], name="long", env={"ONDEMAND_TEST_VISIBILITY": "2",
                                          "ONDEMAND_TEST_COUNTER": redis_url})
    long_task = Celery("p", broker=redis_url, set_as_current=False)
    long_task.send_task("tests.hold", args=(release,), queue=name)  # until released
    fake_credentials(monkeypatch)
    try:
        with mock_aws():
            ecs = boto3.client("ecs", region_name="us-east-1")
            ecs.create_cluster(clusterName="prod")
            ecs.register_task_definition(family="worker", containerDefinitions=[
                {"name": "worker", "image": "celery", "memory": 256, "stopTimeout": 2}])
            ecs.create_service(cluster="prod", serviceName="workers",
                               taskDefinition="worker", desiredCount=1)
            settings = settings_from_mapping({"broker_url": redis_url, "targets": [{
                "name": "long", "queues": [name], "scaler": "ecs", "cluster": "prod",
                "service": "workers"}]})
            with Observer(redis_url) as observer:
                wait_until(lambda: observer.observe([name]).queues[name].running_ages,
                           lambda ages: max(ages or [0.0]) > 2.5,
                           what="the task running past both 2 s limits")
                findings = examine(settings, observer)
        errors = {f.subject: f.problem for f in findings if f.severity == "error"}
        assert "visibility_timeout of 2s" in " ".join(errors.values()), findings
        assert "ECS stops a container 2s after SIGTERM" in errors["target long"], findings
    finally:
        redis.Redis.from_url(redis_url).set(release, 1, ex=300)
        fleet.stop()
        long_task.close()
        queues.delete_all()


def test_a_worker_that_answers_no_control_is_not_said_to_have_acks_late_off(
        redis_url: str, tmp_path: Path) -> None:
    """A worker that beats but answers control elsewhere (its own control exchange, or
    remote control off) sends no ``conf``: its settings are unknown, not off."""
    queues, fleet = Queues(redis_url), Fleet(redis_url)
    name = queues.new("deaf")
    try:
        deaf = fleet.start([name], name="deaf",
                           env={"ONDEMAND_TEST_CONTROL_EXCHANGE": unique("elsewhere")})
        settings = settings_from_mapping({"broker_url": redis_url, "targets": [{
            "name": "deaf", "queues": [name], "scaler": "local", "command": "celery worker"}]})
        # It does not hear the wake-up: a burst as long as its 2 s beat period hears it.
        with Observer(redis_url, quiet_seconds=2.5, control_timeout=0.5) as observer:
            findings = examine(settings, observer, aws=False)
    finally:
        fleet.stop()
        queues.delete_all()
    about = {f.problem for f in findings if deaf.hostname in f.subject}
    assert any(p.startswith("no control reply") for p in about), findings
    assert not any("task_acks_late" in p for p in about), findings
