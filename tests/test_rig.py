"""The load rig's workers look, on the wire, like ``celery worker``: every reply the
observer asks for and the heartbeat compared key by key with a real worker's, on a real
(private) Redis."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from typing import Any

import redis
from celery import Celery

from tests.support.brokers import private_redis, producer_app
from tests.support.rig import plan, start_rig
from tests.support.workers import Fleet

COMMANDS = ("ping", "active_queues", "active", "reserved", "scheduled", "stats")


def shape(value: Any, path: str = "") -> set[str]:
    """Every key path of a reply, with the type of what it holds (lists by their first
    item): two replies of the same shape give the same set."""
    if isinstance(value, dict):
        found = {f"{path}.{key}" for key in value}
        for key, item in value.items():
            found |= shape(item, f"{path}.{key}")
        return found
    if isinstance(value, list | tuple):
        return {f"{path}[]"} | (shape(value[0], f"{path}[]") if value else set())
    return {f"{path}:{type(value).__name__ if value is not None else 'None'}"}


def test_rig_replies_as_a_real_worker_does() -> None:
    with private_redis() as port:
        url = f"redis://127.0.0.1:{port}/0"
        fleet = Fleet(url)
        real = fleet.start(["real"], concurrency=1, prefetch=2)
        (hostname, _), = workers = plan(1, ["simulated"], per_worker=1)
        rig = start_rig(url, workers, concurrency=1, prefetch=2, timeout=60)
        producer = producer_app(url)
        app = Celery("compare", broker=url, set_as_current=False)
        try:
            for queue in ("real", "simulated"):  # one running, one prefetched behind it
                for _ in range(2):
                    producer.send_task("tests.sleep", args=(30,), queue=queue)
            beats = _heartbeats(app, {real.hostname, hostname})
            time.sleep(1.0)
            replies = {}
            for command in COMMANDS:
                inspect = app.control.inspect(destination=[real.hostname, hostname],
                                              limit=2, timeout=5)
                replies[command] = getattr(inspect, command)() or {}
                assert set(replies[command]) == {real.hostname, hostname}, command
        finally:
            rig.stop()
            for worker in fleet.workers:
                worker.kill()
            fleet.stop()
            producer.close()
            app.close()
    assert replies["active"][hostname] and replies["reserved"][hostname]  # it holds work
    assert replies["active"][real.hostname] and replies["reserved"][real.hostname]
    for command in COMMANDS:
        assert shape(replies[command][hostname]) == shape(replies[command][real.hostname]), \
            command
    started = [replies["active"][host][0]["time_start"] for host in (hostname, real.hostname)]
    assert abs(started[0] - started[1]) < 30  # both on the epoch clock
    assert set(beats[hostname]) == set(beats[real.hostname])
    assert beats[hostname]["freq"] == beats[real.hostname]["freq"] == 2.0


def _heartbeats(app: Celery, hostnames: set[str]) -> dict[str, dict[str, Any]]:
    """The first scheduled heartbeat (with counters) of each worker."""
    beats: dict[str, dict[str, Any]] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "worker-heartbeat" and "active" in event:
            beats.setdefault(event["hostname"], event)

    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": on_event})
        deadline = time.monotonic() + 10
        while not hostnames <= beats.keys() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):  # an idle second ends the capture
                for _ in receiver.itercapture(limit=None, timeout=1, wakeup=False):
                    if hostnames <= beats.keys() or time.monotonic() > deadline:
                        break
    return beats


def test_rig_reply_messages_are_celerys_on_the_wire() -> None:
    """Redis: the rig pushes its replies in one pipeline a socket read (``RedisBatch``); each
    message in the reply list is still the one a real worker pushes, field by field (only
    the delivery tag and the clock differ, as they do between any two replies)."""
    with private_redis() as port:
        url = f"redis://127.0.0.1:{port}/0"
        fleet = Fleet(url)
        real = fleet.start(["real-wire"], concurrency=1, prefetch=2)
        (hostname, _), = workers = plan(1, ["simulated-wire"], per_worker=1)
        rig = start_rig(url, workers, concurrency=1, prefetch=2, timeout=60)
        app = Celery("wire", broker=url, set_as_current=False)
        client = redis.Redis(port=port)
        try:
            with app.connection_for_write() as connection:
                channel = connection.default_channel
                mailbox: Any = app.control.mailbox(connection)  # type: ignore[attr-defined]
                queue = mailbox.reply_queue(channel)
                queue.declare()
                mailbox._publish("ping", {}, reply_ticket="wire", channel=channel)
                deadline = time.monotonic() + 10
                while client.llen(queue.name) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                raw = [json.loads(item) for item in client.lrange(queue.name, 0, -1)]
        finally:
            rig.stop()
            for worker in fleet.workers:
                worker.kill()
            fleet.stop()
            app.close()
            client.close()
    by_host = {next(iter(json.loads(base64.b64decode(message["body"])))): message
               for message in raw}
    assert set(by_host) == {hostname, real.hostname}

    def wire(message: dict[str, Any]) -> dict[str, Any]:
        """The message with what differs between any two replies blanked out."""
        return {**message, "body": None, "headers": {**message["headers"], "clock": None},
                "properties": {**message["properties"], "delivery_tag": None}}

    assert wire(by_host[hostname]) == wire(by_host[real.hostname])
    assert by_host[hostname]["headers"]["ticket"] == "wire"
