"""Memory: /proc/meminfo, and per NUMA node the node's meminfo and numastat.

Per-node totals need not add up to the global ones (PLATFORM.md: node0 shows
7.8 GB on a 24.7 GB VM), so nothing here assumes they do."""

from __future__ import annotations

import re
from collections.abc import Callable

from hosttune.agent.sense.errors import ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.collector import KeptFileCollector
from hosttune.agent.sense.telemetry.parsing import Layout, nothing_usable, number

MEMINFO = "/proc/meminfo"
NODE_DIR = "/sys/devices/system/node"

# meminfo key -> metric suffix. Values in kB are scaled to bytes; the
# HugePages_* counts have no unit.
_MEMINFO_KEYS: dict[str, str] = {
    "MemTotal": "mem.total_bytes",
    "MemFree": "mem.free_bytes",
    "MemAvailable": "mem.available_bytes",
    "Buffers": "mem.buffers_bytes",
    "Cached": "mem.cached_bytes",
    "SwapCached": "mem.swap_cached_bytes",
    "Active(anon)": "mem.active_anon_bytes",
    "Inactive(anon)": "mem.inactive_anon_bytes",
    "Active(file)": "mem.active_file_bytes",
    "Inactive(file)": "mem.inactive_file_bytes",
    "Unevictable": "mem.unevictable_bytes",
    "Mlocked": "mem.mlocked_bytes",
    "SwapTotal": "mem.swap_total_bytes",
    "SwapFree": "mem.swap_free_bytes",
    "Dirty": "mem.dirty_bytes",
    "Writeback": "mem.writeback_bytes",
    "AnonPages": "mem.anon_bytes",
    "Mapped": "mem.mapped_bytes",
    "Shmem": "mem.shmem_bytes",
    "Slab": "mem.slab_bytes",
    "SReclaimable": "mem.slab_reclaimable_bytes",
    "SUnreclaim": "mem.slab_unreclaimable_bytes",
    "KernelStack": "mem.kernel_stack_bytes",
    "PageTables": "mem.page_tables_bytes",
    "CommitLimit": "mem.commit_limit_bytes",
    "Committed_AS": "mem.committed_as_bytes",
    "AnonHugePages": "mem.anon_huge_bytes",
    "ShmemHugePages": "mem.shmem_huge_bytes",
    "FileHugePages": "mem.file_huge_bytes",
    "Hugetlb": "mem.hugetlb_bytes",
    "Hugepagesize": "mem.hugepage_size_bytes",
    "HugePages_Total": "mem.hugepages_total",
    "HugePages_Free": "mem.hugepages_free",
    "HugePages_Rsvd": "mem.hugepages_rsvd",
    "HugePages_Surp": "mem.hugepages_surp",
}

_NODE_KEYS: dict[str, str] = {
    "MemTotal": "mem_total_bytes",
    "MemFree": "mem_free_bytes",
    "MemUsed": "mem_used_bytes",
    "Active(anon)": "active_anon_bytes",
    "Inactive(anon)": "inactive_anon_bytes",
    "Active(file)": "active_file_bytes",
    "Inactive(file)": "inactive_file_bytes",
    "FilePages": "file_pages_bytes",
    "AnonPages": "anon_bytes",
    "Dirty": "dirty_bytes",
    "Shmem": "shmem_bytes",
    "Slab": "slab_bytes",
    "AnonHugePages": "anon_huge_bytes",
    "HugePages_Total": "hugepages_total",
    "HugePages_Free": "hugepages_free",
}

_NUMASTAT_KEYS = frozenset(
    ("numa_hit", "numa_miss", "numa_foreign", "interleave_hit", "local_node", "other_node")
)

_NODE_NAME = re.compile(r"node(\d+)")


def _ratio(out: dict[str, float], name: str, num: float | None, den: float | None) -> None:
    if num is not None and den:
        out[name] = num / den


def _kb_value(rest: str) -> float | None:
    """'   4942028 kB' -> bytes; a value without unit is taken as is."""
    try:
        value = float(rest[:-3]) * 1024 if rest.endswith(" kB") else float(rest)
    except ValueError:
        return None
    return value if value - value == 0 else None  # nan and inf give nan


def _keyed(lines: list[str], layout: Layout | None,
           find: Callable[[str], tuple[str, str] | None]) -> dict[str, float]:
    """'<head>: value [kB]' lines whose head `find` maps to (prefix, metric
    name), going straight to the known lines when `layout` still fits."""
    if layout is not None:
        known = layout.values(lines)
        if known is not None:
            return known
    out: dict[str, float] = {}
    spots: dict[str, tuple[int, str]] = {}
    for i, line in enumerate(lines):
        head, sep, rest = line.partition(":")
        if not sep:
            continue
        found = find(head)
        if found is None:
            continue
        name = found[1]
        spots[name] = (i, head + ":")
        parsed = _kb_value(rest)
        if parsed is not None:
            out[name] = parsed
        else:
            out.pop(name, None)
    if layout is not None:
        layout.record(lines, spots, kb=True)
    return out


def _meminfo_key(head: str) -> tuple[str, str] | None:
    name = _MEMINFO_KEYS.get(head)
    return None if name is None else (head, name)


def parse_meminfo(text: str, path: str = MEMINFO, layout: Layout | None = None) -> dict[str, float]:
    """'Key:   value kB' lines -> bytes (or page counts for HugePages_*)."""
    out = _keyed(text.splitlines(), layout, _meminfo_key)
    if not out:
        raise nothing_usable(path, "known meminfo field")
    total = out.get("mem.total_bytes")
    avail = out.get("mem.available_bytes")
    if avail is not None:
        _ratio(out, "mem.used_ratio", total - avail if total else None, total)
    swap_total = out.get("mem.swap_total_bytes")
    swap_free = out.get("mem.swap_free_bytes")
    if swap_free is not None and swap_total:
        out["mem.swap_used_ratio"] = (swap_total - swap_free) / swap_total
    _ratio(out, "mem.dirty_ratio", out.get("mem.dirty_bytes"), total)
    _ratio(out, "mem.anon_huge_ratio", out.get("mem.anon_huge_bytes"), out.get("mem.anon_bytes"))
    return out


def mem_total_kb(host: Host) -> int | None:
    """MemTotal of /proc/meminfo in kB (the whole machine's usable RAM), or
    None when the file or the line is missing (callers cope: an allowlist's
    memory bound, one-node topology). A MemTotal line without a number is a
    ParseError naming the file."""
    return _meminfo_kb(host, "MemTotal")


def mem_available_kb(host: Host) -> int | None:
    """MemAvailable of /proc/meminfo in kB, as mem_total_kb."""
    return _meminfo_kb(host, "MemAvailable")


def _meminfo_kb(host: Host, name: str) -> int | None:
    for line in (host.read_optional(MEMINFO) or "").splitlines():
        if line.startswith(name + ":"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                raise ParseError(host.describe(MEMINFO),
                                 f"{name} is not a number: {line[:60]!r}") from None
    return None


def parse_node_meminfo(text: str, node: int, path: str = "",
                       layout: Layout | None = None) -> dict[str, float]:
    """'Node 0 MemTotal:   4942028 kB' lines -> node.<node>.* metrics."""
    prefix = f"node.{node}."

    def find(head: str) -> tuple[str, str] | None:
        if not head.startswith("Node "):
            return None
        suffix = _NODE_KEYS.get(head[head.rfind(" ") + 1:])
        return None if suffix is None else (head, prefix + suffix)

    out = _keyed(text.splitlines(), layout, find)
    if not out:
        raise nothing_usable(path or f"node{node}/meminfo", "known node meminfo field")
    total = out.get(prefix + "mem_total_bytes")
    _ratio(out, prefix + "mem_used_ratio", out.get(prefix + "mem_used_bytes"), total)
    return out


def parse_numastat(text: str, node: int, path: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    prefix = f"node.{node}."
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or parts[0] not in _NUMASTAT_KEYS:
            continue
        value = number(parts[1])
        if value is not None:
            out[prefix + parts[0]] = value
    if not out:
        raise nothing_usable(path or f"node{node}/numastat", "numastat counter")
    return out


class MemoryCollector(KeptFileCollector):
    name = "memory"
    path = MEMINFO

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._layout = Layout()

    def parse(self, text: str) -> dict[str, float]:
        return parse_meminfo(text, self._described, self._layout)


def numa_nodes(host: Host) -> list[int]:
    """NUMA nodes that have a meminfo file; empty on a kernel without NUMA."""
    nodes = []
    for entry in host.listdir_optional(NODE_DIR):
        m = _NODE_NAME.fullmatch(entry)
        if m and host.exists(f"{NODE_DIR}/{entry}/meminfo"):
            nodes.append(int(m.group(1)))
    return sorted(nodes)


class NumaMemoryCollector:
    """Per-node meminfo and numastat. The node list is read once: nodes come
    and go only with memory hotplug, which restarts the daemon's sampler."""

    name = "numa"

    def __init__(self, host: Host) -> None:
        self._host = host
        self._nodes = numa_nodes(host)
        self._layouts = {node: Layout() for node in self._nodes}
        self._files = [
            (node, host.kept(f"{NODE_DIR}/node{node}/meminfo"),
             host.kept(f"{NODE_DIR}/node{node}/numastat") if host.exists(
                 f"{NODE_DIR}/node{node}/numastat") else None)
            for node in self._nodes
        ]
        self._described = {path: host.describe(path) for path in self.paths()}

    def collect(self, values: dict[str, float]) -> None:
        out: dict[str, float] = {}
        describe = self._described
        for node, meminfo, numastat in self._files:
            out.update(parse_node_meminfo(meminfo.read(), node, describe[meminfo.path],
                                          self._layouts[node]))
            if numastat is not None:
                out.update(parse_numastat(numastat.read(), node, describe[numastat.path]))
        if self._nodes:
            out["node.count"] = float(len(self._nodes))
        values.update(out)

    def paths(self) -> list[str]:
        out = []
        for _, meminfo, numastat in self._files:
            out.append(meminfo.path)
            if numastat is not None:
                out.append(numastat.path)
        return out

    def close(self) -> None:
        for _, meminfo, numastat in self._files:
            meminfo.close()
            if numastat is not None:
                numastat.close()
