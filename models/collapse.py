"""Which running processes a per-process huge-page collapse serves, and why;
and when a collapsed job needs THP `always` for the memory it keeps
allocating.

The global THP switch serves memory allocated after it; a job that is
already running keeps its small pages (PLATFORM.md: 0 kB AnonHugePages five
minutes after `always`). Collapsing the job's own memory from outside
(`hosttune.tuners.procthp`) reaches it at once, and only it. This module
decides, from the evidence in a HostState, which processes get that:

- AI processes holding at least MIN_ANON of private anonymous memory, with
  MIN_UNHUGE or more of it outside huge pages (PyTorch's CPU allocator does
  not madvise, so under `madvise` its tensors get none; a pass cut short by
  its bounds leaves the rest for the next);
- not a process that gets huge pages on its own (numpy 2 madvises its large
  arrays: measured as fast under `madvise` as under `always`);
- not a checkpoint writer: torch.save of huge-page-backed tensors measured
  0.48x here (README effectiveness table, hpc-compute's checkpoint row), so a
  process writing more than WRITE_LIMIT, or any process while the host's
  class is checkpoint_io, is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hosttune.models.state import HostState, ProcessState
from hosttune.tuners.knobs import Change

MIB = 1 << 20
MIN_ANON = 256 * MIB
# A pass is worth it while this much of the process's anonymous memory is
# outside huge pages, and less than MAX_HUGE_FRACTION of it inside (the rest
# is the interpreter's heap and small tensors, below any mapping worth a
# pass); a process that is not PyTorch and holds MADVISER_FRACTION or more
# in huge pages got them on its own (its allocator madvises).
MIN_UNHUGE = 256 * MIB
MAX_HUGE_FRACTION = 0.75
MADVISER_FRACTION = 0.2
WRITE_LIMIT = 32 * MIB  # bytes/s
# The host's class does not gate a pass, but for checkpoint writing: a job that
# starts on a host the daemon still calls idle (its class follows the windows
# with hysteresis) is the usual case, and the process's own memory says more.
SKIP_CLASSES = {"checkpoint_io": "the host is writing checkpoints: huge-page-backed "
                                 "tensors made torch.save 2x slower here"}

EFFECT = ("Fewer TLB misses on the process's large tensors, at once and for this process "
          "only: measured here 25.7 -> 32.8 M random gathers/s on a running job "
          "(1.27x, the same as THP 'always' from its start); 2 GiB took 1.5 s.")
SOURCE = ("Linux 6.1 MADV_COLLAPSE (Documentation/admin-guide/mm/transhuge.rst, "
          "process_madvise(2)); measured on this project's VM (PLATFORM.md)")

# A collapsed process still taking this many minor faults a second allocates
# fresh memory page by page as it runs (a training step's activations and
# gradients, mapped and unmapped each step): a pass cannot keep up with that,
# THP `always` serves it at the fault. Measured here: the DLRM-style training
# job 15,000-17,000/s after its pass; the gather, embedding, numpy and
# checkpoint jobs 0-3/s.
FAULT_RATE = 2000.0
THP_KNOB = "thp:enabled"
NEW_MEMORY_RULE = "thp-for-allocating-job"
NEW_MEMORY_EFFECT = ("Huge pages for the memory the job allocates from now on: measured "
                     "here on a running DLRM-style training job, 65.7 k samples/s after its "
                     "collapse pass -> 74.1 k/s with `always` (1.13x; 1.06x from the pass "
                     "alone), minor faults 8,100 -> 5,400/s.")


@dataclass(frozen=True)
class ProcessAction:
    """An action on one running process (not a knob: nothing to roll back)."""

    action: str  # "collapse"
    pid: int
    start_time: str
    comm: str
    reason: str
    evidence: tuple[str, ...]
    effect: str = EFFECT
    source: str = SOURCE
    reaches: str = "running"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "pid": self.pid, "start_time": self.start_time,
                "comm": self.comm, "reason": self.reason, "evidence": list(self.evidence),
                "effect": self.effect, "source": self.source, "reaches": self.reaches}


@dataclass
class CollapseDecision:
    actions: list[ProcessAction] = field(default_factory=list)
    # (pid, comm, why not)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)


def _mib(value: float) -> int:
    return round(value / MIB)


def why_not(proc: ProcessState) -> str | None:
    """Why this process is not served by a collapse, or None when it is."""
    anon = proc.anon_bytes or proc.rss_bytes
    if anon < MIN_ANON:
        return f"{_mib(anon)} MiB of anonymous memory, under {_mib(MIN_ANON)} MiB"
    fraction = proc.huge_fraction
    if fraction >= MADVISER_FRACTION and not proc.uses_torch:
        return (f"{fraction:.0%} already in huge pages: its allocator madvises "
                "(numpy style); nothing to gain")
    if fraction >= MAX_HUGE_FRACTION or anon - proc.anon_huge_bytes < MIN_UNHUGE:
        return f"{fraction:.0%} already in huge pages"
    if proc.write_bytes_rate is not None and proc.write_bytes_rate > WRITE_LIMIT:
        return (f"writes {_mib(proc.write_bytes_rate)} MiB/s (a checkpoint writer): "
                "huge-page-backed tensors made torch.save 2x slower here")
    if not proc.start_time:
        return "its start time is unknown (cannot be told from a later process with its pid)"
    return None


def choose_collapse(state: HostState) -> CollapseDecision:
    """The running processes a collapse pass should serve, with reasons."""
    decision = CollapseDecision()
    if state.collapse != "yes":
        return decision
    skip_all = SKIP_CLASSES.get(state.workload)
    for proc in state.processes:
        if (proc.anon_bytes or proc.rss_bytes) < MIN_ANON:
            continue  # too small to be worth a pass, or a mention
        why = skip_all or why_not(proc)
        if why is not None:
            decision.skipped.append((proc.pid, proc.comm, why))
            continue
        anon = proc.anon_bytes or proc.rss_bytes
        allocator = ("PyTorch's CPU allocator does not madvise" if proc.uses_torch else
                     "its allocator does not madvise")
        decision.actions.append(ProcessAction(
            action="collapse", pid=proc.pid, start_time=proc.start_time, comm=proc.comm,
            reason=(f"{proc.comm} (pid {proc.pid}) holds {_mib(anon)} MiB of anonymous "
                    f"memory with {_mib(proc.anon_huge_bytes)} MiB in huge pages: "
                    f"{allocator}, and a THP mode change would not reach memory it "
                    "already has. Collapse it into huge pages now, for this process "
                    "only, in bounded passes."),
            evidence=(f"anonymous {_mib(anon)} MiB, AnonHugePages "
                      f"{_mib(proc.anon_huge_bytes)} MiB",
                      *[r for r in proc.reasons if r.startswith("lib:")][:2],
                      f"workload class {state.workload}")))
    return decision


@dataclass
class NewMemory:
    """Whether THP `always` should serve a collapsed job's new allocations.

    `change` is the knob change to make now (None when none is due);
    `blocked` says why the host must not have it (a checkpoint writer), so a
    change made earlier is put back; `pids` are the processes it is for."""

    pids: list[tuple[int, str]] = field(default_factory=list)
    # every process looked at (pid, start time): those still running
    live: list[tuple[int, str]] = field(default_factory=list)
    change: Change | None = None
    blocked: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """What `status` shows of it."""
        return {"pids": [pid for pid, _s in self.pids], "blocked": self.blocked,
                "change": None if self.change is None else self.change.to_dict()}


def new_memory_thp(state: HostState) -> NewMemory:
    """THP `always` while a collapsed AI process keeps faulting fresh memory,
    and only while no process writes checkpoints (torch.save of huge-page
    -backed tensors measured 0.48x here). `state.knobs` holds the current
    THP mode; an administrator's `never` or `always` is left as it is."""
    out = NewMemory(live=[(p.pid, p.start_time) for p in state.processes])
    faulting = [p for p in state.processes
                if p.fault_rate is not None and p.fault_rate >= FAULT_RATE]
    out.pids = [(p.pid, p.start_time) for p in faulting]
    writers = [p for p in state.processes
               if p.write_bytes_rate is not None and p.write_bytes_rate > WRITE_LIMIT]
    if state.workload in SKIP_CLASSES:
        out.blocked = SKIP_CLASSES[state.workload]
    elif writers:
        w = writers[0]
        out.blocked = (f"{w.comm} (pid {w.pid}) writes {_mib(w.write_bytes_rate or 0)} MiB/s: "
                       "huge-page-backed tensors made torch.save 2x slower here")
    if not faulting or out.blocked or state.knobs.get(THP_KNOB) != "madvise":
        return out
    lead = max(faulting, key=lambda p: p.fault_rate or 0.0)
    out.reason = (f"{lead.comm} (pid {lead.pid}) still takes {lead.fault_rate:,.0f} minor "
                  f"faults/s after its memory was collapsed: it allocates fresh memory as it "
                  "runs, which a collapse pass cannot keep up with and `madvise` leaves in "
                  "small pages. THP `always` serves those allocations at the fault, for as "
                  "long as the job runs; put back when it ends or a checkpoint writer starts.")
    out.change = Change(
        knob=THP_KNOB, after="always", before="madvise", reason=out.reason, source="expert",
        evidence={"rule": NEW_MEMORY_RULE, "pids": [pid for pid, _s in out.pids],
                  "fault_rate": round(lead.fault_rate or 0.0),
                  "effect": NEW_MEMORY_EFFECT, "reaches": "running"})
    return out
