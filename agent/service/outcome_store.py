"""The measured outcomes, kept: SQLite under the state directory
(`outcomes.db`), one row per applied plan or tuning trial. What they teach
is learned in the decide layer (`hosttune.models.outcomes.LearnedModel`).

Outcomes imported from other hosts (`hosttune outcomes import`) are kept
apart, in their own table with the facts of the host that measured them, so
this host's own record stays its own: an export carries only local outcomes
(no second-hand results passed on as first-hand), and `hosttune outcomes
show` tells them apart.

Not in WAL mode, unlike the journal and the history: `hosttune recommend`
reads this file without root, and reading a WAL database needs its -shm
file, which a user without write access to the state directory cannot
create once the writer has closed the database."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.sqlitedb import open_sqlite
from hosttune.models.outcomes import HostFacts, LearnedModel, Outcome, OutcomeError

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
CREATE TABLE IF NOT EXISTS imported (
    id INTEGER PRIMARY KEY,
    host_id TEXT NOT NULL,
    host TEXT NOT NULL,
    ts REAL NOT NULL,
    workload TEXT NOT NULL,
    source TEXT NOT NULL,
    knobs TEXT NOT NULL,
    before TEXT NOT NULL DEFAULT '{}',
    effect REAL NOT NULL,
    noise REAL,
    objective TEXT NOT NULL DEFAULT '',
    origin TEXT NOT NULL DEFAULT '',
    imported_at REAL NOT NULL,
    -- the same measurement imported twice (the same file, or two files that
    -- both carry it) is kept once
    UNIQUE (host_id, ts, workload, knobs, effect)
);
CREATE INDEX IF NOT EXISTS imported_workload ON imported(workload);
"""
# Added after the first release: files written before have no such columns.
_ADDED = (("before", "TEXT NOT NULL DEFAULT '{}'"), ("noise", "REAL"))


def host_facts(host: Host) -> HostFacts:
    """This host's facts as an outcome carries them (see HostFacts)."""
    # The daemon imports this module to record outcomes, never to read facts.
    from hosttune.agent.sense.pci import scan
    from hosttune.agent.sense.telemetry.memory import mem_total_kb
    from hosttune.agent.sense.topology import online_cpus

    # A host without a machine-id (a bare container) falls back to its name.
    machine_id = ((host.read_optional("/etc/machine-id") or "").strip()
                  or (host.read_optional("/proc/sys/kernel/hostname") or "").strip())
    cpu_model = ""
    for line in (host.read_optional("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        # x86 says "model name"; arm64 kernels "Model" or nothing useful.
        if key.strip() in ("model name", "Model"):
            cpu_model = value.strip()
            break
    accels = scan(host, roles=("accelerator",))
    first = accels[0] if accels else None
    return HostFacts(
        host_id=hashlib.sha256(machine_id.encode()).hexdigest()[:16] if machine_id else "",
        cpu_model=cpu_model, cores=len(online_cpus(host)),
        kernel=(host.read_optional("/proc/sys/kernel/osrelease") or "").strip(),
        mem_bytes=(mem_total_kb(host) or 0) * 1024,
        accel_vendor=(first.vendor_name or f"{first.vendor_id:04x}") if first else "",
        accel_model=f"{first.vendor_id:04x}:{first.device_id:04x}" if first else "",
        accel_count=len(accels))


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
            have = {row[1] for row in conn.execute("PRAGMA table_info(outcomes)")}
            for name, decl in _ADDED:
                if name not in have:
                    conn.execute(f"ALTER TABLE outcomes ADD COLUMN {name} {decl}")
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
                    "INSERT INTO outcomes (ts, workload, source, knobs, effect, objective, "
                    "before, noise) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (outcome.ts or time.time(), outcome.workload, outcome.source,
                     json.dumps(outcome.knobs, sort_keys=True), float(outcome.effect),
                     outcome.objective, json.dumps(outcome.before, sort_keys=True),
                     outcome.noise))
        except sqlite3.Error as exc:
            raise OutcomeError(f"cannot record outcome: {exc}", subject=str(self.path)) from exc
        finally:
            conn.close()

    def outcomes(self, workload: str | None = None) -> list[Outcome]:
        """This host's own outcomes."""
        rows = self._select("SELECT workload, source, knobs, effect, objective, ts, before, "
                            "noise FROM outcomes", workload)
        return [Outcome(workload=w, source=s, knobs=json.loads(k), effect=e, objective=o, ts=t,
                        before=json.loads(b), noise=n)
                for w, s, k, e, o, t, b, n in rows]

    def imported(self, workload: str | None = None) -> list[Outcome]:
        """Outcomes other hosts measured, each with that host's facts."""
        rows = self._select("SELECT workload, source, knobs, effect, objective, ts, before, "
                            "noise, host FROM imported", workload)
        return [Outcome(workload=w, source=s, knobs=json.loads(k), effect=e, objective=o, ts=t,
                        before=json.loads(b), noise=n,
                        host=HostFacts(**json.loads(h)))
                for w, s, k, e, o, t, b, n, h in rows]

    def _select(self, query: str, workload: str | None) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        conn = self._connect()
        try:
            if workload is None:
                return conn.execute(query + " ORDER BY id").fetchall()
            return conn.execute(query + " WHERE workload = ? ORDER BY id",
                                (workload,)).fetchall()
        except sqlite3.Error as exc:
            raise OutcomeError(f"cannot read outcomes: {exc}", subject=str(self.path)) from exc
        finally:
            conn.close()

    def add_imported(self, outcomes: Iterable[Outcome], origin: str) -> int:
        """Keeps outcomes of other hosts (each with its `host`), all or none;
        how many were new (a measurement already kept is skipped)."""
        conn = self._connect()
        now = time.time()
        try:
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            for o in outcomes:
                if o.host is None:
                    raise OutcomeError("an imported outcome needs its host's facts",
                                       subject=origin)
                conn.execute(
                    "INSERT OR IGNORE INTO imported (host_id, host, ts, workload, source, "
                    "knobs, before, effect, noise, objective, origin, imported_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (o.host.host_id, json.dumps(o.host.to_dict(), sort_keys=True), o.ts,
                     o.workload, o.source, json.dumps(o.knobs, sort_keys=True),
                     json.dumps(o.before, sort_keys=True), float(o.effect), o.noise,
                     o.objective, origin, now))
            added = conn.total_changes - before
            conn.execute("COMMIT")
            return added
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise OutcomeError(f"cannot import outcomes: {exc}",
                                   subject=str(self.path)) from exc
            raise
        finally:
            conn.close()

    def learned(self, workload: str, here: HostFacts | None = None) -> LearnedModel:
        """What this host's outcomes and the imported ones teach for
        `workload`; the imported weighted by their hosts' likeness to `here`."""
        return LearnedModel.fit(workload, self.outcomes(workload) + self.imported(workload),
                                here)
