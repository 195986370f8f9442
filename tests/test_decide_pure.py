"""The decide layer (models/) is functions of what it is handed: nothing in it
runs commands, opens sockets or databases, sleeps, or starts threads. What
measures or keeps things lives in the service layer: the objectives
(agent/service/objective.py) and the outcome store
(agent/service/outcome_store.py). The three SQLite stores share one opener."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest

from hosttune.agent.sense.sqlitedb import open_sqlite
from hosttune.agent.service.outcome_store import OutcomeStore
from hosttune.agent.service.store import Store
from hosttune.models.outcomes import Outcome
from hosttune.tuners.journal import Journal

MODELS = Path(__file__).resolve().parents[1] / "models"
# the workload suite is a set of programs that load the host on purpose
DECIDE = sorted(p for p in MODELS.glob("*.py"))
SIDE_EFFECTS = {"subprocess", "socket", "sqlite3", "urllib", "threading", "http", "signal"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", DECIDE, ids=lambda p: p.name)
def test_decide_imports_nothing_that_acts(path: Path) -> None:
    found = {n for n in _imports(path) if n.split(".")[0] in SIDE_EFFECTS}
    assert not found, f"{path.name} imports {sorted(found)}"
    assert not any(n.startswith("hosttune.agent.service") for n in _imports(path))


@pytest.mark.parametrize("path", DECIDE, ids=lambda p: p.name)
def test_decide_never_sleeps(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr == "sleep":
            pytest.fail(f"{path.name}:{node.lineno} sleeps")


def _pragmas(db: sqlite3.Connection) -> tuple[str, int]:
    return (str(db.execute("PRAGMA journal_mode").fetchone()[0]),
            int(db.execute("PRAGMA synchronous").fetchone()[0]))


def test_the_three_stores_share_one_opener(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        assert _pragmas(journal.db) == ("wal", 2)  # FULL: a commit is on disk
    finally:
        journal.close()
    store = Store(tmp_path / "history.db")
    try:
        assert _pragmas(store._db) == ("wal", 1)  # NORMAL: history may lose its last rows
    finally:
        store.close()
    outcomes = OutcomeStore(tmp_path / "outcomes.db")
    outcomes.record(Outcome(workload="training", source="trial", knobs={"thp:enabled": "always"},
                            effect=1.1))
    conn = outcomes._connect()
    try:
        # not WAL: `hosttune recommend` reads it without root
        assert _pragmas(conn) == ("delete", 2)
    finally:
        conn.close()
    assert [o.effect for o in outcomes.outcomes("training")] == [1.1]


def test_open_sqlite_sets_autocommit_and_busy_timeout(tmp_path: Path) -> None:
    db = open_sqlite(tmp_path / "x.db", synchronous="NORMAL", busy_timeout=3.0)
    try:
        assert db.isolation_level is None
        assert int(db.execute("PRAGMA busy_timeout").fetchone()[0]) == 3000
        assert _pragmas(db) == ("wal", 1)
    finally:
        db.close()
