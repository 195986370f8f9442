"""What a running process's anonymous memory is made of, and whether this
kernel can fold it into huge pages from outside the process.

A THP mode change serves only memory allocated after it: a PyTorch job that
allocated its tensors under `madvise` keeps 4 KiB pages for its whole run
(PLATFORM.md measured 0 kB AnonHugePages five minutes after `always`).
MADV_COLLAPSE through process_madvise(2) (Linux 6.1) collapses the memory
the job already has, whatever the global mode. This module reads what such
a pass needs: the private anonymous mappings (/proc/PID/smaps), the
process's totals (/proc/PID/smaps_rollup), its start time (so a pid that
was reused is never mistaken for the process that was looked at) and
whether the kernel has the call at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hosttune.agent.sense import knobfiles
from hosttune.agent.sense.errors import HostReadError, ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.processes import parse_stat

MADV_COLLAPSE = 25
# The first kernel with MADV_COLLAPSE (and process_madvise accepting it).
COLLAPSE_SINCE = (6, 1)

_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) [0-9a-f]+ \S+ (\d+)\s*(.*)$")
# Private anonymous mappings that are not the process's stack or the kernel's
# pages shared into it; named anonymous mappings ([anon:...]) are allocator
# arenas and count.
_SKIP_NAMES = ("[stack", "[vvar", "[vdso", "[vsyscall", "[uprobes")


@dataclass(frozen=True)
class AnonMapping:
    """One private anonymous mapping, sizes in kB as smaps prints them."""

    start: int
    end: int
    anon_kb: int
    huge_kb: int
    # VmFlags: "nh" (MADV_NOHUGEPAGE: the kernel refuses to collapse it),
    # "hg" (MADV_HUGEPAGE: the process asked for huge pages itself)
    flags: frozenset[str] = frozenset()
    name: str = ""

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class MemoryRollup:
    anon_kb: int
    huge_kb: int
    rss_kb: int


def parse_smaps(text: str, source: str = "smaps") -> list[AnonMapping]:
    """The private, writable, anonymous mappings of a /proc/PID/smaps text."""
    found: list[AnonMapping] = []
    current: dict[str, object] | None = None

    def close() -> None:
        if current is not None:
            found.append(AnonMapping(
                start=int(str(current["start"])), end=int(str(current["end"])),
                anon_kb=int(str(current.get("Anonymous", 0))),
                huge_kb=int(str(current.get("AnonHugePages", 0))),
                flags=frozenset(str(current.get("VmFlags", "")).split()),
                name=str(current["name"])))

    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header is not None:
            close()
            start, end, perms, inode, name = header.groups()
            anonymous = inode == "0" and (not name or name == "[heap]"
                                          or name.startswith("[anon"))
            if anonymous and perms[1] == "w" and perms[3] == "p" and not name.startswith(
                    _SKIP_NAMES):
                current = {"start": int(start, 16), "end": int(end, 16), "name": name}
            else:
                current = None
            continue
        if current is None:
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise ParseError(source, f"line {number}: not 'Key: value': {line[:80]!r}")
        if key == "VmFlags":
            current["VmFlags"] = rest
        elif key in ("Anonymous", "AnonHugePages"):
            fields = rest.split()
            if not fields or not fields[0].isdigit():
                raise ParseError(source, f"line {number}: {key} is not a kB count")
            current[key] = int(fields[0])
    close()
    return found


def anon_mappings(host: Host, pid: int) -> list[AnonMapping]:
    """The process's private anonymous mappings; HostReadError when it is
    gone or not readable."""
    path = knobfiles.process(pid, "smaps")
    return parse_smaps(host.read_text(path), source=host.describe(path))


def rollup(host: Host, pid: int) -> MemoryRollup | None:
    """The process's anonymous, huge-page and resident totals (kB), or None
    when it is gone or not readable."""
    text = host.read_optional(knobfiles.process(pid, "smaps_rollup"))
    if text is None:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[key] = int(fields[0])
    return MemoryRollup(values.get("Anonymous", 0), values.get("AnonHugePages", 0),
                        values.get("Rss", 0))


def start_time(host: Host, pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): a pid and its
    start time name one process for the life of the boot."""
    text = host.read_optional(knobfiles.process(pid, "stat"))
    if text is None:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def identity_and_faults(host: Host, pid: int) -> tuple[str, int] | None:
    """The process's start time (as `start_time`) and its minor page faults so
    far (field 10 of /proc/PID/stat, all threads), from one read; None when
    it is gone."""
    text = host.read_optional(knobfiles.process(pid, "stat"))
    stat = None if text is None else parse_stat(pid, text)
    return None if stat is None else (str(stat.start), stat.minor_faults)


def write_bytes(host: Host, pid: int) -> int | None:
    """Bytes the process has caused to be written to storage (/proc/PID/io),
    None when it is gone or not readable (io needs ptrace access)."""
    text = host.read_optional(knobfiles.process(pid, "io"))
    for line in (text or "").splitlines():
        if line.startswith("write_bytes:"):
            value = line.split(":", 1)[1].strip()
            return int(value) if value.isdigit() else None
    return None


def pmd_size(host: Host) -> int:
    """The size of one PMD huge page (2 MiB on x86_64, 512 MiB on some arm64
    kernels with 64 KiB pages)."""
    size = host.read_optional_int(knobfiles.thp("hpage_pmd_size"))
    return size if size else 2 << 20


def kernel_version(host: Host) -> tuple[int, int] | None:
    """(major, minor) of the running kernel, from osrelease."""
    text = host.read_optional(knobfiles.sysctl("kernel.osrelease"))
    match = re.match(r"(\d+)\.(\d+)", (text or "").strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def collapse_unsupported(host: Host) -> str | None:
    """Why MADV_COLLAPSE of another process cannot work on this host, or
    None when it should (the call itself may still be refused by seccomp:
    the caller learns that from its first try)."""
    version = kernel_version(host)
    if version is None:
        return "the kernel release is unknown (no /proc/sys/kernel/osrelease)"
    if version < COLLAPSE_SINCE:
        return (f"kernel {version[0]}.{version[1]} has no MADV_COLLAPSE (Linux 6.1 added "
                "it): a running job's memory cannot be collapsed from outside")
    try:
        if not host.exists(knobfiles.thp("enabled")):
            return "this kernel has no transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE)"
    except HostReadError:
        return "cannot read /sys/kernel/mm/transparent_hugepage"
    return None


def cgroup_path(host: Host, pid: int) -> str | None:
    """The process's cgroup (the unified hierarchy's path, else the first
    controller's), or None when it is gone."""
    text = host.read_optional(knobfiles.process(pid, "cgroup"))
    if text is None:
        return None
    first: str | None = None
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        path = rest.partition(":")[2]
        if hierarchy == "0":
            return path
        first = first or path
    return first


def age_seconds(host: Host, start_ticks: str, hz: int) -> float | None:
    """How long ago a process with this start time (clock ticks after boot)
    started, from /proc/uptime; None where either is unknown."""
    text = host.read_optional(f"{knobfiles.PROC_DIR}/uptime")
    if text is None or not start_ticks.isdigit():
        return None
    try:
        uptime = float(text.split()[0])
    except (IndexError, ValueError):
        return None
    return max(0.0, uptime - int(start_ticks) / hz)


def cgroup_stall(host: Host, pid: int) -> dict[str, float] | None:
    """Pressure stall of the process's cgroup (cgroup v2 cpu/memory/io.pressure):
    `<resource>` -> the 'some' avg60 (% of time a task of the cgroup waited),
    or None where the process is gone or its cgroup has no pressure files."""
    path = cgroup_path(host, pid)
    if path is None:
        return None
    out: dict[str, float] = {}
    for resource in ("cpu", "memory", "io"):
        text = host.read_optional(f"{knobfiles.CGROUP_DIR}{path.rstrip('/')}/"
                                  f"{resource}.pressure")
        for line in (text or "").splitlines():
            if line.startswith("some "):
                fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
                try:
                    out[resource] = float(fields["avg60"])
                except (KeyError, ValueError):
                    continue
    return out or None
