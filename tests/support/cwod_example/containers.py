"""A stand-in for the part of the ``docker`` client cwod's example drives.

There is no Docker engine here, so a "container" is a real ``celery worker`` process on
this machine, with what a container would give it: a hostname of its own (the node name
``celery@<container id>``), one CPU (``-c 1``), its environment, and ``start`` / ``stop`` /
``reload`` / ``status`` as docker-py has them. Every process started writes its PID to
``$CWOD_EXAMPLE_DIR/<container id>.<n>.pid`` (and its log beside it), so a test stops by PID
whatever the example leaves running.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any


class Container:
    """One "container": a command, run again by :meth:`start` after a :meth:`stop`."""

    def __init__(self, entrypoint: str, environment: dict[str, str] | None) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.status = "created"
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        command = shlex.split(entrypoint)
        if command[0] == "celery":
            command[:1] = [sys.executable, "-m", "celery"]
        self.command = [*command, "-n", f"celery@{self.id}", "-c", "1", "-P", "threads"]
        self.environment = {**os.environ, **(environment or {})}
        self.folder = Path(os.environ.get("CWOD_EXAMPLE_DIR") or tempfile.mkdtemp())

    def start(self) -> None:
        self.reload()
        if self.status == "running":
            return
        self.starts += 1
        name = f"{self.id}.{self.starts}"
        with (self.folder / f"{name}.log").open("wb") as log:
            self.process = subprocess.Popen(self.command, env=self.environment, stdout=log,
                                            stderr=subprocess.STDOUT)
        (self.folder / f"{name}.pid").write_text(str(self.process.pid))
        self.status = "running"

    def stop(self, timeout: float = 10) -> None:
        """As ``docker stop``: SIGTERM (Celery's warm shutdown), SIGKILL after ``timeout``."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.status = "exited"

    def reload(self) -> None:
        running = self.process is not None and self.process.poll() is None
        self.status = "running" if running else ("exited" if self.process else "created")


class Containers:
    def run(self, image: str, entrypoint: str, environment: dict[str, str] | None = None,
            **_: Any) -> Container:
        """Create and start a container (``image``, ``network``, ``detach`` mean nothing
        here: the worker runs from this checkout, on this machine)."""
        container = Container(entrypoint, environment)
        container.start()
        return container


class DockerClient:
    def __init__(self, base_url: str | None = None) -> None:
        self.containers = Containers()
