"""Running the ``ondemand`` command as a user does, and checking how it fails."""

from __future__ import annotations

import socket
import subprocess
import sys

SECRET = "s3cr3t-do-not-print"
"""A password the tests put in broker URLs; no output may ever contain it."""


def ondemand(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celery_ondemand.cli", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_clean_failure(result: subprocess.CompletedProcess[str], *words: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert SECRET not in output
    assert result.stderr.startswith("ondemand: error: ") and result.stderr.count("\n") == 1
    for word in words:
        assert word in result.stderr.lower()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def interruptible() -> None:
    """``preexec_fn`` for a child the test will stop with SIGINT (Ctrl-C): a test run
    started in the background of a non-interactive shell ignores SIGINT, and a child
    inherits an ignored signal; this gives the child the default back."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
