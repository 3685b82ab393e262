"""A gap that touches some queues holds only the targets serving them."""

from __future__ import annotations

from celery_ondemand import TargetMemory
from celery_ondemand.config import settings_from_mapping
from celery_ondemand.decide import decide
from tests.support.observations import observation, worker


def test_a_queue_scoped_gap_holds_its_target_only() -> None:
    config = settings_from_mapping({"broker_url": "redis://h/0", "targets": [
        {"name": name, "queues": [name], "scaler": "local", "command": "c",
         "scale_down_delay_seconds": 0} for name in ("qa", "qb")]})
    observed = observation({"qa": (0, 0), "qb": (0, 0)},
                           [worker("a", ["qa"]), worker("b", ["qb"])])
    observed.add_problem("celery@x did not answer control (it consumes qa)", ["qa"])
    idle = {name: TargetMemory(idle_since=0.0, workers_seen=[name[-1]]) for name in ("qa", "qb")}
    decisions, _ = decide(observed, config, idle, 1000.0, current={"qa": 2, "qb": 2})
    by_target = {d.target: d for d in decisions}
    assert (by_target["qa"].desired, by_target["qa"].rule) == (2, "blind")
    assert (by_target["qb"].desired, by_target["qb"].rule) == (0, "idle")
    observed.add_problem("the broker blocks publishing")  # every target's
    decisions, _ = decide(observed, config, idle, 1000.0, current={"qa": 2, "qb": 2})
    assert [d.rule for d in decisions] == ["blind", "blind"]
