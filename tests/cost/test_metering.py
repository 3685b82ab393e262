"""Measuring real ticks for the cost model: the metric streams counted from the EMF a real
tick prints (on a real Redis), DynamoDB units from the calls its store makes, and
``ondemand cost`` end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from celery_ondemand import metrics
from celery_ondemand.cli import main
from celery_ondemand.config import Settings, settings_from_mapping
from celery_ondemand.metering import Meter
from tests.support.brokers import Queues, producer_app

pytestmark = pytest.mark.broker


@pytest.fixture
def reference(redis_url: str) -> Iterator[tuple[Settings, Queues]]:
    """The reference deployment: 10 queues, 3 targets, every queue holding a task."""
    queues = Queues(redis_url)
    names = [queues.new(f"cost{i}") for i in range(10)]
    settings = settings_from_mapping({"broker_url": redis_url, "targets": [
        {"name": "a", "queues": names[:4], "scaler": "local", "command": "true"},
        {"name": "b", "queues": names[4:7], "scaler": "local", "command": "true"},
        {"name": "c", "queues": names[7:], "scaler": "local", "command": "true"}]})
    producer = producer_app(redis_url)
    for name in names:
        producer.send_task("tests.sleep", args=(0,), queue=name)
    producer.close()
    yield settings, queues
    queues.delete_all()


@pytest.mark.parametrize("detail", ["target", "queue"])
def test_the_streams_a_busy_tick_prints_are_the_ones_the_model_bills(
        reference: tuple[Settings, Queues], redis_url: str, detail: str) -> None:
    settings, queues = reference
    settings = replace(settings, metrics_detail=detail)
    with Meter(settings, redis_url) as meter:
        meter.tick()
        busy = meter.tick()
        assert not busy.result.at_rest(settings)
        assert busy.usage.metric_streams == metrics.streams_while_busy(settings, ages=True)
        assert busy.usage.metric_streams == (14 if detail == "target" else 2 + 6 * 3 + 3 * 10)

        queues.delete_all()
        settling = meter.tick()
        assert settling.result.at_rest(settings)
        assert settling.usage.metric_streams > len(metrics.ALWAYS_PRINTED), \
            "a target coming to rest is printed once more"
        rest = meter.tick()
        assert rest.usage.metric_streams == len(metrics.ALWAYS_PRINTED)


def test_a_tick_at_rest_writes_what_dynamodb_bills_by_hand(
        reference: tuple[Settings, Queues], redis_url: str) -> None:
    settings, queues = reference
    queues.delete_all()
    with Meter(settings, redis_url) as meter:
        meter.tick()
        meter.tick()
        rest = meter.tick()
    # lease put 1 + memory transaction 2 x (lease check + 3 targets) + status 1 + release 1;
    # the history is written only when a decision changed: not at rest
    assert rest.usage.write_units == 1 + 2 * 4 + 1 + 1
    assert rest.usage.read_units == 1, "the memory, read consistently (< 4 KB)"
    assert 0 < rest.usage.log_bytes < 4000


def test_ondemand_cost_prices_a_measured_tick(
        reference: tuple[Settings, Queues], redis_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    settings, _ = reference
    config = tmp_path / "ondemand.yaml"
    config.write_text(yaml.safe_dump({"broker_url": redis_url, "targets": [
        {"name": t.name, "queues": list(t.queues), "scaler": "local", "command": "true"}
        for t in settings.targets]}))
    assert main(["cost", "--config", str(config), "--busy-fraction", "0.25", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["at_rest_now"] is False and report["measured"]["metric_streams"] == 14
    bills = report["bills"]
    assert bills["at rest all month"]["total"] < bills["25% busy"]["total"] \
        < bills["busy all month"]["total"]
    assert bills["busy all month"]["CloudWatch metrics"] == pytest.approx(14 * 0.30)
