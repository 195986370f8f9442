"""Background noise, a database: an SQLite file in WAL mode taking batches
of inserts and updates in transactions, indexed range queries and
aggregates between them, and a checkpoint of the WAL now and then, as an
application's local database would."""

from __future__ import annotations

import random
import shutil
import sqlite3
import tempfile
from pathlib import Path

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--batch", type=int, default=2000, help="rows per transaction")
    p.add_argument("--queries", type=int, default=40, help="range queries per transaction")
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    rnd = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bg-sqlite-", dir=args.dir))
    db = sqlite3.connect(work / "app.db")
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, user INTEGER, kind TEXT, "
                   "amount REAL, note TEXT)")
        db.execute("CREATE INDEX events_user ON events (user)")
        clock = _common.Clock(args.seconds)
        rows = 0
        for t in clock.ticks():
            with db:
                db.executemany("INSERT INTO events (user, kind, amount, note) VALUES "
                               "(?, ?, ?, ?)",
                               [(rnd.randrange(50000), rnd.choice(("buy", "view", "ret")),
                                 rnd.random() * 100, "x" * rnd.randrange(20, 200))
                                for _ in range(args.batch)])
                db.execute("UPDATE events SET amount = amount * 1.01 WHERE user = ?",
                           (rnd.randrange(50000),))
            rows += args.batch
            for _ in range(args.queries):
                lo = rnd.randrange(50000)
                db.execute("SELECT kind, count(*), sum(amount) FROM events WHERE user "
                           "BETWEEN ? AND ? GROUP BY kind", (lo, lo + 50)).fetchall()
            if t % 10 == 9:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
        shutil.rmtree(work, ignore_errors=True)
    _common.report("bg_sqlite", args.quiet, rows=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
