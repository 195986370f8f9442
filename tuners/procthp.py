"""procthp: huge pages for processes that are already running.

A bounded pass collapses the large private anonymous mappings of chosen
processes into huge pages with process_madvise(pidfd, ..., MADV_COLLAPSE)
(Linux 6.1), whatever the global THP mode: the one action that speeds up a
PyTorch job whose tensors were allocated under THP `madvise` (PLATFORM.md:
2 GiB in 1.5 s, 25.7 -> 32.8 M gathers/s at once).

- The process is named by a pidfd, opened first and then checked against
  the start time the caller saw: a pid that was reused is never touched.
- Work goes in ranges of `range_bytes` (64 MiB), 2 MiB aligned, each pass
  bounded in bytes and seconds; a mapping below `min_mapping_bytes`, one the
  process asked to keep small (MADV_NOHUGEPAGE) and one already in huge
  pages is skipped; ranges done are remembered (`CollapseProgress`) so a
  later pass does only what is new (the process grew) or was busy before.
- EINVAL, EAGAIN, ENOMEM, EFAULT for a range are results, counted per
  reason; ESRCH ends the process's pass as "gone"; ENOSYS and EPERM mean
  this kernel or this process's seccomp filter forbids the call:
  CollapseUnsupported, and the caller falls back.

Not a knob: nothing is set that a rollback could put back (huge pages the
kernel made stay until it splits them; nothing to undo, nothing harmed).
Each pass is still a journalled transaction (kind "collapse", one step per
process, figures as evidence), so `history` shows it and a pass cut short
by SIGKILL is found and closed by recovery.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hosttune.agent.sense import procmem
from hosttune.agent.sense.errors import HostError, HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.memory import mem_available_kb
from hosttune.tuners.journal import Journal
from hosttune.tuners.transaction import recover, require_root

FAMILY = "procthp"
MIB = 1 << 20

# Refusals of one range: what the kernel said, for the report.
REFUSALS = {
    errno.EINVAL: "not eligible (shared, locked, or not a whole huge page)",
    errno.EAGAIN: "pages busy (pinned or in use); retried on a later pass",
    errno.ENOMEM: "no free huge page (memory low or fragmented)",
    errno.EFAULT: "no longer mapped",
}
# The call itself is not available to this process.
UNSUPPORTED = {
    errno.ENOSYS: "the kernel has no process_madvise",
    errno.EPERM: "process_madvise is refused to hosttune (a seccomp filter, or "
                 "CAP_SYS_NICE/CAP_SYS_PTRACE missing)",
}
# Refusals worth another try on a later pass (the page was busy, memory was short).
_RETRY = (errno.EAGAIN, errno.ENOMEM)
RETRY_REASONS = frozenset(REFUSALS[e] for e in _RETRY)

# Seconds before a busy range is tried again within the same pass.
BUSY_PAUSE = 0.05

Hook = Callable[[str, int], None]


class CollapseUnsupported(HosttuneError):
    """This host or this process cannot collapse another process's memory."""


@dataclass(frozen=True)
class CollapseLimits:
    min_mapping_bytes: int = 32 * MIB
    range_bytes: int = 64 * MIB
    max_bytes_per_pass: int = 1024 * MIB
    max_seconds_per_pass: float = 2.0
    # leave at least this much MemAvailable: collapsing needs a free huge page per range
    reserve_bytes: int = 512 * MIB


@dataclass(frozen=True)
class CollapseTarget:
    pid: int
    start_time: str
    comm: str = ""
    reason: str = ""


@dataclass
class CollapseProgress:
    """What earlier passes did, per process (pid, start time): ranges done,
    and ranges refused for good. Held by the caller across passes."""

    done: dict[tuple[int, str], set[int]] = field(default_factory=dict)
    refused: dict[tuple[int, str], set[int]] = field(default_factory=dict)

    def forget(self, key: tuple[int, str]) -> None:
        """Start over for one process: what it freed and allocated again
        since may sit at the addresses of ranges done or refused before
        (glibc hands the same range back for an allocation of the same
        size); ranges that are still huge cost the kernel one check each."""
        self.done.pop(key, None)
        self.refused.pop(key, None)

    def forget_except(self, alive: Iterable[tuple[int, str]]) -> None:
        keep = set(alive)
        for table in (self.done, self.refused):
            for key in [k for k in table if k not in keep]:
                del table[key]


@dataclass
class CollapseResult:
    pid: int
    comm: str
    start_time: str
    # collapsed | partial | nothing to do | gone | refused
    status: str
    anon_kb: int = 0
    huge_before_kb: int = 0
    huge_after_kb: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    ranges_done: int = 0
    ranges_left: int = 0
    bytes_tried: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    message: str = ""

    @property
    def collapsed_mib(self) -> float:
        return max(0, self.huge_after_kb - self.huge_before_kb) / 1024

    @property
    def retry_later(self) -> bool:
        """Ranges its bounds left, or ranges the kernel refused for a moment
        (pages busy, memory short): worth another pass."""
        return bool(self.ranges_left) or any(why in RETRY_REASONS for why in self.refused)

    def evidence(self) -> dict[str, Any]:
        return {"pid": self.pid, "comm": self.comm, "start_time": self.start_time,
                "anon_mib": round(self.anon_kb / 1024), "huge_before_mib":
                round(self.huge_before_kb / 1024), "huge_after_mib":
                round(self.huge_after_kb / 1024), "collapsed_mib": round(self.collapsed_mib),
                "seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3),
                "ranges_done": self.ranges_done, "ranges_left": self.ranges_left,
                "refused": dict(self.refused)}

    def summary(self) -> str:
        text = (f"huge pages {self.huge_before_kb // 1024} -> {self.huge_after_kb // 1024} MiB "
                f"of {self.anon_kb // 1024} MiB anonymous in {self.seconds:.2f} s")
        if self.refused:
            text += "; refused: " + ", ".join(f"{n} x {why}" for why, n in
                                              sorted(self.refused.items()))
        if self.ranges_left:
            text += f"; {self.ranges_left} range(s) left for the next pass"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, "summary": self.summary(),
                **self.evidence()}


@dataclass
class CollapseReport:
    txn: int | None
    results: list[CollapseResult]
    unsupported: str | None = None

    @property
    def collapsed_mib(self) -> float:
        return sum(r.collapsed_mib for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"txn": self.txn, "unsupported": self.unsupported,
                "collapsed_mib": round(self.collapsed_mib),
                "results": [r.to_dict() for r in self.results]}


def _ranges(mapping: procmem.AnonMapping, limits: CollapseLimits, pmd: int
            ) -> list[tuple[int, int]]:
    """(start, length) ranges of whole huge pages inside the mapping."""
    first = -(-mapping.start // pmd) * pmd
    last = mapping.end // pmd * pmd
    step = max(pmd, limits.range_bytes // pmd * pmd)
    return [(at, min(step, last - at)) for at in range(first, last, step)]


def plan_ranges(mappings: Sequence[procmem.AnonMapping], limits: CollapseLimits, pmd: int,
                skip: set[int]) -> list[tuple[int, int]]:
    """The ranges a pass should try, largest mapping first: mappings big
    enough, not MADV_NOHUGEPAGE, not already (almost) all huge pages, and
    ranges not done or refused for good before."""
    todo: list[tuple[int, int]] = []
    for mapping in sorted(mappings, key=lambda m: m.size, reverse=True):
        if mapping.size < limits.min_mapping_bytes or "nh" in mapping.flags:
            continue
        if mapping.anon_kb * 1024 < limits.min_mapping_bytes // 2:
            continue  # mostly untouched: nothing there to collapse yet
        if mapping.huge_kb * 1024 >= mapping.anon_kb * 1024 - pmd:
            continue  # already huge (the process madvised, or an earlier pass)
        todo += [r for r in _ranges(mapping, limits, pmd) if r[0] not in skip]
    return todo


def _collapse_range(host: Host, pidfd: int, start: int, length: int) -> None:
    """MADV_COLLAPSE of one range, tried once more after a moment when the
    kernel finds a page busy: an idle process's freshly touched pages can
    still sit in another CPU's LRU batch, or be under migration, for a few
    milliseconds (seen once in CI: one 64 MiB range of an idle holder, which
    failed the one-pass check). A range busy twice waits for the next pass."""
    try:
        host.process_madvise(pidfd, start, length, procmem.MADV_COLLAPSE)
    except HostError as exc:
        if exc.errno != errno.EAGAIN:
            raise
        time.sleep(BUSY_PAUSE)
        host.process_madvise(pidfd, start, length, procmem.MADV_COLLAPSE)


def collapse_process(host: Host, target: CollapseTarget, limits: CollapseLimits,
                     progress: CollapseProgress, *, byte_budget: int, deadline: float,
                     hook: Hook | None = None) -> CollapseResult:
    """One bounded pass over one process. Raises CollapseUnsupported when the
    call is not available at all; every other outcome is in the result."""
    result = CollapseResult(target.pid, target.comm, target.start_time, "nothing to do")
    key = (target.pid, target.start_time)
    try:
        pidfd = host.open_pidfd(target.pid)
    except HostError as exc:
        if exc.errno in UNSUPPORTED:
            raise CollapseUnsupported(UNSUPPORTED[exc.errno], subject=exc.path) from exc
        result.status, result.message = "gone", f"process {target.pid} has exited"
        return result
    try:
        # Opened first, checked second: if the start time still matches, the
        # pidfd names the process the caller chose and no other.
        if procmem.start_time(host, target.pid) != target.start_time:
            result.status = "gone"
            result.message = f"pid {target.pid} now belongs to another process (pid reused)"
            return result
        before = procmem.rollup(host, target.pid)
        try:
            mappings = procmem.anon_mappings(host, target.pid)
        except HostError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise CollapseUnsupported(
                    f"cannot read the process's memory map ({exc.message}): only root "
                    "with CAP_SYS_PTRACE and CAP_SYS_NICE may collapse another "
                    "process's memory", subject=exc.path) from exc
            result.status, result.message = "gone", f"process {target.pid} has exited"
            return result
        if before is None:
            result.status, result.message = "gone", f"process {target.pid} has exited"
            return result
        result.anon_kb, result.huge_before_kb = before.anon_kb, before.huge_kb
        result.huge_after_kb = before.huge_kb
        pmd = procmem.pmd_size(host)
        skip = progress.done.get(key, set()) | progress.refused.get(key, set())
        todo = plan_ranges(mappings, limits, pmd, skip)
        if not todo:
            return result
        wall0, cpu0 = time.monotonic(), time.thread_time()
        spent = 0
        for index, (start, length) in enumerate(todo):
            if spent + length > byte_budget or time.monotonic() >= deadline:
                result.ranges_left = len(todo) - index
                break
            available_kb = mem_available_kb(host)
            available = None if available_kb is None else available_kb * 1024
            if available is not None and available - length < limits.reserve_bytes:
                result.ranges_left = len(todo) - index
                result.message = (f"stopped: MemAvailable {available >> 20} MiB is within "
                                  f"the reserve of {limits.reserve_bytes >> 20} MiB")
                break
            if hook is not None:
                hook("range", index)
            try:
                _collapse_range(host, pidfd, start, length)
            except HostError as exc:
                if exc.errno == errno.ESRCH:
                    result.status, result.message = "gone", f"process {target.pid} exited " \
                                                            "during the pass"
                    break
                if exc.errno in UNSUPPORTED:
                    raise CollapseUnsupported(UNSUPPORTED[exc.errno], subject=exc.path
                                              ) from exc
                why = REFUSALS.get(exc.errno or 0, f"refused ({exc.message})")
                result.refused[why] = result.refused.get(why, 0) + 1
                if exc.errno not in _RETRY:
                    progress.refused.setdefault(key, set()).add(start)
                spent += length
                continue
            spent += length
            result.ranges_done += 1
            progress.done.setdefault(key, set()).add(start)
        result.bytes_tried = spent
        result.seconds = time.monotonic() - wall0
        result.cpu_seconds = time.thread_time() - cpu0
    finally:
        os.close(pidfd)
    if result.status == "gone":
        return result
    after = procmem.rollup(host, target.pid)
    if after is None:
        result.status, result.message = "gone", f"process {target.pid} exited during the pass"
        return result
    result.anon_kb, result.huge_after_kb = after.anon_kb, after.huge_kb
    if result.ranges_done == 0:
        result.status = "refused" if result.refused else "nothing to do"
    elif result.ranges_left or result.refused:
        result.status = "partial"
    else:
        result.status = "collapsed"
    return result


def collapse_pass(host: Host, journal: Journal, targets: Sequence[CollapseTarget],
                  limits: CollapseLimits, progress: CollapseProgress, *, reason: str,
                  uid: int | None = None, lock_timeout: float = 30.0,
                  hook: Hook | None = None) -> CollapseReport:
    """Collapse the targets' memory within one pass's bounds, journalled as
    one transaction. Only root may; PermissionRefused otherwise, before
    anything is touched. Unfinished transactions of a killed process are
    recovered first, as before any change."""
    require_root(host)
    recover(host, journal, lock_timeout=lock_timeout)
    uid = os.getuid() if uid is None else uid
    results: list[CollapseResult] = []
    unsupported: str | None = None
    with journal.locked(lock_timeout):
        txn = journal.begin(kind="collapse", uid=uid, reason=reason)
        journal.add_steps(txn, [
            {"seq": seq, "knob": f"{FAMILY}:pid:{t.pid}", "before": None,
             "after": "collapse", "reason": t.reason, "source": "expert",
             "identity": t.start_time, "state": "pending"}
            for seq, t in enumerate(targets, start=1)])
        deadline = time.monotonic() + limits.max_seconds_per_pass
        budget = limits.max_bytes_per_pass
        for seq, target in enumerate(targets, start=1):
            if unsupported is not None:
                journal.complete_step(txn, seq, "refused", after="not run",
                                      evidence={}, error=unsupported)
                continue
            journal.mark(txn, seq, "collapsing")
            if hook is not None:
                hook("collapsing", seq)
            try:
                result = collapse_process(host, target, limits, progress,
                                          byte_budget=budget, deadline=deadline, hook=hook)
            except CollapseUnsupported as exc:
                unsupported = str(exc)
                journal.complete_step(txn, seq, "refused", after="not run", evidence={},
                                      error=unsupported)
                continue
            budget -= result.bytes_tried
            results.append(result)
            state = {"collapsed": "collapsed", "partial": "collapsed", "nothing to do":
                     "unchanged", "gone": "gone", "refused": "refused"}[result.status]
            journal.complete_step(txn, seq, state, after=result.summary(),
                                  evidence=result.evidence(), error=result.message or None)
        journal.finish(txn, "refused" if unsupported and not results else "committed",
                       error=unsupported)
    return CollapseReport(txn, results, unsupported)
