"""The stack as CloudFormation receives it: template.yaml transformed the way ``sam deploy``
transforms it, linted, and resolved for the default parameters and for a deployment with
everything on (ECS services, Auto Scaling groups, a secret under its own KMS key, SQS, a VPC).

``sam validate --lint`` and ``cfn-lint template.yaml`` (``make lint``) read the template
before the transform and miss what the transform produces; these tests read its output.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest

from tests.support.aws_calls import allowed
from tests.support.cloudformation import (
    ACCOUNT,
    INTRINSICS,
    ROOT,
    Stack,
    intrinsics_in,
    lint,
    transformed,
)

SECRET_ARN = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:ondemand/broker-AbCdEf"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
EVERYTHING = {
    "EcsClusterName": "prod", "EcsServiceNames": "workers,emails",
    "AutoScalingGroupNames": "batch-a,batch-b", "BrokerSecretArn": SECRET_ARN,
    "BrokerSecretKmsKeyArn": KEY_ARN, "SqsBroker": "true",
    "SubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
    "SecurityGroupIds": "sg-0123456789abcdef0", "ReservedConcurrency": "3",
    "Tracing": "Active", "AlarmEmail": "ops@example.com"}
PARAMETER_SETS = {"defaults": {}, "everything": EVERYTHING}


@pytest.fixture(scope="module", params=sorted(PARAMETER_SETS))
def parameter_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def cloudformation(parameter_set: str) -> dict[str, Any]:
    return transformed(PARAMETER_SETS[parameter_set])


@pytest.fixture(scope="module")
def stack(cloudformation: dict[str, Any], parameter_set: str) -> Stack:
    return Stack(cloudformation, PARAMETER_SETS[parameter_set])


@pytest.fixture(scope="module")
def everything() -> Stack:
    return Stack(transformed(EVERYTHING), EVERYTHING)


@pytest.fixture(scope="module")
def defaults() -> Stack:
    return Stack(transformed(), {})


def test_cloudformation_finds_no_error_in_what_it_receives(
        cloudformation: dict[str, Any]) -> None:
    assert lint(cloudformation) == []


def test_every_intrinsic_cloudformation_receives_is_one_the_tests_resolve(
        cloudformation: dict[str, Any]) -> None:
    """The tests below read policies through :class:`Stack`, which evaluates exactly these
    intrinsics; one it does not know would make their reading a guess."""
    used = intrinsics_in(cloudformation)
    assert used <= set(INTRINSICS)
    assert {"Fn::Sub", "Fn::Split", "Fn::Join", "Fn::If", "Fn::GetAtt", "Ref"} <= used


def test_the_configuration_grant_names_the_configuration_parameter(stack: Stack) -> None:
    for role in ("AutoscalerFunctionRole", "StatusFunctionRole"):
        grants = [s for p in stack.policies(role) for s in p["Statement"]
                  if "ssm:GetParameter" in _actions(s)]
        assert [g["Resource"] for g in grants] == [
            f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/celery-ondemand/config"]


def test_scaling_grants_name_the_given_services_and_groups(everything: Stack) -> None:
    statements = {s.get("Sid"): s for p in everything.policies("AutoscalerFunctionRole")
                  for s in p["Statement"]}
    assert statements["ScaleServicesOfTheCluster"]["Resource"] == \
        f"arn:aws:ecs:us-east-1:{ACCOUNT}:service/prod/*"
    assert statements["ButOnlyTheNamedServices"]["NotResource"] == [
        "arn:*:ecs:*:*:service/*/workers", "arn:*:ecs:*:*:service/*/emails"]
    assert statements["ButOnlyTheNamedGroups"]["NotResource"] == [
        f"arn:*:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/{name}"
        for name in ("batch-a", "batch-b")]
    assert statements["ProtectOrReplaceTasksOfTheCluster"]["Resource"] == \
        f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/prod/*"
    assert statements["DecryptTheBrokerSecret"]["Resource"] == KEY_ARN


def test_no_mutating_action_is_granted_on_every_resource(stack: Stack) -> None:
    read_only = re.compile(r"^[a-z0-9]+:(Describe|List|Get|BatchGet)")
    for role in ("AutoscalerFunctionRole", "StatusFunctionRole"):
        for policy in stack.policies(role):
            for statement in policy["Statement"]:
                if statement["Effect"] != "Allow":
                    continue
                mutating = [a for a in _actions(statement) if not read_only.match(a)]
                resources = statement["Resource"] if isinstance(statement["Resource"], list) \
                    else [statement["Resource"]]
                for resource in resources if mutating else []:
                    assert resource != "*" and not resource.endswith(":*"), \
                        f"{role}: {mutating} granted on {resource}"


def test_only_the_autoscaler_sits_in_the_vpc(everything: Stack, defaults: Stack) -> None:
    assert everything.resource("AutoscalerFunction")["VpcConfig"] == {
        "SubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
        "SecurityGroupIds": ["sg-0123456789abcdef0"]}
    assert "VpcConfig" not in everything.resource("StatusFunction")
    assert "VpcConfig" not in defaults.resource("AutoscalerFunction")
    assert any("AWSLambdaVPCAccessExecutionRole" in arn
               for arn in everything.managed_policies("AutoscalerFunctionRole"))


def test_a_failed_or_late_invocation_is_never_retried(stack: Stack) -> None:
    invoke = stack.resource("AutoscalerFunctionEventInvokeConfig")
    assert invoke["MaximumRetryAttempts"] == 0
    assert invoke["MaximumEventAgeInSeconds"] == 60, "the smallest age Lambda allows"
    schedule = stack.resource("AutoscalerFunctionEveryMinute")
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    assert schedule["Target"]["RetryPolicy"] == {"MaximumRetryAttempts": 0,
                                                 "MaximumEventAgeInSeconds": 60}
    assert "<aws.scheduler.scheduled-time>" in schedule["Target"]["Input"]


ACCOUNT_UNIQUE_NAMES = {
    "AWS::Scheduler::Schedule": "Name", "AWS::Lambda::Function": "FunctionName",
    "AWS::CloudWatch::Dashboard": "DashboardName", "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::DynamoDB::Table": "TableName", "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName", "AWS::IAM::Role": "RoleName",
    "AWS::CloudWatch::Alarm": "AlarmName"}


def test_a_second_stack_in_the_account_names_nothing_the_first_one_named(
        stack: Stack) -> None:
    """One stack per deployment is a documented layout: every name that must be unique in
    the account and region is left to CloudFormation or carries the stack's name (SAM
    named the schedule after its logical id: a second stack failed to create it)."""
    for logical, resource in stack.template["Resources"].items():
        key = ACCOUNT_UNIQUE_NAMES.get(resource["Type"])
        name = (resource.get("Properties") or {}).get(key) if key else None
        if name is not None:
            assert "AWS::StackName" in json.dumps(name), (logical, name)


def test_the_minutes_further_ticks_go_through_the_tick_queue(stack: Stack) -> None:
    """One tick per invocation: the waits between ticks are not billed."""
    function = stack.resource("AutoscalerFunction")
    assert 15 + 10 <= function["Timeout"] <= 60, "a tick's budget and the timeout reserve"
    queue = stack.resource("TickQueue")
    assert queue["VisibilityTimeout"] >= function["Timeout"]
    # Retention counts from the send, the delay (up to ~59 s) included: room for the
    # poller past the delay; a tick whose slot has passed is the handler's to drop.
    assert queue["MessageRetentionPeriod"] >= 60 + 60
    assert function["Environment"]["Variables"]["ONDEMAND_TICK_QUEUE_URL"] == \
        stack.ref("TickQueue")
    mappings = [stack.resource(name) for name, r in stack.template["Resources"].items()
                if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert [(m["EventSourceArn"], m["BatchSize"], m["ScalingConfig"]) for m in mappings] == [
        (stack.get_att("TickQueue", "Arn"), 1, {"MaximumConcurrency": 2})]
    assert "RecursiveLoop" not in function, "schedule → queue → tick: no loop to allow"
    assert not any("SQSQueueExecutionRole" in arn
                   for arn in stack.managed_policies("AutoscalerFunctionRole")), \
        "the poller's grants name the tick queue only"


def test_memory_idle_return_and_metric_detail_are_parameters(defaults: Stack) -> None:
    function = defaults.resource("AutoscalerFunction")
    assert function["MemorySize"] == 256
    variables = function["Environment"]["Variables"]
    assert variables["ONDEMAND_IDLE_RETURN"] == "" and variables["ONDEMAND_METRICS_DETAIL"] == ""
    chosen = {"MemorySize": "512", "IdleReturn": "false", "MetricsDetail": "queue"}
    variables = Stack(transformed(chosen), chosen).resource("AutoscalerFunction")[
        "Environment"]["Variables"]
    assert (variables["ONDEMAND_IDLE_RETURN"], variables["ONDEMAND_METRICS_DETAIL"]) == (
        "false", "queue")


def test_reserved_concurrency_is_opt_in(defaults: Stack, everything: Stack) -> None:
    """An account at the default quota of 10 cannot reserve any: the lease keeps one tick
    at a time without it."""
    assert "ReservedConcurrentExecutions" not in defaults.resource("AutoscalerFunction")
    assert everything.resource("AutoscalerFunction")["ReservedConcurrentExecutions"] == "3"


def test_tracing_is_opt_in_and_so_is_its_import(defaults: Stack, everything: Stack) -> None:
    off, on = defaults.resource("AutoscalerFunction"), everything.resource("AutoscalerFunction")
    assert "TracingConfig" not in off
    assert off["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert on["TracingConfig"] == {"Mode": "Active"}
    assert on["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "false"


def test_every_alarm_notifies_a_topic(defaults: Stack, everything: Stack) -> None:
    given = "arn:aws:sns:us-east-1:123456789012:pager"
    brought = Stack(transformed({"AlarmTopicArn": given}), {"AlarmTopicArn": given})
    for stack, topic in ((defaults, defaults.ref("AlarmTopic")),
                         (everything, everything.ref("AlarmTopic")), (brought, given)):
        alarms = [name for name, r in stack.template["Resources"].items()
                  if r["Type"] == "AWS::CloudWatch::Alarm"]
        assert len(alarms) == 5
        for name in alarms:
            assert stack.resource(name)["AlarmActions"] == [topic], name
    assert everything.exists("AlarmEmailSubscription")
    assert not defaults.exists("AlarmEmailSubscription")
    assert not brought.exists("AlarmTopic")
    assert everything.resource("AlarmEmailSubscription")["Endpoint"] == "ops@example.com"


def test_the_state_table_has_ttl_and_point_in_time_recovery(stack: Stack) -> None:
    table = stack.resource("StateTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    from celery_ondemand.remember.dynamodb import TTL_ATTRIBUTE

    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE,
                                                "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_the_status_url_needs_signed_requests(stack: Stack) -> None:
    assert stack.resource("StatusFunctionUrl")["AuthType"] == "AWS_IAM"


def test_logs_are_kept_for_a_while_and_alarms_watch_the_deployment(stack: Stack) -> None:
    for name in ("AutoscalerLogGroup", "StatusLogGroup"):
        assert str(stack.resource(name)["RetentionInDays"]) == "30"
    watched = {stack.resource(name).get("MetricName") for name, r in
               stack.template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert {"Errors", "SuccessfulTicks", "QueuesOverWaitTarget", "ScaleInHeld"} <= watched


def test_a_scale_in_held_by_a_lasting_gap_raises_an_alarm(defaults: Stack,
                                                          deployments: Stack) -> None:
    """A gap in a target's read, a rollout or an unshielded busy worker holds its
    scale-in; one that lasts (a worker dead on a running instance, a deployment that never
    ends) would hold the fleet at its size unseen. The alarm watches the deployment's
    ``ScaleInHeld`` (a tick's held targets, printed only when not zero) every minute for
    ``HeldAlarmMinutes``."""
    held = defaults.resource("HeldScaleInAlarm")
    assert (held["Namespace"], held["MetricName"], held["Statistic"], held["Period"]) == (
        "CeleryOnDemand", "ScaleInHeld", "Sum", 60)
    assert held["Dimensions"] == [{"Name": "deployment", "Value": "default"}]
    assert str(held["EvaluationPeriods"]) == str(held["DatapointsToAlarm"]) == "15"
    assert (held["ComparisonOperator"], held["Threshold"], held["TreatMissingData"]) == (
        "GreaterThanThreshold", 0, "notBreaching")
    everyone = deployments.resource("HeldScaleInAlarm")["Metrics"][0]["Expression"]
    assert everyone == 'SELECT SUM(ScaleInHeld) FROM SCHEMA("CeleryOnDemand", deployment)'


def test_the_layer_ships_what_the_library_needs_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(d) for d in project["dependencies"] +
              project["optional-dependencies"]["lambda"]}
    layer = ROOT / "layers"
    asked = {_name(line) for line in (layer / "requirements.in").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert wanted | {"boto3", "botocore"} == asked, \
        "the layer ships boto3 and botocore as one pinned pair beside the library's needs"
    locked = {}
    for block in re.split(r"\n(?=[a-z0-9])", (layer / "requirements.txt").read_text()):
        head = block.split("\\")[0].strip()
        if head and not head.startswith("#"):
            name, _, version = head.partition("==")
            locked[_name(name)] = version.split(";")[0].strip()
            assert "--hash=sha256:" in block, f"{name} is locked without a hash"
    assert asked <= set(locked), "every package the layer asks for is locked"
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in locked.values()), locked


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return actions if isinstance(actions, list) else [actions]


DEPLOYMENTS = {"Deployments": "eu,us", "ReservedConcurrency": "6",
               "QueuedTickConcurrency": "3", "DeploymentName": "estate",
               "BrokerSecretArns": f"{SECRET_ARN},{SECRET_ARN}2"}
"""A stack of two deployments (issue 21)."""


@pytest.fixture(scope="module")
def deployments() -> Stack:
    return Stack(transformed(DEPLOYMENTS), DEPLOYMENTS)


def test_a_stack_of_several_deployments_is_valid_cloudformation(deployments: Stack) -> None:
    assert lint(deployments.template) == []
    assert intrinsics_in(deployments.template) <= set(INTRINSICS)


def test_only_several_deployments_name_the_function_and_let_it_invoke_itself(
        defaults: Stack, deployments: Stack) -> None:
    assert "FunctionName" not in defaults.resource("AutoscalerFunction")
    assert "ONDEMAND_DEPLOYMENTS" not in \
        defaults.resource("AutoscalerFunction")["Environment"]["Variables"]
    assert not any(a.startswith("lambda:") for p in defaults.policies("AutoscalerFunctionRole")
                   for s in p["Statement"] for a in _actions(s))
    function = deployments.resource("AutoscalerFunction")
    arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{function['FunctionName']}"
    invoking = [s for p in deployments.policies("AutoscalerFunctionRole")
                for s in p["Statement"] if any(a.startswith("lambda:") for a in _actions(s))]
    assert invoking == [{"Sid": "StartEachDeploymentsInvocation", "Effect": "Allow",
                         "Action": "lambda:InvokeFunction", "Resource": arn}]
    assert function["FunctionName"] == "celery-ondemand-autoscaler"
    assert not any(s for p in deployments.policies("StatusFunctionRole")
                   for s in p["Statement"] if any(a.startswith("lambda:") for a in _actions(s)))
    # Built from the name, not the function: the role does not wait for the function it
    # serves (CloudFormation would refuse the circle).
    role = json.dumps(deployments.template["Resources"]["AutoscalerFunctionRole"])
    assert '"AutoscalerFunction"' not in role and "AutoscalerFunction.Arn" not in role
    variables = function["Environment"]["Variables"]
    assert (variables["ONDEMAND_DEPLOYMENTS"], variables["ONDEMAND_DEPLOYMENT"],
            variables["ONDEMAND_RESERVED_CONCURRENCY"],
            variables["ONDEMAND_QUEUED_TICK_CONCURRENCY"]) == ("eu,us", "estate", "6", "3")


def test_each_listed_deployments_parameter_and_only_those_are_readable(
        deployments: Stack) -> None:
    parameter = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter"
    for role in ("AutoscalerFunctionRole", "StatusFunctionRole"):
        policies = deployments.policies(role)
        for name in ("eu", "us"):
            assert allowed(policies, "ssm:GetParameter",
                           f"{parameter}/celery-ondemand/config/{name}"), (role, name)
        for name in ("/celery-ondemand/config", "/celery-ondemand/config/asia",
                     "/other/eu", "/celery-ondemand/config/eu-2"):
            assert not allowed(policies, "ssm:GetParameter", f"{parameter}{name}"), name


def test_the_deployments_broker_secrets_are_readable(deployments: Stack) -> None:
    policies = deployments.policies("AutoscalerFunctionRole")
    for secret in (SECRET_ARN, f"{SECRET_ARN}2"):
        assert allowed(policies, "secretsmanager:GetSecretValue", secret)
    assert not allowed(policies, "secretsmanager:GetSecretValue", f"{SECRET_ARN}3")


def test_queued_ticks_of_several_deployments_may_run_side_by_side(deployments: Stack) -> None:
    mapping = deployments.resource("QueuedTicks")
    assert str(mapping["ScalingConfig"]["MaximumConcurrency"]) == "3"


def test_every_alarm_watches_every_deployment(deployments: Stack) -> None:
    alarms = {name: deployments.resource(name) for name, r in
              deployments.template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert len(alarms) == 5
    errors = alarms["ErrorsAlarm"]["Metrics"][0]["Expression"]
    # Every deployment of the namespace, in the syntax Metrics Insights documents (no OR).
    assert errors == 'SELECT SUM(Errors) FROM SCHEMA("CeleryOnDemand", deployment)'
    over_wait = alarms["QueueOverWaitTargetAlarm"]["Metrics"][0]["Expression"]
    assert over_wait == 'SELECT MAX(QueuesOverWaitTarget) FROM SCHEMA("CeleryOnDemand", deployment)'
    ticks = alarms["NoSuccessfulTickAlarm"]
    assert "MetricName" not in ticks and ticks["TreatMissingData"] == "breaching"
    assert [m["Id"] for m in ticks["Metrics"] if m["ReturnData"]] == ["missing"]
    for name, alarm in alarms.items():
        assert "MetricName" not in alarm or alarm["Namespace"] == "AWS/Lambda", name
