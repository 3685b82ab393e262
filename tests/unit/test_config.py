"""The configuration document: what it accepts, and how it names what it rejects."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from celery_ondemand import ConfigError
from celery_ondemand.config import TARGET_FIELDS, TargetConfig, load_settings, parse_settings

EXAMPLE = """
broker_url: redis://127.0.0.1:6379/0
state_table: celery-ondemand
targets:
  - name: emails
    queues: [emails, emails.high]
    scaler: ecs
    cluster: prod
    service: celery-emails
    min_workers: 0
    max_workers: 20
    policy: capacity
    worker_concurrency: 4
    target_wait_seconds: 60
    scale_down_delay_seconds: 300
    dry_run: false
    paused: false
  - name: reports
    queues: [reports]
    scaler: asg
    auto_scaling_group: my-asg
  - name: local
    queues: [local]
    scaler: local
    command: "celery -A proj worker -Q local -c 4"
"""


def document(**target: Any) -> dict[str, Any]:
    base = {"name": "t", "queues": ["q"], "scaler": "local", "command": "celery worker"}
    return {"broker_url": "redis://h/0", "targets": [{**base, **target}]}


def test_the_documented_example_parses_with_defaults() -> None:
    settings = parse_settings(EXAMPLE)
    emails = settings.target("emails")
    assert emails.queues == ("emails", "emails.high") and emails.worker_concurrency == 4
    assert settings.target("reports").max_workers == 10
    assert settings.target("reports").policy == "capacity"
    assert settings.queues == ["emails", "emails.high", "reports", "local"]
    assert settings.state_table == "celery-ondemand"


def test_json_and_files_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(yaml.safe_load(EXAMPLE)))
    assert load_settings(path).target("emails").service == "celery-emails"


@pytest.mark.parametrize(("change", "message"), [
    ({"max_workers": 2, "min_workers": 4}, "targets[0].max_workers: must be ≥ min_workers (4)"),
    ({"max_workers": 0}, "targets[0].max_workers: must be ≥ 1"),
    ({"min_workers": -1}, "targets[0].min_workers: must be ≥ 0"),
    ({"min_workers": 1.5}, "targets[0].min_workers: must be a whole number"),
    ({"target_wait_seconds": "soon"}, "targets[0].target_wait_seconds: must be a number"),
    ({"target_wait_seconds": float("nan")}, "targets[0].target_wait_seconds: must be a number"),
    ({"tolerance": 1.5}, "targets[0].tolerance: must be ≤ 0.99"),
    ({"dry_run": "yes"}, "targets[0].dry_run: must be true or false"),
    ({"scaler": "kubernetes"}, "targets[0].scaler: unknown scaler 'kubernetes'"),
    ({"scaler": "ecs"}, "targets[0].cluster: required with scaler: ecs"),
    ({"scaler": "asg"}, "targets[0].auto_scaling_group: required with scaler: asg"),
    ({"command": None}, "targets[0].command: required with scaler: local"),
    ({"policy": "greedy"}, "targets[0].policy: unknown policy 'greedy'"),
    ({"queues": []}, "targets[0].queues: must be a non-empty list"),
    ({"queues": ["a", "a"]}, "targets[0].queues: lists a queue twice"),
    ({"queues": ["a", ""]}, "targets[0].queues[1]: must be a non-empty string"),
    ({"max_worker": 3}, "targets[0].max_worker: unknown setting (did you mean max_workers?)"),
    ({"name": None}, "targets[0].name: required"),
    ({"fallback_workers": 50}, "targets[0].fallback_workers: must lie between"),
])
def test_bad_target_fields_are_named_with_the_reason(change: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings(json.dumps(document(**change)))
    assert message in str(error.value)


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "must be a mapping of settings"),
    ("targets: [", "not valid YAML or JSON"),
    ("broker_url: redis://h/0\ntargets: []", "targets: must be a non-empty list"),
    ("targets: [{name: a, queues: [q], scaler: local, command: c}]",
     "give exactly one of broker_url or broker_url_secret"),
    ("broker_url: redis://h/0\nbroker_url_secret: s\ntargets: [{name: a, queues: [q], "
     "scaler: local, command: c}]", "give exactly one of broker_url or broker_url_secret"),
    ("broker_url: redis://h/0\ntargets: [x]", "targets[0]: must be a mapping"),
    ("broker_url: redis://h/0\nbroker: x\ntargets: [{name: a, queues: [q], scaler: local, "
     "command: c}]", "broker: unknown setting"),
])
def test_bad_documents(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings(text)
    assert message in str(error.value)


def test_names_and_queues_are_unique_across_targets() -> None:
    doc = document()
    doc["targets"].append({**doc["targets"][0], "queues": ["other"]})
    with pytest.raises(ConfigError, match=r"targets\[1\]\.name: 't' is already"):
        parse_settings(json.dumps(doc))
    doc["targets"][1].update(name="u", queues=["other", "q"])
    with pytest.raises(ConfigError, match=r"targets\[1\]\.queues: 'q' is already served by "
                                          r"target 't'"):
        parse_settings(json.dumps(doc))


def test_custom_scaler_and_policy_paths_are_accepted_without_importing() -> None:
    settings = parse_settings(json.dumps(document(scaler="nowhere.mod:Up",
                                                  policy="nowhere.mod:MyAgent")))
    assert settings.targets[0].policy == "nowhere.mod:MyAgent"


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")


def test_every_target_field_is_declared_once() -> None:
    assert {f.name for f in fields(TargetConfig)} == set(TARGET_FIELDS)


def test_the_readme_documents_every_setting() -> None:
    from celery_ondemand.config import TOP_FIELDS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in [*TOP_FIELDS, *TARGET_FIELDS]:
        assert f"`{name}`" in readme, f"README.md does not document {name}"


def test_broker_transport_options_are_kept_as_the_workers_set_them() -> None:
    options = {"queue_order_strategy": "priority", "sep": ":",
               "priority_steps": list(range(10)), "global_keyprefix": "prod:",
               "visibility_timeout": 7200, "anything_kombu_knows": {"nested": True}}
    settings = parse_settings(json.dumps({**document(), "broker_transport_options": options}))
    assert settings.broker_transport_options == {**options, "visibility_timeout": 7200.0}
    assert parse_settings(json.dumps(document())).broker_transport_options == {}


@pytest.mark.parametrize(("options", "message"), [
    ([1, 2], "broker_transport_options: must be a mapping with string keys, got list"),
    ({"priority_steps": [9, 0]}, "broker_transport_options.priority_steps: must be in "
                                 "ascending order"),
    ({"priority_steps": "0,3"}, "broker_transport_options.priority_steps: must be a "
                                "non-empty list"),
    ({"sep": ""}, "broker_transport_options.sep: must be a non-empty string"),
    ({"visibility_timeout": 0}, "broker_transport_options.visibility_timeout: must be > 0"),
    ({"predefined_queues": {"emails": {"access_key_id": "AKIA", "secret_access_key": "s3"}}},
     r"broker_transport_options.predefined_queues.emails: must be a mapping with a url$"),
])
def test_broker_transport_options_errors_name_their_path(options: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_settings(json.dumps({**document(), "broker_transport_options": options}))
    assert "s3" not in str(caught.value), "a predefined queue's secret must not be echoed"


def test_transport_options_on_the_command_line() -> None:
    from celery_ondemand.config import parse_transport_options

    assert parse_transport_options('{"sep": ":", "priority_steps": [0, 5]}') == {
        "sep": ":", "priority_steps": [0, 5]}
    with pytest.raises(ConfigError, match="--transport-options: must be a mapping"):
        parse_transport_options("[1]")


def test_a_yaml_error_does_not_quote_the_line_it_stumbled_on() -> None:
    """PyYAML's message quotes the offending line, which may be a broker URL."""
    with pytest.raises(ConfigError) as raised:
        parse_settings("broker_url: redis://:p4ss: w0rd@redis.internal:6379/0\ntargets: []")
    assert "at line 1" in str(raised.value)
    assert "p4ss" not in str(raised.value) and "w0rd" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


@pytest.mark.parametrize(("top", "target", "message"), [
    ({"load_history_days": 5}, {"forecast": True},
     "targets[0].forecast_min_days: the forecast needs 7 days of load history, but "
     "load_history_days keeps 5"),
    ({"load_history_days": 1.5}, {}, "load_history_days: must be a whole number, got 1.5"),
    ({"load_history_days": 0}, {}, "load_history_days: must be ≥ 1"),
    ({}, {"forecast": True, "forecast_lead_seconds": 3600},
     "targets[0].forecast_lead_seconds: must be ≤ 1800"),
])
def test_the_forecast_settings_are_checked(top: dict[str, Any], target: dict[str, Any],
                                           message: str) -> None:
    from celery_ondemand.config import settings_from_mapping

    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        settings_from_mapping({**document(**target), **top})


def test_a_forecast_needs_the_capacity_policy_or_a_subclass() -> None:
    from celery_ondemand.config import settings_from_mapping
    from celery_ondemand.decide import build_agents

    kept = settings_from_mapping({**document(forecast=True), "load_history_days": 7})
    assert kept.load_history_days == 7 and build_agents(kept)
    custom = settings_from_mapping(document(forecast=True,
                                            policy="celery_ondemand.decide.agent:Agent"))
    with pytest.raises(ConfigError, match=r"^targets\[0\]\.forecast: policy "
                                          r"celery_ondemand\.decide\.agent:Agent has no"):
        build_agents(custom)
