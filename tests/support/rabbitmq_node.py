"""A RabbitMQ node of the test's own, for faults that must not touch the shared broker.

The shared node on 127.0.0.1:5672 serves every test (and other people's test runs) at once;
putting it under a memory alarm or stopping it would fail them all. :func:`private_rabbitmq`
starts a second node with its own name, ports, data and log folders and no plugins, and
stops it at the end. Like the other broker tests, it skips on a laptop where the node
cannot start, and fails when ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kombu import Connection

from tests.support.brokers import ON_CI
from tests.support.cli import closed_port


@dataclass
class PrivateNode:
    """A running private node: its AMQP URL, its Erlang node name and its files."""

    url: str
    name: str
    base: Path
    port: int

    def ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.name, *args], check=True,
                       capture_output=True, timeout=60)

    def memory_alarm(self, on: bool) -> None:
        """A real memory alarm: the high watermark far below what the node uses (or back
        to RabbitMQ's default)."""
        self.ctl("set_vm_memory_high_watermark", "0.000001" if on else "0.4")

    @property
    def pid(self) -> int:
        return int((self.base / "pid").read_text().strip())

    def pause(self) -> None:
        """Stop the node's VM where it stands (SIGSTOP): connections stay open, nothing
        answers — a stalled broker."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"private RabbitMQ node: {reason}", pytrace=False)
    pytest.skip(f"private RabbitMQ node: {reason}")


@contextlib.contextmanager
def private_rabbitmq(timeout: float = 90.0) -> Iterator[PrivateNode]:
    """Start a private RabbitMQ node; yield it; stop it and delete its files."""
    server = shutil.which("rabbitmq-server")
    if server is None or shutil.which("rabbitmqctl") is None:
        _unavailable("rabbitmq-server is not installed")
    base = Path(tempfile.mkdtemp(prefix="ondemand-rabbit-"))
    (base / "enabled_plugins").write_text("[].\n")
    with contextlib.suppress(KeyError, PermissionError):  # the packaged server runs as
        owner = pwd.getpwnam("rabbitmq")                   # "rabbitmq": let it write here
        for path in (base, base / "enabled_plugins"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    name = f"ondemand-alarm-{uuid.uuid4().hex[:8]}@localhost"
    port = closed_port()
    env = {**os.environ, "RABBITMQ_NODENAME": name, "RABBITMQ_NODE_PORT": str(port),
           "RABBITMQ_DIST_PORT": str(closed_port()), "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
           "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
           "RABBITMQ_PID_FILE": str(base / "pid"),
           "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "feature_flags"),
           "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins-expand"),
           "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
           "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config")}
    node = PrivateNode(f"amqp://guest:guest@127.0.0.1:{port}//", name, base, port)
    try:
        subprocess.run([server, "-detached"], env=env, cwd=base, check=True,
                       capture_output=True, timeout=60)
        problem = _wait_for(node, timeout)
        if problem:
            _unavailable(f"did not start within {timeout:.0f}s ({problem})")
        yield node
    finally:
        _stop(node)
        shutil.rmtree(base, ignore_errors=True)


def _wait_for(node: PrivateNode, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", node.port), timeout=1).close()
            with Connection(node.url, connect_timeout=3) as connection:
                connection.ensure_connection(max_retries=0)
            return None
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
    return problem


def _stop(node: PrivateNode) -> None:
    """Stop the node; if it will not stop, kill its VM by its PID."""
    pid = None
    with contextlib.suppress(OSError, ValueError):
        pid = node.pid
    if pid is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)  # a paused node cannot stop
    with contextlib.suppress(Exception):
        node.ctl("stop")
    if pid is None:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.2)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
