"""Checks of the accelerator data paths: what stands between an accelerator
and its peers, its NIC and memory, as advice with the exact fix.

Pure: a function of the facts the caller read (sense.pci: each function's
identity, place in the PCIe tree and config space; the IOMMU's state). On
multi-GPU servers the largest host-level losses are here rather than in
sysctls: peer traffic sent up to the root complex by ACS, DMA translated by
the IOMMU, links that trained below what both ends can do, payload and read
request sizes set smaller than the path allows, a NIC on the other socket.

Each finding says what is wrong, why it matters, the exact fix, the source
that documents it and what the fix takes (`runtime`: now, lost at reboot;
`reboot`: a kernel parameter; `bios`: firmware setup; `hardware`: moving a
card). Nothing here changes the host: these are not knobs hosttune owns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hosttune.agent.sense.pci import (
    ACS_P2P_REDIRECTING,
    IommuState,
    PciDevice,
    PcieConfig,
    acs_names,
)

NCCL_ACS = ("https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/troubleshooting.html"
            "#pci-access-control-services-acs")
ASCEND_ACS = ("https://www.hiascend.com/doc_center/source/en/mindcluster/2610/toolbox/"
              "toolboxug/toolboxug_0254.html")
GPUDIRECT_RDMA = "https://docs.nvidia.com/cuda/gpudirect-rdma/index.html"
KERNEL_PARAMS = "https://docs.kernel.org/admin-guide/kernel-parameters.html"
KERNEL_PCI_ABI = "https://www.kernel.org/doc/Documentation/ABI/testing/sysfs-bus-pci"
FWTS_MRRS = "https://wiki.ubuntu.com/FirmwareTestSuite/Reference/maxreadreq"
NCCL_GDR_LEVEL = ("https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html"
                  "#nccl-net-gdr-level-formerly-nccl-ib-gdr-level")

# Below this a read request is "too low" (FWTS maxreadreq: < 256 bytes).
MIN_READ_REQUEST = 256
# IOMMU group types that translate DMA (Documentation/ABI/testing/sysfs-kernel-iommu_groups)
TRANSLATING = ("DMA", "DMA-FQ")


@dataclass(frozen=True)
class Finding:
    check: str  # acs | iommu | link | mps | mrrs | nic-node
    devices: tuple[str, ...]
    what: str
    why: str
    fix: str
    source: str
    needs: str  # runtime | reboot | bios | hardware
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "devices": list(self.devices), "what": self.what,
                "why": self.why, "fix": self.fix, "source": self.source, "needs": self.needs,
                "details": dict(self.details)}


@dataclass(frozen=True)
class PathFacts:
    """The facts the checks read: every PCI function (bridges included), the
    config space of each that has a PCI Express capability, and the IOMMU."""

    devices: tuple[PciDevice, ...]
    configs: dict[str, PcieConfig]
    iommu: IommuState

    def by_address(self) -> dict[str, PciDevice]:
        return {d.address: d for d in self.devices}

    def endpoints(self, *roles: str) -> list[PciDevice]:
        return [d for d in self.devices if d.role in roles]


def check_all(facts: PathFacts) -> list[Finding]:
    return (check_acs(facts) + check_iommu(facts) + check_links(facts) + check_payload(facts)
            + check_nic_node(facts))


# -- ACS ------------------------------------------------------------------------


def _below_common(a: PciDevice, b: PciDevice) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The shared bridges (root port first) and the bridges on the path from
    a to b below them."""
    ua, ub = a.upstream, b.upstream
    common = 0
    while common < min(len(ua), len(ub)) and ua[common] == ub[common]:
        common += 1
    return ua[:common], ua[common:] + ub[common:]


def check_acs(facts: PathFacts) -> list[Finding]:
    """Peer pairs (accelerator-accelerator, accelerator-NIC) that share a PCIe
    switch, where a port between them redirects peer traffic (ACS P2P Request
    or Completion Redirect, or Egress Control): their transfers go up to the
    root complex and back instead of across the switch."""
    accels = facts.endpoints("accelerator")
    peers = accels + facts.endpoints("nic")
    flagged: dict[str, set[str]] = {}
    for i, a in enumerate(accels):
        for b in peers:
            if b is a or (b.role == "accelerator" and peers.index(b) <= i):
                continue
            shared, between = _below_common(a, b)
            # Sharing only a root port or nothing: the traffic passes the root
            # complex anyway, where ACS changes nothing.
            if len(shared) < 2:
                continue
            for port in between:
                cfg = facts.configs.get(port)
                if cfg and cfg.acs_ctrl is not None and cfg.acs_ctrl & ACS_P2P_REDIRECTING:
                    flagged.setdefault(port, set()).update((a.address, b.address))
    if not flagged:
        return []
    ports = sorted(flagged)
    why = ("peer-to-peer transfers between these devices (NCCL/RCCL/HCCL collectives, "
           "GPUDirect RDMA to the NIC) are redirected to the root complex instead of "
           "crossing the switch: lower bandwidth, higher latency")
    if facts.iommu.units:
        why += ("; with the IOMMU on, Linux enables ACS again at every boot "
                "(pci_request_acs), so also see the iommu finding")
    bits = {p: acs_names(facts.configs[p].acs_ctrl or 0) for p in ports}
    return [Finding(
        check="acs", devices=tuple(sorted(set().union(*flagged.values()))),
        what=f"ACS redirects peer traffic on {len(ports)} PCIe switch port(s) between "
             f"accelerators and their peers: " + ", ".join(f"{p} ({bits[p]})" for p in ports),
        why=why + ". Keep ACS on where these devices are passed to virtual machines: there "
                  "it is what isolates them",
        fix=f"for p in {' '.join(ports)}; do setpci -s $p ECAP_ACS+0x6.w=0000; done  "
            "(now; lost at reboot: run it from a boot-time unit, or disable ACS in the BIOS "
            "setup)",
        source=f"{NCCL_ACS} ; {ASCEND_ACS}",
        needs="runtime",
        details={"ports": {p: f"0x{facts.configs[p].acs_ctrl or 0:04x}" for p in ports},
                 "pairs_through": {p: sorted(flagged[p]) for p in ports}})]


# -- IOMMU ----------------------------------------------------------------------


def check_iommu(facts: PathFacts) -> list[Finding]:
    """Accelerators and NICs whose DMA the IOMMU translates (group type DMA or
    DMA-FQ): GPUDirect RDMA and peer-to-peer need identity (pass-through)."""
    translated = sorted(
        d.address for d in facts.endpoints("accelerator", "nic")
        if facts.iommu.group_types.get(d.address) in TRANSLATING)
    if not translated or not facts.endpoints("accelerator"):
        return []
    kinds = sorted({facts.iommu.group_types[a] for a in translated})
    params = " ".join(facts.iommu.params) or "(none)"
    return [Finding(
        check="iommu", devices=tuple(translated),
        what=f"the IOMMU translates DMA of {len(translated)} accelerator/NIC function(s) "
             f"(group type {', '.join(kinds)}; IOMMU parameters on the command line: {params})",
        why="GPUDirect RDMA and peer-to-peer DMA assume every device sees the same physical "
            "addresses; a translating IOMMU breaks that or routes peer traffic through the root "
            "complex, and Linux turns ACS on at boot when the IOMMU is on (Ascend: lower "
            "NPU-to-NPU bandwidth through a switch)",
        fix="add iommu=pt to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub "
            "(grub2-mkconfig -o /boot/grub2/grub.cfg on RHEL), reboot; keep intel_iommu=on/"
            "amd_iommu=on only where devices are passed to virtual machines",
        source=f"{GPUDIRECT_RDMA} ; {KERNEL_PARAMS} ; {ASCEND_ACS}",
        needs="reboot",
        details={"group_types": {a: facts.iommu.group_types[a] for a in translated},
                 "units": list(facts.iommu.units)})]


# -- links ----------------------------------------------------------------------


def _sysfs_speed(text: str | None) -> float | None:
    """"16.0 GT/s PCIe" -> 16.0"""
    if not text:
        return None
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def _link(dev: PciDevice, cfg: PcieConfig | None) -> tuple[float | None, int | None,
                                                           float | None, int | None]:
    """(capable speed, capable width, current speed, current width) of the
    device's own link: config space where read, else sysfs."""
    if cfg is not None and cfg.link_speed is not None:
        return cfg.link_cap_speed, cfg.link_cap_width, cfg.link_speed, cfg.link_width
    return (_sysfs_speed(dev.max_link_speed), dev.max_link_width,
            _sysfs_speed(dev.link_speed), dev.link_width)


def check_links(facts: PathFacts) -> list[Finding]:
    """Accelerators, NICs and NVMe drives whose link trained below what both
    ends can do (the device's LnkCap and its upstream port's LnkCap)."""
    findings = []
    for dev in facts.endpoints("accelerator", "nic", "nvme"):
        cap_speed, cap_width, speed, width = _link(dev, facts.configs.get(dev.address))
        parent = facts.configs.get(dev.upstream[-1]) if dev.upstream else None
        if parent is not None:
            if parent.link_cap_speed is not None and cap_speed is not None:
                cap_speed = min(cap_speed, parent.link_cap_speed)
            if parent.link_cap_width is not None and cap_width is not None:
                cap_width = min(cap_width, parent.link_cap_width)
        slow = speed is not None and cap_speed is not None and speed < cap_speed
        narrow = width is not None and cap_width is not None and width < cap_width
        if not (slow or narrow):
            continue
        parts = []
        if slow:
            parts.append(f"{speed:g} GT/s of {cap_speed:g}")
        if narrow:
            parts.append(f"x{width} of x{cap_width}")
        share = ((speed or 0) * (width or 0)) / max(1e-9, (cap_speed or 0) * (cap_width or 0))
        why = f"the link carries {share:.0%} of the bandwidth both ends support"
        if slow and not narrow and dev.role == "accelerator":
            why += ("; GPUs lower their link speed when idle to save power, so check it again "
                    "under load before acting")
        findings.append(Finding(
            check="link", devices=(dev.address,),
            what=f"{dev.role} {dev.address} runs its PCIe link at {' and '.join(parts)}",
            why=why,
            fix=(f"check again under load (lspci -s {dev.address} -vv | grep -E 'LnkCap|LnkSta'); "
                 "if it stays low: reseat the card or move it to a slot wired for the full width, "
                 "check riser/retimer cabling, and set the slot's PCIe generation to Auto or the "
                 "highest in the BIOS setup"),
            source=KERNEL_PCI_ABI,
            needs="hardware" if narrow else "bios",
            details={"speed": speed, "width": width, "capable_speed": cap_speed,
                     "capable_width": cap_width}))
    return findings


# -- payload and read request sizes ----------------------------------------------


def check_payload(facts: PathFacts) -> list[Finding]:
    """Along each accelerator's and NIC's path from its root port: Max Payload
    Size that differs between the two ends of a link, or that is below what
    every function on the path supports; Max Read Request below 256 bytes."""
    findings = []
    for dev in facts.endpoints("accelerator", "nic"):
        chain = [facts.configs[a] for a in (*dev.upstream, dev.address) if a in facts.configs]
        if not chain or chain[-1].address != dev.address:
            continue
        mps = {c.address: c.mps for c in chain}
        if len(set(mps.values())) > 1:
            findings.append(Finding(
                check="mps", devices=(dev.address,),
                what=f"Max Payload Size differs along the path to {dev.address}: "
                     + ", ".join(f"{a} {v} B" for a, v in mps.items()),
                why="a function that sends larger TLPs than its link partner accepts causes "
                    "malformed-TLP errors; one set smaller than its partner wastes bandwidth",
                fix="boot with pci=pcie_bus_safe (every device gets the largest MPS all of them "
                    "support) or pci=pcie_bus_perf: add it to GRUB_CMDLINE_LINUX, update-grub, "
                    "reboot; or fix the BIOS's PCIe MPS setting (Auto)",
                source=KERNEL_PARAMS, needs="reboot", details={"mps": mps}))
        else:
            best = min(c.mps_supported for c in chain)
            if chain[-1].mps < best:
                findings.append(Finding(
                    check="mps", devices=(dev.address,),
                    what=f"Max Payload Size on the path to {dev.address} is {chain[-1].mps} B "
                         f"while every function on it supports {best} B",
                    why="each TLP carries a fixed header: a smaller payload spends more of "
                        "the link on headers (about 10-20 % of throughput for DMA-heavy "
                        "devices)",
                    fix="boot with pci=pcie_bus_perf (add it to GRUB_CMDLINE_LINUX, update-grub, "
                        "reboot), or set the PCIe MPS to Auto/the maximum in the BIOS setup",
                    source=KERNEL_PARAMS, needs="reboot",
                    details={"mps": chain[-1].mps, "supported": best}))
        cfg = chain[-1]
        if cfg.mrrs < MIN_READ_REQUEST:
            # DevCtl bits 14:12 hold the read request size code; 512 B is code 2.
            new = (cfg.devctl & ~0x7000) | (2 << 12)
            findings.append(Finding(
                check="mrrs", devices=(dev.address,),
                what=f"Max Read Request Size of {dev.address} is {cfg.mrrs} B",
                why="every DMA read is split into requests of at most this size: below 256 B "
                    "the device's reads from host memory lose throughput",
                fix=f"setpci -s {dev.address} CAP_EXP+0x8.w=0x{new:04x}  (512 B now; lost at "
                    "reboot: run it from a boot-time unit, or raise it in the BIOS/driver "
                    "settings)",
                source=f"{FWTS_MRRS} ; {KERNEL_PARAMS}", needs="runtime",
                details={"mrrs": cfg.mrrs, "devctl": f"0x{cfg.devctl:04x}",
                         "new_devctl": f"0x{new:04x}"}))
    return findings


# -- NIC locality ---------------------------------------------------------------


def check_nic_node(facts: PathFacts) -> list[Finding]:
    """Accelerators with no NIC on their own NUMA node while the host has NICs
    elsewhere: GPUDirect RDMA and every staged transfer crosses the
    inter-socket link."""
    nics = [n for n in facts.endpoints("nic") if n.numa_node is not None]
    if not nics:
        return []
    findings = []
    for dev in facts.endpoints("accelerator"):
        if dev.numa_node is None or any(n.numa_node == dev.numa_node for n in nics):
            continue
        nearest = sorted({n.numa_node for n in nics if n.numa_node is not None})
        findings.append(Finding(
            check="nic-node", devices=(dev.address,),
            what=f"accelerator {dev.address} is on NUMA node {dev.numa_node}, and no NIC is: "
                 f"the NICs are on node(s) {', '.join(map(str, nearest))}",
            why="its network traffic crosses the inter-socket link (UPI/xGMI) both ways: "
                "NCCL then disables GPUDirect RDMA for it by default (NCCL_NET_GDR_LEVEL) "
                "and stages through host memory",
            fix=f"put a NIC in a slot of NUMA node {dev.numa_node} (the slot's numa_node in "
                "/sys/bus/pci/devices), or run that accelerator's ranks on a NIC of the same "
                "node and pin them there",
            source=NCCL_GDR_LEVEL, needs="hardware",
            details={"node": dev.numa_node, "nic_nodes": nearest}))
    return findings
