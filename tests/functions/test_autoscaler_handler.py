"""The Lambda handler, invoked in-process (there is no Docker engine for ``sam local``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.brokers import Queues, producer_app
from tests.support.workers import Fleet

HANDLER = Path(__file__).resolve().parents[2] / "functions" / "autoscaler" / "app.py"
pytestmark = pytest.mark.broker


def load_handler() -> ModuleType:
    spec = importlib.util.spec_from_file_location("autoscaler_app", HANDLER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_handler_returns_the_status_and_reuses_its_connection(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_URL", redis_url)
    queues, fleet, producer = Queues(redis_url), Fleet(redis_url), producer_app(redis_url)
    try:
        name = queues.new("lambda")
        worker = fleet.start([name], name="lambda")
        producer.send_task("tests.sleep", args=(0,), queue=queues.new("waiting"))
        app = load_handler()

        first = app.handler({}, None)
        assert first["queues"][name]["workers"] == [worker.hostname]
        connection = app._observer.probe.connection

        second = app.handler({"queues": [queues.names[-1]]}, None)
        assert second["queues"][queues.names[-1]]["size"] == 1
        assert app._observer.probe.connection is connection
    finally:
        fleet.stop()
        queues.delete_all()
        producer.close()
