"""An optional signal that cannot be read holds scale-in only: the Auto Scaling group's
instance refreshes, which a moto server answers with HTTP 500 (it lacks the call; here the
suite's usual answer at the client boundary is left out, so the real 500 comes back)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from celery_ondemand import TargetMemory
from celery_ondemand.act.asg import ASGScaler
from celery_ondemand.tick import Ticker
from tests.support.aws import InstanceRefreshes, auto_scaling_group
from tests.support.observations import ScriptedObserver, observation, settings, worker


@pytest.fixture
def raw_clients(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Clients of a fresh session without the suite's DescribeInstanceRefreshes answer."""
    from botocore import handlers

    monkeypatch.setattr(handlers, "BUILTIN_HANDLERS",
                        [h for h in handlers.BUILTIN_HANDLERS if h[1] != InstanceRefreshes.answer])
    session = boto3.session.Session()
    return {name: session.client(name) for name in ("autoscaling", "ec2")}


def ticker_for(clients: dict[str, Any], observed: Any) -> Ticker:
    config = settings(scaler="asg", auto_scaling_group="workers", command=None,
                      worker_concurrency=1, max_workers=6, scale_down_delay_seconds=0,
                      stabilization_seconds=0)
    scaler = ASGScaler(config.targets[0], clients["autoscaling"], clients["ec2"])
    return Ticker(config, observer=ScriptedObserver(observed), scalers={"t": scaler})


def desired(clients: dict[str, Any]) -> int:
    group = clients["autoscaling"].describe_auto_scaling_groups(
        AutoScalingGroupNames=["workers"])["AutoScalingGroups"][0]
    return int(group["DesiredCapacity"])


def test_unreadable_refreshes_let_a_backlog_scale_out(raw_clients: dict[str, Any]) -> None:
    auto_scaling_group(raw_clients["autoscaling"], raw_clients["ec2"], desired=2)
    ticker = ticker_for(raw_clients, observation({"q": (5, 0)}))
    result = ticker.tick(now=1000.0)
    assert result.ok, result.target_errors
    assert result.decisions[0].action == "up" and desired(raw_clients) == 5


def test_unreadable_refreshes_hold_scale_in(raw_clients: dict[str, Any]) -> None:
    auto_scaling_group(raw_clients["autoscaling"], raw_clients["ec2"], desired=2)
    idle = [worker("w0", ["q"]), worker("w1", ["q"])]
    ticker = ticker_for(raw_clients, observation({"q": (0, 0)}, idle))
    ticker.memory = {"t": TargetMemory(idle_since=0.0, workers_seen=["w0", "w1"])}
    result = ticker.tick(now=1000.0)
    decision = result.decisions[0]
    assert result.ok and (decision.desired, decision.rule) == (2, "rollout")
    assert "instance refreshes could not be read" in decision.reason
    assert desired(raw_clients) == 2
