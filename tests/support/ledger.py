"""What the workers themselves record, outside the autoscaler: the ledger.

"A busy worker is never stopped" cannot be checked against the observation the scaler
chose from (it filtered on that very observation). A test therefore starts its workers
with ``ONDEMAND_TEST_LEDGER`` (a list name in the counter Redis of
``ONDEMAND_TEST_COUNTER``), and each worker appends JSON records to it:

- ``started`` / ``finished``: a task body began or ended (``task`` is its id, which a
  redelivered copy keeps);
- ``told to stop``: from Celery's ``worker_shutting_down`` signal (SIGTERM, SIGINT,
  SIGQUIT), with the tasks the worker was running at that moment (``running``: id and
  ``started_at``, the epoch time Celery accepted it, from the worker's own state).

A SIGKILL leaves no record: nothing runs in a killed process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def keep_ledger(redis_url: str, name: str) -> None:
    """Connect the worker's signals to the ledger (called by the test app at import)."""
    import redis
    from celery import signals

    def append(record: dict[str, Any]) -> None:
        redis.Redis.from_url(redis_url).rpush(name, json.dumps({**record, "at": time.time()}))

    @signals.task_prerun.connect(weak=False)
    def started(task_id: str, task: Any, **_: Any) -> None:
        append({"event": "started", "task": task_id, "worker": task.request.hostname})

    @signals.task_postrun.connect(weak=False)
    def finished(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
        append({"event": "finished", "task": task_id, "worker": task.request.hostname,
                "state": state})

    @signals.worker_shutting_down.connect(weak=False)
    def told_to_stop(sender: str, sig: str, how: str, **_: Any) -> None:
        from celery.worker import state

        running = [{"task": request.id, "started_at": request.time_start}
                   for request in list(state.active_requests)]
        append({"event": "told to stop", "worker": sender, "signal": sig, "how": how,
                "running": running})


@dataclass
class Ledger:
    """The records of one test's workers, in the order they were written."""

    records: list[dict[str, Any]]

    @classmethod
    def read(cls, redis_url: str, name: str) -> Ledger:
        import redis

        raw = redis.Redis.from_url(redis_url).lrange(name, 0, -1)
        return cls([json.loads(item) for item in raw])

    def stops(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] == "told to stop"]

    def finished(self) -> set[str]:
        return {r["task"] for r in self.records if r["event"] == "finished"}

    def stopped_while_running(self) -> list[str]:
        """Every worker told to stop while it ran a task: ``hostname: task ids``."""
        return [f"{r['worker']}: {', '.join(t['task'] for t in r['running'])}"
                for r in self.stops() if r["running"]]

    def stopped_busy(self, tick_starts: Sequence[float]) -> list[str]:
        """Workers the autoscaler told to stop although they were already running a task
        when the tick that stopped them began to look (``tick_starts``: each tick's start,
        epoch time).

        A task a worker took after the observation began could not be seen; warm shutdown
        lets it finish, which :meth:`unfinished_at_stop` checks. A task running since
        before the tick is one the observation saw (or should have): stopping its worker
        is the fault this finds.
        """
        found = []
        for record in self.stops():
            began = max((t for t in tick_starts if t <= record["at"]), default=None)
            if began is None:
                continue  # not stopped by a tick (the test's own teardown)
            early = [t["task"] for t in record["running"]
                     if t["started_at"] is None or t["started_at"] < began]
            if early:
                found.append(f"{record['worker']} (running {', '.join(early)} since before "
                             f"the tick at {began:.3f})")
        return found

    def unfinished_at_stop(self) -> list[str]:
        """Tasks running when their worker was told to stop that never finished anywhere
        (neither by warm shutdown nor as a redelivered copy)."""
        done = self.finished()
        return [t["task"] for r in self.stops() for t in r["running"] if t["task"] not in done]

    def repeats_unexplained(self, killed: set[str], outage: tuple[float, float],
                            slack: float = 1.0, reconnect: float = 20.0) -> list[str]:
        """Completed runs of a task that was completed again later, where no at-least-once
        excuse holds. The excuses: the run's worker was SIGKILLed (in ``killed``); or the
        run was under way while the broker was down (``outage``: when it stopped, when it
        answered again; ``slack`` seconds before for an acknowledgement in flight); or the
        run began within ``reconnect`` seconds after the broker came back, on a worker
        that was running before it went down — a task delivered before the outage and
        held in the worker's prefetch runs once the worker has reconnected, and its
        acknowledgement, due on the channel the restart closed, cannot be sent (Celery
        logs "Couldn't ack … connection already closed"): the broker hands it out again."""
        down, up = outage
        first_seen: dict[str, float] = {}
        for record in self.records:
            worker = record.get("worker")
            if worker is not None:
                first_seen[worker] = min(record["at"], first_seen.get(worker, record["at"]))
        runs: dict[str, list[tuple[float, float, str]]] = {}
        for record in self.records:
            if record["event"] != "finished":
                continue
            start = max((r["at"] for r in self.records if r["event"] == "started"
                         and r["task"] == record["task"] and r["worker"] == record["worker"]
                         and r["at"] <= record["at"]), default=record["at"])
            runs.setdefault(record["task"], []).append((start, record["at"],
                                                        record["worker"]))
        found = []
        for task, completed in runs.items():
            for start, end, worker in sorted(completed, key=lambda run: run[1])[:-1]:
                if worker in killed or (start <= up and end >= down - slack):
                    continue
                if first_seen[worker] < down and up < start <= up + reconnect:
                    continue
                found.append(f"{task} completed on {worker} ({start:.3f}-{end:.3f}) "
                             "and again later")
        return found
