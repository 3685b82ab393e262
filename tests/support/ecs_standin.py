"""What ECS does that moto does not: run a service's tasks, as real ``celery worker``
processes, and honour the tasks' own scale-in protection.

moto keeps an ECS service's desired count but never launches a task. :class:`EcsStandIn`
plays the part of ECS for one service: it reads the desired count from moto, starts real
workers up to it and, on a scale-in, stops (SIGTERM, as ECS's StopTask does) only workers
whose task is not protected — ECS never stops a protected task to meet a lower count.

Each worker's bootstep sets its protection through the ECS agent's endpoint
(``$ECS_AGENT_URI/task-protection/v1/state``), which exists only inside a real ECS task:
:class:`AgentEndpoint` answers that one call on 127.0.0.1 and records what it was told.
This is the only faked part; the workers, the broker and the service are real or moto.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.workers import Fleet, Worker


class AgentEndpoint:
    """The ECS agent's task-protection endpoint for many tasks, one URL prefix each."""

    def __init__(self) -> None:
        self.protected: dict[str, bool] = {}
        self.calls = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                task = self.path.split("/")[2]  # /task/<id>/task-protection/v1/state
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.protected[task] = bool(body.get("ProtectionEnabled"))
                endpoint.calls += 1
                answer = json.dumps({"protection": {"ProtectionEnabled":
                                                    endpoint.protected[task]}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def uri(self, task: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/task/{task}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class EcsStandIn:
    """Runs one moto ECS service's tasks as real workers on ``queues``."""

    def __init__(self, ecs: Any, fleet: Fleet, queues: list[str], *, cluster: str,
                 service: str, env: dict[str, str]) -> None:
        self.ecs, self.fleet, self.queues = ecs, fleet, queues
        self.cluster, self.service, self.env = cluster, service, env
        self.agent = AgentEndpoint()
        self.tasks: dict[str, Worker] = {}
        self.started = 0
        self.stopped: list[str] = []

    @property
    def running(self) -> list[str]:
        return [task for task, worker in self.tasks.items() if worker.process.poll() is None]

    def reconcile(self) -> int:
        """Start or stop workers towards the service's desired count; returns it."""
        desired = int(self.ecs.describe_services(
            cluster=self.cluster, services=[self.service])["services"][0]["desiredCount"])
        running = self.running
        for _ in range(desired - len(running)):
            self.started += 1
            task = f"task{self.started}"
            self.tasks[task] = self.fleet.start(
                self.queues, name=task, concurrency=1, wait=False,
                env={**self.env, "ECS_AGENT_URI": self.agent.uri(task)})
        excess = len(running) - desired
        for task in [t for t in running if not self.agent.protected.get(t)][:max(0, excess)]:
            self.stopped.append(task)
            self.tasks[task].process.terminate()  # StopTask: SIGTERM, a warm shutdown
        return desired

    def close(self) -> None:
        self.fleet.stop()
        self.agent.close()
