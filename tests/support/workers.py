"""Real ``celery worker`` processes for the tests, started and stopped by PID.

Each worker runs the app in :mod:`tests.support.proj` with a unique node name, so tests
sharing a broker never mistake each other's workers for their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Worker:
    """One running worker process."""

    hostname: str
    queues: list[str]
    process: subprocess.Popen[bytes]
    log: Path
    concurrency: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_ready(self) -> bool:
        return "ready." in self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the worker vanishes without a word, as a crashed machine does."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (warm shutdown), then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class Fleet:
    """Workers started together against one broker; stop them all with :meth:`stop`."""

    broker_url: str
    workers: list[Worker] = field(default_factory=list)
    logdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="workers-")))

    def start(self, queues: Sequence[str], *, concurrency: int = 2, name: str = "w",
              pool: str = "threads", prefetch: int = 1, events: bool = False,
              wait: bool = True, env: dict[str, str] | None = None,
              options: Sequence[str] = (), host: str = "ondemand-test") -> Worker:
        """Start one worker consuming ``queues``; by default wait until it is ready.

        ``host`` is its node name's host part (``celery@<host>`` is how a worker on ECS or
        EC2 names its task or instance)."""
        hostname = f"{name}-{uuid.uuid4().hex[:8]}@{host}"
        log = self.logdir / f"{hostname}.log"
        env = {**os.environ, "ONDEMAND_TEST_BROKER": self.broker_url,
               "ONDEMAND_TEST_PREFETCH": str(prefetch), "PYTHONPATH": str(ROOT), **(env or {})}
        command = [sys.executable, "-m", "celery", "-A", "tests.support.proj", "worker",
                   "-n", hostname, "-Q", ",".join(queues), "-c", str(concurrency),
                   "-P", pool, "--loglevel", "INFO", "--without-mingle", "--without-gossip"]
        if events:
            command.append("-E")
        command += list(options)
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
        worker = Worker(hostname, list(queues), process, log, concurrency)
        self.workers.append(worker)
        if wait:
            self.wait_ready([worker])
        return worker

    def wait_ready(self, workers: Iterable[Worker] | None = None, timeout: float = 60.0) -> None:
        pending = list(workers if workers is not None else self.workers)
        deadline = time.monotonic() + timeout
        while pending:
            pending = [w for w in pending if not w.is_ready()]
            for worker in pending:
                if worker.process.poll() is not None:
                    raise RuntimeError(f"worker {worker.hostname} exited:\n"
                                       f"{worker.log.read_text(errors='replace')}")
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"workers not ready: {[w.hostname for w in pending]}")
            time.sleep(0.1)

    def stop(self, grace: float = 5.0) -> None:
        """The end of a test: SIGTERM to all, then SIGKILL whoever still runs a task after
        ``grace`` seconds (a test that needs a worker's warm shutdown stops it itself)."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            worker.stop(timeout=grace)
        self.workers.clear()


def worker_command(queue: str, concurrency: int = 1) -> str:
    """The command a ``local`` target runs to start one test-app worker on ``queue``."""
    return (f"{sys.executable} -m celery -A tests.support.proj worker -Q {queue} "
            f"-c {concurrency} -P threads --without-mingle --without-gossip -l INFO")


def local_worker_env(monkeypatch: Any, broker_url: str, counter_url: str,
                     **extra: str) -> None:
    """What the workers a ``local`` target starts inherit: the test app, its broker, the
    Redis that counts completions, and any ``ONDEMAND_TEST_*`` extra."""
    for name, value in {"ONDEMAND_TEST_BROKER": broker_url,
                        "ONDEMAND_TEST_COUNTER": counter_url, "PYTHONPATH": str(ROOT),
                        **extra}.items():
        monkeypatch.setenv(name, value)

