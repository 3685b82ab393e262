"""``make demo``'s job, shortened: the embedded Valkey, a moto DynamoDB, real workers."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest

from celery_ondemand.demo import DemoOptions, run_demo
from celery_ondemand.demo.load import read_trace, schedule
from tests.support.cli import interruptible


def test_the_trace_slice_is_shipped_and_shaped_into_a_schedule() -> None:
    counts = read_trace()
    assert len(counts) == 900 and sum(counts) > 0
    arrivals = schedule(60, 2.0, counts=counts)
    assert abs(len(arrivals) - 120) <= 1
    assert all(0 <= a.at < 60 and 0.5 <= a.seconds <= 2.5 for a in arrivals)
    assert [a.at for a in arrivals] == sorted(a.at for a in arrivals)


def test_a_short_demo_scales_up_and_down_and_loses_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    report = run_demo(DemoOptions(duration=15, rate=3, max_workers=4, live_view=False,
                                  png=tmp_path / "timeline.png"), out)
    text = out.getvalue()
    assert report.ok, text
    assert report.published == report.completed >= 30
    assert 1 <= report.peak_workers <= 4
    assert any(" up " in a for a in report.actions) and any(" down " in a for a in report.actions)
    assert re.search(r"s down +[1-9]\d* → 0: ", report.actions[-1]), report.actions
    assert report.samples[-1].desired == 0
    assert report.wait_p50 is not None and report.wait_p95 is not None
    assert report.worker_minutes > 0
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert "none lost" in text and "result            OK" in text


@pytest.mark.parametrize("when", ["*.json", "*.log"], ids=["tracked", "starting"])
def test_ctrl_c_stops_every_process_the_demo_started(when: str) -> None:
    """Ctrl-C once a worker is tracked (its pid file), or the instant one starts (its log
    is opened just before the process is spawned, its pid file written just after)."""
    process = subprocess.Popen([sys.executable, "-m", "celery_ondemand.cli", "demo",
                                "--duration", "60", "--no-live"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ), preexec_fn=interruptible)
    assert process.stdout is not None
    found = None
    while found is None:
        line = process.stdout.readline()
        assert line, "the demo ended before saying where it works"
        found = re.search(r"work dir (\S+)", line)
    workers = Path(found.group(1)) / "workers"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(workers.glob(when)):
        time.sleep(0.001 if when == "*.log" else 0.2)
    assert list(workers.glob(when)), "the demo started workers"
    process.send_signal(signal.SIGINT)
    pids = []
    for path in workers.glob("*.json"):
        with suppress(OSError, ValueError):  # a dead worker's file may go as it is read
            pids.append(json.loads(path.read_text())["pid"])
    process.communicate(timeout=60)
    assert process.returncode == 130
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", f"worker {pid} survived"
    # Every worker it ever started, pid file or not: each has a log named after it.
    hostnames = {log.stem for log in workers.glob("*.log")}
    assert not running_with(hostnames), "a worker the demo started outlived it"


def running_with(hostnames: set[str]) -> list[int]:
    """Live processes (not zombies) whose command line names one of ``hostnames`` (as a
    substring: with setproctitle, Celery rewrites it into one string)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            alive = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            continue
        if alive and any(hostname in line for hostname in hostnames):
            found.append(int(proc.name))
    return found
