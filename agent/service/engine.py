"""What the daemon loop calls to sense, decide and act: one object, so the
loop can be driven by the real host (`HostEngine`) or, in tests, by an engine
over a fixture tree.

`HostEngine` wires the project's parts together: telemetry's Sampler, the
shipped workload model (numpy only), the recommender and the tuners'
transactions and journal. Each part is imported when first needed, and a part
that cannot be had (no model artifact, a tuner package missing from a build)
is reported in `notes` and answers with a clear error; the daemon keeps
sampling and serving either way.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.sample import Sample
from hosttune.agent.service.tracker import Verdict


class EngineUnavailable(HosttuneError):
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
    plan: Any  # hosttune.tuners.knobs.Plan
    report: dict[str, Any]


class Engine(Protocol):
    notes: list[str]

    def prepare(self) -> dict[str, Any]: ...

    def sample(self) -> Sample: ...

    def rates(self, prev: Sample, cur: Sample) -> dict[str, float]: ...

    def classify(self, window: Sequence[Sample],
                 rates: Sequence[Mapping[str, float]]) -> Verdict: ...

    def recommend(self, workload: str) -> Proposal | None: ...

    def allowed(self, plan: Any, allowlist: Mapping[str, Mapping[str, Any]],
                avoid: set[tuple[str, str, str]]) -> Any: ...

    def apply(self, plan: Any, reason: str, *, uid: int | None = None,
              allowlist: Mapping[str, Mapping[str, Any]] | None = None,
              admin_owned: Mapping[str, str] | None = None,
              force: bool = False) -> TxnOutcome: ...

    def rollback(self, target: str, *, force: bool = False, uid: int | None = None
                 ) -> TxnOutcome: ...

    def recover(self) -> list[str]: ...

    def history(self, limit: int) -> list[dict[str, Any]]: ...

    def allowlist_defaults(self) -> Mapping[str, Mapping[str, Any] | None]: ...

    def close(self) -> None: ...


def rows_matrix(rows: Sequence[Mapping[str, float]]) -> tuple[list[str], list[list[float]]]:
    """Rate rows to (columns, matrix) with NaN where a row lacks a column."""
    columns = sorted({name for row in rows for name in row})
    matrix = [[float(row.get(c, math.nan)) for c in columns] for row in rows]
    return columns, matrix


class HostEngine:
    def __init__(self, host: Host, state_dir: Path, *, backends: Sequence[str] = (),
                 process_every: int = 5, pcie_every: int = 1) -> None:
        self.host = host
        self.state_dir = state_dir
        self.backends = tuple(backends)
        self.process_every = process_every
        self.pcie_every = pcie_every
        self.notes: list[str] = []
        self._sampler: Any = None
        self._rates: Any = None
        self._model: Any = None
        self._model_error: str | None = None
        self._journal: Any = None

    def prepare(self) -> dict[str, Any]:
        """Load what the loop needs up front (the model: its memory is part of
        the daemon's steady state) and say what is there."""
        model = self._ensure_model()
        info: dict[str, Any] = {"root": str(self.host.root), "model": None if model is None else {
            "source": str(getattr(model, "source", "")), "kind": getattr(model, "kind", ""),
            "classes": list(getattr(model, "classes", [])),
            "geometry": getattr(model, "geometry", None)}}
        if model is None:
            info["model_error"] = self._model_error
        return info

    # -- sense -----------------------------------------------------------------

    def _ensure_sampler(self) -> None:
        if self._sampler is not None:
            return
        from hosttune.agent.sense.telemetry.sampler import Sampler, rates, system_collectors

        collectors = list(system_collectors(self.host))
        try:
            from hosttune.agent.sense.accel.select import AccelCollector, backends_from_config

            collectors.append(AccelCollector(
                self.host, backends=backends_from_config(self.backends),
                pcie_every=self.pcie_every))
        except (ImportError, HosttuneError, TypeError) as exc:
            self.notes.append(f"accelerator telemetry off: {exc}")
        self._sampler = Sampler(self.host, collectors, process_every=self.process_every)
        self._rates = rates

    def sample(self) -> Sample:
        self._ensure_sampler()
        sample: Sample = self._sampler.sample()
        return sample

    def rates(self, prev: Sample, cur: Sample) -> dict[str, float]:
        self._ensure_sampler()
        result: dict[str, float] = self._rates(prev, cur)
        return result

    # -- decide ----------------------------------------------------------------

    def _ensure_model(self) -> Any:
        if self._model is None and self._model_error is None:
            try:
                serving: Any = importlib.import_module("hosttune.models.classifier")
                lite: Any = importlib.import_module("hosttune.models.forest")
                # The site's own model (`hosttune model train` writes it there)
                # wins over the shipped one, as for `hosttune classify`.
                site = self.state_dir / "models" / "workload"
                target = site if serving.model_files(site)[0].exists() else None
                try:
                    # A random forest is evaluated without numpy (the same
                    # numbers; numpy alone is ~15 MB of the daemon's memory).
                    self._model = lite.load_forest(target)
                except lite.NeedsNumpy:
                    self._model = serving.load(target)
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
        features: Any = importlib.import_module("hosttune.models.features")
        trace: Any = importlib.import_module("hosttune.models.trace")
        lite: Any = importlib.import_module("hosttune.models.forest")
        min_rows = features.MIN_ROWS
        window_features = (features.lite_window_features if isinstance(model, lite.Forest)
                           else features.window_features)
        # The rows the model was trained on: trace rows, each a sample's values
        # merged with its rates against the previous sample.
        rows = [trace.trace_row({**cur.values, **r})
                for cur, r in zip(window[1:], rates, strict=True)]
        if len(rows) < min_rows:
            return Verdict("unknown", 0.0, reason=f"window has {len(rows)} rows, "
                           f"needs {min_rows}")
        columns, matrix = rows_matrix(rows)
        pred = model.classify(window_features(columns, matrix))
        top = tuple((e.feature, round(e.contribution, 4)) for e in pred.evidence)
        reason = "" if pred.label != "unknown" else (
            f"best guess {pred.best} below the confidence threshold")
        return Verdict(pred.label, pred.confidence, top, reason)

    def recommend(self, workload: str) -> Proposal | None:
        try:
            from hosttune.agent.service.recommend import run_recommend
            from hosttune.models.recommender import to_plan
        except ImportError as exc:
            raise EngineUnavailable(f"no recommender in this build: {exc}") from None
        try:
            report = run_recommend(self.host, workload=workload, window=1.0,
                                   state_dir=str(self.state_dir))
        except ImportError as exc:
            raise EngineUnavailable(f"the recommender needs a part this build lacks: {exc}"
                                    ) from None
        plan = to_plan(report.recommendations)
        if not plan.changes:
            return None
        return Proposal(workload=report.workload, plan=plan, report=report.to_dict())

    def allowlist_defaults(self) -> Mapping[str, Mapping[str, Any] | None]:
        try:
            allowlist: Any = importlib.import_module("hosttune.tuners.allowlist")
        except ImportError:
            return {}
        defaults: Mapping[str, Mapping[str, Any] | None] = allowlist.DEFAULT_ALLOWLIST
        return defaults

    def allowed(self, plan: Any, allowlist: Mapping[str, Mapping[str, Any]],
                avoid: set[tuple[str, str, str]]) -> Any:
        """The plan with only the changes `auto` may make: on the allowlist,
        within bounds, and not one that hurt this workload before."""
        from hosttune.tuners import allowlist as al
        from hosttune.tuners.knobs import Plan

        mem_total_kb = None
        for line in self.host.read_text("/proc/meminfo").splitlines():
            if line.startswith("MemTotal:"):
                mem_total_kb = int(line.split()[1])
        keep = []
        for change in plan.changes:
            if (plan.workload or "", change.knob, change.after) in avoid:
                continue
            try:
                al.check(allowlist, change.knob, change.after, mem_total_kb=mem_total_kb)
            except HosttuneError:
                continue
            keep.append(change)
        return Plan(changes=keep, workload=plan.workload, note=plan.note)

    # -- act -------------------------------------------------------------------

    def _tx(self) -> tuple[Any, Any]:
        try:
            from hosttune.tuners import transaction
            from hosttune.tuners.journal import Journal
        except ImportError as exc:
            raise EngineUnavailable(f"no tuners in this build: {exc}") from None
        if self._journal is None:
            self._journal = Journal(self.state_dir / "journal.db")
        return transaction, self._journal

    def apply(self, plan: Any, reason: str, *, uid: int | None = None,
              allowlist: Mapping[str, Mapping[str, Any]] | None = None,
              admin_owned: Mapping[str, str] | None = None,
              force: bool = False) -> TxnOutcome:
        transaction, journal = self._tx()
        result = transaction.apply_plan(self.host, plan, journal, reason=reason, uid=uid,
                                        allowlist=allowlist, admin_owned=admin_owned,
                                        force=force)
        return _outcome(result)

    def rollback(self, target: str, *, force: bool = False, uid: int | None = None
                 ) -> TxnOutcome:
        transaction, journal = self._tx()
        result = transaction.rollback(self.host, journal, target, force=force, uid=uid)
        return _outcome(result)

    def recover(self) -> list[str]:
        if self._journal is None and not (self.state_dir / "journal.db").exists():
            # No journal, no transaction to finish: a daemon that has never
            # changed the host (observe mode) does not load the tuners at all.
            return []
        transaction, journal = self._tx()
        results = transaction.recover(self.host, journal)
        return [str(getattr(r, "message", r)) for r in (results or [])]

    def history(self, limit: int) -> list[dict[str, Any]]:
        transaction, journal = self._tx()
        rows = transaction.history(journal)[-limit:]
        return [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in rows]

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
        if self._journal is not None and hasattr(self._journal, "close"):
            self._journal.close()


def _outcome(result: Any) -> TxnOutcome:
    """A tuners TxnResult as the loop keeps it."""
    data: dict[str, Any] = result.to_dict()
    txn = result.txn_id
    return TxnOutcome(ok=bool(result.ok), txn=None if txn is None else str(txn),
                      message=str(result.message or result.error or ""),
                      changes=list(data.get("changes", [])), raw=data)
