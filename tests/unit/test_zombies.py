"""Zombies — live workers that take no task while their queue waits — are judged only on
reads without a gap: a partial read keeps the last whole read's memory, so a worker found
stalled then could be busy now, and replacing it would stop its running tasks."""

from __future__ import annotations

from celery_ondemand import TargetMemory
from celery_ondemand.decide import decide
from tests.support.observations import observation, settings, worker

CONFIG = settings(worker_concurrency=2, zombie_after_seconds=60)


def tick(observed: object, memory: dict[str, TargetMemory], now: float) -> tuple[
        tuple[str, ...], dict[str, TargetMemory]]:
    decisions, after = decide(observed, CONFIG, memory, now, current={"t": 1})  # type: ignore[arg-type]
    return decisions[0].zombies, after


def test_a_worker_stalled_past_the_limit_on_whole_reads_is_a_zombie() -> None:
    memory: dict[str, TargetMemory] = {}
    for now in (1000.0, 1030.0, 1060.0, 1090.0):  # stalled from the second read on
        zombies, memory = tick(observation({"q": (5, 0)}, [worker("w0", ["q"])]), memory, now)
    assert zombies == ("w0",)


def test_a_partial_read_flags_no_zombie_from_an_older_reads_memory() -> None:
    memory: dict[str, TargetMemory] = {}
    for now in (1000.0, 1030.0):  # stalled since 1030, on whole reads
        zombies, memory = tick(observation({"q": (5, 0)}, [worker("w0", ["q"])]), memory, now)
    assert zombies == ()
    # w0 runs two tasks now, but the read has a gap: the memory keeps the stall of 1030.
    partial = observation({"q": (3, 2)}, [worker("w0", ["q"], active=2, processed=1)],
                          problems=["w9 did not answer control"])
    zombies, _ = tick(partial, memory, 1090.0)
    assert zombies == (), "a worker judged on what it did before the gap, running tasks now"
