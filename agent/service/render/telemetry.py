"""Human-readable and JSON views of telemetry, grouped the way an
administrator reads them: CPU, memory, vmstat/THP, pressure, disks, network,
interrupts, AI processes. Used by `hosttune telemetry` and `hosttune recommend`.

Works on rates (two samples) and on a single sample (a fixture tree, where
counters give no rates): a counter without a rate is shown as its total."""

from __future__ import annotations

import resource
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from hosttune.agent.sense.cpulist import format_cpulist
from hosttune.agent.sense.sample import AIProcess, Sample

PAGE = resource.getpagesize()  # numa_pages count base pages
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(value: float) -> str:
    size = float(value)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} {_UNITS[-1]}"  # pragma: no cover (loop always returns)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


class _View:
    """Reads a metric as a rate when there is one, else as its total."""

    def __init__(self, values: Mapping[str, float], has_rates: bool) -> None:
        self.v = values
        self.has_rates = has_rates

    def get(self, name: str) -> float | None:
        return self.v.get(name)

    def rate(self, name: str) -> float | None:
        return self.v.get(name + ".rate") if self.has_rates else self.v.get(name)

    def rate_str(self, name: str, unit: str = "", *, as_bytes: bool = False) -> str:
        value = self.rate(name)
        if value is None:
            return "-"
        text = human_bytes(value) if as_bytes else (
            f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.2f}")
        if self.has_rates:
            return f"{text}{unit}/s" if not as_bytes else f"{text}/s"
        return f"{text}{unit} total" if not as_bytes else f"{text} total"


def _instances(values: Mapping[str, float], prefix: str, suffix: str) -> list[str]:
    """Instance names X of metrics named prefix + X + suffix."""
    found = []
    for raw in values:
        name = raw[:-5] if raw.endswith(".rate") else raw
        if name.startswith(prefix) and name.endswith(suffix):
            inst = name[len(prefix): len(name) - len(suffix)]
            if inst:
                found.append(inst)
    return sorted(set(found), key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))


def render_lines(values: Mapping[str, float], processes: Sequence[AIProcess],
                 errors: Mapping[str, str], *, has_rates: bool, interval: float | None = None,
                 top_irqs: int = 8, accel_lines: Sequence[str] | None = None) -> list[str]:
    """`accel_lines`: the accelerator backends' own table (hosttune.agent.service.render.accel),
    shown instead of the plain accel.<i>.* summary when given."""
    v = _View(values, has_rates)
    out: list[str] = []
    if interval is not None and has_rates:
        out.append(f"rates over {interval:.2f} s")
    elif not has_rates:
        out.append("one sample (no rates): counters are shown as totals since boot")

    # -- CPU ---------------------------------------------------------------
    cpu = [f"util {_pct(v.get('cpu.util'))}"] if has_rates else []
    for f in ("user", "system", "iowait", "steal", "softirq"):
        if v.get(f"cpu.{f}_ratio") is not None:
            cpu.append(f"{f} {_pct(v.get(f'cpu.{f}_ratio'))}")
    load = [v.get(f"load.{w}") for w in ("1", "5", "15")]
    if all(x is not None for x in load):
        cpu.append("load " + " ".join(f"{x:.2f}" for x in load if x is not None))
    if v.get("load.per_cpu") is not None:
        cpu.append(f"({v.get('load.per_cpu'):.2f}/cpu)")
    out.append("CPU      " + ("  ".join(cpu) or "-"))
    if v.get("proc.running") is not None:
        out.append(f"         running {v.get('proc.running') or 0:.0f}  blocked "
                   f"{v.get('proc.blocked') or 0:.0f}  context switches "
                   f"{v.rate_str('cpu.context_switches')}  forks {v.rate_str('proc.forks')}")
    cpus = _instances(values, "cpu.", ".util") if has_rates else []
    if cpus:
        per = [f"cpu{c} {_pct(v.get(f'cpu.{c}.util'))}" for c in cpus]
        for start in range(0, len(per), 8):
            out.append("         " + "  ".join(per[start:start + 8]))

    # -- memory --------------------------------------------------------------
    total = v.get("mem.total_bytes")
    if total:
        avail = v.get("mem.available_bytes")
        out.append(
            f"Memory   used {_pct(v.get('mem.used_ratio'))} of {human_bytes(total)}, "
            f"available {'-' if avail is None else human_bytes(avail)}, "
            f"dirty {human_bytes(v.get('mem.dirty_bytes') or 0)}"
            f", swap used {_pct(v.get('mem.swap_used_ratio') or 0.0)}")
        hp_total = v.get("mem.hugepages_total") or 0
        out.append(
            f"         THP-backed anon {human_bytes(v.get('mem.anon_huge_bytes') or 0)} "
            f"({_pct(v.get('mem.anon_huge_ratio') or 0.0)} of anon)  hugepages "
            f"{hp_total - (v.get('mem.hugepages_free') or 0):.0f}/{hp_total:.0f} used "
            f"({human_bytes(v.get('mem.hugepage_size_bytes') or 0)})")
    for node in _instances(values, "node.", ".mem_total_bytes"):
        ntotal = v.get(f"node.{node}.mem_total_bytes") or 0.0
        out.append(
            f"  node{node}  used {_pct(v.get(f'node.{node}.mem_used_ratio'))} of "
            f"{human_bytes(ntotal)}  numa_miss {v.rate_str(f'node.{node}.numa_miss')}  "
            f"other_node {v.rate_str(f'node.{node}.other_node')}")

    # -- vmstat / THP ----------------------------------------------------------
    out.append(
        f"VM       faults {v.rate_str('vmstat.pgfault')}  major {v.rate_str('vmstat.pgmajfault')}"
        f"  swap in {v.rate_str('vmstat.pswpin')} out {v.rate_str('vmstat.pswpout')}"
        f"  direct reclaim scans {v.rate_str('vmstat.pgscan_direct')}")
    out.append(
        f"THP      fault alloc {v.rate_str('vmstat.thp_fault_alloc')}  fallback "
        f"{v.rate_str('vmstat.thp_fault_fallback')}  collapse "
        f"{v.rate_str('vmstat.thp_collapse_alloc')}  split {v.rate_str('vmstat.thp_split_page')}"
        f"  compaction stalls {v.rate_str('vmstat.compact_stall')}")
    out.append(
        f"NUMA     hint faults {v.rate_str('vmstat.numa_hint_faults')}  pages migrated "
        f"{v.rate_str('vmstat.numa_pages_migrated')}  migrate ok "
        f"{v.rate_str('vmstat.pgmigrate_success')}  fail {v.rate_str('vmstat.pgmigrate_fail')}")

    # -- pressure --------------------------------------------------------------
    psi = []
    for res in ("cpu", "memory", "io", "irq"):
        some = v.get(f"psi.{res}.some.avg10")
        full = v.get(f"psi.{res}.full.avg10")
        if some is None and full is None:
            continue
        item = f"{res} some {some or 0:.2f}%"
        if full is not None and res != "cpu":
            item += f" full {full:.2f}%"
        psi.append(item)
    out.append("Pressure " + ("  ".join(psi) + "  (avg10)" if psi else "not available (no PSI)"))

    # -- disks -----------------------------------------------------------------
    disks = _instances(values, "disk.", ".reads")
    if disks:
        out.append("Disks    " + f"{'device':<12}{'read':>16}{'write':>16}{'r/s':>10}{'w/s':>10}"
                   + ("" if not has_rates else f"{'util':>8}"))
        for d in disks:
            row = (f"         {d:<12}{v.rate_str(f'disk.{d}.read_bytes', as_bytes=True):>16}"
                   f"{v.rate_str(f'disk.{d}.write_bytes', as_bytes=True):>16}")
            if has_rates:
                row += (f"{v.rate(f'disk.{d}.reads') or 0:>10.1f}"
                        f"{v.rate(f'disk.{d}.writes') or 0:>10.1f}"
                        f"{_pct(v.get(f'disk.{d}.util')):>8}")
            else:
                row += (f"{v.get(f'disk.{d}.reads') or 0:>10.0f}"
                        f"{v.get(f'disk.{d}.writes') or 0:>10.0f}")
            out.append(row)

    # -- network ---------------------------------------------------------------
    ifaces = _instances(values, "net.", ".rx_bytes")
    if ifaces:
        out.append("Network  " + f"{'interface':<12}{'rx':>16}{'tx':>16}{'rx pkt':>12}"
                   f"{'tx pkt':>12}{'drops':>10}")
        for i in ifaces:
            drops = [v.rate(f"net.{i}.{d}_drops") for d in ("rx", "tx")]
            out.append(
                f"         {i:<12}{v.rate_str(f'net.{i}.rx_bytes', as_bytes=True):>16}"
                f"{v.rate_str(f'net.{i}.tx_bytes', as_bytes=True):>16}"
                f"{v.rate(f'net.{i}.rx_packets') or 0:>12.0f}"
                f"{v.rate(f'net.{i}.tx_packets') or 0:>12.0f}"
                f"{sum(x or 0 for x in drops):>10.0f}")

    # -- interrupts --------------------------------------------------------------
    irqs = _instances(values, "irq.", ".count")
    if irqs:
        ranked = sorted(irqs, key=lambda n: -(v.rate(f"irq.{n}.count") or 0))[:top_irqs]
        what = "/s" if has_rates else " total"
        out.append(f"IRQs     top {len(ranked)}: " + "  ".join(
            f"{n} {v.rate(f'irq.{n}.count') or 0:.0f}{what}" for n in ranked))
        per_cpu = _instances(values, "cpu.", ".irqs")
        if per_cpu:
            out.append("         per CPU: " + "  ".join(
                f"cpu{c} {v.rate(f'cpu.{c}.irqs') or 0:.0f}{what}" for c in per_cpu))

    # -- accelerators ----------------------------------------------------------
    # every backend writes accel.<i>.lost; util etc. only where it can know them
    accels = sorted(set(_instances(values, "accel.", ".lost"))
                    | set(_instances(values, "accel.", ".util"))
                    | set(_instances(values, "accel.", ".mem_total_bytes")), key=int)
    if accel_lines:
        out.extend(accel_lines)
        accels = []
    for a in accels:
        out.append(f"accel{a:<4}" + "  ".join(_accel_parts(v, a)))

    # -- AI processes ----------------------------------------------------------
    out.extend(process_lines(processes, values.get("ai.cpu_util")))
    for name, reason in sorted(errors.items()):
        out.append(f"(collector {name} failed: {reason})")
    return out


def _accel_parts(v: _View, a: str) -> list[str]:
    """One accelerator's line: what its backend knows; "-" for what it cannot."""
    def get(suffix: str) -> float | None:
        return v.get(f"accel.{a}.{suffix}")

    parts = [f"util {_pct(get('util'))}", f"mem util {_pct(get('mem_util'))}"]
    used, tot = get("mem_used_bytes"), get("mem_total_bytes")
    parts.append(f"memory {human_bytes(used) if used is not None else '-'}"
                 f"/{human_bytes(tot) if tot is not None else '-'}")
    power, limit = get("power_watts"), get("power_limit_watts")
    parts.append(f"power {'-' if power is None else f'{power:.0f}'}"
                 f"/{'-' if limit is None else f'{limit:.0f}'} W")
    temp = get("temp_c")
    parts.append(f"temp {'-' if temp is None else f'{temp:.0f} C'}")
    rx, tx = get("pcie_rx_bytes"), get("pcie_tx_bytes")
    parts.append(f"pcie rx {human_bytes(rx) + '/s' if rx is not None else '-'}"
                 f" tx {human_bytes(tx) + '/s' if tx is not None else '-'}")
    gen, width = get("pcie_link_gen"), get("pcie_link_width")
    if gen is not None or width is not None:
        parts.append(f"link gen{'?' if gen is None else f'{gen:.0f}'}"
                     f" x{'?' if width is None else f'{width:.0f}'}")
    if get("lost") == 1:
        parts.append("LOST")
    return parts


def process_lines(processes: Sequence[AIProcess], cpu_util: float | None = None) -> list[str]:
    if not processes:
        return ["AI work  no process looks like AI work"]
    head = f"AI work  {len(processes)} process(es)"
    if cpu_util is not None:
        head += f", using {cpu_util:.2f} CPUs"
    lines = [head]
    for p in processes:
        nodes = ", ".join(f"node{n} {human_bytes(pages * PAGE)}"
                          for n, pages in sorted(p.numa_pages.items()) if pages)
        lines.append(
            f"  pid {p.pid:<8} {p.comm:<16} cpus {format_cpulist(p.cpus) or '-':<10} "
            f"rss {human_bytes(p.rss_bytes)}  THP {human_bytes(p.anon_huge_bytes)}"
            + (f"  memory on {nodes}" if nodes else ""))
        lines.append(f"      why: {', '.join(p.reasons)}")
    return lines


def process_json(p: AIProcess) -> dict[str, Any]:
    data = asdict(p)
    data["cpus"] = format_cpulist(p.cpus)
    data["numa_pages"] = {str(k): v for k, v in sorted(p.numa_pages.items())}
    return data


def to_json(values: Mapping[str, float], sample: Sample, *, has_rates: bool,
            interval: float | None) -> dict[str, Any]:
    return {
        "wall": sample.wall,
        "interval_s": interval,
        "kind": "rates" if has_rates else "sample",
        "values": dict(sorted(values.items())),
        "processes": [process_json(p) for p in sample.processes],
        "errors": dict(sample.errors),
    }
