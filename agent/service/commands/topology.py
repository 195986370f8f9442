"""`hosttune topology`: which accelerators, NICs and NVMe drives hang off
which NUMA node, like `nvidia-smi topo -m` but for any host."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from hosttune.agent.service.commands.output import JSON_OPTION, emit_json

if TYPE_CHECKING:
    from hosttune.agent.sense.accel.base import AccelDevice
    from hosttune.agent.sense.host import Host
    from hosttune.agent.sense.pci import PciDevice
    from hosttune.agent.sense.topology import Topology

ROOT_OPTION = typer.Option(
    "/", "--root", help="Read a captured host tree (see `hosttune capture`) instead of this host.",
)


def affinity(a: PciDevice, b: PciDevice) -> str:
    """nvidia-smi's vocabulary: PIX same PCIe switch, NODE same NUMA node,
    SYS across the inter-socket link, '?' where a node is unknown."""
    if a.pcie_switch is not None and a.pcie_switch == b.pcie_switch:
        return "PIX"
    if a.numa_node is None or b.numa_node is None:
        return "?"
    return "NODE" if a.numa_node == b.numa_node else "SYS"


def _device_line(dev: PciDevice, topo: Topology) -> str:
    from hosttune.agent.sense.cpulist import format_cpulist

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


def render(topo: Topology) -> list[str]:
    from hosttune.agent.sense.cpulist import format_cpulist

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


NO_ACCEL_OPTION = typer.Option(
    False, "--no-accel", help="Leave out what accelerator backends (NVML, amdsmi, npu-smi) say.",
)


def register(app: typer.Typer) -> None:
    @app.command()
    def topology(json_out: bool = JSON_OPTION, root: str = ROOT_OPTION,
                 no_accel: bool = NO_ACCEL_OPTION) -> None:
        """Show NUMA nodes with their CPUs, memory and the accelerators, NICs and
        NVMe drives attached to each, with IRQ counts and PCIe links; then each
        accelerator with its nearby NICs and its links to the others (NVLink,
        xGMI, HCCS) as its vendor backend reports them."""
        from hosttune.agent.sense.host import Host
        from hosttune.agent.sense.topology import discover

        host = Host(root)
        topo = discover(host)
        accel = None if no_accel else _accelerators(host)
        if json_out:
            data = topo.to_dict()
            if accel is not None:
                from hosttune.agent.sense.accel.render import topology_json

                data["accelerators"] = topology_json(accel, topo.nics())
            emit_json(data)
            return
        for line in render(topo):
            typer.echo(line)
        if accel:
            from hosttune.agent.sense.accel.render import topology_lines

            typer.echo("")
            for line in topology_lines(accel, topo.nics()):
                typer.echo(line)


def _accelerators(host: Host) -> list[AccelDevice]:
    """Each accelerator as the best backend describes it (hosttune.agent.sense.accel);
    vendor calls are bounded in time and fall back to sysfs."""
    from hosttune.agent.sense.accel.select import AccelCollector
    from hosttune.agent.service.config import configured_backends

    coll = AccelCollector(host, configured_backends())
    try:
        return coll.devices()
    finally:
        coll.close()
