"""Find the processes that look like AI work, and what the tuners need to
know about them: CPU affinity, resident memory, how much of it THP backs,
and on which NUMA nodes it lives.

A process counts as AI work when it
- holds an accelerator device file open or mapped (/dev/nvidia*, /dev/kfd,
  /dev/dri/renderD*, /dev/davinci*, /dev/accel/*, /dev/cambricon*, ...),
- has a framework or collective library mapped (libtorch*, libc10*,
  libcudart, libcuda, libnccl, libtensorflow*, libxla/xla_extension, libjax*,
  libascendcl, libmindspore*, libhccl, librccl, libamdhip64, ...), or
- was started by a known launcher or server (torchrun, deepspeed, vllm,
  `python -m torch.distributed.run`, ...).

Scanning costs about 50 us a process (PLATFORM.md), far more than the system
collectors, so the sampler does it only every Nth sample. Only candidates get
the expensive reads (status, stat, smaps_rollup, numa_maps). A process that
vanishes mid-read is skipped; this function never raises.
"""

from __future__ import annotations

import errno
import math
import os
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

from hosttune.agent.sense.cpulist import parse_cpulist
from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.sample import AIProcess
from hosttune.agent.sense.telemetry.cpu import clock_ticks
from hosttune.agent.sense.telemetry.parsing import number

# The path column of /proc/PID/maps, for libraries of AI frameworks.
_LIB_RE = re.compile(
    rb"/((?:lib(?:torch|c10|cudart|cuda|cudnn|cublas|nccl|rccl|hccl|tensorflow|xla|jax|"
    rb"ascendcl|mindspore|amdhip64|tpu|nvrtc|onnxruntime|habana|synapse)[\w.+-]*"
    rb"|xla_extension[\w.+-]*|_pywrap_tensorflow\w*)\.so[\w.]*)$",
    re.MULTILINE,
)
_MAPPED_DEV_RE = re.compile(rb" (/dev/\S+)$", re.MULTILINE)
# Accelerator device files (the whole host path).
_ACCEL_DEV_RE = re.compile(
    r"/dev/(?:nvidia(?:\d+|ctl|-uvm|-uvm-tools|-modeset|-caps/\S+)?|davinci\d+|davinci_manager"
    r"|devmm_svm|hisi_hdc|kfd|dri/renderD\d+|accel/accel\d+|cambricon\w*|mlu\w*"
    r"|hl\d+|hl_controlD\d+|neuron\d+)"
)
# Top-level /dev names whose presence means an accelerator driver is loaded.
_ACCEL_DEV_NAMES = re.compile(r"nvidia\S*|davinci\S*|kfd|cambricon\S*|mlu\S*|hl\d+|neuron\d+")

LAUNCHERS = frozenset((
    "torchrun", "deepspeed", "accelerate", "vllm", "sglang", "tritonserver",
    "text-generation-launcher", "text-generation-server", "text-generation-router",
    "ollama", "llama-server", "horovodrun", "msrun", "colossalai", "megatron",
))
# `python -m <module>` launches that mean AI work.
_MODULE_PREFIXES = (
    "torch.distributed", "vllm", "sglang", "deepspeed", "accelerate.commands",
    "tensorflow", "jax", "mindspore", "megatron", "colossalai", "horovod",
)
# A process with thousands of fds (a server with many sockets) is not read
# further than this: accelerator files are opened early, at low numbers.
_MAX_FDS = 1024
_BASE_KB = max(1, resource.getpagesize() // 1024)


def own_rss_bytes(host: Host) -> int | None:
    """Resident memory of the calling process (/proc/self/statm, in pages),
    or None where it cannot be read. Only meaningful on the live host."""
    text = host.read_optional("/proc/self/statm")
    try:
        return int((text or "").split()[1]) * resource.getpagesize()
    except (IndexError, ValueError):
        return None


def host_has_accel_devices(host: Host) -> bool:
    """Whether any accelerator device node exists. When none does, no process
    can hold one open and the fd scan (one readlink per fd) is skipped."""
    if any(_ACCEL_DEV_NAMES.fullmatch(n) for n in host.listdir_optional("/dev")):
        return True
    if any(n.startswith("renderD") for n in host.listdir_optional("/dev/dri")):
        return True
    return bool(host.listdir_optional("/dev/accel"))


def cmdline_reasons(argv: list[str]) -> list[str]:
    reasons: list[str] = []
    for i, arg in enumerate(argv):
        base = arg.rsplit("/", 1)[-1]
        if base in LAUNCHERS:
            reasons.append(f"cmdline:{base}")
        elif arg == "-m" and i + 1 < len(argv):
            module = argv[i + 1]
            if module.startswith(_MODULE_PREFIXES):
                reasons.append(f"cmdline:-m {module}")
    return reasons


def _maps_findings(maps: bytes) -> tuple[list[str], list[str]]:
    libs = sorted({m.decode("utf-8", "replace") for m in _LIB_RE.findall(maps)})
    devs = sorted({
        d for d in (m.decode("utf-8", "replace") for m in _MAPPED_DEV_RE.findall(maps))
        if _ACCEL_DEV_RE.fullmatch(d)
    })
    return libs, devs


# Frameworks and runtimes by a path fragment of a mapped file: what the role
# scanner (proc_evidence) records of each process, from the same maps read.
FRAMEWORKS: dict[str, re.Pattern[bytes]] = {
    "torch": re.compile(rb"/lib(?:torch|c10)[\w.+-]*\.so"),
    "tensorflow": re.compile(rb"/(?:libtensorflow|_pywrap_tensorflow)[\w.+-]*\.so"),
    "jax": re.compile(rb"/(?:xla_extension|libjax|jaxlib/)[\w./+-]*\.so"),
    "onnxruntime": re.compile(rb"/libonnxruntime[\w.+-]*\.so|/onnxruntime_pybind"),
    "vllm": re.compile(rb"/vllm/[\w./+-]*\.so"),
    "triton": re.compile(rb"/libtriton[\w.+-]*\.so|/triton/_C/"),
    "collective": re.compile(rb"/lib(?:nccl|rccl|hccl)[\w.+-]*\.so"),
    "cann": re.compile(rb"/lib(?:ascendcl|ge_runner|graph|acl_)[\w.+-]*\.so"),
    "cuda": re.compile(rb"/lib(?:cudart|cuda|cublas|cudnn|amdhip64)[\w.+-]*\.so"),
    "sklearn": re.compile(rb"/sklearn/[\w./+-]*\.so"),
    "numpy": re.compile(rb"/numpy/(?:_?core)/_multiarray_umath[\w.+-]*\.so"),
}


def frameworks_of(maps: bytes) -> tuple[str, ...]:
    return tuple(name for name, pattern in FRAMEWORKS.items() if pattern.search(maps))


@dataclass(frozen=True)
class MapsInfo:
    """What one read of /proc/PID/maps told: AI libraries and accelerator
    devices mapped (the sampler's reasons) and frameworks (the role scanner's)."""

    libs: tuple[str, ...]
    devices: tuple[str, ...]
    frameworks: tuple[str, ...]
    readable: bool = True


_NO_MAPS = MapsInfo((), (), (), readable=False)
_GONE = (errno.ENOENT, errno.ESRCH)
_STAT_START, _STAT_VSIZE = 19, 20  # fields 22 and 23 of proc(5), counted after the comm


def stat_identity(stat: bytes) -> tuple[int, int] | None:
    """(start time, virtual size) of a /proc/PID/stat line; None if malformed."""
    f = stat[stat.rfind(b")") + 1:].split()
    try:
        return int(f[_STAT_START]), int(f[_STAT_VSIZE])
    except (IndexError, ValueError):
        return None


class ProcTable:
    """One pass over /proc shared by the sampler's AI-process finder and the
    role scanner, so that a sample which runs both lists the pids, reads each
    stat and each candidate's status and smaps_rollup once.

    It also remembers what each process's maps held, keyed by (pid, start
    time, virtual size): a mapping added or removed (a library loaded, a
    device mapped) changes the virtual size, so maps, the most expensive
    file of a scan (hundreds of kB for a PyTorch process), is read again
    only when that changed, instead of every pass.

    Reads go by plain path strings under the Host's /proc: pathlib and
    buffered file objects cost as much as the read of a small /proc file."""

    def __init__(self, host: Host, *, fresh: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.base = str(host.path("/proc"))
        self.fresh = fresh  # seconds a pass serves another reader of the same sample
        self._clock = clock
        self._pass_at = -math.inf
        self._stats: dict[int, bytes] = {}
        self._texts: dict[tuple[int, str], tuple[bytes | None, set[object]]] = {}
        self._served: set[object] = set()
        self._maps: dict[int, tuple[int, int, MapsInfo]] = {}
        self.passes = 0
        self.maps_reads = 0

    def read(self, pid: int | str, name: str) -> bytes | None:
        """/proc/<pid>/<name>, or None when it is gone or not ours to read."""
        got = self.read_or_errno(f"{pid}/{name}")
        return got if isinstance(got, bytes) else None

    def read_or_errno(self, rel: str, *, records: bool = False) -> bytes | int:
        """The file, or the errno that stopped its read. A file the kernel
        makes in one piece (stat, status, io, cmdline) comes whole from the
        first read when shorter than the buffer; one made record by record
        (`records`: maps) comes a page or so per read, up to an empty one."""
        try:
            fd = os.open(f"{self.base}/{rel}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            return exc.errno or errno.EIO
        size = 65536 if records else 8192
        try:
            chunk = os.read(fd, size)
            if not records and len(chunk) < size:
                return chunk
            chunks = [chunk]
            while chunk:
                chunk = os.read(fd, size)
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            return exc.errno or errno.EIO
        finally:
            os.close(fd)

    def listdir_proc(self) -> list[str]:
        """The pids now, as the names of /proc's numbered entries."""
        try:
            return [n for n in os.listdir(self.base) if n.isdigit()]
        except OSError:
            return []

    def listdir(self, pid: int, name: str) -> list[str]:
        try:
            return os.listdir(f"{self.base}/{pid}/{name}")
        except OSError:
            return []

    def readlink(self, pid: int, rel: str) -> str | None:
        try:
            return os.readlink(f"{self.base}/{pid}/{rel}")
        except OSError:
            return None

    def has_fresh_pass(self, reader: object) -> bool:
        """Whether a pass taken within `fresh` seconds by another reader
        waits for `reader`: each reader gets a pass once."""
        return self._clock() - self._pass_at < self.fresh and reader not in self._served

    def stat_pass(self, reader: object) -> dict[int, bytes]:
        """pid -> /proc/PID/stat of every live pid: the pass another reader
        took within `fresh` seconds if `reader` has not had it, else a new
        pass."""
        if self.has_fresh_pass(reader):
            self._served.add(reader)
            return self._stats
        stats: dict[int, bytes] = {}
        for name in self.listdir_proc():
            text = self.read(name, "stat")
            if text is not None:
                stats[int(name)] = text
        self._stats = stats
        self._texts = {}
        self._served = {reader}
        self._pass_at = self._clock()
        self.passes += 1
        for pid in [p for p in self._maps if p not in stats]:
            del self._maps[pid]
        return stats

    def pass_read(self, reader: object, pid: int, name: str) -> bytes | None:
        """A per-process file (status, smaps_rollup) as another reader read
        it in the same pass, else read now: each reader reads a file once
        per pass, and nobody gets a text older than the pass."""
        key = (pid, name)
        got = self._texts.get(key)
        fresh = self._clock() - self._pass_at < self.fresh and reader in self._served
        if got is not None and fresh and reader not in got[1]:
            got[1].add(reader)
            return got[0]
        text = self.read(pid, name)
        if fresh:
            self._texts[key] = (text, {reader})
        return text

    def maps_info(self, pid: int, stat: bytes | None = None) -> MapsInfo | None:
        """What pid's maps holds; None when the process is gone. Read again
        only when the process's identity or virtual size differs from the
        last read (`stat`: its stat line of this pass, read if not given)."""
        if stat is None:
            stat = self.read(pid, "stat")
        ident = None if stat is None else stat_identity(stat)
        held = self._maps.get(pid)
        if ident is not None and held is not None and held[:2] == ident:
            return held[2]
        got = self.read_or_errno(f"{pid}/maps", records=True)
        self.maps_reads += 1
        if isinstance(got, int):
            if got in _GONE:
                self._maps.pop(pid, None)
                return None
            info = _NO_MAPS  # not ours to read (no ptrace access): judge by the rest
        else:
            libs, devs = _maps_findings(got)
            info = MapsInfo(tuple(libs), tuple(devs), frameworks_of(got))
        if ident is not None:
            self._maps[pid] = (ident[0], ident[1], info)
        return info


def _open_accel_files(host: Host, pid: int) -> list[str]:
    found: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in host.listdir_optional(fd_dir)[:_MAX_FDS]:
        target = host.readlink(f"{fd_dir}/{fd}")
        if target is not None and _ACCEL_DEV_RE.fullmatch(target):
            found.add(target)
    return sorted(found)


PF_KTHREAD = 0x00200000
_PAGE = resource.getpagesize()


@dataclass
class ProcStat:
    """The cheap facts of /proc/PID/stat."""

    pid: int
    start: int  # clock ticks after boot: with pid, the process's identity
    comm: str
    state: str
    ppid: int
    pgrp: int
    utime: int  # clock ticks
    stime: int
    children: int  # cutime + cstime: CPU of children it has reaped (a shell's pipelines)
    threads: int
    rss_bytes: int
    kthread: bool
    # page faults served without I/O, all threads: fresh anonymous memory
    # touched page by page (a job allocating anew each step) shows here
    minor_faults: int = 0


def parse_stat(pid: int, text: str) -> ProcStat | None:
    """/proc/PID/stat; None for a malformed line. The command name may hold
    spaces and parentheses: fields are counted from its last ')'."""
    lpar, rpar = text.find("("), text.rfind(")")
    if lpar < 0 or rpar < lpar:
        return None
    f = text[rpar + 1:].split()
    if len(f) < 22:
        return None
    try:
        return ProcStat(
            pid=pid, start=int(f[19]), comm=text[lpar + 1:rpar], state=f[0],
            ppid=int(f[1]), pgrp=int(f[2]), utime=int(f[11]), stime=int(f[12]),
            children=int(f[13]) + int(f[14]),
            threads=int(f[17]), rss_bytes=max(0, int(f[21])) * _PAGE,
            kthread=bool(int(f[6]) & PF_KTHREAD), minor_faults=int(f[7]),
        )
    except ValueError:
        return None


def parse_status(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def _kb(value: str | None) -> int:
    if not value:
        return 0
    got = number(value.split()[0])
    return int(got) * 1024 if got is not None and got >= 0 else 0


def parse_stat_cpu_seconds(text: str, hz: int) -> float:
    """utime + stime of /proc/PID/stat (fields 14 and 15; the command name in
    field 2 may contain spaces and parentheses, so count from its last ')')."""
    fields = text[text.rfind(")") + 1:].split()
    if len(fields) < 13:
        return 0.0
    utime, stime = number(fields[11]), number(fields[12])
    if utime is None or stime is None or utime < 0 or stime < 0:
        return 0.0
    return (utime + stime) / hz


def parse_numa_maps(text: str, base_kb: int = 4) -> dict[int, int]:
    """Sum the N<node>=<pages> fields over every mapping, counted in base
    pages (`base_kb`): hugetlb mappings count in their own page size
    (kernelpagesize_kB), which is scaled so that all mappings add up."""
    pages: dict[int, int] = {}
    for line in text.splitlines():
        if " N" not in line:
            continue
        scale = 1
        counts: list[tuple[int, int]] = []
        for tok in line.split():
            if tok.startswith("N"):
                label, sep, value = tok[1:].partition("=")
                if sep and label.isdigit() and value.isdigit() and len(value) < 20 \
                        and len(label) < 6:
                    counts.append((int(label), int(value)))
            elif tok.startswith("kernelpagesize_kB="):
                size = tok[len("kernelpagesize_kB="):]
                if size.isdigit() and len(size) < 10:
                    scale = max(1, int(size) // base_kb)
        for node, count in counts:
            pages[node] = pages.get(node, 0) + count * scale
    return pages


def _gone(exc: HosttuneError) -> bool:
    return getattr(exc, "errno", None) in (errno.ENOENT, errno.ESRCH)


def inspect_process(host: Host, pid: int, *, scan_fds: bool, hz: int,
                    table: ProcTable | None = None, stat: bytes | None = None
                    ) -> AIProcess | None:
    """The AIProcess for `pid` if it looks like AI work, else None (also when
    it is a kernel thread or vanished). With `table` (and `stat`, pid's line
    of the table's pass), the pass's per-process files are used and maps is
    read only when it may have changed (see ProcTable); the result is the
    same."""
    base = f"/proc/{pid}"
    if table is not None:
        return _inspect_in_pass(host, table, pid, table.read(pid, "stat") if stat is None
                                else stat, scan_fds=scan_fds, hz=hz)
    try:
        raw_cmdline = host.read_bytes(f"{base}/cmdline")
    except HosttuneError:
        return None
    argv = _argv(raw_cmdline)
    if argv is None:
        return None  # kernel thread, or a zombie
    reasons = cmdline_reasons(argv)
    try:
        maps = host.read_bytes(f"{base}/maps")
    except HosttuneError as exc:
        if _gone(exc):
            return None
        maps = b""  # not ours to read (no ptrace access): judge by the rest
    libs, devices = _maps_findings(maps)
    reasons += [f"lib:{lib}" for lib in libs]
    if scan_fds:
        devices = sorted(set(devices) | set(_open_accel_files(host, pid)))
    reasons += [f"device:{dev}" for dev in devices]
    if not reasons:
        return None

    try:
        status_text = host.read_text(f"{base}/status")
        stat_text = host.read_text(f"{base}/stat")
    except HosttuneError:
        return None  # it vanished between the reads
    return _ai_process(host, pid, argv=argv, reasons=reasons, devices=devices,
                       status_text=status_text, stat=stat_text,
                       rollup=host.read_optional(f"{base}/smaps_rollup"), hz=hz)


def _argv(raw_cmdline: bytes) -> list[str] | None:
    if not raw_cmdline:
        return None
    argv = [a.decode("utf-8", "replace") for a in raw_cmdline.rstrip(b"\0").split(b"\0")]
    if len(argv) == 1 and " " in argv[0]:
        argv = argv[0].split()  # a process that rewrote its title as one string
    return argv


_FINDER = "ai-processes"  # the sampler's reader name in a ProcTable


def _inspect_in_pass(host: Host, table: ProcTable, pid: int, stat_raw: bytes | None, *,
                     scan_fds: bool, hz: int) -> AIProcess | None:
    raw_cmdline = table.read(pid, "cmdline")
    argv = None if raw_cmdline is None else _argv(raw_cmdline)
    if argv is None:
        return None
    reasons = cmdline_reasons(argv)
    info = table.maps_info(pid, stat_raw)
    if info is None:
        return None
    devices = list(info.devices)
    reasons += [f"lib:{lib}" for lib in info.libs]
    if scan_fds:
        devices = sorted(set(devices) | set(_open_accel_files(host, pid)))
    reasons += [f"device:{dev}" for dev in devices]
    if not reasons:
        return None
    status_raw = table.pass_read(_FINDER, pid, "status")
    if stat_raw is None:
        stat_raw = table.read(pid, "stat")
    if status_raw is None or stat_raw is None:
        return None  # it vanished between the reads
    rollup = table.pass_read(_FINDER, pid, "smaps_rollup")
    return _ai_process(host, pid, argv=argv, reasons=reasons, devices=devices,
                       status_text=status_raw.decode("utf-8", "replace"),
                       stat=stat_raw.decode("utf-8", "replace"),
                       rollup=None if rollup is None
                       else rollup.decode("utf-8", "replace").strip(), hz=hz)


def _ai_process(host: Host, pid: int, *, argv: list[str], reasons: list[str],
                devices: list[str], status_text: str, stat: str, rollup: str | None,
                hz: int) -> AIProcess:
    base = f"/proc/{pid}"
    status = parse_status(status_text)
    try:
        cpus = parse_cpulist(status.get("Cpus_allowed_list", ""), source=f"{base}/status")
    except HosttuneError:
        cpus = ()
    anon_huge = anon = 0
    if rollup:
        memory = parse_status(rollup)
        anon_huge, anon = _kb(memory.get("AnonHugePages")), _kb(memory.get("Anonymous"))
    stat_fields = stat.rsplit(")", 1)[-1].split()
    numa_text = host.read_optional(f"{base}/numa_maps")
    comm = status.get("Name") or argv[0].rsplit("/", 1)[-1]
    return AIProcess(
        pid=pid,
        comm=comm,
        cmdline=" ".join(argv),
        reasons=tuple(reasons),
        cpus=cpus,
        rss_bytes=_kb(status.get("VmRSS")),
        numa_pages=parse_numa_maps(numa_text, _BASE_KB) if numa_text else {},
        accel_devices=tuple(devices),
        cpu_seconds=parse_stat_cpu_seconds(stat, hz),
        anon_huge_bytes=anon_huge,
        anon_bytes=anon,
        start_time=stat_fields[19] if len(stat_fields) > 19 else "",
    )


def find_ai_processes(host: Host, *, scan_fds: bool | None = None,
                      table: ProcTable | None = None) -> list[AIProcess]:
    """Every process on `host` that looks like AI work, by pid.

    `scan_fds` None: read open fds only where an accelerator device node
    exists (always on a fixture tree, whose /dev is usually not captured).
    `table`: a ProcTable kept between calls (the daemon's, shared with the
    role scanner): the same answer for a fraction of the reads."""
    if scan_fds is None:
        scan_fds = not host.is_live or host_has_accel_devices(host)
    hz = clock_ticks()
    found = []
    if table is None:
        for pid in host.pids():
            proc = inspect_process(host, pid, scan_fds=scan_fds, hz=hz)
            if proc is not None:
                found.append(proc)
        return found
    stats = table.stat_pass(_FINDER)
    # in the Host's order (names sorted as text), so both ways list alike
    for pid in sorted(stats, key=str):
        proc = _inspect_in_pass(host, table, pid, stats[pid], scan_fds=scan_fds, hz=hz)
        if proc is not None:
            found.append(proc)
    return found


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user counts); a zombie
    child of the caller is reaped and counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still answers kill(0): reap it
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0
