"""Opening hosttune's SQLite files: the transaction journal (tuners), the
daemon's history and the measured outcomes (service) share one setup.

Every connection is in autocommit mode (each store opens its transactions
itself with BEGIN, or writes single statements), may be used from the thread
that did not open it (the daemon's worker threads), and waits `busy_timeout`
seconds for a lock another process holds instead of failing at once. A store
in WAL mode has its mode checked: a filesystem that cannot do WAL would
otherwise fall back silently to a rollback journal.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal


def open_sqlite(path: str | Path, *, synchronous: Literal["NORMAL", "FULL"],
                busy_timeout: float, wal: bool = True) -> sqlite3.Connection:
    """A connection to `path` set up as above. sqlite3.Error when it cannot be
    had; each store turns that into its own typed error naming the file.
    `synchronous`: FULL when a commit must be on disk when it returns (the
    journal), NORMAL when a crash may lose the last rows but never corrupt
    the file (history)."""
    db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                         check_same_thread=False)
    try:
        if wal:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL mode (got {mode})")
        db.execute(f"PRAGMA synchronous={synchronous}")
    except BaseException:
        db.close()
        raise
    return db
