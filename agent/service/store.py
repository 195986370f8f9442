"""The daemon's history: samples, workload classifications and events, in
SQLite under the state directory, bounded by row count and age.

Bounded means bounded on disk too: the oldest rows are deleted (by count and
by age) every few inserts, and SQLite reuses the freed pages, so the file
stops growing once the tables are full. Samples are stored as zlib-compressed
JSON: one sample of a few hundred metrics is 1-3 kB instead of 10-15.

This is history for display and retraining, not the transaction journal: it
is written with synchronous=NORMAL (a crash may lose the last rows, never
corrupt the file) and losing it loses nothing the host depends on.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.sqlitedb import open_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY, wall REAL NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS workload (
    id INTEGER PRIMARY KEY, wall REAL NOT NULL, label TEXT NOT NULL,
    confidence REAL NOT NULL, stable TEXT, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, wall REAL NOT NULL, kind TEXT NOT NULL,
    message TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, id);
CREATE INDEX IF NOT EXISTS samples_wall ON samples(wall);
CREATE INDEX IF NOT EXISTS workload_wall ON workload(wall);
CREATE INDEX IF NOT EXISTS events_wall ON events(wall);
"""
TABLES = ("samples", "workload", "events")
# Trim after this many inserts: cheap enough at any interval, and the table
# can exceed its bound by at most this many rows.
_TRIM_EVERY = 20


class StoreError(HosttuneError):
    """The history store cannot be opened or written."""


@dataclass(frozen=True)
class Event:
    id: int
    wall: float
    kind: str
    message: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "wall": self.wall, "kind": self.kind, "message": self.message,
                "detail": self.detail}


class Store:
    def __init__(self, path: str | Path, *, rows: int = 10000, max_age_hours: float = 24.0,
                 clock: Any = time.time) -> None:
        self.path = Path(path)
        self.rows = rows
        self.max_age_s = max_age_hours * 3600.0
        self._clock = clock
        self._inserts = 0
        try:
            self._db = open_sqlite(self.path, synchronous="NORMAL", busy_timeout=5.0)
            # Keep the WAL itself small: it is reset after each checkpoint.
            self._db.execute("PRAGMA journal_size_limit=1048576")
            # The daemon appends a row and trims the oldest: it never rereads
            # much, so SQLite's default 2 MB page cache would only be resident
            # memory. The wall indexes let the age trim (every 20 inserts)
            # reach the old rows directly: without them it read every page of
            # a full table (~40 MB at 10000 rows, ~10 ms) each time.
            self._db.execute("PRAGMA cache_size=-256")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open history store: {exc}", subject=str(self.path)) from None

    def set_retention(self, rows: int, max_age_hours: float) -> None:
        self.rows = rows
        self.max_age_s = max_age_hours * 3600.0
        self.trim()

    def close(self) -> None:
        self._db.close()

    # -- writes --------------------------------------------------------------

    def _insert(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write history: {exc}", subject=str(self.path)) from None
        self._inserts += 1
        if self._inserts % _TRIM_EVERY == 0:
            self.trim()

    def add_sample(self, wall: float, values: Mapping[str, float]) -> None:
        blob = zlib.compress(json.dumps(values, separators=(",", ":")).encode(), 6)
        self._insert("INSERT INTO samples(wall, data) VALUES (?, ?)", (wall, blob))

    def add_workload(self, wall: float, label: str, confidence: float, stable: str | None,
                     detail: Mapping[str, Any] | None = None) -> None:
        self._insert(
            "INSERT INTO workload(wall, label, confidence, stable, detail) VALUES (?,?,?,?,?)",
            (wall, label, confidence, stable, json.dumps(detail or {}, default=str)))

    def add_event(self, kind: str, message: str, detail: Mapping[str, Any] | None = None,
                  wall: float | None = None) -> None:
        self._insert("INSERT INTO events(wall, kind, message, detail) VALUES (?,?,?,?)",
                     (self._clock() if wall is None else wall, kind, message,
                      json.dumps(detail or {}, default=str)))

    def trim(self) -> None:
        """Drop rows beyond the count bound and older than the age bound."""
        cutoff = self._clock() - self.max_age_s
        try:
            with self._db:
                for table in TABLES:
                    self._db.execute(f"DELETE FROM {table} WHERE wall < ?", (cutoff,))
                    self._db.execute(
                        f"DELETE FROM {table} WHERE id <= "
                        f"(SELECT MAX(id) FROM {table}) - ?", (self.rows,))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot trim history: {exc}", subject=str(self.path)) from None

    # -- reads ---------------------------------------------------------------

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(table)
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def samples(self, limit: int = 100) -> list[tuple[float, dict[str, float]]]:
        rows = self._db.execute(
            "SELECT wall, data FROM samples ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [(wall, json.loads(zlib.decompress(data))) for wall, data in reversed(rows)]

    def workloads(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT wall, label, confidence, stable, detail FROM workload ORDER BY id DESC "
            "LIMIT ?", (limit,)).fetchall()
        return [{"wall": w, "label": lab, "confidence": c, "stable": s,
                 "detail": json.loads(d)} for w, lab, c, s, d in reversed(rows)]

    def events(self, limit: int = 100, kind: str | None = None) -> list[Event]:
        if kind is None:
            rows = self._db.execute(
                "SELECT id, wall, kind, message, detail FROM events ORDER BY id DESC LIMIT ?",
                (limit,)).fetchall()
        else:
            rows = self._db.execute(
                "SELECT id, wall, kind, message, detail FROM events WHERE kind = ? "
                "ORDER BY id DESC LIMIT ?", (kind, limit)).fetchall()
        return [Event(i, w, k, m, json.loads(d)) for i, w, k, m, d in reversed(rows)]

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total
