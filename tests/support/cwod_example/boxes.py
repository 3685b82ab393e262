"""Where the program keeps its workers: a "box" per queue, a local ``celery worker`` process.

A box is what a container is to a Docker-based deployment: a worker with a host name of its
own (node name ``celery@<box id>``), one slot (``-c 1``), an environment, and a life of
start, stop, start again. Each process a box starts writes its PID to
``$CWOD_EXAMPLE_DIR/<box id>.<start number>.pid`` (its log beside it), so a test can stop
every one of them by PID whatever the program leaves running.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path


class Box:
    """One worker's box: ``command`` run by :meth:`start`, again after a :meth:`stop`."""

    def __init__(self, command: str, environment: Mapping[str, str]) -> None:
        self.id = uuid.uuid4().hex[:12]
        argv = shlex.split(command)
        if argv[0] == "celery":
            argv[:1] = [sys.executable, "-m", "celery"]
        self.argv = [*argv, "-n", f"celery@{self.id}", "-c", "1", "-P", "threads"]
        self.environment = {**os.environ, **environment}
        self.folder = Path(os.environ.get("CWOD_EXAMPLE_DIR") or tempfile.mkdtemp())
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the worker, unless it runs already."""
        if self.running:
            return
        self.starts += 1
        name = f"{self.id}.{self.starts}"
        with (self.folder / f"{name}.log").open("wb") as log:
            self.process = subprocess.Popen(self.argv, env=self.environment, stdout=log,
                                            stderr=subprocess.STDOUT)
        (self.folder / f"{name}.pid").write_text(str(self.process.pid))

    def stop(self, grace: float = 10) -> None:
        """SIGTERM (Celery's warm shutdown), SIGKILL if it outlives ``grace`` seconds."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
