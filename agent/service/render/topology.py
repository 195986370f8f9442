"""The text view of `hosttune topology`: NUMA nodes with their CPUs, memory,
hugepage pools and the accelerators, NICs and NVMe drives on each, then the
accelerator-to-NIC affinity matrix."""

from __future__ import annotations

from hosttune.agent.sense.cpulist import format_cpulist
from hosttune.agent.sense.pci import PciDevice
from hosttune.agent.sense.topology import Topology


def affinity(a: PciDevice, b: PciDevice) -> str:
    """nvidia-smi's vocabulary: PIX same PCIe switch, NODE same NUMA node,
    SYS across the inter-socket link, '?' where a node is unknown."""
    if a.pcie_switch is not None and a.pcie_switch == b.pcie_switch:
        return "PIX"
    if a.numa_node is None or b.numa_node is None:
        return "?"
    return "NODE" if a.numa_node == b.numa_node else "SYS"


def _device_line(dev: PciDevice, topo: Topology) -> str:
    name = dev.vendor_name or f"vendor 0x{dev.vendor_id:04x}"
    link = ""
    if dev.link_speed or dev.link_width:
        link = f" link {dev.link_speed or '?'} x{dev.link_width or '?'}"
        if dev.max_link_width and dev.link_width and dev.link_width < dev.max_link_width:
            link += f" (of x{dev.max_link_width}: degraded)"
    extra = ""
    if dev.netdevs:
        extra = " if " + ",".join(dev.netdevs)
    elif dev.block_devs:
        extra = " " + ",".join(dev.block_devs)
    cpus = f" cpus {format_cpulist(dev.local_cpus)}" if dev.local_cpus else ""
    switch = f" switch {dev.pcie_switch}" if dev.pcie_switch else ""
    return (f"    {dev.role:<11} {dev.address} {name} {dev.device_id:04x} "
            f"drv {dev.driver or '-'}{link}{switch} irqs {len(dev.irqs)}{extra}{cpus}")


def topology_lines(topo: Topology) -> list[str]:
    lines: list[str] = []
    online = topo.online_cpus()
    offline = [c.id for c in topo.cpus if not c.online]
    packages = {c.package_id for c in topo.cpus if c.package_id is not None}
    smt = any(len(c.siblings) > 1 for c in topo.cpus)
    lines.append(
        f"CPUs: {len(online)} online ({format_cpulist(online)})"
        + (f", offline {format_cpulist(offline)}" if offline else "")
        + f"; {len(packages) or '?'} package(s); SMT {'on' if smt else 'off'}"
    )
    shown = {"accelerator", "nic", "nvme"}
    for node in topo.nodes:
        mem = f"{node.mem_total_kb / 1048576:.1f} GiB" if node.mem_total_kb else "? GiB"
        free = f", {node.mem_free_kb / 1048576:.1f} GiB free" if node.mem_free_kb else ""
        lines.append(f"node {node.id}: cpus {format_cpulist(node.cpus) or '-'}; "
                     f"memory {mem}{free}; distances {list(node.distances) or '?'}")
        for size, pool in sorted(node.hugepages.items()):
            lines.append(f"    hugepages {size} kB: {pool.total} total, {pool.free} free")
        for dev in topo.devices_on_node(node.id):
            if dev.role in shown:
                lines.append(_device_line(dev, topo))
    homeless = [d for d in topo.pci if d.numa_node is None and d.role in shown]
    if homeless:
        lines.append("no NUMA node known (numa_node -1):")
        lines.extend(_device_line(d, topo) for d in homeless)
    accels, nics = topo.accelerators(), topo.nics()
    if accels and nics:
        lines.append("")
        lines.append("accelerator to NIC affinity (PIX same PCIe switch, NODE same NUMA "
                     "node, SYS across sockets):")
        heads = [d.netdevs[0] if d.netdevs else d.address for d in nics]
        width = max(6, *(len(h) for h in heads))
        lines.append(" " * 16 + "".join(h.ljust(width + 1) for h in heads))
        for acc in accels:
            cells = "".join(affinity(acc, nic).ljust(width + 1) for nic in nics)
            lines.append(f"  {acc.address:<14}{cells}")
    if topo.netifs:
        lines.append("")
        lines.append("network interfaces:")
        for n in topo.netifs:
            speed = f"{n.speed_mbps} Mb/s" if n.speed_mbps else "speed ?"
            lines.append(f"    {n.name:<12} {n.state or '?':<8} {speed:<12} "
                         f"queues rx {n.rx_queues} tx {n.tx_queues} "
                         f"pci {n.pci_address or '-'} drv {n.driver or '-'}")
    for part, reason in sorted(topo.gaps.items()):
        lines.append(f"note: {part}: {reason}")
    return lines
