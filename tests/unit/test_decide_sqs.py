"""A broker on which no worker can be heard (SQS): liveness from the platform, the busy
floor from the queue's in-flight count, and never a permanent blind state."""

from __future__ import annotations

from celery_ondemand import Observation, QueueStatus, TargetMemory
from celery_ondemand.decide import decide
from tests.support.observations import settings

NOW = 10_000.0


def sqs(ready: int, in_flight: int) -> Observation:
    """What the observer reads from SQS: queue counts only, no workers, no replies."""
    observed = Observation(broker="sqs://", observed_at=NOW, sources=["broker"])
    observed.queues["q"] = QueueStatus("q", size=ready, hidden=in_flight, running=None,
                                       reserved=None)
    return observed


CONFIG = settings(worker_concurrency=2, scale_down_delay_seconds=60, stabilization_seconds=0,
                  startup_grace_seconds=30)


def test_tasks_the_platform_runs_unheard_are_no_gap_where_nobody_can_be_heard() -> None:
    memory = {"t": TargetMemory(unheard_since=NOW - 3600, idle_since=NOW - 3600)}
    decisions, after = decide(sqs(0, 0), CONFIG, memory, NOW, current={"t": 3},
                              running={"t": 3})
    assert (decisions[0].desired, decisions[0].rule) == (0, "idle")
    assert decisions[0].inputs["problems"] == []
    assert after["t"].unheard_since is None


def test_messages_in_flight_hold_as_many_workers_as_may_be_busy() -> None:
    memory = {"t": TargetMemory(idle_since=None, observed_at=NOW - 15, work=2)}
    decisions, _ = decide(sqs(0, 2), CONFIG, memory, NOW, current={"t": 3},
                          running={"t": 3})
    # Two messages could be on two workers, even at two slots each: keep two.
    assert decisions[0].desired == 2 and decisions[0].inputs["busy"] == 2
    decisions, _ = decide(sqs(0, 5), CONFIG, memory, NOW, current={"t": 3},
                          running={"t": 3})
    assert decisions[0].desired == 3, "never more busy than the platform runs"


def test_a_gap_measured_by_the_platform_ends_when_the_workers_are_heard_again() -> None:
    """On a broker where workers are heard, the gap is a problem; the memory of it must
    still clear once the platform and the workers agree."""
    from tests.support.observations import observation, worker

    memory = {"t": TargetMemory(unheard_since=NOW - 100)}
    decisions, after = decide(observation({"q": (0, 0)}, [worker("w0", ["q"])], at=NOW),
                              CONFIG, memory, NOW, current={"t": 2}, running={"t": 2})
    assert "2 running on the target but 1 workers heard" in decisions[0].inputs["problems"][0]
    _, after = decide(observation({"q": (0, 0)}, [worker("w0", ["q"]), worker("w1", ["q"])],
                                  at=NOW), CONFIG, after, NOW + 15, current={"t": 2},
                      running={"t": 2})
    assert after["t"].unheard_since is None
