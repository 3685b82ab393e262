"""From zero and while workers start: the policy asks for what the work needs, no more."""

from __future__ import annotations

from celery_ondemand import TargetMemory
from celery_ondemand.decide import decide
from tests.support.observations import observation, settings, worker

NOW = 10_000.0


def test_from_zero_the_remembered_concurrency_sizes_the_target() -> None:
    config = settings(max_workers=20)  # worker_concurrency not configured
    _, memory = decide(observation({"q": (0, 0)}, [worker("w0", ["q"], concurrency=4)]),
                       config, {}, NOW, current={"t": 1})
    assert memory["t"].concurrency == 4
    memory["t"].idle_since = None
    decisions, _ = decide(observation({"q": (8, 0)}), config, memory, NOW + 600,
                          current={"t": 0})
    assert (decisions[0].desired, decisions[0].rule) == (2, "from-zero"), \
        "8 tasks at 4 slots a worker: 2 workers, not 8"


def test_an_old_task_adds_no_worker_while_the_ones_asked_for_start() -> None:
    config = settings(worker_concurrency=1, max_workers=20, target_wait_seconds=60)
    started = [worker("w0", ["q"], active=1)]
    memory = {"t": TargetMemory(last_up_at=NOW - 20, workers_seen=["w0"])}
    waiting = observation({"q": (2, 1)}, started, ages={"q": 300.0})
    decisions, _ = decide(waiting, config, memory, NOW, current={"t": 3})
    assert (decisions[0].desired, decisions[0].rule) == (3, "starting")
    # Long after the ask, a worker still missing is not starting: the age rule adds one.
    memory = {"t": TargetMemory(last_up_at=NOW - 600, workers_seen=["w0"])}
    decisions, _ = decide(waiting, config, memory, NOW, current={"t": 3})
    assert (decisions[0].desired, decisions[0].rule) == (4, "age")
