"""A local worker's start is not split by Ctrl-C or SIGTERM: the process spawned and its pid
file written, or neither. The spawn is faked at ``subprocess.Popen`` (a signal arriving
mid-spawn cannot be timed with a real process); the pid file and handlers are real."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_ondemand.act import local
from celery_ondemand.act.local import LocalScaler
from celery_ondemand.config import settings_from_mapping


class SignalledWhileSpawning:
    """Stands in for Popen: the signals arrive while the process is being spawned."""

    pid = 4242
    signals: tuple[int, ...] = ()

    def __init__(self, command: list[str], **_: Any) -> None:
        for signum in self.signals:
            signal.raise_signal(signum)

    def kill(self) -> None:
        raise AssertionError("a tracked worker is not killed")


@pytest.fixture
def scaler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalScaler]:
    settings = settings_from_mapping({"broker_url": "redis://localhost/0", "targets": [{
        "name": "t", "queues": ["q"], "scaler": "local", "command": "celery worker",
        "state_dir": str(tmp_path)}]})
    monkeypatch.setattr(local.subprocess, "Popen", SignalledWhileSpawning)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield LocalScaler(settings.targets[0])
    for signum, handler in before.items():
        signal.signal(signum, handler)


def pid_files(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]


def test_ctrl_c_mid_spawn_is_raised_once_the_worker_is_tracked(
        scaler: LocalScaler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SignalledWhileSpawning, "signals", (signal.SIGINT,))
    with pytest.raises(KeyboardInterrupt):
        scaler.start()
    assert [w["pid"] for w in pid_files(tmp_path)] == [4242], "tracked before Ctrl-C acts"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_mid_spawn_reaches_its_handler_after_the_pid_file(
        scaler: LocalScaler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def handler(number: int, frame: object) -> None:
        seen.append(len(pid_files(tmp_path)))
        raise SystemExit(128 + number)

    signal.signal(signal.SIGTERM, handler)
    monkeypatch.setattr(SignalledWhileSpawning, "signals", (signal.SIGINT, signal.SIGTERM))
    with pytest.raises(SystemExit) as ended:
        scaler.start()
    assert ended.value.code == 128 + signal.SIGTERM, "SIGTERM first: it asks to stop"
    assert seen == [1], "the handler ran with the worker's pid file written"
    assert signal.getsignal(signal.SIGTERM) is handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_worker_whose_pid_file_cannot_be_written_is_killed(
        scaler: LocalScaler, monkeypatch: pytest.MonkeyPatch) -> None:
    killed: list[int] = []
    monkeypatch.setattr(SignalledWhileSpawning, "kill", lambda self: killed.append(self.pid))
    monkeypatch.setattr(LocalScaler, "_save", lambda self, worker: (_ for _ in ()).throw(
        OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        scaler.start()
    assert killed == [4242], "untracked, it would run on unseen"

