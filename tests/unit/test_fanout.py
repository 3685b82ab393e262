"""The fan-out's pieces: which deployments a stack lists, which one an event may name, where
each one's configuration lives, what the dispatcher sends, and whether a reserved
concurrency holds them all."""

from __future__ import annotations

import pytest
from moto import mock_aws

from celery_ondemand import fanout
from celery_ondemand.errors import ConfigError, UnknownDeployment


@pytest.mark.parametrize(("raw", "listed"), [
    ("", ()), (" ", ()), ("eu", ("eu",)), ("eu,us", ("eu", "us")),
    (" eu , us-east.2 ,", ("eu", "us-east.2"))])
def test_the_listed_deployments_are_read_in_order(raw: str, listed: tuple[str, ...]) -> None:
    assert fanout.listed_deployments({fanout.DEPLOYMENTS_VARIABLE: raw}) == listed
    assert fanout.listed_deployments({}) == ()


@pytest.mark.parametrize(("raw", "problem"), [
    ("eu,eu", "listed twice: eu"), ("eu/west", "'eu/west' is not a deployment name"),
    ("a" * 65, "at most 64")])
def test_a_list_that_cannot_name_parameters_is_refused(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        fanout.listed_deployments({fanout.DEPLOYMENTS_VARIABLE: raw})


def test_an_event_names_only_a_listed_deployment() -> None:
    listed = ("eu", "us")
    assert fanout.deployment_for({"deployment": "us"}, listed) == "us"
    assert fanout.deployment_for({"deployment": "anything"}, ()) is None, \
        "a stack of one deployment ticks it whatever the payload says"
    for payload in ({"deployment": "asia"}, {}, {"deployment": ["eu"]},
                    {"deployment": "../eu"}):
        with pytest.raises(UnknownDeployment, match="is not one this stack lists"):
            fanout.deployment_for(payload, listed)


def test_each_deployments_configuration_lives_under_the_stacks_path() -> None:
    assert fanout.config_parameter("/celery-ondemand", "eu") == "/celery-ondemand/eu"
    assert fanout.config_parameter("/celery-ondemand/", "eu") == "/celery-ondemand/eu"


def test_a_deployments_payload_keeps_the_schedules_time_and_names_it() -> None:
    event = {"source": "celery-ondemand.schedule", "scheduled_time": "2026-11-29T00:00:00Z",
             "period_seconds": 60, "deployment": "asia", "other": 1}
    assert fanout.payload_for(event, "eu") == {
        "source": "celery-ondemand.schedule", "scheduled_time": "2026-11-29T00:00:00Z",
        "period_seconds": 60, "deployment": "eu"}


def test_an_invocation_refused_is_reported_and_the_others_still_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():  # no such function: every invocation is refused, one by one
        client = boto3.client("lambda", region_name="us-east-1")
        done = fanout.dispatch(client, "missing", {}, ("eu", "us"))
    assert done.invoked == []
    assert sorted(done.failed) == ["eu", "us"]
    assert all("ResourceNotFoundException" in why for why in done.failed.values())


@pytest.mark.parametrize(("reserved", "queued", "deployments", "enough"), [
    ("", "2", 10, True), ("5", "2", 2, True), ("4", "2", 2, False), ("13", "10", 2, True),
    ("12", "10", 2, False)])
def test_a_reserved_concurrency_must_hold_every_invocation_of_a_minute(
        reserved: str, queued: str, deployments: int, enough: bool) -> None:
    names = tuple(f"d{i}" for i in range(deployments))
    problem = fanout.concurrency_problem(names, {
        "ONDEMAND_RESERVED_CONCURRENCY": reserved, "ONDEMAND_QUEUED_TICK_CONCURRENCY": queued})
    assert (problem is None) == enough
    if problem:
        assert f"below the {1 + deployments + int(queued)} invocations" in problem
