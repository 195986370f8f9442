"""The single list of metric names.

Every name a collector puts into a Sample matches exactly one `Metric.pattern`
here (a test checks this on fixture trees and on the live host). A pattern is
a dotted name whose `<placeholder>` parts stand for one instance: `<cpu>` a
CPU number, `<node>` a NUMA node, `<dev>` a block device, `<if>` a network
interface (which may contain dots, e.g. a VLAN `eth0.100`), `<irq>` an IRQ
number or the kernel's name for a per-CPU interrupt row (`LOC`, `NMI`), `<i>`
an accelerator index.

Counters only grow (until a reset or wrap); `sampler.rates` turns each into
`<name>.rate`, its increase per second. `lookup` also answers for those rate
names, with the counter's unit per second and kind "gauge".
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge"]

RATE_SUFFIX = ".rate"


@dataclass(frozen=True)
class Metric:
    pattern: str
    unit: str
    kind: Kind
    source: str
    help: str


# One regex per placeholder. Interface and device names may contain dots
# (`eth0.100`); every pattern ends in a fixed suffix and names without an
# instance are matched exactly first, so a full match stays unambiguous.
_PLACEHOLDERS: dict[str, str] = {
    "cpu": r"\d+",
    "node": r"\d+",
    "i": r"\d+",
    "dev": r"\S+",
    "irq": r"[^.\s]+",
    "if": r"\S+",
}

_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

_MEMINFO_FIELDS: tuple[tuple[str, str], ...] = (
    ("total_bytes", "MemTotal: usable RAM"),
    ("free_bytes", "MemFree: RAM not used at all"),
    ("available_bytes", "MemAvailable: estimate of RAM available without swapping"),
    ("buffers_bytes", "Buffers: block device buffers"),
    ("cached_bytes", "Cached: page cache"),
    ("swap_cached_bytes", "SwapCached: swapped-in pages still in swap"),
    ("active_anon_bytes", "Active(anon)"),
    ("inactive_anon_bytes", "Inactive(anon)"),
    ("active_file_bytes", "Active(file)"),
    ("inactive_file_bytes", "Inactive(file)"),
    ("unevictable_bytes", "Unevictable"),
    ("mlocked_bytes", "Mlocked"),
    ("swap_total_bytes", "SwapTotal"),
    ("swap_free_bytes", "SwapFree"),
    ("dirty_bytes", "Dirty: waiting to be written back"),
    ("writeback_bytes", "Writeback: being written back"),
    ("anon_bytes", "AnonPages: anonymous memory mapped into page tables"),
    ("mapped_bytes", "Mapped: files mapped into memory"),
    ("shmem_bytes", "Shmem: shared memory and tmpfs"),
    ("slab_bytes", "Slab: kernel slab caches"),
    ("slab_reclaimable_bytes", "SReclaimable"),
    ("slab_unreclaimable_bytes", "SUnreclaim"),
    ("kernel_stack_bytes", "KernelStack"),
    ("page_tables_bytes", "PageTables"),
    ("commit_limit_bytes", "CommitLimit"),
    ("committed_as_bytes", "Committed_AS: memory promised to processes"),
    ("anon_huge_bytes", "AnonHugePages: anonymous memory backed by THP"),
    ("shmem_huge_bytes", "ShmemHugePages: shmem/tmpfs backed by THP"),
    ("file_huge_bytes", "FileHugePages: page cache backed by THP"),
    ("hugetlb_bytes", "Hugetlb: memory in hugetlbfs pools of every size"),
    ("hugepage_size_bytes", "Hugepagesize: default huge page size"),
)

_MEMINFO_COUNTS: tuple[tuple[str, str], ...] = (
    ("hugepages_total", "HugePages_Total: default-size huge pages in the pool"),
    ("hugepages_free", "HugePages_Free"),
    ("hugepages_rsvd", "HugePages_Rsvd: reserved, not yet faulted in"),
    ("hugepages_surp", "HugePages_Surp: surplus pages above the pool"),
)

_NODE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("mem_total_bytes", "bytes", "MemTotal of the node"),
    ("mem_free_bytes", "bytes", "MemFree of the node"),
    ("mem_used_bytes", "bytes", "MemUsed of the node"),
    ("active_anon_bytes", "bytes", "Active(anon) of the node"),
    ("inactive_anon_bytes", "bytes", "Inactive(anon) of the node"),
    ("active_file_bytes", "bytes", "Active(file) of the node"),
    ("inactive_file_bytes", "bytes", "Inactive(file) of the node"),
    ("file_pages_bytes", "bytes", "FilePages of the node"),
    ("anon_bytes", "bytes", "AnonPages of the node"),
    ("dirty_bytes", "bytes", "Dirty of the node"),
    ("shmem_bytes", "bytes", "Shmem of the node"),
    ("slab_bytes", "bytes", "Slab of the node"),
    ("anon_huge_bytes", "bytes", "AnonHugePages of the node"),
    ("hugepages_total", "pages", "HugePages_Total (default size) of the node"),
    ("hugepages_free", "pages", "HugePages_Free (default size) of the node"),
    ("mem_used_ratio", "ratio", "MemUsed / MemTotal of the node"),
)

_NUMASTAT_FIELDS: tuple[tuple[str, str], ...] = (
    ("numa_hit", "pages allocated on this node as intended"),
    ("numa_miss", "pages allocated here although another node was preferred"),
    ("numa_foreign", "pages meant for this node but allocated elsewhere"),
    ("interleave_hit", "interleave-policy pages allocated here as intended"),
    ("local_node", "pages allocated here for a process running on this node"),
    ("other_node", "pages allocated here for a process running on another node"),
)

# /proc/vmstat keys we keep, with their kind. nr_* are current counts; the
# others are event counters since boot.
_VMSTAT: tuple[tuple[str, Kind, str, str], ...] = (
    ("nr_free_pages", "gauge", "pages", "free pages"),
    ("nr_anon_pages", "gauge", "pages", "anonymous pages"),
    ("nr_file_pages", "gauge", "pages", "page cache pages"),
    ("nr_dirty", "gauge", "pages", "dirty pages"),
    ("nr_writeback", "gauge", "pages", "pages under writeback"),
    ("nr_anon_transparent_hugepages", "gauge", "hugepages", "anonymous THPs"),
    ("pgpgin", "counter", "KiB", "KiB paged in from block devices"),
    ("pgpgout", "counter", "KiB", "KiB paged out to block devices"),
    ("pswpin", "counter", "pages", "pages swapped in"),
    ("pswpout", "counter", "pages", "pages swapped out"),
    ("pgfault", "counter", "faults", "page faults (minor and major)"),
    ("pgmajfault", "counter", "faults", "major page faults (needed I/O)"),
    ("pgscan_kswapd", "counter", "pages", "pages scanned by kswapd"),
    ("pgscan_direct", "counter", "pages", "pages scanned in direct reclaim"),
    ("pgsteal_kswapd", "counter", "pages", "pages reclaimed by kswapd"),
    ("pgsteal_direct", "counter", "pages", "pages reclaimed in direct reclaim"),
    ("allocstall_normal", "counter", "stalls", "direct reclaim stalls (normal zone)"),
    ("allocstall_movable", "counter", "stalls", "direct reclaim stalls (movable zone)"),
    ("workingset_refault_anon", "counter", "pages", "anon pages refaulted after reclaim"),
    ("workingset_refault_file", "counter", "pages", "file pages refaulted after reclaim"),
    ("oom_kill", "counter", "kills", "OOM killer invocations"),
    ("numa_hit", "counter", "pages", "allocations on the intended node"),
    ("numa_miss", "counter", "pages", "allocations off the preferred node"),
    ("numa_foreign", "counter", "pages", "allocations meant for a node, placed elsewhere"),
    ("numa_local", "counter", "pages", "allocations local to the running CPU"),
    ("numa_other", "counter", "pages", "allocations on another node than the running CPU's"),
    ("numa_pte_updates", "counter", "ptes", "PTEs marked for NUMA hinting faults"),
    ("numa_huge_pte_updates", "counter", "ptes", "huge PTEs marked for NUMA hinting"),
    ("numa_hint_faults", "counter", "faults", "NUMA hinting faults"),
    ("numa_hint_faults_local", "counter", "faults", "NUMA hinting faults on local memory"),
    ("numa_pages_migrated", "counter", "pages", "pages migrated by NUMA balancing"),
    ("pgmigrate_success", "counter", "pages", "pages migrated"),
    ("pgmigrate_fail", "counter", "pages", "page migrations that failed"),
    ("compact_stall", "counter", "stalls", "direct compaction stalls"),
    ("compact_fail", "counter", "events", "direct compactions that failed"),
    ("compact_success", "counter", "events", "direct compactions that succeeded"),
    ("compact_migrate_scanned", "counter", "pages", "pages scanned to migrate by compaction"),
    ("compact_free_scanned", "counter", "pages", "pages scanned for free targets"),
    ("compact_isolated", "counter", "pages", "pages isolated by compaction"),
    ("compact_daemon_wake", "counter", "events", "kcompactd wake-ups"),
    ("thp_fault_alloc", "counter", "hugepages", "THPs allocated at page fault"),
    ("thp_fault_fallback", "counter", "faults", "faults that wanted a THP and got small pages"),
    ("thp_fault_fallback_charge", "counter", "faults", "THP faults that fell back on memcg charge"),
    ("thp_collapse_alloc", "counter", "hugepages", "THPs made by khugepaged collapsing"),
    ("thp_collapse_alloc_failed", "counter", "events", "khugepaged collapses that failed"),
    ("thp_file_alloc", "counter", "hugepages", "file THPs allocated"),
    ("thp_file_fallback", "counter", "events", "file THP allocations that fell back"),
    ("thp_file_mapped", "counter", "hugepages", "file THPs mapped"),
    ("thp_split_page", "counter", "hugepages", "THPs split into small pages"),
    ("thp_split_page_failed", "counter", "events", "THP splits that failed"),
    ("thp_deferred_split_page", "counter", "hugepages", "THPs queued for a deferred split"),
    ("thp_split_pmd", "counter", "events", "THP PMD mappings split"),
    ("thp_zero_page_alloc", "counter", "events", "huge zero pages allocated"),
    ("thp_zero_page_alloc_failed", "counter", "events", "huge zero page allocations failed"),
    ("thp_swpout", "counter", "hugepages", "THPs swapped out whole"),
    ("thp_swpout_fallback", "counter", "hugepages", "THPs split before swap-out"),
    ("thp_migration_success", "counter", "hugepages", "THPs migrated whole"),
    ("thp_migration_fail", "counter", "hugepages", "THP migrations that failed"),
)

VMSTAT_KEYS: frozenset[str] = frozenset(k for k, _, _, _ in _VMSTAT)

PSI_RESOURCES = ("cpu", "memory", "io", "irq")

_ACCEL: tuple[tuple[str, Kind, str, str], ...] = (
    ("util", "gauge", "ratio", "fraction of time a kernel ran on the device (0-1)"),
    ("mem_util", "gauge", "ratio", "fraction of time device memory was read or written (0-1)"),
    ("mem_used_bytes", "gauge", "bytes", "device memory in use"),
    ("mem_total_bytes", "gauge", "bytes", "device memory size"),
    ("power_watts", "gauge", "W", "power draw"),
    ("power_limit_watts", "gauge", "W", "enforced power limit"),
    ("temp_c", "gauge", "degC", "device temperature"),
    ("sm_clock_mhz", "gauge", "MHz", "compute clock"),
    ("mem_clock_mhz", "gauge", "MHz", "memory clock"),
    # Vendors report PCIe throughput as a current rate (NVML: KB/s over a
    # 20 ms window), not a cumulative counter, so these are gauges.
    ("pcie_rx_bytes", "gauge", "B/s", "PCIe receive throughput (host to device)"),
    ("pcie_tx_bytes", "gauge", "B/s", "PCIe transmit throughput (device to host)"),
    ("pcie_link_gen", "gauge", "generation", "current PCIe link generation (drops when idle)"),
    ("pcie_link_width", "gauge", "lanes", "current PCIe link width"),
    ("ecc_errors", "counter", "errors", "uncorrected ECC errors since driver load"),
    ("ecc_corrected", "counter", "errors", "corrected ECC errors since driver load"),
    ("retired_pages", "gauge", "pages", "device memory pages retired after ECC errors"),
    ("xid_errors", "counter", "errors",
     "driver-reported device errors (NVIDIA Xid and the like) since the backend started"),
    ("processes", "gauge", "processes", "processes holding the device"),
    ("lost", "gauge", "bool", "1 when the device fell off the bus or stopped answering"),
)


def _build() -> tuple[Metric, ...]:
    m: list[Metric] = []
    add = m.append
    stat = "/proc/stat"
    # -- cpu --------------------------------------------------------------
    for f in _CPU_FIELDS:
        add(Metric(f"cpu.{f}", "s", "counter", stat, f"CPU time in {f}, all CPUs summed"))
        add(Metric(f"cpu.<cpu>.{f}", "s", "counter", stat, f"CPU time in {f} on one CPU"))
    add(Metric("cpu.count", "cpus", "gauge", stat, "CPUs listed in /proc/stat (online)"))
    add(Metric("cpu.context_switches", "switches", "counter", stat, "context switches"))
    add(Metric("cpu.interrupts", "interrupts", "counter", stat, "interrupts serviced"))
    add(Metric("proc.forks", "forks", "counter", stat, "processes and threads created"))
    add(Metric("proc.running", "tasks", "gauge", stat, "tasks runnable now"))
    add(Metric("proc.blocked", "tasks", "gauge", stat, "tasks blocked on I/O now"))
    derived = "derived from /proc/stat rates"
    add(Metric("cpu.util", "ratio", "gauge", derived, "busy fraction of all CPUs (0-1)"))
    add(Metric("cpu.<cpu>.util", "ratio", "gauge", derived, "busy fraction of one CPU (0-1)"))
    for f in ("user", "system", "iowait", "steal", "softirq"):
        add(Metric(f"cpu.{f}_ratio", "ratio", "gauge", derived,
                   f"fraction of all CPU time spent in {f} (0-1)"))
    # -- load -------------------------------------------------------------
    for w in ("1", "5", "15"):
        add(Metric(f"load.{w}", "tasks", "gauge", "/proc/loadavg", f"{w}-minute load average"))
    add(Metric("load.per_cpu", "tasks", "gauge", "/proc/loadavg",
               "1-minute load average divided by the CPUs in /proc/stat"))
    add(Metric("proc.threads", "tasks", "gauge", "/proc/loadavg", "scheduling entities"))
    # -- memory -----------------------------------------------------------
    mi = "/proc/meminfo"
    for suffix, doc in _MEMINFO_FIELDS:
        add(Metric(f"mem.{suffix}", "bytes", "gauge", mi, doc))
    for suffix, doc in _MEMINFO_COUNTS:
        add(Metric(f"mem.{suffix}", "pages", "gauge", mi, doc))
    add(Metric("mem.used_ratio", "ratio", "gauge", mi, "1 - MemAvailable / MemTotal"))
    add(Metric("mem.swap_used_ratio", "ratio", "gauge", mi, "1 - SwapFree / SwapTotal"))
    add(Metric("mem.dirty_ratio", "ratio", "gauge", mi, "Dirty / MemTotal"))
    add(Metric("mem.anon_huge_ratio", "ratio", "gauge", mi, "AnonHugePages / AnonPages"))
    nm = "/sys/devices/system/node/node<node>/meminfo"
    for suffix, unit, doc in _NODE_FIELDS:
        add(Metric(f"node.<node>.{suffix}", unit, "gauge", nm, doc))
    ns = "/sys/devices/system/node/node<node>/numastat"
    for suffix, doc in _NUMASTAT_FIELDS:
        add(Metric(f"node.<node>.{suffix}", "pages", "counter", ns, doc))
    add(Metric("node.count", "nodes", "gauge", "/sys/devices/system/node",
               "NUMA nodes with a meminfo file"))
    # -- vmstat -----------------------------------------------------------
    for key, kind, unit, doc in _VMSTAT:
        add(Metric(f"vmstat.{key}", unit, kind, "/proc/vmstat", doc))
    # -- pressure ---------------------------------------------------------
    for res in PSI_RESOURCES:
        src = f"/proc/pressure/{res}"
        for scope in ("some", "full"):
            who = "some tasks" if scope == "some" else "all non-idle tasks"
            for w in ("avg10", "avg60", "avg300"):
                add(Metric(f"psi.{res}.{scope}.{w}", "%", "gauge", src,
                           f"share of time {who} stalled on {res}, {w[3:]} s average"))
            add(Metric(f"psi.{res}.{scope}.total", "s", "counter", src,
                       f"time {who} stalled on {res}; its rate is the stalled fraction"))
    # -- disks ------------------------------------------------------------
    ds = "/proc/diskstats"
    for prefix, scope in (("disk.<dev>.", "of one whole disk"),
                          ("disk.", "summed over whole physical disks")):
        add(Metric(prefix + "reads", "ios", "counter", ds, f"reads completed {scope}"))
        add(Metric(prefix + "writes", "ios", "counter", ds, f"writes completed {scope}"))
        add(Metric(prefix + "read_bytes", "bytes", "counter", ds, f"bytes read {scope}"))
        add(Metric(prefix + "write_bytes", "bytes", "counter", ds, f"bytes written {scope}"))
        add(Metric(prefix + "read_seconds", "s", "counter", ds, f"time spent reading {scope}"))
        add(Metric(prefix + "write_seconds", "s", "counter", ds, f"time spent writing {scope}"))
        add(Metric(prefix + "discards", "ios", "counter", ds, f"discards completed {scope}"))
        add(Metric(prefix + "flushes", "ios", "counter", ds, f"flushes completed {scope}"))
    add(Metric("disk.<dev>.busy_seconds", "s", "counter", ds,
               "time with I/O in flight; its rate is the busy fraction"))
    add(Metric("disk.<dev>.weighted_seconds", "s", "counter", ds,
               "time-weighted I/O in flight; its rate is the average queue depth"))
    add(Metric("disk.<dev>.in_flight", "ios", "gauge", ds, "I/Os in flight now"))
    add(Metric("disk.<dev>.util", "ratio", "gauge", "derived from /proc/diskstats rates",
               "busy fraction of the disk (0-1)"))
    add(Metric("disk.count", "disks", "gauge", ds, "whole disks reported"))
    # -- network ----------------------------------------------------------
    nd = "/proc/net/dev"
    for prefix, scope in (("net.<if>.", "on one interface"),
                          ("net.", "summed over interfaces other than loopback")):
        for d, word in (("rx", "received"), ("tx", "sent")):
            add(Metric(f"{prefix}{d}_bytes", "bytes", "counter", nd, f"bytes {word} {scope}"))
            add(Metric(f"{prefix}{d}_packets", "packets", "counter", nd,
                       f"packets {word} {scope}"))
            add(Metric(f"{prefix}{d}_errors", "packets", "counter", nd,
                       f"{d} errors {scope}"))
            add(Metric(f"{prefix}{d}_drops", "packets", "counter", nd,
                       f"{d} packets dropped {scope}"))
    # -- interrupts -------------------------------------------------------
    it = "/proc/interrupts"
    add(Metric("irq.<irq>.count", "interrupts", "counter", it,
               "interrupts of one IRQ (or per-CPU interrupt row), all CPUs summed"))
    add(Metric("cpu.<cpu>.irqs", "interrupts", "counter", it,
               "interrupts serviced by one CPU, all rows of /proc/interrupts summed"))
    # -- AI processes -------------------------------------------------------
    pr = "/proc/<pid>/{cmdline,maps,fd,status,stat,smaps_rollup,numa_maps}"
    add(Metric("ai.processes", "processes", "gauge", pr, "processes that look like AI work"))
    add(Metric("ai.accel_processes", "processes", "gauge", pr,
               "AI processes holding an accelerator device file open"))
    add(Metric("ai.rss_bytes", "bytes", "gauge", pr, "resident memory of AI processes"))
    add(Metric("ai.anon_huge_bytes", "bytes", "gauge", pr,
               "AnonHugePages of AI processes: how much of their memory THP backs"))
    add(Metric("ai.anon_huge_ratio", "ratio", "gauge", pr,
               "AnonHugePages / RSS of AI processes"))
    add(Metric("ai.cpu_util", "cpus", "gauge", pr,
               "CPUs' worth of time AI processes used between the last two scans"))
    add(Metric("ai.numa_nodes", "nodes", "gauge", pr,
               "most NUMA nodes any one AI process has memory on"))
    # -- the sampler itself ---------------------------------------------------
    add(Metric("sampler.seconds", "s", "gauge", "hosttune", "wall time the last Sample took"))
    # -- accelerators (filled by the accel backends of hosttune.agent.sense.accel) ----
    for key, kind, unit, doc in _ACCEL:
        add(Metric(f"accel.<i>.{key}", unit, kind, "accelerator backend", doc))
    add(Metric("accel.count", "devices", "gauge", "accelerator backend",
               "accelerators the backend sees"))
    return tuple(m)


CATALOGUE: tuple[Metric, ...] = _build()

_PLACEHOLDER_RE = re.compile(r"<([a-z]+)>")


def _compile(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    pos = 0
    for m in _PLACEHOLDER_RE.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        out.append(f"(?:{_PLACEHOLDERS[m.group(1)]})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


def _index() -> tuple[dict[str, Metric], dict[str, tuple[tuple[re.Pattern[str], Metric], ...]]]:
    exact: dict[str, Metric] = {}
    by_head: dict[str, list[tuple[re.Pattern[str], Metric]]] = {}
    for metric in CATALOGUE:
        if metric.pattern in exact:
            raise AssertionError(f"duplicate metric {metric.pattern}")
        if "<" in metric.pattern:
            head = metric.pattern.split(".", 1)[0]
            by_head.setdefault(head, []).append((_compile(metric.pattern), metric))
        else:
            exact[metric.pattern] = metric
    return exact, {h: tuple(v) for h, v in by_head.items()}


# Built once at import and never changed: exact names are one dict lookup,
# instance names try only the few patterns that share their first component.
_EXACT, _BY_HEAD = _index()


# Memoised: the same few hundred names come back every sample (rates() asks
# for each, trace rows for each value and rate), and a regex match costs ~1 us
# where a cache hit costs ~0.1 us. The answers depend only on the catalogue,
# which never changes; the bound keeps churning names (containers' veth
# interfaces) from growing it without end.
@functools.lru_cache(maxsize=16384)
def _lookup_raw(name: str) -> Metric | None:
    found = _EXACT.get(name)
    if found is not None:
        return found
    for regex, metric in _BY_HEAD.get(name.split(".", 1)[0], ()):
        if regex.fullmatch(name):
            return metric
    return None


@functools.lru_cache(maxsize=16384)
def lookup(name: str) -> Metric | None:
    """The catalogue entry for a metric name as it appears in a Sample
    (`cpu.3.user`) or in rates (`cpu.3.user.rate`), or None if unknown."""
    found = _lookup_raw(name)
    if found is not None or not name.endswith(RATE_SUFFIX):
        return found
    base = _lookup_raw(name[: -len(RATE_SUFFIX)])
    if base is None or base.kind != "counter":
        return None
    return Metric(base.pattern + RATE_SUFFIX, f"{base.unit}/s", "gauge", base.source,
                  f"per second: {base.help}")


def is_counter(name: str) -> bool:
    metric = _lookup_raw(name)
    return metric is not None and metric.kind == "counter"
