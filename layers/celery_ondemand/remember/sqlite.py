"""State in a SQLite file: celery-ondemand without AWS (laptops, the demo, ``ondemand run``).

The same contract as the DynamoDB store; SQLite's own locking (``BEGIN IMMEDIATE``) makes
the lease and the lease-guarded memory write atomic across processes on one machine.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

from ..decide import Decision, TargetMemory
from ..decide.load import NUMBERS, LoadMinute
from ..errors import LeaseLost, StateError
from .base import (
    SCHEMA_VERSION,
    StateStore,
    decode_memory,
    decode_status,
    encode_memory,
    encode_status,
)

PRUNE_SECONDS = 3600.0
"""Expired load minutes are deleted at most this often (one DELETE, not one a write)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lease (
    deployment TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS memory (
    deployment TEXT NOT NULL, target TEXT NOT NULL, record TEXT NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (deployment, target));
CREATE TABLE IF NOT EXISTS history (
    deployment TEXT NOT NULL, at REAL NOT NULL, target TEXT NOT NULL, record TEXT NOT NULL,
    expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS history_by_time ON history (deployment, at);
CREATE TABLE IF NOT EXISTS load (
    deployment TEXT NOT NULL, target TEXT NOT NULL, minute INTEGER NOT NULL,
    seconds REAL NOT NULL, arrivals REAL NOT NULL, completions REAL NOT NULL,
    busy_seconds REAL NOT NULL, desired_sum REAL NOT NULL, live_sum REAL NOT NULL,
    ticks INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (deployment, target, minute));
CREATE TABLE IF NOT EXISTS status (deployment TEXT PRIMARY KEY, record BLOB NOT NULL);
"""


class SQLiteStateStore(StateStore):
    """A state store in one SQLite file (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.clock: Callable[[], float] = time.monotonic
        """When expired minutes were last deleted is measured on this clock."""
        self._pruned_at: float | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=10)) as db:
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"state file {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            # An interrupt can land after COMMIT began: roll back only what is still open,
            # and never let the rollback hide the original exception.
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def acquire_lease(self, deployment: str, owner: str, now: float, seconds: float) -> bool:
        with self._transaction() as db:
            row = db.execute("SELECT owner, expires_at FROM lease WHERE deployment = ?",
                             (deployment,)).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return False
            db.execute("INSERT INTO lease VALUES (?, ?, ?) ON CONFLICT(deployment) DO UPDATE "
                       "SET owner = excluded.owner, expires_at = excluded.expires_at",
                       (deployment, owner, now + seconds))
            return True

    def renew_lease(self, deployment: str, owner: str, now: float, seconds: float) -> bool:
        with self._transaction() as db:
            renewed = db.execute("UPDATE lease SET expires_at = ? WHERE deployment = ? "
                                 "AND owner = ?", (now + seconds, deployment, owner))
            return renewed.rowcount == 1

    def release_lease(self, deployment: str, owner: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM lease WHERE deployment = ? AND owner = ?",
                       (deployment, owner))

    def load_memory(self, deployment: str) -> dict[str, TargetMemory]:
        with self._transaction() as db:
            rows = db.execute("SELECT target, record FROM memory WHERE deployment = ?",
                              (deployment,)).fetchall()
        return {target: decode_memory(record, f"memory of {target}") for target, record in rows}

    def save_memory(self, deployment: str, owner: str, now: float,
                    memory: Mapping[str, TargetMemory]) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT owner, expires_at FROM lease WHERE deployment = ?",
                             (deployment,)).fetchone()
            if row is None or row[0] != owner or row[1] <= now:
                raise LeaseLost(f"deployment {deployment!r}: lease lost before saving memory")
            db.executemany(
                "INSERT INTO memory VALUES (?, ?, ?, ?) ON CONFLICT(deployment, target) "
                "DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                [(deployment, name, encode_memory(m), now) for name, m in memory.items()])

    def record(self, deployment: str, decisions: list[Decision], at: float) -> None:
        rows = [(deployment, at, d.target,
                 json.dumps({"schema_version": SCHEMA_VERSION, **d.serializer()}),
                 self.expiry(at)) for d in decisions]
        with self._transaction() as db:
            db.executemany("INSERT INTO history VALUES (?, ?, ?, ?, ?)", rows)
            # SQLite has no TTL: expired history is deleted as new history is written.
            db.execute("DELETE FROM history WHERE deployment = ? AND expires_at < ?",
                       (deployment, int(at)))

    def history(self, deployment: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._transaction() as db:
            rows = db.execute("SELECT at, record, expires_at FROM history WHERE deployment = ? "
                              "ORDER BY at DESC, rowid DESC LIMIT ?",
                              (deployment, limit)).fetchall()
        return [{**json.loads(record), "at": at, "expires_at": expires}
                for at, record, expires in rows]

    def add_load(self, deployment: str, loads: Mapping[str, LoadMinute]) -> None:
        rows = [(deployment, target, m.minute, *(getattr(m, n) for n in NUMBERS),
                 self.load_expiry(m.minute)) for target, m in loads.items()]
        if not rows:
            return
        sums = ", ".join(f"{n} = {n} + excluded.{n}" for n in NUMBERS)
        with self._transaction() as db:
            db.executemany(f"INSERT INTO load VALUES ({', '.join('?' * 11)}) "
                           f"ON CONFLICT(deployment, target, minute) DO UPDATE SET {sums}",
                           rows)
            # No TTL here: expired minutes go at most once an hour of this process's time
            # (the minutes' own clock may be a simulated one: expiry is measured on it).
            if self._pruned_at is None or self.clock() - self._pruned_at >= PRUNE_SECONDS:
                self._pruned_at = self.clock()
                db.execute("DELETE FROM load WHERE deployment = ? AND expires_at < ?",
                           (deployment, max(m.minute for m in loads.values())))

    def load_history(self, deployment: str, target: str, since: float,
                     until: float) -> list[LoadMinute]:
        with self._transaction() as db:
            rows = db.execute(f"SELECT minute, {', '.join(NUMBERS)} FROM load "
                              "WHERE deployment = ? AND target = ? AND minute BETWEEN ? AND ? "
                              "ORDER BY minute", (deployment, target, int(since // 60 * 60),
                                                  int(until))).fetchall()
        return [LoadMinute(*row) for row in rows]

    def save_status(self, deployment: str, status: dict[str, Any], at: float) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO status VALUES (?, ?) ON CONFLICT(deployment) DO UPDATE "
                       "SET record = excluded.record", (deployment, encode_status(status, at)))

    def load_status(self, deployment: str) -> dict[str, Any] | None:
        with self._transaction() as db:
            row = db.execute("SELECT record FROM status WHERE deployment = ?",
                             (deployment,)).fetchone()
        return decode_status(row[0]) if row else None
