"""Brokers of a test's own that it may stop and start again: never the shared ones.

Both keep every message across a restart, as a production broker does: Redis with an
append-only file fsynced on every write, RabbitMQ with its own data directory (Celery's
queues are durable and its messages persistent). Each is a fixture's building block: a
broker that cannot start skips its test on a laptop and fails it under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from contextlib import ExitStack, suppress
from pathlib import Path

import pytest

from tests.support.brokers import ON_CI, private_redis, unique
from tests.support.cli import closed_port


def unavailable(why: str) -> None:
    """Skip (laptop) or fail (CI): every broker is mandatory on CI."""
    if ON_CI:
        pytest.fail(f"{why}; on CI every broker is mandatory", pytrace=False)
    pytest.skip(why)


class RestartableRedis:
    """Our own persistent redis-server (append-only file, fsync always)."""

    kind = "redis"

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir, self.stack = closed_port(), workdir, ExitStack()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.stack.enter_context(private_redis(
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
            port=self.port))

    def stop(self) -> None:
        self.stack.close()

    def close(self) -> None:
        self.stop()


class PrivateRabbitMQ:
    """A RabbitMQ node of our own: its own node name, AMQP and distribution ports, config,
    data and log directories. The shared node on 5672 is never touched.

    ``rabbitmq-server`` run as root hands over to the ``rabbitmq`` user (the packaged
    wrapper does), so the node's directory is made writable for it; :meth:`close` removes
    it.
    """

    kind = "rabbitmq"

    def __init__(self) -> None:
        self.node = f"{unique('ondemand')}@localhost"
        self.port, self.dist_port = closed_port(), closed_port()
        # Not under pytest's tmp_path: its parents are closed to other users.
        self.home = Path(tempfile.mkdtemp(prefix="ondemand-rabbitmq-"))
        self.home.chmod(0o777)
        config = self.home / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        config.chmod(0o644)
        self.pid_file = self.home / "node.pid"
        self.env = {**os.environ, "RABBITMQ_NODENAME": self.node,
                    "RABBITMQ_NODE_PORT": str(self.port),
                    "RABBITMQ_DIST_PORT": str(self.dist_port),
                    "RABBITMQ_CONFIG_FILE": str(config),
                    "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(self.home / "log"),
                    "RABBITMQ_PID_FILE": str(self.pid_file),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins")}

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _command(self, name: str) -> str:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found is None:
            unavailable(f"{name} is not installed")
        return str(found)

    def start(self, timeout: float = 120.0) -> None:
        """Start the node and wait until it accepts connections."""
        subprocess.run([self._command("rabbitmq-server"), "-detached"], env=self.env,
                       check=True, timeout=60, capture_output=True)
        waited = subprocess.run([self._command("rabbitmqctl"), "-n", self.node, "wait",
                                 str(self.pid_file), "--timeout", str(int(timeout))],
                                env=self.env, timeout=timeout + 30, capture_output=True,
                                text=True, check=False)
        if waited.returncode != 0:
            raise RuntimeError(f"RabbitMQ node {self.node} did not start: "
                               f"{waited.stdout}{waited.stderr}")

    def stop(self) -> None:
        """Stop the whole node (its Erlang VM too); a pid it leaves behind is killed."""
        if not self.pid_file.exists():
            return
        with suppress(subprocess.TimeoutExpired):
            subprocess.run([self._command("rabbitmqctl"), "-n", self.node, "stop",
                            str(self.pid_file)], env=self.env, timeout=60,
                           capture_output=True, check=False)
        with suppress(ValueError, OSError):
            pid = int(self.pid_file.read_text().strip())
            if self.node.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)  # still our node's VM, by its own pid
        self.pid_file.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the node and remove its directory."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
