"""Every rule of the decision, one named case each (table-driven, as KEDA's scalers are)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from celery_ondemand import ConfigError, Observation, TargetMemory
from celery_ondemand.decide import build_agents, decide
from tests.support.observations import observation, settings, worker

NOW = 10_000.0


@dataclass
class Case:
    name: str
    observed: Observation | None
    current: int
    want_desired: int
    want_rule: str
    config: dict[str, Any] = field(default_factory=dict)
    memory: TargetMemory = field(default_factory=TargetMemory)


def busy_workers(n: int, active: int = 4) -> list[Any]:
    return [worker(f"w{i}", ["q"], active=active) for i in range(n)]


def missing_queue() -> Observation:
    """An SQS read (no workers to hear) of a queue the broker says does not exist."""
    observed = observation({"q": (0, 0), "kept": (0, 0)})
    observed.sources = ["broker"]
    observed.queues["q"].missing = True
    return observed


CASES = [
    Case("first task scales from zero in one tick", observation({"q": (1, 0)}), 0, 1,
         "from-zero", {"worker_concurrency": 4}),
    Case("backlog: one worker per concurrency slots of work",
         observation({"q": (12, 4)}, busy_workers(1)), 1, 4, "backlog",
         {"worker_concurrency": 4}),
    Case("concurrency learned from the workers when not configured",
         observation({"q": (12, 4)}, [worker("w0", ["q"], active=4, concurrency=8)]), 1, 2,
         "backlog"),
    Case("up fast but capped per tick", observation({"q": (100, 2)}, busy_workers(2, 1)), 2, 6,
         "step-cap", {"worker_concurrency": 1, "max_workers": 50}),
    Case("small changes inside the tolerance band do nothing",
         observation({"q": (0, 36)}, busy_workers(9)), 10, 10, "tolerance",
         {"worker_concurrency": 4, "tolerance": 0.1}),
    Case("down slow: hold the highest recommendation of the window",
         observation({"q": (0, 16)}, busy_workers(4)), 8, 8, "stabilizing",
         {"worker_concurrency": 4, "stabilization_seconds": 45},
         TargetMemory(recommendations=[[NOW - 30, 8]], workers_seen=["w0", "w1", "w2", "w3"])),
    Case("down once the window has passed, keeping the tolerance spare",
         observation({"q": (0, 16)}, busy_workers(4)), 8, 5, "backlog",
         {"worker_concurrency": 4},
         TargetMemory(recommendations=[[NOW - 400, 8]], workers_seen=["w0", "w1", "w2", "w3"])),
    Case("idle, but not for long enough", observation({"q": (0, 0)}, [worker("w0", ["q"])]), 1,
         1, "idle-wait", {}, TargetMemory(idle_since=NOW - 100, workers_seen=["w0"])),
    Case("idle for the delay: down to min_workers",
         observation({"q": (0, 0)}, [worker("w0", ["q"])]), 1, 0, "idle", {},
         TargetMemory(idle_since=NOW - 301, workers_seen=["w0"])),
    Case("first idle tick starts the clock", observation({"q": (0, 0)}, [worker("w0", ["q"])]),
         1, 1, "idle-wait"),
    Case("the oldest task's age adds a worker", observation({"q": (1, 4)}, busy_workers(2, 2),
                                                           ages={"q": 120.0}),
         2, 3, "age", {"worker_concurrency": 4, "target_wait_seconds": 60},
         TargetMemory(workers_seen=["w0", "w1"])),
    # 30 ready, 4/s arriving, 0.5/s per worker, T = 60 s, goal 45 s: a task arriving within
    # the next 60 s starts within 45 s with N >= (30 + 4 * 60) / (0.5 * (45 + 60)) = 5.14.
    Case("measured rates size the target to start tasks within the goal",
         observation({"q": (30, 8)}, busy_workers(4, 2)), 4, 6, "throughput",
         {"worker_concurrency": 4, "target_wait_seconds": 60},
         TargetMemory(service_rate=0.5, arrival_rate=4.0, workers_seen=["w0", "w1", "w2", "w3"],
                      work=38, ready=30)),
    # At 2/s: (30 + 120) / 52.5 = 2.86 workers, so 3 hold. The same mean with a spread of
    # 10 tasks per 15 s tick is 20 tasks over 60 s more to plan for: (150 + 20) / 52.5 = 3.24.
    Case("the spread of arrivals is planned for",
         observation({"q": (30, 6)}, busy_workers(3, 2)), 3, 4, "throughput",
         {"worker_concurrency": 4, "target_wait_seconds": 60},
         TargetMemory(service_rate=0.5, arrival_rate=2.0, workers_seen=["w0", "w1", "w2"],
                      work=36, ready=30, arrivals_sum=300, elapsed_sum=150, arrival_ticks=10,
                      arrivals_sq_sum=10 * (30**2 + 10**2))),
    Case("without the spread the same load holds",
         observation({"q": (30, 6)}, busy_workers(3, 2)), 3, 3, "tolerance",
         {"worker_concurrency": 4, "target_wait_seconds": 60},
         TargetMemory(service_rate=0.5, arrival_rate=2.0, workers_seen=["w0", "w1", "w2"],
                      work=36, ready=30)),
    # Nothing ready, 1.2/s arriving, 0.8/s per worker: a queue may build within the goal
    # for the next 60 s on (1.2 * 60) / (0.8 * (40.5 + 60)) = 0.9 workers, with the
    # tolerance's 10 % of the goal held back: one worker, not two (1.5 would keep up).
    Case("a load between two counts runs on the lower while a queue builds within the goal",
         observation({"q": (0, 1)}, [worker("w0", ["q"], active=1), worker("w1", ["q"])]),
         2, 1, "throughput", {"worker_concurrency": 4, "target_wait_seconds": 60},
         TargetMemory(service_rate=0.8, arrival_rate=1.2, workers_seen=["w0", "w1"],
                      work=1, ready=0)),
    Case("never below the busy workers", observation({"q": (0, 3)}, busy_workers(3, 1)), 5, 3,
         "busy-floor", {"worker_concurrency": 4},
         TargetMemory(workers_seen=["w0", "w1", "w2"])),
    Case("busy floor over a policy that would cut busy workers",
         observation({"q": (0, 0)}, [worker("w0", ["q"], active=1)]), 1, 1, "busy-floor",
         {"policy": "cwod"}),
    # The blind cases start idle far past scale_down_delay_seconds (300 s): only the blind
    # rule stands between them and a scale-down to min_workers.
    Case("a broker that cannot be read holds", None, 3, 3, "blind", {},
         TargetMemory(idle_since=NOW - 3600, workers_seen=["w0", "w1", "w2"], last_desired=3)),
    Case("a partial read of a long-idle target holds",
         observation({"q": (0, 0)}, [worker("w0", ["q"])],
                     problems=["w9 did not answer control"]), 3, 3, "blind", {},
         TargetMemory(idle_since=NOW - 3600, workers_seen=["w0"], last_desired=3)),
    Case("a long-idle target with a worker gone unheard holds",
         observation({"q": (0, 0)}, [worker("w0", ["q"])]), 2, 2, "blind", {},
         TargetMemory(idle_since=NOW - 3600, workers_seen=["w0", "gone"], last_desired=2)),
    Case("a long-idle target with a queue not read holds",
         observation({"other": (0, 0)}, [worker("w0", ["q"])]), 1, 1, "blind", {},
         TargetMemory(idle_since=NOW - 3600, workers_seen=["w0"], last_desired=1)),
    Case("a partial read never scales down",
         observation({"q": (0, 1)}, busy_workers(1, 1), problems=["w9 did not answer control"]),
         4, 4, "blind", {"worker_concurrency": 4}),
    Case("a worker seen last tick and missing now makes the read partial",
         observation({"q": (0, 1)}, busy_workers(1, 1)), 4, 4, "blind",
         {"worker_concurrency": 4}, TargetMemory(workers_seen=["w0", "gone"])),
    Case("a queue the broker cannot find while workers run holds a long-idle target",
         missing_queue(), 2, 2, "blind", {},
         TargetMemory(idle_since=NOW - 3600, last_desired=2)),
    Case("a queue the broker cannot find with no worker is an empty one",
         missing_queue(), 0, 0, "idle", {}, TargetMemory(idle_since=NOW - 3600)),
    Case("one queue of a target's two gone (a retired queue) is an empty one",
         missing_queue(), 2, 0, "idle", {"queues": ["q", "kept"]},
         TargetMemory(idle_since=NOW - 3600, last_desired=2)),
    Case("fallback after enough blind ticks", None, 0, 2, "fallback",
         {"fallback_workers": 2, "fallback_after_failures": 2}, TargetMemory(failed_reads=1)),
    Case("a ceiling lowered while the broker cannot be read waits for a read", None, 5, 5,
         "blind", {"max_workers": 2},
         TargetMemory(idle_since=NOW - 3600, workers_seen=["w0"], last_desired=5)),
    Case("a ceiling lowered during a partial read waits for a whole one",
         observation({"q": (0, 1)}, busy_workers(1, 1), problems=["w9 did not answer control"]),
         4, 4, "blind", {"worker_concurrency": 4, "max_workers": 1}),
    Case("a ceiling lowered applies once the read is whole",
         observation({"q": (20, 1)}, busy_workers(1, 1)), 4, 1, "bounds",
         {"worker_concurrency": 4, "max_workers": 1}),
    Case("max_workers always holds", observation({"q": (500, 0)}), 0, 3, "bounds",
         {"max_workers": 3, "scale_up_max_step": 100}),
    Case("min_workers always holds", observation({"q": (0, 0)}), 0, 2, "bounds",
         {"min_workers": 2}),
    Case("paused decides nothing", observation({"q": (50, 0)}), 1, 1, "paused",
         {"paused": True}),
    Case("cwod: tasks and no worker → one more", observation({"q": (5, 0)}), 0, 1, "flag_up",
         {"policy": "cwod"}),
    Case("cwod: wait for a started worker instead of adding another",
         observation({"q": (5, 0)}), 1, 1, "starting", {"policy": "cwod"}),
    Case("cwod: empty and served → one fewer",
         observation({"q": (0, 0)}, [worker("w0", ["q"])]), 1, 0, "flag_down",
         {"policy": "cwod"}),
    Case("a user's Agent subclass is honoured",
         observation({"q": (11, 0)}, [worker("w0", ["q"])]), 1, 2, "flag_up",
         {"policy": "tests.support.agents:BigQueueAgent"}),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_rule(case: Case) -> None:
    config = settings(**case.config)
    decisions, _ = decide(case.observed, config, {"t": case.memory}, NOW,
                          current={"t": case.current})
    decision = decisions[0]
    assert (decision.desired, decision.rule) == (case.want_desired, case.want_rule), \
        decision.reason
    assert decision.reason


def test_dry_run_decides_and_says_it_will_not_act() -> None:
    decisions, _ = decide(observation({"q": (3, 0)}), settings(dry_run=True), {}, NOW)
    assert decisions[0].action == "up" and decisions[0].dry_run
    serialized = decisions[0].serializer()
    assert {"target", "current", "desired", "action", "reason", "dry_run"} <= set(serialized)


def test_rates_are_measured_between_ticks() -> None:
    config = settings(worker_concurrency=4)
    first = observation({"q": (20, 8)}, [worker("a", ["q"], active=4, processed=0),
                                         worker("b", ["q"], active=4, processed=0)])
    _, memory = decide(first, config, {}, 0.0)
    second = observation({"q": (15, 8)}, [worker("a", ["q"], active=4, processed=10),
                                          worker("b", ["q"], active=4, processed=10)])
    _, memory = decide(second, config, memory, 10.0)
    assert memory["t"].service_rate == pytest.approx(1.0)  # 20 tasks / 10 s / 2 workers
    assert memory["t"].arrival_rate == pytest.approx(1.5)  # (20 finished - 5 fewer) / 10 s
    assert (memory["t"].arrival_ticks, memory["t"].arrivals_sq_sum) == (1, 15**2)


def test_the_spread_of_arrivals_is_measured_from_the_ticks() -> None:
    steady = TargetMemory(arrivals_sum=300, elapsed_sum=150, arrival_ticks=10,
                          arrivals_sq_sum=10 * 30**2)
    assert steady.arrival_deviation(60) == 0, "30 every 15 s: no spread"
    bursty = TargetMemory(arrivals_sum=300, elapsed_sum=150, arrival_ticks=10,
                          arrivals_sq_sum=5 * 60**2)  # 60, 0, 60, 0...: same mean
    assert bursty.arrival_deviation(60) == pytest.approx(60.0)  # sqrt(900 * 60 / 15)
    assert TargetMemory(arrivals_sum=60, elapsed_sum=30, arrival_ticks=2,
                        arrivals_sq_sum=7200).arrival_deviation(60) == 0, "too few ticks"


def test_memory_round_trips_through_plain_data() -> None:
    _, memory = decide(observation({"q": (3, 1)}, [worker("a", ["q"], active=1)]), settings(),
                       {}, NOW)
    again = TargetMemory.from_dict({**memory["t"].to_dict(), "from_the_future": 1})
    assert again == memory["t"]


def test_a_policy_must_be_an_agent() -> None:
    with pytest.raises(ConfigError, match="is not a subclass of Agent"):
        build_agents(settings(policy="tests.support.agents:NotAnAgent"))
    with pytest.raises(ConfigError, match="cannot import"):
        build_agents(settings(policy="no_such_package.mod:Agent"))


def test_workers_the_platform_runs_but_nobody_hears_hold_the_target_after_the_grace() -> None:
    """Events off and control unanswered: ECS says 3 tasks run, 1 worker is heard. Within
    the startup grace they may be booting; past it, the read has a gap: no shrink."""
    config = settings(worker_concurrency=1, scale_down_delay_seconds=0,
                      startup_grace_seconds=120)
    quiet = observation({"q": (0, 0)}, [worker("w0", ["q"])])
    memory = {"t": TargetMemory(idle_since=NOW - 600, workers_seen=["w0"])}
    booting, after = decide(quiet, config, memory, NOW, current={"t": 3}, running={"t": 3})
    assert booting[0].action == "down", "within the grace: booting workers are no gap"
    assert after["t"].unheard_since == NOW
    memory["t"].unheard_since = NOW - 121
    held, _ = decide(quiet, config, memory, NOW, current={"t": 3}, running={"t": 3})
    assert (held[0].desired, held[0].rule) == (3, "blind")
    assert "3 running on the target but 1 workers heard" in held[0].reason
    heard, after = decide(quiet, config, memory, NOW, current={"t": 3}, running={"t": 1})
    assert heard[0].action == "down" and after["t"].unheard_since is None


def test_a_worker_draining_for_a_rollout_is_no_gap_while_it_finishes() -> None:
    """A drained worker consumes none of the target's queues while it finishes a long
    task, yet ECS still runs its task: saying which queues it drains, it is no gap in the
    read, past the startup grace too. One silent about it, or draining another target's
    queues, still is."""
    config = settings(worker_concurrency=1, startup_grace_seconds=120)
    old = worker("old", [], active=1)
    read = observation({"q": (0, 1)}, [worker("w0", ["q"], active=1), old])
    memory = {"t": TargetMemory(workers_seen=["old", "w0"], last_desired=1,
                                unheard_since=NOW - 600)}
    for told, gap in ((["q"], False), (None, True), (["elsewhere"], True)):
        old.draining = told
        decisions, after = decide(read, config, memory, NOW, current={"t": 2},
                                  running={"t": 2})
        problems = decisions[0].inputs["problems"]
        assert bool(problems) is gap, (told, problems)
        assert decisions[0].inputs["draining"] == (0 if gap else 1)
        assert (after["t"].unheard_since is None) is not gap
        if gap:
            assert "2 running on the target but 1 workers heard" in problems[-1]
        else:
            assert decisions[0].action == "hold"
