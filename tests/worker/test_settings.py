"""``celery_ondemand.worker.configure``: the settings applied, and the user's choices kept."""

from __future__ import annotations

import logging

import pytest
from celery import Celery

from celery_ondemand.worker import Config, configure


def test_a_fresh_app_gets_every_setting(caplog: pytest.LogCaptureFixture) -> None:
    app = Celery("fresh", set_as_current=False)
    with caplog.at_level(logging.INFO, logger="celery_ondemand.worker"):
        assert configure(app, ["emails", "reports"]) == []
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("celery-ondemand set task_acks_late=True")
               and "consumer_timeout" in m for m in said), \
        "a changed Celery default that changes how tasks run is said"
    assert any(m.startswith("celery-ondemand set worker_prefetch_multiplier=1") for m in said)
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_send_task_events and conf.worker_prefetch_multiplier == 1
    # Never shorter than the broker's own: an ETA task or a running one past it runs twice.
    assert "visibility_timeout" not in (conf.broker_transport_options or {})
    assert [q.name for q in conf.task_queues] == ["emails", "reports"]


def test_settings_the_user_chose_are_kept_and_said() -> None:
    app = Celery("mine", set_as_current=False)
    app.conf.task_acks_late = False
    app.conf.broker_transport_options = {"visibility_timeout": 7200, "region": "eu-west-1"}
    kept = configure(app, config=Config(prefetch_multiplier=4, visibility_timeout=900))
    assert app.conf.task_acks_late is False
    assert app.conf.broker_transport_options == {"visibility_timeout": 7200,
                                                 "region": "eu-west-1"}
    assert app.conf.worker_prefetch_multiplier == 4
    assert any(line.startswith("kept your task_acks_late=False") for line in kept)
    assert any("visibility_timeout=7200" in line for line in kept)


def test_other_transport_options_survive() -> None:
    app = Celery("opts", set_as_current=False)
    app.conf.broker_transport_options = {"region": "eu-west-1"}
    configure(app)
    assert app.conf.broker_transport_options == {"region": "eu-west-1"}
    configure(app, config=Config(visibility_timeout=14400))  # chosen: applied
    assert app.conf.broker_transport_options == {"region": "eu-west-1",
                                                 "visibility_timeout": 14400}
