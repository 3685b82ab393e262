"""Local processes: real ``celery worker`` processes on this machine.

Each worker is started from the target's ``command`` with a node name of our own
(``<target>-<id>@<host>``) and tracked by a pid file in ``state_dir``, so a later tick in
another process finds it. Scale-in sends SIGTERM (Celery's warm shutdown: running tasks
finish) to workers the observation saw idle, and never to a busy one or one not yet
heard from; never SIGKILL. A stopped worker is marked *stopping* until its process exits.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TargetConfig
from ..model import WorkerStatus
from .base import Capacity, Scaler


@dataclass
class LocalWorker:
    """One tracked process."""

    hostname: str
    pid: int
    started_at: float
    stopping: bool = False


class LocalScaler(Scaler):
    """Starts and stops worker processes on this machine."""

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        default = Path(tempfile.gettempdir()) / "celery-ondemand" / "local" / target.name
        self.state_dir = Path(target.state_dir) if target.state_dir else default
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def workers(self) -> list[LocalWorker]:
        """The tracked processes still alive (pid files of dead ones are removed)."""
        alive = []
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                worker = LocalWorker(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if _is_running(worker.pid):
                alive.append(worker)
            else:
                path.unlink(missing_ok=True)
        return alive

    def _read(self, workers: Sequence[WorkerStatus]) -> Capacity:
        serving = [w for w in self.workers() if not w.stopping]
        heard = {w.hostname for w in workers}
        up = sum(1 for w in serving if w.hostname in heard)
        return Capacity(len(serving), up, len(serving) - up)

    def _set_desired(self, desired: int, current: int, workers: Sequence[WorkerStatus]) -> None:
        serving = [w for w in self.workers() if not w.stopping]
        for _ in range(desired - len(serving)):
            self.start()
        idle = {w.hostname for w in workers if not w.busy}
        stoppable = [w for w in serving if w.hostname in idle]
        for worker in stoppable[:max(0, len(serving) - desired)]:
            self.stop(worker)

    def _replace(self, zombies: Sequence[WorkerStatus],
                 workers: Sequence[WorkerStatus]) -> list[str]:
        mine = {w.hostname: w for w in self.workers() if not w.stopping}
        replaced = []
        for zombie in zombies:
            if zombie.hostname in mine:
                self.stop(mine[zombie.hostname])  # it runs nothing: warm shutdown is quick
                self.start()
                replaced.append(zombie.hostname)
        return replaced

    def start(self) -> LocalWorker:
        """Start one worker process and track it."""
        hostname = f"{self.target.name}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        command = shlex.split(self.target.command or "")
        if not any(arg in ("-n", "--hostname") or arg.startswith("--hostname=")
                   for arg in command):
            command += ["-n", hostname]
        else:
            hostname = _named(command) or hostname
        log = self.state_dir / f"{hostname}.log"
        with _signals_held(), log.open("ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            worker = LocalWorker(hostname, process.pid, time.time())
            try:
                self._save(worker)
            except BaseException:  # untracked, it would run on unseen
                process.kill()
                raise
        return worker

    def stop(self, worker: LocalWorker) -> None:
        """Warm shutdown: the worker stops taking tasks and exits once its tasks finish."""
        worker.stopping = True
        self._save(worker)
        try:
            os.kill(worker.pid, signal.SIGTERM)
        except ProcessLookupError:
            (self.state_dir / f"{worker.hostname}.json").unlink(missing_ok=True)

    def _save(self, worker: LocalWorker) -> None:
        path = self.state_dir / f"{worker.hostname}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(worker.__dict__))
        temporary.replace(path)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held while a worker is spawned and its pid file written, then
    delivered (SIGTERM first). Between the two, a worker in its own session would run on
    with no pid file, unseen by this tick and every later one. Python runs these handlers
    in the main thread only, so there alone is anything to hold; an ignored signal or one
    handled outside Python is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(signum)
            if handler is not None and handler is not signal.SIG_IGN:
                previous[signum] = handler
                signal.signal(signum, lambda number, frame: held.append(number))
        yield
    finally:
        handlers = dict(previous)
        _restore(previous)
        for number in sorted(set(held), key=(signal.SIGTERM, signal.SIGINT).index):
            # Called here, not re-raised: a re-raised signal's handler runs wherever the
            # interpreter next looks, a __del__ perhaps, where its exception is dropped.
            if callable(handlers[number]):
                handlers[number](number, None)
            else:  # SIG_DFL, restored: the default action
                signal.raise_signal(number)


def _restore(handlers: dict[int, Any]) -> None:
    """Put every handler back, even if a signal arriving meanwhile raises from one."""
    try:
        while handlers:
            signum, handler = next(iter(handlers.items()))
            signal.signal(signum, handler)
            del handlers[signum]
    finally:
        if handlers:
            _restore(handlers)


def _named(command: list[str]) -> str | None:
    for i, arg in enumerate(command):
        if arg in ("-n", "--hostname") and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith("--hostname="):
            return arg.split("=", 1)[1]
    return None


def _is_running(pid: int) -> bool:
    """Alive and not a zombie; a zombie child of ours is reaped here."""
    with suppress(ChildProcessError):  # not our child: someone else reaps it
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
