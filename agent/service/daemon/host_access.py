"""What the daemon does to its host, behind one small protocol so the loop can
be driven by the real host (`HostTools`) or, in tests, by a fixture tree.

`HostTools` holds the three things that touch one Host: the telemetry Sampler
(the process's only one), the workload model (the numpy-free forest when it
can be), and the tuners' journal with its transactions. A part that cannot
be had (no model artifact, no journal yet) is reported in `notes` or answers
with a clear error; the daemon keeps sampling and serving either way.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.sample import AIProcess, Sample
from hosttune.agent.sense.telemetry.processes import ProcTable, find_ai_processes
from hosttune.agent.sense.telemetry.sampler import open_sampler, rates
from hosttune.agent.sense.vendors import backends_from_config
from hosttune.agent.service.live_roles import RoleWatch
from hosttune.agent.service.render.roles import verdict_dict
from hosttune.agent.service.tracker import Verdict
from hosttune.models import classifier, forest
from hosttune.models.features import MIN_ROWS, lite_window_features, window_features
from hosttune.models.roles import HostVerdict
from hosttune.models.trace import trace_row
from hosttune.tuners.knobs import Plan

if TYPE_CHECKING:
    from hosttune.agent.service.collapse import CollapseRunner
    from hosttune.agent.service.config import CollapseSettings
    from hosttune.models.collapse import NewMemory
    from hosttune.tuners.base import Tuner
    from hosttune.tuners.journal import Journal
    from hosttune.tuners.transaction import TxnResult


class PartUnavailable(HosttuneError):
    """A part of hosttune this build or host does not have."""


@dataclass
class TxnOutcome:
    ok: bool
    txn: str | None
    message: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    # The transaction's own report (tuners' TxnResult.to_dict()), when there is one.
    raw: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.raw is not None:
            return dict(self.raw)
        return {"ok": self.ok, "txn": self.txn, "message": self.message,
                "changes": self.changes}


@dataclass
class Proposal:
    """A plan ready to apply, and how to show it."""

    workload: str
    plan: Plan
    report: dict[str, Any]


class HostAccess(Protocol):
    notes: list[str]

    def prepare(self) -> dict[str, Any]: ...

    def sample(self) -> Sample: ...

    def rates(self, prev: Sample, cur: Sample) -> dict[str, float]: ...

    def classify(self, window: Sequence[Sample],
                 rates: Sequence[Mapping[str, float]]) -> Verdict: ...

    def recommend(self, workload: str, latest: Sample | None,
                  rates: Mapping[str, float]) -> Proposal | None: ...

    def preflight(self, plan: Plan, allowlist: Mapping[str, Mapping[str, Any]],
                  admin_owned: Mapping[str, str]) -> Plan: ...

    def apply(self, plan: Plan, reason: str, *, uid: int | None = None,
              allowlist: Mapping[str, Mapping[str, Any]] | None = None,
              admin_owned: Mapping[str, str] | None = None,
              force: bool = False) -> TxnOutcome: ...

    def rollback(self, target: str, *, force: bool = False, uid: int | None = None
                 ) -> TxnOutcome: ...

    def recover(self) -> list[str]: ...

    def collapse(self, processes: Sequence[AIProcess], workload: str,
                 settings: CollapseSettings, reason: str) -> dict[str, Any] | None: ...

    def collapse_status(self) -> dict[str, Any] | None: ...

    def new_memory(self) -> NewMemory | None: ...

    def job_signals(self, pids: Sequence[int]) -> dict[int, dict[str, Any]]: ...

    def roles(self) -> dict[str, Any] | None: ...

    def history(self, limit: int) -> list[dict[str, Any]]: ...

    def drift(self) -> list[str]: ...

    def allowlist_defaults(self) -> Mapping[str, Mapping[str, Any] | None]: ...

    def close(self) -> None: ...


def rows_matrix(rows: Sequence[Mapping[str, float]]) -> tuple[list[str], list[list[float]]]:
    """Rate rows to (columns, matrix) with NaN where a row lacks a column."""
    columns = sorted({name for row in rows for name in row})
    matrix = [[float(row.get(c, math.nan)) for c in columns] for row in rows]
    return columns, matrix


Model = forest.Forest | classifier.WorkloadModel


class HostTools:
    """The sampler, the workload model and the journal of one Host."""

    def __init__(self, host: Host, state_dir: Path, *, backends: Sequence[str] = (),
                 process_every: int = 5, pcie_every: int = 1, roles: bool = True) -> None:
        self.host = host
        self.state_dir = state_dir
        self.notes: list[str] = []
        # One pass over /proc serves the sampler's AI-process scan and the
        # role scanner on the samples where both run, and maps is re-read
        # only for a process whose mappings changed (ProcTable).
        table = ProcTable(host)
        self._sampler = open_sampler(host, backends=backends_from_config(backends),
                                     pcie_every=pcie_every, process_every=process_every,
                                     find_processes=functools.partial(find_ai_processes,
                                                                      table=table))
        self.notes.extend(self._sampler.notes)
        self._model: Model | None = None
        self._model_error: str | None = None
        self._journal: Journal | None = None
        self._collapser: CollapseRunner | None = None
        self._tuners: dict[str, Tuner] | None = None

        # Per-process roles: a process scan with every sample (every pid's
        # stat only on the samples of the sampler's process scan, sharing
        # its pass; the candidates' counters at each), judged with the role
        # model at the end of each window.
        self._roles = RoleWatch(host, full_every=max(1, process_every), table=table,
                                accel=self._sampler.accel_processes) if roles else None
        # the last window's roles, for `hosttune status`: (wall time, verdict)
        self._last_roles: tuple[float, HostVerdict] | None = None

    def prepare(self) -> dict[str, Any]:
        """Load what the loop needs up front (the model: its memory is part of
        the daemon's steady state) and say what is there."""
        model = self._ensure_model()
        info: dict[str, Any] = {"root": str(self.host.root), "model": None if model is None else {
            "source": str(model.source), "kind": model.kind, "classes": list(model.classes),
            "geometry": model.geometry}}
        if model is None:
            info["model_error"] = self._model_error
        if self._roles is not None:
            # the role forest too (40 ms of CPU to parse), so the first window
            # is judged as quickly as the next
            roles = self._roles.model()
            info["role_model"] = None if roles is None else str(roles.source)
            if roles is None:
                info["role_model_error"] = self._roles.problem
                self.notes.append(f"roles off: {self._roles.problem}")
        return info

    # -- sense -----------------------------------------------------------------

    def sample(self) -> Sample:
        sample = self._sampler.sample()
        if self._roles is not None:
            self._roles.scan()
        return sample

    def rates(self, prev: Sample, cur: Sample) -> dict[str, float]:
        return rates(prev, cur)

    # -- decide ----------------------------------------------------------------

    def _ensure_model(self) -> Model | None:
        if self._model is None and self._model_error is None:
            try:
                # The site's own model (`hosttune model train` writes it there)
                # wins over the shipped one, as for `hosttune classify`.
                site = self.state_dir / "models" / "workload"
                target = site if classifier.model_files(site)[0].exists() else None
                try:
                    # A random forest is evaluated without numpy (the same
                    # numbers; numpy alone is ~17 MB of the daemon's memory).
                    self._model = forest.load_forest(target)
                except forest.NeedsNumpy:
                    self._model = classifier.load(target)
            except (ImportError, HosttuneError, OSError) as exc:
                self._model_error = f"no workload model: {exc}"
                self.notes.append(self._model_error)
        return self._model

    def classify(self, window: Sequence[Sample],
                 rates: Sequence[Mapping[str, float]]) -> Verdict:
        """`rates[i]` are the rates from `window[i]` to `window[i + 1]`, computed
        once per tick by the loop (recomputing them here doubled the cost)."""
        model = self._ensure_model()
        if model is None:
            return Verdict("unknown", 0.0, reason=self._model_error or "no model")
        # The rows the model was trained on: trace rows, each a sample's values
        # merged with its rates against the previous sample.
        rows = [trace_row({**cur.values, **r}) for cur, r in zip(window[1:], rates, strict=True)]
        if len(rows) < MIN_ROWS:
            return Verdict("unknown", 0.0, reason=f"window has {len(rows)} rows, "
                           f"needs {MIN_ROWS}")
        columns, matrix = rows_matrix(rows)
        if isinstance(model, forest.Forest):
            pred = model.classify(lite_window_features(columns, matrix))
        else:
            # Only a model the forest cannot evaluate gets here, and it brought
            # numpy in when it loaded.
            import numpy as np

            pred = model.classify(window_features(columns, np.asarray(matrix, dtype=float)))
        top = tuple((e.feature, round(e.contribution, 4)) for e in pred.evidence)
        reason = "" if pred.label != "unknown" else (
            f"best guess {pred.best} below the confidence threshold")
        roles = None if self._roles is None else self._roles.verdict(since=window[0].monotonic)
        if roles is None:
            return Verdict(pred.label, pred.confidence, top, reason)
        self._last_roles = (time.time(), roles)
        # The processes' roles decide; the host-aggregate model's answer is
        # kept in the reason for comparison.
        lead = next((r for r in roles.roles if r.role == roles.label), None)
        role_top = () if lead is None else tuple((f, round(p, 4)) for f, _, p in lead.evidence)
        return Verdict(roles.label, roles.confidence, role_top,
                       f"{roles.reason} (host aggregates: {pred.label} {pred.confidence:.2f})")

    def recommend(self, workload: str, latest: Sample | None,
                  rates: Mapping[str, float]) -> Proposal | None:
        """The plan for `workload` on the loop's latest sample and its rates:
        no second sampler, no waiting."""
        # recommend and auto modes only: topology, ownership, the tuners'
        # registry and the rules (14 modules, 0.6 MB, ~0.1 s of start-up).
        from hosttune.agent.service.recommend import run_recommend
        from hosttune.agent.service.snapshot import Telemetry
        from hosttune.models.recommender import to_plan

        held = None if latest is None else Telemetry(latest, dict(rates))
        refused = None if self._collapser is None else self._collapser.unsupported
        report = run_recommend(self.host, workload=workload, state_dir=str(self.state_dir),
                               telemetry=held if held is not None else "no sample taken yet",
                               collapse_refused=refused)
        plan = to_plan(report.recommendations)
        if not plan.changes and not report.recommendations.actions:
            return None
        return Proposal(workload=report.workload, plan=plan, report=report.to_dict())

    def allowlist_defaults(self) -> Mapping[str, Mapping[str, Any] | None]:
        # The allowlist is assembled from every knob family (55 ms of imports):
        # only a plan about to be applied needs it, never an observing daemon.
        from hosttune.tuners.allowlist import DEFAULT_ALLOWLIST

        return DEFAULT_ALLOWLIST

    # -- act -------------------------------------------------------------------

    def _journal_open(self) -> Journal:
        # Only a daemon that changes the host (or finds a journal at start)
        # loads the journal and the families: 1 MB and ~0.1 s of start-up.
        from hosttune.tuners.journal import Journal

        if self._journal is None:
            self._journal = Journal(self.state_dir / "journal.db")
        return self._journal

    def preflight(self, plan: Plan, allowlist: Mapping[str, Mapping[str, Any]],
                  admin_owned: Mapping[str, str]) -> Plan:
        """The part of `plan` a transaction would change now: a dry run of the
        same checks (allowlist and bounds, ownership, isolated CPUs) the
        transaction makes, so they live in one place (tuners/transaction.py)."""
        from hosttune.tuners import transaction  # see _journal_open

        result = transaction.apply_plan(self.host, plan, self._journal_open(), dry_run=True,
                                        skip_refused=True, allowlist=allowlist,
                                        admin_owned=admin_owned)
        changing = {s.knob for s in result.steps if s.status == "would change"}
        return Plan(changes=[c for c in plan.changes if c.knob in changing],
                    workload=plan.workload, note=plan.note)

    def apply(self, plan: Plan, reason: str, *, uid: int | None = None,
              allowlist: Mapping[str, Mapping[str, Any]] | None = None,
              admin_owned: Mapping[str, str] | None = None,
              force: bool = False) -> TxnOutcome:
        from hosttune.tuners import transaction  # see _journal_open

        result = transaction.apply_plan(self.host, plan, self._journal_open(), reason=reason,
                                        uid=uid, allowlist=allowlist, admin_owned=admin_owned,
                                        force=force)
        return _outcome(result)

    def rollback(self, target: str, *, force: bool = False, uid: int | None = None
                 ) -> TxnOutcome:
        from hosttune.tuners import transaction  # see _journal_open

        return _outcome(transaction.rollback(self.host, self._journal_open(), target,
                                             force=force, uid=uid))

    def recover(self) -> list[str]:
        if self._journal is None and not (self.state_dir / "journal.db").exists():
            # No journal, no transaction to finish: a daemon that has never
            # changed the host (observe mode) does not load the tuners at all.
            return []
        from hosttune.tuners import transaction  # see _journal_open

        messages = [r.message for r in transaction.recover(self.host, self._journal_open())]
        return messages + self._end_vanished_jobs()

    def _end_vanished_jobs(self) -> list[str]:
        """Batch jobs recorded here that Slurm no longer lists (their epilog
        never ran: the node rebooted mid-job) are ended at start, their knobs
        back at the baseline; nothing is ended when squeue cannot answer."""
        if not (self.state_dir / "jobs.json").exists():
            return []
        import dataclasses

        from hosttune.agent.sense.paths import Paths
        from hosttune.agent.service import jobs

        paths = dataclasses.replace(Paths.from_env(), state_dir=self.state_dir)
        result = jobs.reconcile(jobs.Context(host=self.host, paths=paths),
                                jobs.slurm_live_jobs)
        return [f"batch jobs: {result.message}"] if result.ended or not result.ok else []

    def collapse(self, processes: Sequence[AIProcess], workload: str,
                 settings: CollapseSettings, reason: str) -> dict[str, Any] | None:
        """One per-process huge-page pass over the AI processes that need one
        (journalled); None when none does."""
        # auto mode only: the pass and the transaction module (see _journal_open)
        from hosttune.agent.service.collapse import CollapseRunner

        if self._collapser is None:
            self._collapser = CollapseRunner(self.host, settings)
        self._collapser.settings = settings
        report = self._collapser.run(self._journal_open(), processes, workload, reason=reason)
        return None if report is None else report.to_dict()

    def collapse_status(self) -> dict[str, Any] | None:
        return None if self._collapser is None else self._collapser.status()

    def new_memory(self) -> NewMemory | None:
        """Whether a collapsed job that keeps allocating wants THP `always`
        (models.collapse.new_memory_thp), as of the last collapse look."""
        return None if self._collapser is None else self._collapser.new_memory

    def job_signals(self, pids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """What can be read of each process's own progress from outside: its
        CPU seconds (monotonic wall beside them), its cgroup's stall and, where
        a vendor backend lists it, its job's accelerator busy share."""
        from hosttune.agent.sense import knobfiles, procmem
        from hosttune.agent.sense.telemetry.cpu import clock_ticks
        from hosttune.agent.sense.telemetry.processes import parse_stat_cpu_seconds

        hz = clock_ticks()
        busy = self._accel_busy_by_pid()
        out: dict[int, dict[str, Any]] = {}
        for pid in pids:
            stat = self.host.read_optional(knobfiles.process(pid, "stat"))
            if stat is not None:
                out[pid] = {"cpu_seconds": parse_stat_cpu_seconds(stat, hz),
                            "at": time.monotonic(),
                            "stall": procmem.cgroup_stall(self.host, pid),
                            "accel_busy": busy.get(pid)}
        return out

    def _accel_busy_by_pid(self) -> dict[int, float]:
        """Each process's job's accelerator busy share (devices' worth: 1.5 =
        one and a half devices busy) over the last window, as the role scanner
        had it from the vendor's per-process figures. Read from there, not
        asked again: NVML hands out its per-process samples once, to
        whichever caller asks first."""
        if self._last_roles is None:
            return {}
        jobs = [role.job for role in self._last_roles[1].roles]
        return {pid: job.accel_util for job in jobs
                if job.active and job.accel_listed and job.accel_util is not None
                for pid in job.pids}

    def roles(self) -> dict[str, Any] | None:
        """The per-process roles behind the last window's verdict, with their
        evidence (active jobs only); None when roles are off."""
        if self._roles is None:
            return None
        out: dict[str, Any] = {"problem": self._roles.problem, "at": None, "verdict": None}
        last = self._last_roles
        if last is not None:
            out["at"] = last[0]
            out["verdict"] = verdict_dict(last[1], active_only=True,
                                          accel_problem=self._roles.accel_problem)
        return out

    def history(self, limit: int) -> list[dict[str, Any]]:
        from hosttune.tuners import transaction  # see _journal_open

        return [r.to_dict() for r in transaction.history(self._journal_open())[-limit:]]

    def drift(self) -> list[str]:
        """Knobs hosttune set that now read otherwise: someone else changed
        them since (reported, never fought)."""
        if self._journal is None and not (self.state_dir / "journal.db").exists():
            return []  # never changed the host: nothing to drift, no tuner loaded
        from hosttune.tuners.registry import bind_tuners, tuner_and_key  # see _journal_open

        journal = self._journal_open()
        if self._tuners is None:
            self._tuners = bind_tuners(self.host)
        out = []
        for knob in journal.baseline():
            ours = journal.hosttune_value(knob)
            if ours is None:
                continue
            try:
                tuner, key = tuner_and_key(self._tuners, knob)
                # A knob that is gone (a process that exited) has not drifted.
                if tuner.available(key) and not tuner.equal(tuner.read(key), ours):
                    out.append(knob)
            except HosttuneError:
                continue
        return out

    def close(self) -> None:
        self._sampler.close()
        if self._journal is not None:
            self._journal.close()


def _outcome(result: TxnResult) -> TxnOutcome:
    """A tuners TxnResult as the loop keeps it."""
    data: dict[str, Any] = result.to_dict()
    txn = result.txn_id
    return TxnOutcome(ok=bool(result.ok), txn=None if txn is None else str(txn),
                      message=str(result.message or result.error or ""),
                      changes=list(data.get("changes", [])), raw=data)
