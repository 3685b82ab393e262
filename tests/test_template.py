"""template.yaml read as data: the promises the stack makes, checked without AWS.

(``sam validate --lint`` and cfn-lint run in ``make lint``; ``sam build`` in ``make build``.)
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...) kept as {"!Tag": value}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {f"!{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)
TEMPLATE: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), _CfnLoader)
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
READ_ONLY = re.compile(r"^[a-z0-9]+:(Describe|List|Get|BatchGet)")


def statements(node: Any) -> list[dict[str, Any]]:
    """Every IAM statement anywhere under ``node`` (inside !If branches too)."""
    found = []
    if isinstance(node, dict):
        if "Effect" in node and "Action" in node:
            found.append(node)
        for value in node.values():
            found += statements(value)
    elif isinstance(node, list):
        for value in node:
            found += statements(value)
    return found


def test_the_autoscaler_runs_every_minute_alone_on_arm64() -> None:
    function = RESOURCES["AutoscalerFunction"]["Properties"]
    schedule = function["Events"]["EveryMinute"]
    assert schedule["Type"] == "ScheduleV2"
    assert schedule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    assert function["ReservedConcurrentExecutions"] == 1
    globals_ = TEMPLATE["Globals"]["Function"]
    assert globals_["Runtime"] in ("python3.12", "python3.13")
    assert globals_["Architectures"] == ["arm64"]
    assert function["Timeout"] > 60, "ticks run until shortly before the next schedule"


def test_the_state_table_has_ttl_and_point_in_time_recovery() -> None:
    table = RESOURCES["StateTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    from celery_ondemand.remember.dynamodb import TTL_ATTRIBUTE

    assert TTL_ATTRIBUTE == "ttl"


def test_no_mutating_action_is_granted_on_every_resource() -> None:
    found = statements(RESOURCES)
    assert found, "the template grants something"
    for statement in found:
        actions = statement["Action"] if isinstance(statement["Action"], list) \
            else [statement["Action"]]
        mutating = [a for a in actions if not READ_ONLY.match(a)]
        if mutating:
            assert statement["Resource"] != "*" and "*" not in statement["Resource"], \
                f"{mutating} granted on every resource"
    granted = {a for s in found for a in (s["Action"] if isinstance(s["Action"], list)
                                           else [s["Action"]])}
    assert {"ecs:UpdateService", "ecs:UpdateTaskProtection", "ecs:StopTask",
            "autoscaling:SetDesiredCapacity", "autoscaling:SetInstanceProtection",
            "autoscaling:TerminateInstanceInAutoScalingGroup"} <= granted


def test_the_status_url_needs_signed_requests() -> None:
    status = RESOURCES["StatusFunction"]["Properties"]
    assert status["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"


def test_logs_are_kept_for_a_while_and_alarms_watch_the_deployment() -> None:
    for name in ("AutoscalerLogGroup", "StatusLogGroup"):
        assert RESOURCES[name]["Properties"]["RetentionInDays"] == {"!Ref": "LogRetentionDays"}
    alarms = {name: r["Properties"] for name, r in RESOURCES.items()
              if r["Type"] == "AWS::CloudWatch::Alarm"}
    watched = {p.get("MetricName") for p in alarms.values()}
    assert {"Errors", "SuccessfulTicks", "QueuesOverWaitTarget"} <= watched
    assert RESOURCES["Dashboard"]["Type"] == "AWS::CloudWatch::Dashboard"


def test_the_layer_ships_what_the_library_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[<>=\[ ]", d)[0].lower() for d in
              project["dependencies"] + project["optional-dependencies"]["lambda"]}
    shipped = {re.split(r"[<>=\[ ]", line)[0].lower()
               for line in (ROOT / "layers" / "requirements.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert wanted - {"boto3"} == shipped, "boto3 comes with the Lambda runtime"
