"""The cost model's arithmetic, on cases computed by hand (us-east-1 list prices)."""

from __future__ import annotations

import json

import pytest

from celery_ondemand.cost import (
    PRICES,
    Deployment,
    TickUsage,
    item_bytes,
    metric_streams,
    monthly_bill,
    read_units,
    write_units,
)

TICK = TickUsage(seconds=1.0, write_units=10, read_units=1, log_bytes=1000, metric_streams=2)
BUSY = TickUsage(seconds=0.5, write_units=12, read_units=1, log_bytes=3000, metric_streams=14)


def test_a_month_at_rest_by_hand() -> None:
    bill = monthly_bill(BUSY, TICK, Deployment(memory_mb=1024, busy_fraction=0.0))
    ticks = 43_800  # one a minute, 730 hours
    expected = {
        "Lambda duration": ticks * 1.0 * 1.0 * 0.0000133334,
        "Lambda requests": ticks * 0.20 / 1e6,
        "EventBridge Scheduler": ticks * 1.00 / 1e6,
        "SQS (queued ticks, polling)": ticks * 15 * 0.40 / 1e6,  # polling only
        "DynamoDB": ticks * 10 * 0.625 / 1e6 + ticks * 1 * 0.125 / 1e6,
        "CloudWatch metrics": 2 * 0.30,
        "CloudWatch Logs": ticks * (1000 + 350) / 1e9 * (0.50 + 0.03),
        "CloudWatch alarms": 5 * 0.10,
        "CloudWatch dashboard": 3.00,
        "Secrets Manager": 0.40 + 730 * 12 * 0.05 / 1e4,
        "X-Ray": 0.0,
    }
    assert bill.lines == pytest.approx(expected)
    assert bill.total == pytest.approx(sum(expected.values()))


def test_a_busy_month_ticks_every_interval_each_in_its_own_invocation() -> None:
    bill = monthly_bill(BUSY, TICK, Deployment(memory_mb=256, busy_fraction=1.0,
                                               tracing=True, dashboard=False))
    ticks, queued = 43_800 * 4, 43_800 * 3
    assert bill.lines["Lambda duration"] == pytest.approx(ticks * 0.5 * 0.25 * 0.0000133334)
    assert bill.lines["Lambda requests"] == pytest.approx(ticks * 0.20 / 1e6)
    assert bill.lines["SQS (queued ticks, polling)"] == pytest.approx(
        (43_800 * 15 + 43_800 + 2 * queued) * 0.40 / 1e6)  # polls, a send a minute, each taken
    assert bill.lines["CloudWatch metrics"] == pytest.approx(14 * 0.30)
    assert bill.lines["X-Ray"] == pytest.approx(ticks * 5.00 / 1e6)
    assert bill.lines["CloudWatch dashboard"] == 0.0


def test_half_busy_bills_the_busy_streams_half_the_hours() -> None:
    half = monthly_bill(BUSY, TICK, Deployment(busy_fraction=0.5))
    assert half.lines["CloudWatch metrics"] == pytest.approx((2 + 12 * 0.5) * 0.30)
    assert half.lines["Lambda requests"] == pytest.approx((21_900 * 4 + 21_900) * 0.20 / 1e6)


def test_without_idle_return_rest_ticks_as_often_as_work() -> None:
    always = monthly_bill(BUSY, TICK, Deployment(busy_fraction=0.0, idle_return=False))
    assert always.lines["Lambda requests"] == pytest.approx(43_800 * 4 * 0.20 / 1e6)


def test_every_price_names_where_aws_publishes_it() -> None:
    assert all(p.source.startswith("https://aws.amazon.com/") and p.dollars > 0
               for p in PRICES.values())


def test_dynamodb_item_sizes_and_units_by_the_developer_guide() -> None:
    item = {"pk": {"S": "deployment#prod"}, "expires_at": {"N": "1700000000.5"},
            "record": {"B": b"x" * 900}}
    # "pk" 2 + 15; "expires_at" 10 + (11 significant digits -> 6 + 1); "record" 6 + 900
    assert item_bytes(item) == 17 + 17 + 906
    assert write_units("PutItem", {"Item": item}) == 1
    assert write_units("PutItem", {"Item": {**item, "more": {"S": "y" * 100}}}) == 2
    assert write_units("TransactWriteItems", {"TransactItems": [
        {"ConditionCheck": {"Key": {}}}, {"Put": {"Item": item}}]}) == 4
    assert write_units("DeleteItem", {"Key": {}}) == 1
    big = {"Items": [{"record": {"S": "z" * 3000}}, {"record": {"S": "z" * 3000}}]}
    assert read_units("Query", {"ConsistentRead": True}, big) == 2
    assert read_units("Query", {}, big) == 1
    assert read_units("GetItem", {"ConsistentRead": True}, {}) == 1


def test_metric_streams_are_counted_by_name_and_dimension_values() -> None:
    def blob(target: str, *names: str) -> str:
        return json.dumps({"_aws": {"CloudWatchMetrics": [{
            "Namespace": "N", "Dimensions": [["deployment", "target"]],
            "Metrics": [{"Name": n} for n in names]}]}, "deployment": "d", "target": target})

    lines = [blob("a", "Ready", "LiveWorkers"), blob("a", "Ready"), blob("b", "Ready"),
             "not json", '{"message": "tick"}']
    assert len(metric_streams(lines)) == 3
