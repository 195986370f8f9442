"""The measured outcomes, kept: SQLite under the state directory
(`outcomes.db`), one row per applied plan or tuning trial. What they teach
is learned in the decide layer (`hosttune.models.outcomes.LearnedModel`).

Not in WAL mode, unlike the journal and the history: `hosttune recommend`
reads this file without root, and reading a WAL database needs its -shm
file, which a user without write access to the state directory cannot
create once the writer has closed the database."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from hosttune.agent.sense.sqlitedb import open_sqlite
from hosttune.models.outcomes import LearnedModel, Outcome, OutcomeError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    workload TEXT NOT NULL,
    source TEXT NOT NULL,
    knobs TEXT NOT NULL,
    effect REAL NOT NULL,
    objective TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outcomes_workload ON outcomes(workload);
"""


class OutcomeStore:
    """The outcomes recorded on this host; each call opens the file and
    closes it again (writers are rare: one per trial or applied plan)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = open_sqlite(self.path, synchronous="FULL", busy_timeout=10.0, wal=False)
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutcomeError(f"cannot open outcome store: {exc}",
                               subject=str(self.path)) from exc
        return conn

    def record(self, outcome: Outcome) -> None:
        if not outcome.knobs:
            raise OutcomeError("an outcome needs knob values", subject=str(self.path))
        conn = self._connect()
        try:
            with conn:
                conn.execute(
                    "INSERT INTO outcomes (ts, workload, source, knobs, effect, objective) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (outcome.ts or time.time(), outcome.workload, outcome.source,
                     json.dumps(outcome.knobs, sort_keys=True), float(outcome.effect),
                     outcome.objective))
        except sqlite3.Error as exc:
            raise OutcomeError(f"cannot record outcome: {exc}", subject=str(self.path)) from exc
        finally:
            conn.close()

    def outcomes(self, workload: str | None = None) -> list[Outcome]:
        if not self.path.exists():
            return []
        conn = self._connect()
        try:
            if workload is None:
                rows = conn.execute("SELECT workload, source, knobs, effect, objective, ts "
                                    "FROM outcomes ORDER BY id").fetchall()
            else:
                rows = conn.execute("SELECT workload, source, knobs, effect, objective, ts "
                                    "FROM outcomes WHERE workload = ? ORDER BY id",
                                    (workload,)).fetchall()
        except sqlite3.Error as exc:
            raise OutcomeError(f"cannot read outcomes: {exc}", subject=str(self.path)) from exc
        finally:
            conn.close()
        return [Outcome(workload=w, source=s, knobs=json.loads(k), effect=e, objective=o, ts=t)
                for w, s, k, e, o, t in rows]

    def learned(self, workload: str) -> LearnedModel:
        return LearnedModel.fit(workload, self.outcomes(workload))
