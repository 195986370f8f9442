"""Per-process evidence: what each process worth a look is doing, as raw
counters a role model can turn into window features.

One scan reads /proc/PID/stat of every pid (one small read each; it holds
the CPU counters, threads, RSS, parent, process group and start time) and
keeps the expensive reads (status, io, smaps_rollup, fd links, maps) for
the candidates:
- the members of a process group that has an AI framework or runtime
  mapped (/proc/PID/maps, read again only when the process's virtual size
  changed: a framework imported late maps new files), or a launcher on its
  command line;
- the process groups of the top CPU consumers since the previous scan.

A process is known by (pid, start time): a reused pid is another process.
Kernel threads (PF_KTHREAD, empty cmdline) are never candidates. A process
that exits between reads, or whose entries belong to another user (io, fd,
maps need ptrace access), keeps what could be read; nothing here raises.

The unit a role is given to is the process group: a shell pipeline, a
training script and its data-loader workers, a server and its workers
share one.

Accelerator use comes from two places: device files among a process's fds
(/dev/nvidia*, /dev/davinci*, /dev/kfd, ...) and, where a vendor backend
lists processes (NVML, amdsmi, npu-smi), that listing, which also names a
process whose device files are not visible here (a container's own /dev, a
device reached through another path). A listed process's group is a
candidate like a framework's, and its row carries the device memory and
busy share the vendor reported.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from hosttune.agent.sense.accel.base import AccelProcess, ProcessListing
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.cpu import clock_ticks
from hosttune.agent.sense.telemetry.processes import (
    FRAMEWORKS,
    ProcStat,
    ProcTable,
    cmdline_reasons,
    parse_stat,
)

# the frameworks that make a process an AI candidate on their own
AI_FRAMEWORKS = frozenset(FRAMEWORKS) - {"numpy"}
_ACCEL_DEV = re.compile(
    r"/dev/(?:nvidia\d*|nvidiactl|nvidia-uvm|davinci\d+|davinci_manager|kfd|dri/renderD\d+"
    r"|accel/accel\d+|hl\d+|neuron\d+)"
)
_TOP_CPU = 6  # process groups of this many busiest processes are examined
_MAX_GROUP = 64  # members examined per process group
_MAX_FDS = 512
_MIN_TOP_CORES = 0.01
# A vendor's process listing is asked for at a full scan at most this often:
# the shortest role window (10 s), so each window sees a fresh one and a
# CLI scanning every second does not run npu-smi every second.
ACCEL_LISTING_EVERY = 10.0

AccelSource = Callable[[], ProcessListing | None]


@dataclass
class ProcEvidence:
    """One candidate's facts at one scan (counters are cumulative)."""

    stat: ProcStat
    cmdline: str = ""
    hints: tuple[str, ...] = ()  # launcher/server words of the command line
    frameworks: tuple[str, ...] = ()
    rss_anon: int = 0
    rss_file: int = 0
    anon_huge: int = 0
    read_bytes: int = 0  # /proc/PID/io: storage bytes
    write_bytes: int = 0
    rchar: int = 0  # every read()/write(), pipes and sockets included
    wchar: int = 0
    syscr: int = 0
    syscw: int = 0
    fds: dict[str, int] = field(default_factory=dict)  # regular/socket/pipe/accel/device/other
    listening: int = 0
    connected: int = 0
    socket_inodes: frozenset[int] = frozenset()
    sockets_seen: int = 0  # distinct socket inodes held over its life (churn)
    readable: bool = True  # False: io/fd/maps belong to another user
    # what the vendor backends listed for it (one entry per device), as of
    # the last full scan's listing
    accel: tuple[AccelProcess, ...] = ()

    @property
    def uses_accel(self) -> bool:
        """Device files open, or listed by a vendor backend."""
        return bool(self.fds.get("accel") or self.accel)

    @property
    def key(self) -> tuple[int, int]:
        return (self.stat.pid, self.stat.start)


def parse_io(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if value.isdigit():
            out[key.strip()] = int(value)
    return out


def _kb_field(text: str, key: str) -> int:
    i = text.find(key + ":")
    if i < 0:
        return 0
    parts = text[i + len(key) + 1:].split(None, 1)
    return int(parts[0]) * 1024 if parts and parts[0].isdigit() else 0


def parse_net_sockets(text: str) -> dict[int, str]:
    """inode -> "listen" / "connected" / "other" of a /proc/net/tcp{,6} table."""
    out: dict[int, str] = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10 or not f[9].isdigit():
            continue
        inode = int(f[9])
        if inode == 0:
            continue
        out[inode] = {"0A": "listen", "01": "connected"}.get(f[3], "other")
    return out


class ProcessScanner:
    """Successive scans of one host; remembers per process what need not be
    read again (its command line until it exits; what its maps held, in the
    ProcTable, until its virtual size changes)."""

    def __init__(self, host: Host, *, top_cpu: int = _TOP_CPU, full_every: int = 1,
                 table: ProcTable | None = None, accel: AccelSource | None = None,
                 accel_every: float = ACCEL_LISTING_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`accel`: the per-process accelerator listing (the daemon passes its
        sampler's `accel_processes`), asked at a full scan at most every
        `accel_every` seconds; None: device fds are the only evidence."""
        self.host = host
        self.accel = accel
        self.accel_every = accel_every
        self._clock = clock
        self._accel_at: float | None = None
        # (pid, start) -> what the last listing said of it; the listing's
        # pids are matched to processes at the full scan that asked, so a
        # pid reused later is not taken for the listed process
        self._accel_use: dict[tuple[int, int], tuple[AccelProcess, ...]] = {}
        # why the last listing is incomplete or missing, for display
        self.accel_problem: str | None = None
        # The daemon passes the sampler's table: a sample on which both scan
        # reads the pid list, the stat lines and maps once (see ProcTable).
        self.table = table if table is not None else ProcTable(host)
        self.top_cpu = top_cpu
        # Reading every pid's stat is most of a scan's cost on a host with
        # hundreds of processes: with full_every N, only every Nth scan does
        # (and picks the candidates); the scans between read the chosen
        # groups' members alone. A pass another reader just took (the
        # sampler's process scan in the same sample) is free: a full scan
        # then whatever the count.
        self.full_every = max(1, full_every)
        # smaps_rollup walks a process's whole address space (~4 ms for a
        # large PyTorch process) and the TCP tables list every socket of the
        # host (~3.5 ms on a busy one): with partial scans (the daemon) both
        # are read at every 4th full scan only.
        self.rollup_every = 1 if self.full_every == 1 else 4
        self._full_scans = 0
        self._full_at: float | None = None  # monotonic time of the last full scan
        self._chosen: dict[int, list[int]] = {}  # pgrp -> member pids at the last full scan
        self._prev: dict[int, ProcStat] = {}
        self._raw: dict[int, bytes] = {}  # pid -> its stat line of the last full scan
        # pids new since the last full scan -> their process group
        self._born: dict[int, int] = {}
        # (pid, start) -> (command line, launcher hints): read once per process
        self._known: dict[tuple[int, int], tuple[str, tuple[str, ...]]] = {}
        self._scans = 0
        # (pid, start) -> (socket inodes at the last scan, distinct ones seen so far)
        self._socks: dict[tuple[int, int], tuple[frozenset[int], int]] = {}
        # (pid, start) -> what the last full scan read of it (AnonHugePages,
        # fds by kind, listening, connected, socket inodes), carried over
        self._deep: dict[tuple[int, int],
                         tuple[int, dict[str, int], int, int, frozenset[int]]] = {}
        # (pid, start) -> anonymous share of its RSS at the last status read
        self._split: dict[tuple[int, int], float] = {}
        # (pid, start) -> the fd names of the last full scan, their kinds
        self._fdnames: dict[tuple[int, int], tuple[frozenset[str], dict[str, int]]] = {}

    def stats(self) -> dict[int, ProcStat]:
        """/proc/PID/stat of every live pid."""
        out: dict[int, ProcStat] = {}
        self._raw = dict(self.table.stat_pass(self))
        for pid, raw in self._raw.items():
            st = parse_stat(pid, raw.decode("utf-8", "replace"))
            if st is not None:
                out[pid] = st
        return out

    def scan(self, watch: Iterable[int] = ()) -> list[ProcEvidence]:
        """The candidates' evidence now (see the module docstring), plus the
        process groups in `watch` whatever they do."""
        self._scans += 1
        if (self._scans - 1) % self.full_every and self._chosen \
                and not self.table.has_fresh_pass(self):
            return self._partial(watch)
        stats = self.stats()
        live = {(s.pid, s.start) for s in stats.values()}
        self._refresh_accel(stats)
        for cache in (self._known, self._socks, self._deep, self._fdnames, self._split,
                      self._accel_use):
            for gone in [k for k in cache if k not in live]:
                del cache[gone]
        groups: dict[int, list[ProcStat]] = {}
        for st in stats.values():
            if not st.kthread:
                groups.setdefault(st.pgrp, []).append(st)
        chosen: set[int] = set(watch)
        busy: list[tuple[int, int]] = []
        for st in stats.values():
            if st.kthread:
                continue
            before = self._prev.get(st.pid)
            if before is not None and before.start == st.start:
                busy.append((st.utime + st.stime - before.utime - before.stime, st.pid))
            else:
                # born since the last full scan (a pipeline stage, a worker):
                # all its CPU is recent
                busy.append((st.utime + st.stime, st.pid))
            if self._ai_static(st) or (st.pid, st.start) in self._accel_use:
                chosen.add(st.pgrp)
        busy.sort(reverse=True)
        # A group is among the top consumers only with at least 1 % of a CPU
        # since the last full scan: an idle daemon's stray ticks cannot make
        # a job active (0.05 cores), and each candidate is read at every scan.
        now = time.monotonic()
        least = 1 if self._full_at is None else max(
            1, int(_MIN_TOP_CORES * (now - self._full_at) * clock_ticks()))
        self._full_at = now
        chosen.update(stats[pid].pgrp for ticks, pid in busy[: self.top_cpu] if ticks >= least)
        self._prev = {pid: st for pid, st in stats.items() if not st.kthread}
        self._born = {}
        members = {pgrp: sorted(groups.get(pgrp, []), key=lambda s: s.pid)[:_MAX_GROUP]
                   for pgrp in sorted(chosen)}
        self._chosen = {g: [st.pid for st in m] for g, m in members.items()}
        self._full_scans += 1
        return self._examine([st for g in sorted(members) for st in members[g]], deep=True)

    def _refresh_accel(self, stats: Mapping[int, ProcStat]) -> None:
        """Ask the backends which processes use a device, if due, and tie
        each listed pid to the process that has it now. A listed pid with no
        process (it exited since the vendor looked) is dropped."""
        if self.accel is None:
            return
        now = self._clock()
        if self._accel_at is not None and now - self._accel_at < self.accel_every:
            return  # the last listing stands; its processes that exited drop out
        self._accel_at = now
        listing = self.accel()
        if listing is None:
            self._accel_use = {}
            self.accel_problem = "no accelerator view"
            return
        self.accel_problem = listing.problem_text()
        self._accel_use = {(pid, stats[pid].start): tuple(procs)
                           for pid, procs in listing.by_pid().items()
                           if pid in stats and not stats[pid].kthread}

    def _slow_reads_due(self) -> bool:
        """Whether this full scan reads smaps_rollup and the TCP tables."""
        return self.rollup_every == 1 or self._full_scans % self.rollup_every == 1

    def _partial(self, watch: Iterable[int]) -> list[ProcEvidence]:
        """A scan between full ones: the chosen groups' members, those of the
        last full scan and any started since (a pipeline's next stage, a new
        loader worker: the recordings the model learnt from see them at
        once). A pid new since the last full scan has its stat read once to
        learn its group; only the chosen groups' are read again."""
        found: list[ProcStat] = []
        for pid in self._new_members():
            self._chosen[self._born[pid]].append(pid)
        for pid in sorted({p for m in self._chosen.values() for p in m}):
            raw = self.table.read(pid, "stat")
            if raw is None:
                continue  # exited
            st = parse_stat(pid, raw.decode("utf-8", "replace"))
            if st is not None and st.pgrp in self._chosen:
                self._raw[pid] = raw
                found.append(st)
        extra = set(watch) - set(self._chosen)
        if extra:  # a watched group not seen at the last full scan
            found += [st for st in self.stats().values() if st.pgrp in extra and not st.kthread]
        return self._examine(found, deep=False)

    def _new_members(self) -> list[int]:
        """Pids started since the last full scan that belong to a chosen
        group and are not yet among its members."""
        out = []
        for name in self.table.listdir_proc():
            pid = int(name)
            # _raw: every pid of the last full pass, kernel threads included
            if pid in self._raw or pid in self._born:
                continue
            raw = self.table.read(pid, "stat")
            st = None if raw is None else parse_stat(pid, raw.decode("utf-8", "replace"))
            self._born[pid] = -1 if st is None or st.kthread else st.pgrp
            if st is None or st.kthread:
                continue
            members = self._chosen.get(st.pgrp)
            if members is not None and len(members) < _MAX_GROUP:
                out.append(pid)
        return out

    def _examine(self, members: list[ProcStat], *, deep: bool) -> list[ProcEvidence]:
        sockets: dict[int, str] | None = None
        out: list[ProcEvidence] = []
        for st in members:
            ev = self._evidence(st, deep=deep)
            if ev is None:
                continue
            held = self._deep.get(ev.key)
            if not deep and held is not None:
                ev.anon_huge, ev.fds, ev.listening, ev.connected, ev.socket_inodes = held
                ev.sockets_seen = self._socks.get(ev.key, (frozenset(), 0))[1]
            elif held is not None and ev.socket_inodes == held[4] \
                    and not self._slow_reads_due():
                # the TCP tables (every socket of the host: milliseconds on a
                # busy one) are read as seldom as smaps_rollup while the
                # process holds the same sockets
                ev.listening, ev.connected = held[2], held[3]
            elif ev.socket_inodes:
                if sockets is None:
                    sockets = self._sockets()
                states = [sockets.get(i) for i in ev.socket_inodes]
                ev.listening = states.count("listen")
                ev.connected = states.count("connected")
            if deep:
                self._deep[ev.key] = (ev.anon_huge, ev.fds, ev.listening, ev.connected,
                                      ev.socket_inodes)
            ev.accel = self._accel_use.get(ev.key, ())
            out.append(ev)
        return out

    def _ai_static(self, st: ProcStat) -> bool:
        """Whether the process has an AI framework mapped or a launcher on its
        command line."""
        return bool(AI_FRAMEWORKS.intersection(self._frameworks(st)) or self._hints(st)[1])

    def _frameworks(self, st: ProcStat) -> tuple[str, ...]:
        info = self.table.maps_info(st.pid, self._raw.get(st.pid))
        return () if info is None else info.frameworks

    def _hints(self, st: ProcStat) -> tuple[str, tuple[str, ...]]:
        key = (st.pid, st.start)
        known = self._known.get(key)
        if known is None:
            raw = self.table.read(st.pid, "cmdline") or b""
            cmdline = raw.rstrip(b"\0").decode("utf-8", "replace")
            hints = tuple(h.partition(":")[2] for h in cmdline_reasons(cmdline.split("\0")))
            known = self._known[key] = (cmdline.replace("\0", " ").strip(), hints)
        return known

    def _sockets(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            text = self.host.read_optional(table)
            if text:
                out.update(parse_net_sockets(text))
        return out

    def _evidence(self, st: ProcStat, *, deep: bool = True) -> ProcEvidence | None:
        """A candidate's facts. Not `deep` (the scans between full ones): the
        counters only (stat, status, io); smaps_rollup (it walks the whole
        address space), the fd links and the socket tables are read at full
        scans and carried over."""
        table = self.table
        cmdline, hints = self._hints(st)
        ev = ProcEvidence(stat=st, cmdline=cmdline, hints=hints,
                          frameworks=self._frameworks(st))
        held = self._deep.get(ev.key)
        split = self._split.get(ev.key)
        if deep or split is None:
            raw_status = table.pass_read(self, st.pid, "status")
            if raw_status is None:
                return None  # exited since the stat read
            status = raw_status.decode("utf-8", "replace")
            anon = _kb_field(status, "RssAnon")
            filed = _kb_field(status, "RssFile") + _kb_field(status, "RssShmem")
            total = anon + filed
            self._split[ev.key] = anon / total if total else 0.0
            ev.rss_anon, ev.rss_file = anon, filed
        else:
            # Between full scans the anon/file split of the last status read
            # is applied to the RSS of stat: the split moves slowly, the RSS not.
            ev.rss_anon = round(st.rss_bytes * split)
            ev.rss_file = st.rss_bytes - ev.rss_anon
        if deep and (held is None or self._slow_reads_due()):
            rollup = table.pass_read(self, st.pid, "smaps_rollup")
            if rollup:
                ev.anon_huge = _kb_field(rollup.decode("utf-8", "replace"), "AnonHugePages")
        elif held is not None:
            ev.anon_huge = held[0]
        io_raw = table.read(st.pid, "io")
        if io_raw is None:
            ev.readable = False
        else:
            io = parse_io(io_raw.decode("utf-8", "replace"))
            ev.read_bytes, ev.write_bytes = io.get("read_bytes", 0), io.get("write_bytes", 0)
            ev.rchar, ev.wchar = io.get("rchar", 0), io.get("wchar", 0)
            ev.syscr, ev.syscw = io.get("syscr", 0), io.get("syscw", 0)
        if not deep:
            return ev
        names = frozenset(table.listdir(st.pid, "fd"))
        last = self._fdnames.get(ev.key)
        if last is not None and last[0] == names and "socket" not in last[1]:
            # the same fd numbers and no socket among them: one readlink per
            # fd would find the same files (sockets are re-read: a server's
            # fd numbers come back with new connections, which is its churn)
            kinds, inodes = dict(last[1]), set[int]()
        else:
            kinds, inodes = self._fd_kinds(st.pid, names)
            self._fdnames[ev.key] = (names, kinds)
        ev.fds = kinds
        ev.socket_inodes = frozenset(inodes)
        before, seen = self._socks.get(ev.key, (frozenset(), 0))
        ev.sockets_seen = seen + len(ev.socket_inodes - before)
        self._socks[ev.key] = (ev.socket_inodes, ev.sockets_seen)
        return ev

    def _fd_kinds(self, pid: int, names: frozenset[str]) -> tuple[dict[str, int], set[int]]:
        kinds: dict[str, int] = {}
        inodes: set[int] = set()
        for fd in sorted(names, key=lambda n: (len(n), n))[:_MAX_FDS]:
            target = self.table.readlink(pid, f"fd/{fd}")
            if target is None:
                continue
            kind = fd_kind(target)
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "socket":
                digits = target[8:-1]
                if digits.isdigit():
                    inodes.add(int(digits))
        return kinds, inodes


def fd_kind(target: str) -> str:
    if target.startswith("socket:"):
        return "socket"
    if target.startswith("pipe:"):
        return "pipe"
    if target.startswith("/dev/"):
        return "accel" if _ACCEL_DEV.fullmatch(target) else "device"
    if target.startswith("/"):
        return "regular"
    return "other"  # anon_inode:[eventfd], ...


def uptime(host: Host) -> float:
    """Seconds since boot (/proc/uptime), which process start times count from."""
    text = host.read_optional("/proc/uptime") or "0"
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return 0.0


def host_cpu(host: Host) -> tuple[float, float, int]:
    """(busy, total) clock ticks of all CPUs since boot from /proc/stat, and
    the CPU count; iowait counts as idle."""
    text = host.read_optional("/proc/stat") or ""
    busy = total = 0.0
    ncpu = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            vals = [float(x) for x in line.split()[1:] if x.isdigit()]
            total = sum(vals[:8])
            busy = total - sum(vals[3:5])
        elif line.startswith("cpu"):
            ncpu += 1
    return busy, total, ncpu


# columns of a role trace row; counters are cumulative
ROW_FIELDS = (
    "t", "pid", "start", "pgrp", "ppid", "comm", "cpu_user", "cpu_sys", "cpu_children",
    "threads", "rss",
    "rss_anon", "rss_file", "anon_huge", "read_bytes", "write_bytes", "rchar", "wchar",
    "syscr", "syscw", "fd_regular", "fd_socket", "fd_pipe", "fd_accel", "fd_device",
    "listening", "connected", "sockets_seen", "readable", "frameworks", "hints",
    "accel_listed", "accel_mem", "accel_util", "accel_devs",
)


def evidence_row(t: float, ev: ProcEvidence, hz: int) -> dict[str, object]:
    """One process at one scan as a flat row (CPU in seconds).

    `fd_accel` is the model's one accelerator feature: the device files
    open, and at least 1 when a vendor backend lists the process (its device
    files may be out of sight). The shipped role model was trained with no
    accelerator present (fd_accel 0 throughout), so this adds no column and
    keeps the artifact's feature list; the listing's own figures travel
    beside it for display: `accel_mem` (bytes on all its devices, 0 where
    the vendor cannot say), `accel_util` (the sum of its busy shares, ""
    where no vendor keeps one), `accel_devs` (global device indices)."""
    st = ev.stat
    mem = [p.memory_bytes for p in ev.accel if p.memory_bytes is not None]
    util = [p.util for p in ev.accel if p.util is not None]
    fds = {f"fd_{k}": ev.fds.get(k, 0) for k in ("regular", "socket", "pipe", "accel", "device")}
    if ev.accel:
        fds["fd_accel"] = max(fds["fd_accel"], 1)
    return {
        "t": round(t, 3), "pid": st.pid, "start": st.start, "pgrp": st.pgrp, "ppid": st.ppid,
        "comm": st.comm.replace(",", "_"), "cpu_user": st.utime / hz, "cpu_sys": st.stime / hz,
        "cpu_children": st.children / hz,
        "threads": st.threads, "rss": st.rss_bytes, "rss_anon": ev.rss_anon,
        "rss_file": ev.rss_file, "anon_huge": ev.anon_huge, "read_bytes": ev.read_bytes,
        "write_bytes": ev.write_bytes, "rchar": ev.rchar, "wchar": ev.wchar,
        "syscr": ev.syscr, "syscw": ev.syscw,
        **fds,
        "listening": ev.listening, "connected": ev.connected, "sockets_seen": ev.sockets_seen,
        "readable": int(ev.readable), "frameworks": ";".join(ev.frameworks),
        "hints": ";".join(ev.hints),
        "accel_listed": int(bool(ev.accel)), "accel_mem": sum(mem),
        "accel_util": round(sum(util), 4) if util else "",
        "accel_devs": ";".join(str(d) for d in sorted({p.device for p in ev.accel})),
    }


def group_by_pgrp(evidence: Iterable[ProcEvidence]) -> Mapping[int, list[ProcEvidence]]:
    out: dict[int, list[ProcEvidence]] = {}
    for ev in evidence:
        out.setdefault(ev.stat.pgrp, []).append(ev)
    return out
