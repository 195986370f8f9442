"""One `hosttune tune` run, kept out of the CLI module: check who may change
what, read the baseline, build the search space from the allowlist, start
from the priors, run the trials through transactions, and report.

Crash safety has three layers: each trial is a transaction (a crash inside
one is rolled back by the journal's recover() at the next start); SIGTERM and
Ctrl-C raise out of the loop, which reverts to the baseline; and a session
file (state_dir/tune-session.json) holds the baseline while trials run, so a
run killed between transactions (SIGKILL, power loss) is put back at the
start of the next `hosttune tune`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.paths import Paths
from hosttune.agent.sense.telemetry.processes import pid_alive
from hosttune.agent.service.objective import (
    CommandObjective,
    MetricFileObjective,
    PrometheusObjective,
)
from hosttune.agent.service.outcome_store import OutcomeStore, host_facts
from hosttune.agent.service.snapshot import observe
from hosttune.models import workload_classes
from hosttune.models.optimizer import Space
from hosttune.models.outcomes import best_seen, warm_start
from hosttune.models.recommender import recommend
from hosttune.models.space import DEFAULT_TUNE_KNOBS, space_for
from hosttune.models.state import HostState
from hosttune.models.tuning import Objective, Trial, TuningResult, run_tuning
from hosttune.tuners.allowlist import DEFAULT_ALLOWLIST
from hosttune.tuners.journal import Journal
from hosttune.tuners.knobs import Change, Plan
from hosttune.tuners.registry import bind_tuners, search_hints, tuner_and_key
from hosttune.tuners.transaction import apply_plan, recover


@dataclass
class TuneRequest:
    objective: str | None = None
    metric: str | None = None
    lower_is_better: bool = False
    budget: int = 10
    repeats: int = 1
    knobs: list[str] = field(default_factory=list)
    keep: str = "best"
    metric_file: Path | None = None
    prometheus: str | None = None
    prometheus_metric: str | None = None
    window: float = 10.0
    workload: str = "unknown"
    seed: int = 0
    dry_run: bool = False
    root: Path = Path("/")
    state_dir: Path | None = None
    prune: bool = True


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the loop unwinds and reverts."""


class TransactionActuator:
    """Sets knobs as hosttune transactions (journaled old values, read back,
    all or nothing) and reverts by applying the baseline the same way."""

    def __init__(self, host: Host, journal_path: Path, baseline: dict[str, str],
                 label: str) -> None:
        self.host = host
        self.journal_path = journal_path
        self.baseline = dict(baseline)
        self.label = label
        self.tuners = bind_tuners(host)

    def current(self, knobs: list[str]) -> dict[str, str]:
        out = {}
        for knob in knobs:
            tuner, key = tuner_and_key(self.tuners, knob)
            out[knob] = tuner.read(key)
        return out

    def _apply(self, values: dict[str, str], source: str, reason: str) -> None:
        changes = []
        for knob, value in values.items():
            tuner, key = tuner_and_key(self.tuners, knob)
            if not tuner.equal(tuner.read(key), value):
                changes.append(Change(knob=knob, after=value, reason=reason, source=source))
        if not changes:
            return
        journal = Journal(self.journal_path)
        try:
            result = apply_plan(self.host, Plan(changes=changes, workload=None,
                                                note=self.label), journal, reason=reason)
        finally:
            journal.close()
        if not result.ok:
            # the transaction has already put back whatever it had changed
            raise HosttuneError(result.error or result.message or "transaction failed",
                                subject=self.label)

    def apply(self, values: dict[str, str]) -> None:
        self._apply(values, "optimizer", f"{self.label}: trial setting")

    def revert(self) -> None:
        self._apply(self.baseline, "rollback", f"{self.label}: back to the baseline")


def _objective(req: TuneRequest) -> Objective:
    if req.objective:
        return CommandObjective(req.objective, metric=req.metric,
                                lower_is_better=req.lower_is_better)
    if req.metric_file is not None:
        return MetricFileObjective(req.metric_file, metric=req.metric,
                                   lower_is_better=req.lower_is_better, window=req.window)
    assert req.prometheus and req.prometheus_metric
    return PrometheusObjective(req.prometheus, req.prometheus_metric,
                               lower_is_better=req.lower_is_better, window=req.window)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated("SIGTERM")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _session_file(state_dir: Path, host: Host) -> Path:
    """One session file per host root: tuning a fixture tree in a test never
    touches the record of a run on the real host."""
    if host.is_live:
        return state_dir / "tune-session.json"
    digest = hashlib.sha256(str(host.root.resolve()).encode()).hexdigest()[:12]
    return state_dir / f"tune-session-{digest}.json"


def restore_stale_session(host: Host, state_dir: Path, journal: Path,
                          echo: Callable[[str], None] | None) -> bool:
    """Put back the baseline of a tuning run that died between transactions."""
    path = _session_file(state_dir, host)
    if not path.exists():
        return False
    try:
        data = json.loads(path.read_text())
        pid, baseline, root = int(data["pid"]), dict(data["baseline"]), str(data["root"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HosttuneError(f"unreadable tuning session file: {exc}", subject=str(path)) from None
    if pid != os.getpid() and pid_alive(pid):
        raise HosttuneError(f"another tuning run (pid {pid}) is in progress", subject=str(path))
    if Path(root).resolve() != host.root.resolve():
        raise HosttuneError(f"session file names another host root ({root})", subject=str(path))
    TransactionActuator(host, journal, baseline, "hosttune tune recovery").revert()
    path.unlink()
    if echo:
        echo(f"a previous tuning run (pid {pid}) did not finish: its baseline is restored")
    return True


class ObservingObjective:
    """Wraps an objective; during its first measurement, looks at the host
    (telemetry, the workload's processes) from a second thread, so the priors
    judge the workload while it runs (a dataset reader's disk, a trainer's
    huge pages) rather than an idle host."""

    def __init__(self, inner: Objective, host: Host, workload: str,
                 delay: float = 1.0, window: float = 1.0) -> None:
        self.inner = inner
        self.lower_is_better = inner.lower_is_better
        self.host = host
        self.workload = workload
        self.delay = delay
        self.window = window
        self.state: HostState | None = None
        self._done = False

    def describe(self) -> str:
        return self.inner.describe()

    def measure(self) -> float:
        if self._done:
            return self.inner.measure()
        self._done = True
        def look() -> None:
            time.sleep(self.delay)
            try:
                self.state = observe(self.host, workload=self.workload, window=self.window)
            except HosttuneError:
                self.state = None

        thread = threading.Thread(target=look, daemon=True)
        thread.start()
        try:
            return self.inner.measure()
        finally:
            thread.join()


def _prior_start(host: Host, space: Space, baseline: dict[str, str], workload: str,
                 state: HostState | None = None, *, state_dir: Path | None = None
                 ) -> tuple[dict[str, str] | None, list[str]]:
    """The recommendation for this class, restricted to the space: the
    priors, or what the outcomes measured here and imported from similar
    hosts teach (`hosttune outcomes import`), so a host of a fleet starts
    where its siblings found their gains."""
    if state is None:
        state = observe(host, workload=workload, window=0.5)
    learned = None
    if state_dir is not None and (state_dir / "outcomes.db").exists():
        try:
            learned = OutcomeStore(state_dir / "outcomes.db").learned(workload, host_facts(host))
        except HosttuneError:
            learned = None  # the priors still give a start
    recs = recommend(state, learned=learned)
    point = dict(baseline)
    used = []
    for rec in recs.changes:
        if rec.knob in point:
            dim = next(d for d in space.dims if d.knob == rec.knob)
            try:
                dim.encode(rec.after)
            except HosttuneError:
                continue
            point[rec.knob] = rec.after
            used.append(f"{rec.knob}={rec.after} ({rec.rule})")
    return (point if point != baseline else None), used


def trial_row(trial: Trial, baseline: dict[str, str]) -> dict[str, Any]:
    return {"trial": trial.index, "origin": trial.origin, "status": trial.status,
            "effect": trial.effect, "score": trial.score, "scores": trial.scores,
            "values": trial.values,
            "changed": {k: v for k, v in trial.values.items() if baseline.get(k) != v},
            "without": trial.without, "error": trial.error}


def run_tune(req: TuneRequest, echo: Callable[[str], None] | None) -> dict[str, Any]:
    # before any work: a misspelt class would otherwise fail after the baseline
    workload_classes.check(req.workload)
    host = Host(req.root)
    knobs = req.knobs or list(DEFAULT_TUNE_KNOBS)
    space = space_for(knobs, DEFAULT_ALLOWLIST, hints=search_hints())
    state_dir = req.state_dir or Paths.from_env().state_dir
    journal = state_dir / "journal.db"
    objective = _objective(req)
    dry = req.dry_run or os.geteuid() != 0
    if not dry:
        state_dir.mkdir(parents=True, exist_ok=True)
        j = Journal(journal)
        try:
            recover(host, j)
        finally:
            j.close()
        restore_stale_session(host, state_dir, journal, echo)
    actuator_reader = TransactionActuator(host, journal, {}, "hosttune tune")
    baseline = actuator_reader.current(knobs)
    plan_info: dict[str, Any] = {
        "objective": objective.describe(), "knobs": knobs, "baseline": baseline,
        "budget": req.budget, "repeats": req.repeats, "keep": req.keep, "prune": req.prune}
    if dry:
        start, used = _prior_start(host, space, baseline, req.workload, state_dir=state_dir)
        plan_info.update(prior_start=start, prior_rules=used)
        why = "--dry-run" if req.dry_run else "not root: only root changes the host"
        if echo:
            echo(f"dry run ({why}): would measure the baseline, then {req.budget} trial(s) "
                 f"of {req.repeats} measurement(s) of {objective.describe()}")
            echo("search space: " + ", ".join(
                f"{d.knob} in {list(d.choices) if d.kind == 'cat' else f'{d.low}..{d.high}'}"
                for d in space.dims))
            echo("baseline: " + ", ".join(f"{k}={v}" for k, v in baseline.items()))
            if start:
                echo("first trial (priors): " + ", ".join(used))
        return {"dry_run": True, "reason": why, **plan_info, "trials": []}

    actuator = TransactionActuator(host, journal, baseline, "hosttune tune")
    session = _session_file(state_dir, host)
    session.write_text(json.dumps({"pid": os.getpid(), "baseline": baseline,
                                   "root": str(host.root)}))
    outcomes = OutcomeStore(state_dir / "outcomes.db")

    def show(trial: Trial) -> None:
        if echo is None:
            return
        effect = f"{trial.effect:.3f}x" if trial.effect is not None else "-"
        changed = {k: v for k, v in trial.values.items() if baseline.get(k) != v}
        what = ", ".join(f"{k}={v}" for k, v in changed.items()) or "(baseline)"
        if trial.without:
            what = f"without {trial.without}: {what}"
        echo(f"  trial {trial.index:>2} {trial.origin:<8} {trial.status:<9} {effect:>8}  "
             f"{what}{'  ' + trial.error if trial.error else ''}")

    watched = ObservingObjective(objective, host, req.workload)
    # What this host and alike hosts of its fleet measured before over these
    # knobs: the optimiser knows it from the start, and the best of it is
    # tried here first.
    try:
        before = outcomes.outcomes(req.workload) + outcomes.imported(req.workload)
        here = host_facts(host)
    except HosttuneError as exc:
        before, here = [], None
        if echo:
            echo(f"measured outcomes not used: {exc}")
    seen = warm_start(before, here, knobs, baseline)
    first = best_seen(before, here, knobs, baseline)
    plan_info["measured_before"] = len(seen)

    def priors_seen_running() -> list[dict[str, str]]:
        start, used = _prior_start(host, space, baseline, req.workload, watched.state,
                                   state_dir=state_dir)
        plan_info.update(prior_start=start, prior_rules=used)
        if echo and start:
            echo("priors, judged while the baseline ran: " + ", ".join(used))
        starts = [start] if start else []
        again = [p for p in first if p not in starts]
        if echo and seen:
            echo(f"{len(seen)} setting(s) measured before on this host or alike hosts; "
                 f"the best {len(again)} tried first")
        return starts + again

    if echo:
        echo(f"tuning {len(knobs)} knob(s) against {objective.describe()}")
    result: TuningResult
    try:
        with sigterm_raises():
            result = run_tuning(space=space, baseline_values=baseline, objective=watched,
                                actuator=actuator, budget=req.budget, repeats=req.repeats,
                                start_after_baseline=priors_seen_running, seed=req.seed,
                                keep=req.keep, prune=req.prune,
                                workload=req.workload, outcomes=outcomes, on_trial=show,
                                seen=seen)
    finally:
        # reached on success and on every exception after run_tuning reverted
        if session.exists():
            session.unlink()
    report = {**plan_info, "dry_run": False, "kept": result.kept,
              "best": trial_row(result.best, baseline) if result.best else None,
              "trials": [trial_row(t, baseline) for t in result.trials],
              "needed": result.needed, "dropped": result.dropped}
    if echo:
        for knob, effect in result.needed.items():
            echo(f"{knob} is needed: {effect:.3f}x without it")
        if result.dropped:
            echo("put back (no measurable gain): " + ", ".join(result.dropped))
        if result.kept and result.best is not None:
            echo(f"kept trial {result.best.index}: {result.best.effect:.3f}x the baseline")
        elif result.best is not None and result.best.values == baseline:
            echo("every change of the best setting was put back (none helped measurably); "
                 "host left at its baseline")
        elif result.best is not None:
            echo(f"best trial {result.best.index} ({result.best.effect:.3f}x) not kept "
                 f"({'--keep revert' if req.keep == 'revert' else 'within the noise'}); "
                 "host left at its baseline")
        else:
            echo("no trial beat the baseline; host left at its baseline")
    return report
