"""The control round at scale, over the load rig on a private Redis: five commands in one
round, every reply of every worker named read (popped in bulk, or one by one where Redis
is older than 6.2), and those of a worker not named, and the observer hears and reads every
worker and queue without a gap."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from celery import Celery

from celery_ondemand import Observer
from celery_ondemand.observe.workers import INSPECTED, gather
from tests.support.brokers import private_redis
from tests.support.rig import plan, start_rig


def _as_before_redis_6_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """RPOP with a count answers as Redis 6.0 and older do: an error."""
    rpop = redis.Redis.rpop

    def old_rpop(self: redis.Redis, name: str, count: int | None = None) -> object:
        if count is not None:
            raise redis.exceptions.ResponseError("wrong number of arguments for 'rpop' command")
        return rpop(self, name)

    monkeypatch.setattr(redis.Redis, "rpop", old_rpop)


def _as_before_redis_6(monkeypatch: pytest.MonkeyPatch) -> None:
    """As Redis 5 answers too: no RPOP count, and a BRPOP timeout in whole seconds only
    (a fractional one goes to the server unchanged but for a suffix it refuses, as Redis 5
    refuses "0.5": an error naming the timeout)."""
    _as_before_redis_6_2(monkeypatch)
    brpop = redis.client.Pipeline.brpop

    def old_brpop(self: redis.client.Pipeline, keys: Any, timeout: float = 0) -> Any:
        if float(timeout) != int(timeout):
            names = [keys] if isinstance(keys, str | bytes) else list(keys)
            return self.execute_command("BRPOP", *names, f"{timeout}s")
        return brpop(self, keys, timeout)

    monkeypatch.setattr(redis.client.Pipeline, "brpop", old_brpop)


def test_one_round_reads_every_reply_of_the_workers_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with private_redis() as port:
        url = f"redis://127.0.0.1:{port}/0"
        names = [f"scale-{i}" for i in range(30)]
        workers = plan(60, names)
        rig = start_rig(url, workers, per_process=30, timeout=60)
        app = Celery("scale", broker=url, set_as_current=False)
        try:
            named = [hostname for hostname, _ in workers[1:]]
            # 5 s without a reply ends a round: what is tested here is that every reply is
            # read, not how fast 60 workers in two processes answer on a loaded machine.
            with app.connection_for_read() as connection:
                replies = gather(app, connection, named, INSPECTED, timeout=5.0)
                with monkeypatch.context() as patch:
                    _as_before_redis_6_2(patch)
                    one_by_one = gather(app, connection, named, INSPECTED, timeout=5.0)
                with monkeypatch.context() as patch:
                    _as_before_redis_6(patch)
                    whole_seconds = gather(app, connection, named, INSPECTED, timeout=5.0)
            with Observer(url) as observer:
                first = observer.observe()
                second = observer.observe(previous=first)
        finally:
            rig.stop()
            app.close()
    # Popped in bulk; one by one on a Redis older than 6.2; in whole seconds before 6.0.
    for read in (replies, one_by_one, whole_seconds):
        assert set(read) == set(INSPECTED)
        for command, by_host in read.items():
            # Every worker named; the one not named too if it answered before the end
            # (then awaited for all its replies).
            assert set(named) <= set(by_host) <= {h for h, _ in workers}, command
    for observation in (first, second):
        assert sorted(observation.live_workers) == sorted(h for h, _ in workers)
        assert sorted(observation.queues) == sorted(names)
        assert not observation.problems and not observation.queue_problems
        assert all(w.concurrency == 2 for w in observation.workers.values())
