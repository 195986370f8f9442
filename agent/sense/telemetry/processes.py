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
import os
import re
import resource

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


def _open_accel_files(host: Host, pid: int) -> list[str]:
    found: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in host.listdir_optional(fd_dir)[:_MAX_FDS]:
        target = host.readlink(f"{fd_dir}/{fd}")
        if target is not None and _ACCEL_DEV_RE.fullmatch(target):
            found.add(target)
    return sorted(found)


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


def inspect_process(host: Host, pid: int, *, scan_fds: bool, hz: int) -> AIProcess | None:
    """The AIProcess for `pid` if it looks like AI work, else None (also when
    it is a kernel thread or vanished)."""
    base = f"/proc/{pid}"
    try:
        raw_cmdline = host.read_bytes(f"{base}/cmdline")
    except HosttuneError:
        return None
    if not raw_cmdline:
        return None  # kernel thread, or a zombie
    argv = [a.decode("utf-8", "replace") for a in raw_cmdline.rstrip(b"\0").split(b"\0")]
    if len(argv) == 1 and " " in argv[0]:
        argv = argv[0].split()  # a process that rewrote its title as one string
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
        status = parse_status(host.read_text(f"{base}/status"))
        stat = host.read_text(f"{base}/stat")
    except HosttuneError:
        return None  # it vanished between the reads
    try:
        cpus = parse_cpulist(status.get("Cpus_allowed_list", ""), source=f"{base}/status")
    except HosttuneError:
        cpus = ()
    anon_huge = anon = 0
    rollup = host.read_optional(f"{base}/smaps_rollup")
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


def find_ai_processes(host: Host, *, scan_fds: bool | None = None) -> list[AIProcess]:
    """Every process on `host` that looks like AI work, by pid.

    `scan_fds` None: read open fds only where an accelerator device node
    exists (always on a fixture tree, whose /dev is usually not captured)."""
    if scan_fds is None:
        scan_fds = not host.is_live or host_has_accel_devices(host)
    hz = clock_ticks()
    found = []
    for pid in host.pids():
        proc = inspect_process(host, pid, scan_fds=scan_fds, hz=hz)
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
