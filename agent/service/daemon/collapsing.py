"""Auto mode's per-process huge pages: each window, and on the sample that
finds a new process, the AI processes that hold no huge pages get a bounded
collapse pass (the choice is per process: it does not wait for the host's
class to settle); a pass cut short continues at the next sample; each pass is
measured against the job's own signals and recorded as measured or not.

The work itself is HostAccess.collapse (service/collapse.py, tuners/procthp.py);
this module decides when, keeps the last passes for `status`, and watches
what they did."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.service.daemon.services import Services
from hosttune.agent.service.daemon.window import SampleWindow
from hosttune.agent.service.objective import Score, window_score
from hosttune.agent.service.outcome_store import OutcomeStore
from hosttune.models.outcomes import Outcome, OutcomeError, effect_of


@dataclass
class CollapseWatch:
    """A collapse pass auto mode is measuring: the job's signals in the
    window before it, compared with those `windows_left` windows later."""

    txn: str | None
    workload: str
    pids: list[int]
    before: Score
    spread: float | None  # run-to-run spread of the objective in the window before
    windows_left: int
    # each process's CPU seconds and cgroup stall at the pass (HostAccess.job_signals)
    signals: dict[int, dict[str, Any]] = field(default_factory=dict)


def _spread(rows: list[dict[str, float]], metric: str | None) -> float | None:
    """The objective's relative spread over a window's rows (stdev / mean)."""
    if not metric:
        return None
    vals = [r[metric] for r in rows if metric in r]
    if len(vals) < 3:
        return None
    mean = sum(vals) / len(vals)
    if mean == 0:
        return None
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return float(var ** 0.5 / abs(mean))


class Collapsing:
    def __init__(self, services: Services, window: SampleWindow) -> None:
        self.services = services
        self.window = window
        self.recent: list[dict[str, Any]] = []  # the last passes, newest last
        self.watch: CollapseWatch | None = None
        self._pending: str | None = None  # the workload of a pass cut short
        self._seen: frozenset[tuple[int, str]] | None = None  # processes looked at

    def on_window(self, stable: str | None, *, blocked: str | None) -> None:
        if self.watch is not None:
            self._watch()
        if not blocked:
            self._collapse(stable)

    def on_tick(self, stable: str | None, *, blocked: str | None) -> None:
        """Per-process huge pages do not wait for a window: a process the
        sampler has just found is looked at on the sample that found it, and
        a pass its bounds cut short goes on at the next sample (a 2 GiB job
        is done within a few ticks)."""
        if blocked:
            return
        with self.services.lock:
            latest = self.window.last_sample
        found = frozenset((p.pid, p.start_time) for p in latest.processes) if latest else None
        if found and found != self._seen:
            self._collapse(stable)
        elif self._pending is not None:
            self._collapse(self._pending)

    def _collapse(self, stable: str | None) -> None:
        """Collapse the memory of running AI processes that hold no huge pages
        (a THP mode change would not reach it): on every window, for new
        processes and for processes that grew; the choice is per process, so
        it does not wait for the host's class to settle (an idle or
        checkpoint-writing host is left alone)."""
        s = self.services
        settings = s.config.collapse
        if not settings.enabled:
            return
        with s.lock:
            latest = self.window.last_sample
            rows = list(self.window.rows)
        if latest is None or not latest.processes:
            return
        self._seen = frozenset((p.pid, p.start_time) for p in latest.processes)
        workload = stable or "unknown"
        try:
            report = s.access.collapse(latest.processes, workload, settings,
                                       f"auto: per-process huge pages (workload {workload})")
        except HosttuneError as exc:
            s.log("error", f"per-process huge pages: {exc}")
            s.store.add_event("collapse-failed", str(exc))
            return
        status = s.access.collapse_status() or {}
        self._pending = workload if status.get("pending") else None
        if report is None:
            return
        done = [r for r in report["results"] if r["status"] in ("collapsed", "partial")]
        text = "; ".join(f"{r['comm']} (pid {r['pid']}): {r['summary']}"
                         for r in report["results"]) or str(report.get("unsupported"))
        record = {"wall": time.time(), "workload": workload, **report}
        with s.lock:
            self.recent = [*self.recent[-19:], record]
        s.store.add_event("collapse", f"per-process huge pages: {text}", record)
        s.log("info" if report.get("unsupported") is None else "warning",
              f"per-process huge pages: {text}", txn=report.get("txn"))
        if done and self.watch is None:
            objective = s.config.objective
            self.watch = CollapseWatch(
                txn=None if report.get("txn") is None else str(report["txn"]),
                workload=workload, pids=[int(r["pid"]) for r in done],
                before=window_score(rows, objective), spread=_spread(rows, objective.metric),
                windows_left=s.config.auto.watch_windows,
                signals=s.access.job_signals([int(r["pid"]) for r in done]))

    def _watch(self) -> None:
        """What the pass did to the job: with an objective metric, before and
        after against the window's own spread, recorded in outcomes.db when it
        stands out of the noise; without one, the job's throughput cannot be
        read (no PMU for TLB misses, no per-process rate of work): recorded
        as not measured, never as a gain."""
        s = self.services
        watch = self.watch
        assert watch is not None
        watch.windows_left -= 1
        if watch.windows_left > 0:
            return
        self.watch = None
        objective = s.config.objective
        with s.lock:
            rows = list(self.window.rows)
        after = window_score(rows, objective)
        b, a = watch.before.objective, after.objective
        detail: dict[str, Any] = {"txn": watch.txn, "workload": watch.workload,
                                  "pids": watch.pids, "before": watch.before.to_dict(),
                                  "after": after.to_dict(), "spread": watch.spread}
        if objective.metric and b and a and b > 0 and a > 0:
            effect = effect_of(a, b, lower_is_better=not objective.higher_is_better)
            noise = max(2 * (watch.spread or 0.0), s.config.auto.regression)
            detail["effect"] = effect
            if abs(effect - 1.0) <= noise:
                verdict = (f"no effect beyond the noise ({objective.metric}: {b:.4g} -> "
                           f"{a:.4g}, x{effect:.3f}, noise +-{noise:.1%})")
            else:
                verdict = f"{objective.metric}: {b:.4g} -> {a:.4g} (x{effect:.3f})"
                store = OutcomeStore(s.paths.state_dir / "outcomes.db")
                try:
                    store.record(Outcome(watch.workload, "collapse",
                                         {"procthp:collapse": "no"}, 1.0, objective.metric))
                    store.record(Outcome(watch.workload, "collapse",
                                         {"procthp:collapse": "yes"}, effect, objective.metric))
                except OutcomeError as exc:
                    s.log("warning", f"could not record the outcome of a collapse pass: {exc}")
        else:
            cpu = (f" (AI processes' CPU use {_fmt(watch.before.throughput)} -> "
                   f"{_fmt(after.throughput)}, which a TLB-bound job keeps at 100 % either "
                   "way)" if watch.before.throughput is not None else "")
            verdict = ("not measured: no objective metric is configured, and the job's own "
                       f"speed cannot be read from outside{cpu}; recorded as unmeasured, "
                       "not as a gain")
        job = _job_change(watch.signals, s.access.job_signals(watch.pids))
        if job:
            verdict += f"; the job itself: {job}"
        detail["verdict"] = verdict
        s.store.add_event("collapse-outcome", f"per-process huge pages: {verdict}", detail)
        s.log("info", f"per-process huge pages, outcome: {verdict}", txn=watch.txn)


def _job_change(before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]]) -> str:
    """What the processes' own signals did over the watch: CPU use (a job
    that waited on memory less may get more done per CPU second, but its CPU
    share barely moves), its accelerators' busy share where a vendor backend
    lists the process (a host-bound input path that got faster feeds them
    more), and its cgroup's stall, where the kernel keeps one."""
    parts = []
    for pid, b in sorted(before.items()):
        a = after.get(pid)
        if a is None:
            parts.append(f"pid {pid} exited")
            continue
        span = a["at"] - b["at"]
        if span > 0:
            parts.append(f"pid {pid} used {(a['cpu_seconds'] - b['cpu_seconds']) / span:.2f} "
                         "CPUs since")
        if b.get("accel_busy") is not None and a.get("accel_busy") is not None:
            parts.append(f"its accelerators busy {b['accel_busy']:.0%} -> "
                         f"{a['accel_busy']:.0%}")
        if b.get("stall") and a.get("stall"):
            parts.append("cgroup stall (some avg60 %) " + ", ".join(
                f"{r} {b['stall'][r]:.1f} -> {a['stall'][r]:.1f}"
                for r in sorted(b["stall"]) if r in a["stall"]))
    return "; ".join(parts)


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3g}"
