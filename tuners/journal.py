"""The durable record of every change hosttune makes: SQLite in WAL mode with
synchronous=FULL, so a commit is on disk (fsynced) when it returns.

A transaction's old values are committed before its first write; each step's
state moves pending -> writing -> verified (or failed), each move a commit, so
after a crash the journal says exactly which knobs may have been touched.
`baseline` keeps the value every knob had before hosttune first wrote it;
`knob_state` the value hosttune last left it at (to notice someone else
changing it since). An exclusive flock on `<journal>.lock` keeps two hosttune
processes from interleaving their transactions.

Every sqlite3 error becomes a JournalError naming the journal's path: a full
disk or a corrupt file means hosttune refuses to change anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.sqlitedb import open_sqlite

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS txn (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,            -- apply | rollback | recover | collapse
    state TEXT NOT NULL,           -- open | committed | rolled_back | failed | recovered | refused
    uid INTEGER,
    pid INTEGER,
    started REAL NOT NULL,
    finished REAL,
    workload TEXT,
    note TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    target TEXT,                   -- what a rollback went back to
    error TEXT,
    failed_step INTEGER
);
CREATE TABLE IF NOT EXISTS step (
    txn INTEGER NOT NULL REFERENCES txn(id),
    seq INTEGER NOT NULL,
    knob TEXT NOT NULL,
    before TEXT,
    after TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT 'admin',
    evidence TEXT NOT NULL DEFAULT '{}',
    identity TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,           -- pending | writing | verified | failed | restored |
                                   -- restore_failed | left | gone | refused | unchanged
    error TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (txn, seq)
);
CREATE TABLE IF NOT EXISTS baseline (
    knob TEXT PRIMARY KEY, value TEXT NOT NULL, txn INTEGER NOT NULL, recorded REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS knob_state (
    knob TEXT PRIMARY KEY, value TEXT NOT NULL, txn INTEGER NOT NULL, updated REAL NOT NULL
);
"""

# Steps whose knob may have been written: recovery and failure handling look at these.
TOUCHED = ("writing", "verified", "failed")


class JournalError(HosttuneError):
    """The journal cannot be read or written: hosttune changes nothing."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"journal {path}: {message}", subject=path)
        self.path = path


class LockTimeout(HosttuneError):
    """Another hosttune process holds the journal's lock."""


@dataclass
class StepRecord:
    txn: int
    seq: int
    knob: str
    before: str | None
    after: str
    reason: str
    source: str
    evidence: dict[str, Any]
    identity: str
    state: str
    error: str | None
    updated: float

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "knob": self.knob, "before": self.before, "after": self.after,
                "reason": self.reason, "source": self.source, "evidence": self.evidence,
                "state": self.state, "error": self.error}


@dataclass
class TxnRecord:
    id: int
    kind: str
    state: str
    uid: int | None
    pid: int | None
    started: float
    finished: float | None
    workload: str | None
    note: str
    reason: str
    target: str | None
    error: str | None
    failed_step: int | None
    steps: list[StepRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"txn": self.id, "kind": self.kind, "state": self.state, "uid": self.uid,
                "pid": self.pid, "started": self.started, "finished": self.finished,
                "workload": self.workload, "note": self.note, "reason": self.reason,
                "target": self.target, "error": self.error, "failed_step": self.failed_step,
                "changes": [s.to_dict() for s in self.steps]}


def _describe_sqlite(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "disk is full" in text or "disk I/O error" in text:
        return f"cannot write ({text}): free space where the journal lives; nothing was changed"
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        return (f"corrupt or not a hosttune journal ({text}); nothing was changed. Move it "
                "aside to start a new one (its history and baseline are then lost)")
    return f"{text}; nothing was changed"


class Journal:
    """One journal file. Open it once per process; not shared between threads
    that write at the same time (the lock serialises processes, not threads)."""

    def __init__(self, path: str | os.PathLike[str], *, check: bool = True) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(str(self.path), f"cannot create its directory: {exc.strerror}"
                               ) from exc
        with self._errors():
            db = open_sqlite(self.path, synchronous="FULL", busy_timeout=10.0)
            self._db = db
            db.execute("PRAGMA foreign_keys=ON")
            if check:
                result = db.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    raise JournalError(str(self.path), f"corrupt ({result}); nothing was changed")
            self._migrate(db)

    # -- plumbing -------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise JournalError(str(self.path), _describe_sqlite(exc)) from exc

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(str(self.path), "closed")
        return self._db

    def _migrate(self, db: sqlite3.Connection) -> None:
        row = None
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if exists:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise JournalError(str(self.path), f"written by a newer hosttune (schema {row[0]}, "
                                               f"this one knows {SCHEMA_VERSION})")
        if row is None:
            try:
                db.executescript(
                    "BEGIN IMMEDIATE;" + _SCHEMA + "INSERT OR REPLACE INTO meta VALUES "
                    f"('schema_version', '{SCHEMA_VERSION}'); COMMIT;")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One committed (fsynced) write transaction."""
        with self._errors():
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the lock ---------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, timeout: float = 30.0) -> Iterator[None]:
        """Hold the exclusive lock; wait up to `timeout` seconds for it."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(str(self.lock_path), f"cannot open the lock: {exc.strerror}"
                               ) from exc
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                        who = f" (pid {holder})" if holder.isdigit() else ""
                        raise LockTimeout(
                            f"another hosttune process{who} is changing the host; gave up "
                            f"after {timeout:g}s waiting for {self.lock_path}",
                            subject=str(self.lock_path)) from None
                    time.sleep(0.05)
            # The holder's pid is only for the message another process prints.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # -- transactions -------------------------------------------------------------

    def begin(self, *, kind: str, uid: int | None, workload: str | None = None, note: str = "",
              reason: str = "", target: str | None = None, state: str = "open") -> int:
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO txn (kind, state, uid, pid, started, workload, note, reason, target)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, state, uid, os.getpid(), time.time(), workload, note, reason, target))
            return int(cur.lastrowid or 0)

    def add_steps(self, txn: int, steps: list[dict[str, Any]]) -> None:
        now = time.time()
        with self._write() as db:
            db.executemany(
                "INSERT INTO step (txn, seq, knob, before, after, reason, source, evidence,"
                " identity, state, error, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(txn, s["seq"], s["knob"], s.get("before"), s["after"], s.get("reason", ""),
                  s.get("source", "admin"), json.dumps(s.get("evidence") or {}, default=str),
                  s.get("identity", ""), s.get("state", "pending"), s.get("error"), now)
                 for s in steps])

    def mark_writing(self, txn: int, seq: int, knob: str, before: str | None) -> None:
        """Committed before the knob is written; records the baseline the
        first time hosttune touches a knob."""
        now = time.time()
        with self._write() as db:
            db.execute("UPDATE step SET state='writing', updated=? WHERE txn=? AND seq=?",
                       (now, txn, seq))
            if before is not None:
                db.execute("INSERT OR IGNORE INTO baseline VALUES (?, ?, ?, ?)",
                           (knob, before, txn, now))

    def mark(self, txn: int, seq: int, state: str, *, error: str | None = None,
             knob: str | None = None, value: str | None = None) -> None:
        """Move a step to `state`; with `value`, also record that hosttune left
        `knob` at `value` (in the same commit)."""
        now = time.time()
        with self._write() as db:
            db.execute("UPDATE step SET state=?, error=?, updated=? WHERE txn=? AND seq=?",
                       (state, error, now, txn, seq))
            if knob is not None and value is not None:
                db.execute("INSERT OR REPLACE INTO knob_state VALUES (?, ?, ?, ?)",
                           (knob, value, txn, now))

    def complete_step(self, txn: int, seq: int, state: str, *, after: str,
                      evidence: dict[str, Any], error: str | None = None) -> None:
        """Record what an action (a collapse pass) did, when it is done: its
        result replaces the planned `after`, with the figures as evidence."""
        with self._write() as db:
            db.execute("UPDATE step SET state=?, after=?, evidence=?, error=?, updated=?"
                       " WHERE txn=? AND seq=?",
                       (state, after, json.dumps(evidence, default=str), error, time.time(),
                        txn, seq))

    def finish(self, txn: int, state: str, *, error: str | None = None,
               failed_step: int | None = None) -> None:
        with self._write() as db:
            db.execute("UPDATE txn SET state=?, finished=?, error=?, failed_step=? WHERE id=?",
                       (state, time.time(), error, failed_step, txn))

    # -- queries -------------------------------------------------------------------

    def _steps(self, txn: int) -> list[StepRecord]:
        with self._errors():
            rows = self.db.execute(
                "SELECT txn, seq, knob, before, after, reason, source, evidence, identity, state,"
                " error, updated FROM step WHERE txn=? ORDER BY seq", (txn,)).fetchall()
        return [StepRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7] or "{}"),
                           r[8], r[9], r[10], r[11]) for r in rows]

    def _txns(self, where: str = "", args: tuple[Any, ...] = ()) -> list[TxnRecord]:
        with self._errors():
            rows = self.db.execute(
                "SELECT id, kind, state, uid, pid, started, finished, workload, note, reason,"
                f" target, error, failed_step FROM txn {where} ORDER BY id", args).fetchall()
        records = [TxnRecord(*r) for r in rows]
        for record in records:
            record.steps = self._steps(record.id)
        return records

    def transactions(self) -> list[TxnRecord]:
        """Every transaction, oldest first."""
        return self._txns()

    def transaction(self, txn: int) -> TxnRecord | None:
        found = self._txns("WHERE id=?", (txn,))
        return found[0] if found else None

    def open_transactions(self) -> list[TxnRecord]:
        return self._txns("WHERE state='open'")

    def last_txn_id(self) -> int:
        with self._errors():
            row = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM txn").fetchone()
        return int(row[0])

    def hosttune_value(self, knob: str) -> str | None:
        """The value hosttune last left `knob` at, or None if it never wrote it."""
        with self._errors():
            row = self.db.execute("SELECT value FROM knob_state WHERE knob=?", (knob,)).fetchone()
        return None if row is None else str(row[0])

    def baseline(self) -> dict[str, str]:
        with self._errors():
            rows = self.db.execute("SELECT knob, value FROM baseline ORDER BY txn, knob").fetchall()
        return {str(k): str(v) for k, v in rows}

    def last_change(self, knob: str) -> StepRecord | None:
        """The last committed step that set `knob`."""
        with self._errors():
            row = self.db.execute(
                "SELECT s.txn, s.seq FROM step s JOIN txn t ON t.id = s.txn WHERE s.knob=?"
                " AND s.state='verified' AND t.state='committed' ORDER BY s.txn DESC, s.seq DESC"
                " LIMIT 1", (knob,)).fetchone()
        if row is None:
            return None
        return next(s for s in self._steps(int(row[0])) if s.seq == row[1])

    def value_after(self, knob: str, txn: int) -> str | None:
        """The value hosttune had left `knob` at once transaction `txn` was
        done (the baseline if it had not written it by then)."""
        with self._errors():
            row = self.db.execute(
                "SELECT s.after FROM step s JOIN txn t ON t.id = s.txn WHERE s.knob=? AND"
                " s.state='verified' AND t.state='committed' AND t.id<=?"
                " ORDER BY s.txn DESC, s.seq DESC LIMIT 1", (knob, txn)).fetchone()
            if row is not None:
                return str(row[0])
            base = self.db.execute("SELECT value FROM baseline WHERE knob=?", (knob,)).fetchone()
        return None if base is None else str(base[0])

    def knobs_changed_after(self, txn: int) -> list[str]:
        """Knobs committed transactions after `txn` set, in the order first set."""
        with self._errors():
            rows = self.db.execute(
                "SELECT s.knob, MIN(s.txn * 100000 + s.seq) AS o FROM step s JOIN txn t"
                " ON t.id = s.txn WHERE t.id>? AND t.state='committed' AND s.state='verified'"
                " GROUP BY s.knob ORDER BY o", (txn,)).fetchall()
        return [str(r[0]) for r in rows]
