"""The machine's shape: CPUs, NUMA nodes, PCI devices by role, network
interfaces, and which of them sit together.

Discovery is tolerant by design: a host without /sys/devices/system/node is one
node holding every CPU; an offline CPU has no topology directory; numa_node -1
means the firmware gave no affinity; a device that vanishes while it is being
read is dropped. None of these is an error, and none gives a traceback.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from hosttune.agent.sense.cpulist import parse_cpulist
from hosttune.agent.sense.errors import HosttuneError, ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.pci import PciDevice, scan
from hosttune.agent.sense.telemetry.memory import mem_total_kb

log = logging.getLogger(__name__)

CPU_DIR = "/sys/devices/system/cpu"
NODE_DIR = "/sys/devices/system/node"
NET_DIR = "/sys/class/net"
_CPU_RE = re.compile(r"^cpu(\d+)$")
_NODE_RE = re.compile(r"^node(\d+)$")
_HUGE_RE = re.compile(r"^hugepages-(\d+)kB$")


@dataclass(frozen=True)
class Cpu:
    id: int
    core_id: int | None
    package_id: int | None
    node: int | None
    siblings: tuple[int, ...]  # SMT siblings, itself included
    online: bool


@dataclass(frozen=True)
class HugePool:
    size_kb: int
    total: int
    free: int
    surplus: int


@dataclass(frozen=True)
class NumaNode:
    id: int
    cpus: tuple[int, ...]
    mem_total_kb: int | None
    mem_free_kb: int | None
    distances: tuple[int, ...]
    hugepages: dict[int, HugePool] = field(default_factory=dict)


@dataclass(frozen=True)
class NetInterface:
    name: str
    state: str | None
    speed_mbps: int | None
    driver: str | None
    rx_queues: int
    tx_queues: int
    mtu: int | None
    pci_address: str | None


@dataclass
class Topology:
    cpus: list[Cpu]
    nodes: list[NumaNode]
    pci: list[PciDevice]
    netifs: list[NetInterface]
    # the parts that could not be read, part -> reason (never fatal)
    gaps: dict[str, str] = field(default_factory=dict)

    def accelerators(self) -> list[PciDevice]:
        return [d for d in self.pci if d.role == "accelerator"]

    def nics(self) -> list[PciDevice]:
        return [d for d in self.pci if d.role == "nic"]

    def nvme(self) -> list[PciDevice]:
        return [d for d in self.pci if d.role == "nvme"]

    def online_cpus(self) -> tuple[int, ...]:
        return tuple(c.id for c in self.cpus if c.online)

    def node_of_cpu(self, cpu: int) -> int | None:
        for node in self.nodes:
            if cpu in node.cpus:
                return node.id
        return None

    def node(self, node_id: int) -> NumaNode | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def devices_on_node(self, node_id: int | None) -> list[PciDevice]:
        return [d for d in self.pci if d.numa_node == node_id]

    def netif_of(self, address: str) -> list[NetInterface]:
        return [n for n in self.netifs if n.pci_address == address]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpus": [vars(c) | {"siblings": list(c.siblings)} for c in self.cpus],
            "nodes": [
                {"id": n.id, "cpus": list(n.cpus), "mem_total_kb": n.mem_total_kb,
                 "mem_free_kb": n.mem_free_kb, "distances": list(n.distances),
                 "hugepages": {str(k): vars(v) for k, v in sorted(n.hugepages.items())}}
                for n in self.nodes
            ],
            "pci": [d.to_dict() for d in self.pci],
            "netifs": [vars(n) for n in self.netifs],
            "gaps": dict(self.gaps),
        }


def _cpulist(host: Host, path: str) -> tuple[int, ...] | None:
    text = host.read_optional(path)
    if text is None:
        return None
    try:
        return parse_cpulist(text, source=host.describe(path))
    except HosttuneError:
        return None


def _cpus(host: Host, gaps: dict[str, str]) -> list[Cpu]:
    online = _cpulist(host, f"{CPU_DIR}/online")
    ids = sorted(int(m.group(1)) for n in host.listdir_optional(CPU_DIR)
                 if (m := _CPU_RE.match(n)))
    if not ids:
        if online is None:
            gaps["cpus"] = f"neither {CPU_DIR}/online nor cpuN directories are readable"
            return []
        ids = list(online)
    cpus = []
    for cpu in ids:
        base = f"{CPU_DIR}/cpu{cpu}"
        if online is not None:
            is_online = cpu in online
        else:
            flag = host.read_optional_int(f"{base}/online")
            is_online = flag != 0
        siblings = _cpulist(host, f"{base}/topology/thread_siblings_list") or (cpu,)
        cpus.append(Cpu(
            id=cpu,
            core_id=host.read_optional_int(f"{base}/topology/core_id"),
            package_id=host.read_optional_int(f"{base}/topology/physical_package_id"),
            node=None,
            siblings=siblings,
            online=is_online,
        ))
    return cpus


def _meminfo_kb(text: str, key: str) -> int | None:
    # node meminfo lines: "Node 0 MemTotal:       24576000 kB"
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == f"{key}:":
            try:
                return int(parts[3])
            except ValueError:
                return None
    return None


def _hugepools(host: Host, base: str) -> dict[int, HugePool]:
    pools = {}
    for name in host.listdir_optional(f"{base}/hugepages"):
        match = _HUGE_RE.match(name)
        if not match:
            continue
        d = f"{base}/hugepages/{name}"
        total = host.read_optional_int(f"{d}/nr_hugepages")
        if total is None:
            continue
        pools[int(match.group(1))] = HugePool(
            size_kb=int(match.group(1)), total=total,
            free=host.read_optional_int(f"{d}/free_hugepages") or 0,
            surplus=host.read_optional_int(f"{d}/surplus_hugepages") or 0,
        )
    return pools


def _nodes(host: Host, cpus: list[Cpu], gaps: dict[str, str]) -> list[NumaNode]:
    ids = sorted(int(m.group(1)) for n in host.listdir_optional(NODE_DIR)
                 if (m := _NODE_RE.match(n)))
    if not ids:
        # A kernel built without NUMA (or a tree without the directory) is one
        # node holding every CPU and all memory.
        gaps["numa"] = f"{NODE_DIR} missing: treated as one node"
        try:
            total = mem_total_kb(host)
        except ParseError as exc:
            gaps["memory"] = str(exc)
            total = None
        return [NumaNode(0, tuple(c.id for c in cpus if c.online), total, None,
                         (10,), _hugepools(host, "/sys/kernel/mm"))]
    nodes = []
    for node in ids:
        base = f"{NODE_DIR}/node{node}"
        meminfo = host.read_optional(f"{base}/meminfo") or ""
        distance_text = host.read_optional(f"{base}/distance") or ""
        try:
            distances = tuple(int(x) for x in distance_text.split())
        except ValueError:
            gaps[f"node{node}.distance"] = f"unparsable: {distance_text[:40]!r}"
            distances = ()
        nodes.append(NumaNode(
            id=node,
            cpus=_cpulist(host, f"{base}/cpulist") or (),
            mem_total_kb=_meminfo_kb(meminfo, "MemTotal"),
            mem_free_kb=_meminfo_kb(meminfo, "MemFree"),
            distances=distances,
            hugepages=_hugepools(host, base),
        ))
    return nodes


def _netifs_sysfs(host: Host) -> list[NetInterface]:
    out = []
    for name in host.listdir_optional(NET_DIR):
        base = f"{NET_DIR}/{name}"
        queues = host.listdir_optional(f"{base}/queues")
        # the interface's own resolved path runs through the PCI function it
        # belongs to; virtual interfaces resolve under /sys/devices/virtual
        device = host.resolve(base) or host.resolve(f"{base}/device")
        speed = host.read_optional_int(f"{base}/speed")
        out.append(NetInterface(
            name=name,
            state=host.read_optional(f"{base}/operstate"),
            speed_mbps=speed if speed is not None and speed > 0 else None,
            driver=host.readlink_name(f"{base}/device/driver"),
            rx_queues=sum(q.startswith("rx-") for q in queues),
            tx_queues=sum(q.startswith("tx-") for q in queues),
            mtu=host.read_optional_int(f"{base}/mtu"),
            pci_address=_pci_address_of(device),
        ))
    return out


def _pci_address_of(device_path: str | None) -> str | None:
    """The PCI function a net device hangs off: the last BDF in its resolved
    path (virtio NICs resolve to .../0000:00:03.0/virtio2)."""
    if device_path is None:
        return None
    for part in reversed(device_path.split("/")):
        pieces = part.split(":")
        if len(pieces) == 3 and "." in pieces[2]:
            return part
    return None


def _netifs_netlink(host: Host) -> list[NetInterface]:
    """Names, state and MTU from netlink (pyroute2), the rest from sysfs: netlink
    sees interfaces of this namespace exactly, sysfs has speed and driver."""
    # pyroute2: 120 ms, 25 MB (PLATFORM.md); only a live discover with netifs needs it
    from pyroute2 import IPRoute

    by_name = {n.name: n for n in _netifs_sysfs(host)}
    out = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            known = by_name.get(name)
            out.append(NetInterface(
                name=name,
                state=str(link.get_attr("IFLA_OPERSTATE") or "").lower() or None,
                speed_mbps=known.speed_mbps if known else None,
                driver=known.driver if known else None,
                rx_queues=int(link.get_attr("IFLA_NUM_RX_QUEUES") or 0),
                tx_queues=int(link.get_attr("IFLA_NUM_TX_QUEUES") or 0),
                mtu=link.get_attr("IFLA_MTU"),
                pci_address=known.pci_address if known else None,
            ))
    return out


def discover(host: Host, *, netifs: bool = True) -> Topology:
    gaps: dict[str, str] = {}
    cpus = _cpus(host, gaps)
    nodes = _nodes(host, cpus, gaps)
    node_of = {cpu: n.id for n in nodes for cpu in n.cpus}
    cpus = [Cpu(c.id, c.core_id, c.package_id, node_of.get(c.id), c.siblings, c.online)
            for c in cpus]
    pci = scan(host)
    nets: list[NetInterface] = []
    if netifs:
        if host.is_live:
            try:
                nets = _netifs_netlink(host)
            except Exception as exc:  # netlink refused (seccomp, no NETLINK_ROUTE)
                gaps["netifs"] = f"netlink failed ({exc}); read from sysfs"
                nets = _netifs_sysfs(host)
        else:
            nets = _netifs_sysfs(host)
    return Topology(cpus=cpus, nodes=nodes, pci=pci, netifs=nets, gaps=gaps)


# -- single facts, for code that needs one of them and not a whole discover() --


def online_cpus(host: Host) -> tuple[int, ...]:
    """The online CPUs (/sys/devices/system/cpu/online); () when unreadable."""
    return _cpulist(host, f"{CPU_DIR}/online") or ()


def memory_nodes(host: Host) -> tuple[int, ...]:
    """The NUMA nodes with memory; (0,) on a kernel without NUMA."""
    for name in ("has_memory", "online"):
        nodes = _cpulist(host, f"{NODE_DIR}/{name}")
        if nodes:
            return nodes
    return (0,)


def node_cpus(host: Host, node: int) -> tuple[int, ...] | None:
    """The CPUs of NUMA node `node`; None when the host has no such node."""
    path = f"{NODE_DIR}/node{node}/cpulist"
    text = host.read_optional(path)
    return None if text is None else parse_cpulist(text, source=host.describe(path))
