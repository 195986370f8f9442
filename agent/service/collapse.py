"""Per-process huge pages, pass after pass: which of the AI processes the
sampler found get a collapse pass now, within the administrator's
exclusions and the pass bounds of the config.

Used by the daemon in auto mode (each classification window) and by
`hosttune collapse`. The choice itself is the decide layer's
(`models.collapse.choose_collapse`); this module adds what only a live
host can say: fresh memory totals (the sampler looks at processes once a
minute), each process's write rate between two passes (a checkpoint writer
is left alone), its cgroup for the exclusions, and whether the process grew
since its last pass (a pass runs again only for new memory)."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hosttune.agent.sense import procmem
from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.sample import AIProcess
from hosttune.agent.sense.telemetry.cpu import clock_ticks
from hosttune.agent.service.config import CollapseSettings
from hosttune.models.collapse import (
    THP_KNOB,
    CollapseDecision,
    NewMemory,
    ProcessAction,
    choose_collapse,
    new_memory_thp,
)
from hosttune.models.state import HostState, ProcessState
from hosttune.tuners import procthp
from hosttune.tuners.journal import Journal
from hosttune.tuners.thp import ThpTuner

MIB = 1 << 20
# A process collapsed before gets another pass once this much more of its
# anonymous memory sits outside huge pages than right after that pass: it
# grew (new tensors, a larger batch), or freed what was collapsed and
# allocated again (a job still setting up when its first pass came).
GROWTH = 64 * MIB
# A process younger than this has not shown yet whether it writes checkpoints.
MIN_AGE = 10.0


def limits_of(settings: CollapseSettings) -> procthp.CollapseLimits:
    return procthp.CollapseLimits(
        min_mapping_bytes=settings.min_mapping_mib * MIB,
        max_bytes_per_pass=settings.max_mib_per_pass * MIB,
        max_seconds_per_pass=settings.max_seconds_per_pass)


def excluded(host: Host, proc: AIProcess, settings: CollapseSettings) -> str | None:
    """Which exclusion of the config covers the process, or None."""
    if proc.pid in settings.exclude_pids:
        return f"pid {proc.pid} is in collapse.exclude_pids"
    for pattern in settings.exclude_commands:
        if fnmatch.fnmatchcase(proc.comm, pattern) or fnmatch.fnmatchcase(proc.cmdline,
                                                                           pattern):
            return f"its command matches collapse.exclude_commands {pattern!r}"
    if settings.exclude_cgroups:
        cgroup = procmem.cgroup_path(host, proc.pid) or ""
        for pattern in settings.exclude_cgroups:
            if fnmatch.fnmatchcase(cgroup, pattern):
                return f"its cgroup {cgroup} matches collapse.exclude_cgroups {pattern!r}"
    return None


@dataclass
class _Seen:
    unhuge_after_pass: int | None = None
    write_bytes: int | None = None
    at: float = 0.0
    # minor faults at the last look since its last pass (None before a pass)
    faults: int | None = None
    faults_at: float = 0.0


class CollapseRunner:
    """Holds what earlier passes did; one per daemon (or CLI command)."""

    def __init__(self, host: Host, settings: CollapseSettings) -> None:
        self.host = host
        self.settings = settings
        self.progress = procthp.CollapseProgress()
        self.unsupported = procmem.collapse_unsupported(host)
        self._seen: dict[tuple[int, str], _Seen] = {}
        self.last: procthp.CollapseReport | None = None
        self.last_decision: CollapseDecision | None = None
        self.passes = 0
        # processes seen once, whose write rate needs a second look, and
        # processes just passed, whose fault rate since needs one
        self.waiting: list[int] = []
        self.fault_check: list[int] = []
        self.new_memory = NewMemory()
        self.collapsed_mib = 0.0
        self.cpu_seconds = 0.0
        self._hz = clock_ticks()

    def _fresh(self, proc: AIProcess, now: float) -> ProcessState | None:
        """The process as it is now (memory, write rate), or None when gone."""
        roll = procmem.rollup(self.host, proc.pid)
        ident = procmem.identity_and_faults(self.host, proc.pid)
        if roll is None or ident is None or (proc.start_time and ident[0] != proc.start_time):
            return None
        start, faults = ident
        key = (proc.pid, start)
        seen = self._seen.setdefault(key, _Seen())
        fault_rate = None
        if seen.faults is not None and now > seen.faults_at:
            fault_rate = max(0.0, (faults - seen.faults) / (now - seen.faults_at))
            seen.faults, seen.faults_at = faults, now
        written = procmem.write_bytes(self.host, proc.pid)
        rate = None
        if written is not None and seen.write_bytes is not None and now > seen.at:
            rate = max(0.0, (written - seen.write_bytes) / (now - seen.at))
        elif written is not None:
            # At first sight, its average since it started: a checkpoint writer
            # has written gigabytes by then, a gather job next to nothing.
            age = procmem.age_seconds(self.host, start, self._hz)
            if age is not None and age >= MIN_AGE:
                rate = written / age
        seen.write_bytes, seen.at = written, now
        return ProcessState(pid=proc.pid, comm=proc.comm, rss_bytes=roll.rss_kb * 1024,
                            anon_huge_bytes=roll.huge_kb * 1024, anon_bytes=roll.anon_kb * 1024,
                            start_time=start, reasons=tuple(proc.reasons),
                            write_bytes_rate=rate, fault_rate=fault_rate)

    def choose(self, processes: Sequence[AIProcess], workload: str
               ) -> tuple[list[procthp.CollapseTarget], CollapseDecision]:
        now = time.monotonic()
        fresh: list[ProcessState] = []
        skipped: list[tuple[int, str, str]] = []
        for proc in processes:
            why = excluded(self.host, proc, self.settings)
            if why is not None:
                skipped.append((proc.pid, proc.comm, why))
                continue
            state = self._fresh(proc, now)
            if state is None:
                continue
            fresh.append(state)
            if state.write_bytes_rate is None:
                # A checkpoint writer is told by its write rate, which takes two
                # looks: nothing is collapsed at the first.
                skipped.append((proc.pid, proc.comm, "just started: its write rate is "
                                "measured before a pass"))
        self.waiting = [p.pid for p in fresh if p.write_bytes_rate is None]
        self._seen = {k: v for k, v in self._seen.items()
                      if any((p.pid, p.start_time) == k for p in fresh)}
        self.progress.forget_except(self._seen)
        measured = tuple(p for p in fresh if p.write_bytes_rate is not None)
        self.fault_check = [p.pid for p in fresh if p.fault_rate is None
                            and self._seen[(p.pid, p.start_time)].faults is not None]
        host_state = HostState(workload=workload, processes=measured,
                               collapse=self.unsupported or "yes", knobs=self._thp_mode())
        self.new_memory = new_memory_thp(host_state)
        decision = choose_collapse(host_state)
        decision.skipped[:0] = skipped
        # A pass its bounds cut short is finished even where what is left is
        # under the thresholds for starting one.
        unfinished = {(r.pid, r.start_time) for r in (self.last.results if self.last else [])
                      if r.retry_later and r.status != "gone"}
        for state in measured:
            key = (state.pid, state.start_time)
            if key in unfinished and not any(a.pid == state.pid for a in decision.actions) and \
                    any(pid == state.pid and "already in huge pages" in why
                        for pid, _c, why in decision.skipped):
                decision.skipped = [x for x in decision.skipped if x[0] != state.pid]
                decision.actions.append(ProcessAction(
                    "collapse", state.pid, state.start_time, state.comm,
                    "the last pass left ranges (its bounds, or pages busy for a moment)", ()))
        targets = []
        for action in decision.actions:
            seen = self._seen.get((action.pid, action.start_time))
            now_state = next(p for p in fresh if p.pid == action.pid)
            unhuge = now_state.anon_bytes - now_state.anon_huge_bytes
            if seen is not None and seen.unhuge_after_pass is not None:
                if unhuge - seen.unhuge_after_pass < GROWTH:
                    continue  # passed before and nothing new outside huge pages since
                self.progress.forget((action.pid, action.start_time))
            targets.append(procthp.CollapseTarget(action.pid, action.start_time, action.comm,
                                                  action.reason))
        self.last_decision = decision
        return targets, decision

    def _thp_mode(self) -> dict[str, str]:
        try:
            return {THP_KNOB: ThpTuner(self.host).read("enabled")}
        except HosttuneError:
            return {}  # no THP here: nothing to decide about it

    def run(self, journal: Journal, processes: Sequence[AIProcess], workload: str, *,
            reason: str) -> procthp.CollapseReport | None:
        """One pass over the processes that need one; None when none does.
        Raises PermissionRefused for a non-root caller."""
        if self.unsupported is not None or not self.settings.enabled:
            return None
        targets, _decision = self.choose(processes, workload)
        if not targets:
            return None
        report = procthp.collapse_pass(self.host, journal, targets,
                                       limits_of(self.settings), self.progress, reason=reason)
        self.passes += 1
        self.last = report
        if report.unsupported is not None:
            self.unsupported = report.unsupported
        for result in report.results:
            self.collapsed_mib += result.collapsed_mib
            self.cpu_seconds += result.cpu_seconds
            seen = self._seen.get((result.pid, result.start_time))
            if seen is not None and result.status not in ("gone",) and not result.retry_later:
                seen.unhuge_after_pass = max(0, result.anon_kb - result.huge_after_kb) * 1024
                # the faults it takes from here on tell whether it keeps allocating
                ident = procmem.identity_and_faults(self.host, result.pid)
                if ident is not None and ident[0] == result.start_time:
                    seen.faults, seen.faults_at = ident[1], time.monotonic()
                    self.fault_check.append(result.pid)
        return report

    @property
    def pending(self) -> bool:
        """Whether the last pass stopped at its bounds with work left, or a
        process just found waits for its second look (the next sample, not
        the next window)."""
        return bool(self.waiting or self.fault_check) or (self.last is not None and any(
            r.ranges_left for r in self.last.results if r.status != "gone"))

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "enabled": self.settings.enabled, "unsupported": self.unsupported,
            "passes": self.passes, "pending": self.pending,
            "collapsed_mib": round(self.collapsed_mib),
            "cpu_seconds": round(self.cpu_seconds, 3)}
        if self.last is not None:
            data["last"] = self.last.to_dict()
        if self.last_decision is not None:
            data["skipped"] = [{"pid": pid, "comm": comm, "why": why}
                               for pid, comm, why in self.last_decision.skipped]
        data["new_memory"] = self.new_memory.to_dict()
        return data

