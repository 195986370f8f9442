"""Text and JSON views of accelerators for `hosttune topology` and
`hosttune telemetry`. Unknown values print as "-", never as 0."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hosttune.agent.sense.accel.base import AccelDevice
from hosttune.agent.sense.cpulist import format_cpulist
from hosttune.agent.sense.pci import PciDevice

GIB = float(1 << 30)
MB = 1e6


def _nics_near(dev: AccelDevice, nics: Sequence[PciDevice]) -> tuple[list[str], list[str]]:
    """Interfaces behind the device's PCIe switch, and on its NUMA node."""
    switch = dev.facts.get("pcie_switch")
    same_switch = [i for n in nics if switch and n.pcie_switch == switch
                   for i in n.netdevs or (n.address,)]
    same_node = [i for n in nics if dev.numa_node is not None and n.numa_node == dev.numa_node
                 for i in n.netdevs or (n.address,)]
    return same_switch, same_node


def _links(dev: AccelDevice) -> str:
    by_kind: dict[str, list[int]] = {}
    for link in dev.links:
        by_kind.setdefault(link.kind, []).append(link.peer)
    return "; ".join(f"{kind} {format_cpulist(peers)}" for kind, peers in sorted(by_kind.items()))


def topology_lines(devices: Sequence[AccelDevice], nics: Sequence[PciDevice]) -> list[str]:
    if not devices:
        return ["Accelerators: none found"]
    backends = sorted({d.backend for d in devices})
    lines = [f"Accelerators ({len(devices)}; backend{'s' if len(backends) > 1 else ''}: "
             f"{', '.join(backends)})"]
    for d in devices:
        name = d.model or d.facts.get("pci_id", "?")
        lines.append(f"  accel{d.index}  {d.vendor} {name}  pci {d.pci_address or '-'}"
                     + (f"  [{d.vendor} #{d.vendor_index}]" if d.vendor_index is not None else ""))
        cpus = format_cpulist(d.local_cpus) if d.local_cpus else "-"
        node = "-" if d.numa_node is None else str(d.numa_node)
        link = "-"
        if d.pcie_link_speed or d.pcie_link_width:
            link = f"{d.pcie_link_speed or '?'} x{d.pcie_link_width or '?'}"
            if d.pcie_max_link_speed and d.pcie_max_link_speed != d.pcie_link_speed:
                link += f" (max {d.pcie_max_link_speed} x{d.pcie_max_link_width or '?'})"
        lines.append(f"      numa node {node}  cpus {cpus}  link {link}"
                     f"  driver {d.driver or '-'}")
        switch_nics, node_nics = _nics_near(d, nics)
        lines.append(f"      pcie switch {d.facts.get('pcie_switch', '-')}"
                     f"  nics on switch: {', '.join(switch_nics) or '-'}"
                     f"  nics on node: {', '.join(node_nics) or '-'}")
        links = _links(d)
        if links:
            lines.append(f"      links: {links}")
        extra = {k: v for k, v in d.facts.items()
                 if k in ("persistence_mode", "nvlinks_active", "health", "state")}
        if extra:
            lines.append("      " + "  ".join(f"{k} {v}" for k, v in sorted(extra.items())))
    return lines


def topology_json(devices: Sequence[AccelDevice],
                  nics: Sequence[PciDevice]) -> list[dict[str, Any]]:
    out = []
    for d in devices:
        entry = d.to_dict()
        switch_nics, node_nics = _nics_near(d, nics)
        entry["nics_on_switch"] = switch_nics
        entry["nics_on_node"] = node_nics
        out.append(entry)
    return out


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)


def _link(gen: float | None, width: float | None) -> str:
    if gen is None and width is None:
        return "-"
    return f"gen{_fmt(gen, '.0f')} x{_fmt(width, '.0f')}"


def telemetry_lines(devices: Sequence[AccelDevice], values: Mapping[str, float]) -> list[str]:
    if not devices:
        return []
    lines = ["Accelerators",
             f"  {'dev':<8}{'util':>6}{'mem util':>9}{'memory used/total':>22}"
             f"{'power/limit W':>16}{'temp':>7}{'pcie rx/tx MB/s':>19}{'link':>10}"]
    for d in devices:
        def get(suffix: str, i: int = d.index) -> float | None:
            return values.get(f"accel.{i}.{suffix}")
        util = get("util")
        mem_util = get("mem_util")
        used, total = get("mem_used_bytes"), get("mem_total_bytes")
        power, limit = get("power_watts"), get("power_limit_watts")
        rx, tx = get("pcie_rx_bytes"), get("pcie_tx_bytes")
        memory = f"{_fmt(used, '.1f', GIB)}/{_fmt(total, '.1f', GIB)} GiB"
        row = (f"  accel{d.index:<3}{_fmt(util, '.0%'):>6}{_fmt(mem_util, '.0%'):>9}"
               f"{memory:>22}{_fmt(power, '.0f') + '/' + _fmt(limit, '.0f'):>16}"
               f"{_fmt(get('temp_c'), '.0f') + ('C' if get('temp_c') is not None else ''):>7}"
               f"{_fmt(rx, '.1f', MB) + '/' + _fmt(tx, '.1f', MB):>19}"
               f"{_link(get('pcie_link_gen'), get('pcie_link_width')):>10}")
        if get("lost") == 1:
            row += "  LOST"
        lines.append(row)
    return lines
