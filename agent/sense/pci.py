"""PCI devices from sysfs: identity, role, locality, link and interrupts.

The role of a device (accelerator, NIC, NVMe) comes from its PCI class code
and, for display-class devices, its vendor: a server's BMC VGA is a display
controller too, and must not be taken for an accelerator. Class codes are from
the PCI Code and ID Assignment Specification (PCI-SIG); the vendors, with
their ids and sources, are in hosttune.agent.sense.vendors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hosttune.agent.sense.cpulist import parse_cpulist, parse_cpumask
from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.vendors import is_ai_vendor, vendor_name

PCI_DEVICES = "/sys/bus/pci/devices"

# Base class + subclass (the top 16 bits of the 24-bit class code).
CLASS_NVME = 0x010802  # full code: mass storage / NVM / NVMe programming interface
CLASS_ETHERNET = 0x0200
CLASS_INFINIBAND = 0x0207
CLASS_NETWORK_OTHER = 0x0280
CLASS_DISPLAY_VGA = 0x0300
CLASS_DISPLAY_3D = 0x0302
CLASS_DISPLAY_OTHER = 0x0380
CLASS_COPROCESSOR = 0x0B40
CLASS_PROCESSING_ACCELERATOR = 0x1200
CLASS_BRIDGE_PCI = 0x0604
_DISPLAY = (CLASS_DISPLAY_VGA, CLASS_DISPLAY_3D, CLASS_DISPLAY_OTHER)
_NETWORK = (CLASS_ETHERNET, CLASS_INFINIBAND, CLASS_NETWORK_OTHER)

def classify(vendor_id: int, class_code: int) -> str:
    """accelerator | nic | nvme | bridge | other, from the 24-bit class code."""
    cls = class_code >> 8
    if cls in (CLASS_PROCESSING_ACCELERATOR, CLASS_COPROCESSOR):
        return "accelerator"
    if cls in _DISPLAY:
        return "accelerator" if is_ai_vendor(vendor_id) else "other"
    if cls in _NETWORK:
        return "nic"
    if class_code == CLASS_NVME:
        return "nvme"
    if cls == CLASS_BRIDGE_PCI:
        return "bridge"
    return "other"


@dataclass(frozen=True)
class PciDevice:
    address: str
    vendor_id: int
    device_id: int
    class_code: int
    role: str
    vendor_name: str | None
    driver: str | None
    numa_node: int | None  # None where the kernel says -1 (no affinity known)
    local_cpus: tuple[int, ...]
    link_speed: str | None
    link_width: int | None
    max_link_speed: str | None
    max_link_width: int | None
    irqs: tuple[int, ...]
    # the resolved /sys/devices path: its parents are the root port and any
    # PCIe switch ports above the device
    sysfs_path: str
    netdevs: tuple[str, ...] = ()
    block_devs: tuple[str, ...] = ()

    @property
    def upstream(self) -> tuple[str, ...]:
        """The bridges between the root complex and the device, root port first."""
        parts = self.sysfs_path.split("/")
        return tuple(p for p in parts[:-1] if _is_bdf(p))

    @property
    def pcie_switch(self) -> str | None:
        """The switch's upstream port (root port -> switch up -> switch down ->
        device), or None when the device hangs off a root port directly."""
        up = self.upstream
        return up[1] if len(up) >= 3 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address, "vendor_id": f"0x{self.vendor_id:04x}",
            "device_id": f"0x{self.device_id:04x}", "class": f"0x{self.class_code:06x}",
            "role": self.role, "vendor": self.vendor_name, "driver": self.driver,
            "numa_node": self.numa_node, "local_cpus": list(self.local_cpus),
            "link_speed": self.link_speed, "link_width": self.link_width,
            "max_link_speed": self.max_link_speed, "max_link_width": self.max_link_width,
            "irqs": list(self.irqs), "pcie_switch": self.pcie_switch,
            "netdevs": list(self.netdevs), "block_devs": list(self.block_devs),
        }


def _is_bdf(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 3 and len(parts[2]) == 4 and parts[2][2] == "."


def _hex(host: Host, path: str) -> int | None:
    text = host.read_optional(path)
    if text is None:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def _local_cpus(host: Host, base: str) -> tuple[int, ...]:
    text = host.read_optional(f"{base}/local_cpulist")
    try:
        if text is not None:
            return parse_cpulist(text, source=host.describe(f"{base}/local_cpulist"))
        mask = host.read_optional(f"{base}/local_cpus")
        if mask is not None:
            return parse_cpumask(mask, source=host.describe(f"{base}/local_cpus"))
    except HosttuneError:
        pass
    return ()


def _irqs(host: Host, base: str) -> tuple[int, ...]:
    msi = [int(n) for n in host.listdir_optional(f"{base}/msi_irqs") if n.isdigit()]
    if msi:
        return tuple(sorted(msi))
    legacy = host.read_optional_int(f"{base}/irq")
    return (legacy,) if legacy else ()


def _width(host: Host, path: str) -> int | None:
    value = host.read_optional_int(path)
    # 255 is what some kernels print for "unknown"
    return value if value is not None and 0 < value < 255 else None


def _speed(host: Host, path: str) -> str | None:
    text = host.read_optional(path)
    return None if text is None or text.lower().startswith("unknown") else text


def read_device(host: Host, address: str) -> PciDevice | None:
    """One device, or None when it has no readable identity (it vanished, or
    the tree is incomplete). Optional attributes missing are left None."""
    base = f"{PCI_DEVICES}/{address}"
    vendor_id = _hex(host, f"{base}/vendor")
    device_id = _hex(host, f"{base}/device")
    class_code = _hex(host, f"{base}/class")
    if vendor_id is None or device_id is None or class_code is None:
        return None
    numa = host.read_optional_int(f"{base}/numa_node")
    return PciDevice(
        address=address,
        vendor_id=vendor_id,
        device_id=device_id,
        class_code=class_code,
        role=classify(vendor_id, class_code),
        vendor_name=vendor_name(vendor_id),
        driver=host.readlink_name(f"{base}/driver"),
        numa_node=numa if numa is not None and numa >= 0 else None,
        local_cpus=_local_cpus(host, base),
        link_speed=_speed(host, f"{base}/current_link_speed"),
        link_width=_width(host, f"{base}/current_link_width"),
        max_link_speed=_speed(host, f"{base}/max_link_speed"),
        max_link_width=_width(host, f"{base}/max_link_width"),
        irqs=_irqs(host, base),
        sysfs_path=host.resolve(base) or base,
        netdevs=_netdevs(host, base),
        block_devs=tuple(_nvme_block_devs(host, base)),
    )


def _netdevs(host: Host, base: str) -> tuple[str, ...]:
    """The network interfaces of a function: under its own net/, or, for
    virtio, under the virtio device it carries (virtioN/net/)."""
    names = host.listdir_optional(f"{base}/net")
    for child in host.listdir_optional(base):
        if child.startswith("virtio") and child[6:].isdigit():
            names += host.listdir_optional(f"{base}/{child}/net")
    return tuple(names)


def _nvme_block_devs(host: Host, base: str) -> list[str]:
    out: list[str] = []
    for ctrl in host.listdir_optional(f"{base}/nvme"):
        out.extend(n for n in host.listdir_optional(f"{base}/nvme/{ctrl}")
                   if n.startswith(f"{ctrl}n"))
    return out


def scan(host: Host, *, roles: tuple[str, ...] | None = None) -> list[PciDevice]:
    """Every PCI function (of the given roles), in address order. Bridges are
    skipped unless asked for: they are structure, read through sysfs_path."""
    out: list[PciDevice] = []
    for address in host.listdir_optional(PCI_DEVICES):
        dev = read_device(host, address)
        if dev is None:
            continue
        if roles is None and dev.role == "bridge":
            continue
        if roles is not None and dev.role not in roles:
            continue
        out.append(dev)
    return out


# -- PCI Express capabilities from config space ---------------------------------
#
# Offsets and bit fields from the PCI Express Base Specification (7.5.3 PCI
# Express Capability, 7.7.8 ACS Extended Capability); Linux names them in
# include/uapi/linux/pci_regs.h. The config file holds 64 bytes for a reader
# without CAP_SYS_ADMIN and 256 for a device without extended config space:
# whatever lies beyond what was read is reported unknown, never guessed.

CAP_POINTER = 0x34
CAP_ID_EXP = 0x10
ECAP_ID_ACS = 0x000D
EXP_DEVCAP = 0x04
EXP_DEVCTL = 0x08
EXP_LNKCAP = 0x0C
EXP_LNKSTA = 0x12
ACS_CTRL_OFFSET = 0x06
# ACS control bits (PCI_ACS_SV, _TB, _RR, _CR, _UF, _EC, _DT)
ACS_SOURCE_VALIDATION = 0x01
ACS_TRANSLATION_BLOCKING = 0x02
ACS_P2P_REQUEST_REDIRECT = 0x04
ACS_P2P_COMPLETION_REDIRECT = 0x08
ACS_UPSTREAM_FORWARDING = 0x10
ACS_P2P_EGRESS_CONTROL = 0x20
ACS_DIRECT_TRANSLATED_P2P = 0x40
# The bits that send peer-to-peer traffic up to the root complex instead of
# across the switch.
ACS_P2P_REDIRECTING = (ACS_P2P_REQUEST_REDIRECT | ACS_P2P_COMPLETION_REDIRECT
                       | ACS_P2P_EGRESS_CONTROL)
ACS_BIT_NAMES = ((ACS_SOURCE_VALIDATION, "SrcValid"), (ACS_TRANSLATION_BLOCKING, "TransBlk"),
                 (ACS_P2P_REQUEST_REDIRECT, "ReqRedir"),
                 (ACS_P2P_COMPLETION_REDIRECT, "CmpltRedir"),
                 (ACS_UPSTREAM_FORWARDING, "UpstreamFwd"), (ACS_P2P_EGRESS_CONTROL, "EgressCtrl"),
                 (ACS_DIRECT_TRANSLATED_P2P, "DirectTrans"))
# Link speed codes of LnkCap/LnkSta -> GT/s (PCIe 1.0 to 6.0)
LINK_SPEEDS = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}
# PCIe port types (the capability's bits 7:4)
PORT_TYPES = {0: "endpoint", 1: "legacy-endpoint", 4: "root-port", 5: "upstream-port",
              6: "downstream-port", 7: "pcie-to-pci-bridge", 8: "pci-to-pcie-bridge",
              9: "rc-integrated-endpoint", 10: "rc-event-collector"}


def acs_names(bits: int) -> str:
    """ACS control bits as lspci prints the enabled ones ("SrcValid ReqRedir")."""
    return " ".join(name for bit, name in ACS_BIT_NAMES if bits & bit) or "none"


@dataclass(frozen=True)
class PcieConfig:
    """What one function's config space says about its PCIe link and ACS."""

    address: str
    port_type: str | None
    exp_offset: int  # where the PCI Express capability sits (for setpci CAP_EXP)
    devctl: int  # the raw Device Control word (for an exact setpci value)
    mps_supported: int  # bytes
    mps: int  # bytes, as configured
    mrrs: int  # bytes, as configured
    link_cap_speed: float | None  # GT/s
    link_cap_width: int | None
    link_speed: float | None
    link_width: int | None
    acs_offset: int | None  # None: no ACS capability (or it could not be read)
    acs_cap: int | None
    acs_ctrl: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address, "port_type": self.port_type,
            "mps_supported": self.mps_supported, "mps": self.mps, "mrrs": self.mrrs,
            "link_cap": _link_text(self.link_cap_speed, self.link_cap_width),
            "link": _link_text(self.link_speed, self.link_width),
            "acs_cap": None if self.acs_cap is None else acs_names(self.acs_cap),
            "acs_ctrl": None if self.acs_ctrl is None else acs_names(self.acs_ctrl),
        }


def _link_text(speed: float | None, width: int | None) -> str | None:
    if speed is None or width is None:
        return None
    return f"{speed:g} GT/s x{width}"


def _u16(data: bytes, offset: int) -> int | None:
    if offset + 2 > len(data):
        return None
    return int.from_bytes(data[offset:offset + 2], "little")


def _u32(data: bytes, offset: int) -> int | None:
    if offset + 4 > len(data):
        return None
    return int.from_bytes(data[offset:offset + 4], "little")


def _find_cap(data: bytes, cap_id: int) -> int | None:
    """The offset of a classic capability, following the list from 0x34."""
    if len(data) < 0x40 or not (_u16(data, 0x06) or 0) & 0x10:  # Status: capabilities list
        return None
    pointer = data[CAP_POINTER] & 0xFC
    seen: set[int] = set()
    while pointer and pointer not in seen and pointer + 2 <= len(data):
        seen.add(pointer)
        if data[pointer] == cap_id:
            return pointer
        pointer = data[pointer + 1] & 0xFC
    return None


def _find_ecap(data: bytes, cap_id: int) -> int | None:
    """The offset of an extended capability, following the list from 0x100."""
    offset = 0x100
    seen: set[int] = set()
    while offset and offset not in seen:
        seen.add(offset)
        header = _u32(data, offset)
        if header is None or header in (0, 0xFFFFFFFF):
            return None
        if header & 0xFFFF == cap_id:
            return offset
        offset = (header >> 20) & 0xFFC
        if offset < 0x100:
            return None
    return None


def parse_pcie_config(address: str, data: bytes) -> PcieConfig | None:
    """The PCIe facts of one function's config space bytes, or None when it
    has no PCI Express capability in what could be read."""
    exp = _find_cap(data, CAP_ID_EXP)
    if exp is None:
        return None
    flags = _u16(data, exp + 2)
    devcap = _u32(data, exp + EXP_DEVCAP)
    devctl = _u16(data, exp + EXP_DEVCTL)
    if flags is None or devcap is None or devctl is None:
        return None
    lnkcap = _u32(data, exp + EXP_LNKCAP)
    lnksta = _u16(data, exp + EXP_LNKSTA)
    acs = _find_ecap(data, ECAP_ID_ACS)
    acs_cap = _u16(data, acs + 4) if acs is not None else None
    acs_ctrl = _u16(data, acs + ACS_CTRL_OFFSET) if acs is not None else None
    port_type = (flags >> 4) & 0xF
    # a link field of 0 (a root-complex integrated endpoint has no link) is unknown
    return PcieConfig(
        address=address,
        port_type=PORT_TYPES.get(port_type),
        exp_offset=exp,
        devctl=devctl,
        mps_supported=128 << (devcap & 0x7),
        mps=128 << ((devctl >> 5) & 0x7),
        mrrs=128 << ((devctl >> 12) & 0x7),
        link_cap_speed=LINK_SPEEDS.get(lnkcap & 0xF) if lnkcap is not None else None,
        link_cap_width=(((lnkcap >> 4) & 0x3F) or None) if lnkcap is not None else None,
        link_speed=LINK_SPEEDS.get(lnksta & 0xF) if lnksta is not None else None,
        link_width=(((lnksta >> 4) & 0x3F) or None) if lnksta is not None else None,
        acs_offset=acs,
        acs_cap=acs_cap,
        acs_ctrl=acs_ctrl,
    )


def read_pcie_config(host: Host, address: str) -> PcieConfig | None:
    """One function's PCIe facts from /sys/bus/pci/devices/ADDR/config."""
    try:
        data = host.read_bytes(f"{PCI_DEVICES}/{address}/config")
    except HosttuneError:
        return None
    return parse_pcie_config(address, data)


@dataclass(frozen=True)
class IommuState:
    """How DMA of the host's devices is translated."""

    units: tuple[str, ...]  # /sys/class/iommu entries (dmar0, ivhd0, smmu3...): hardware on
    group_types: dict[str, str]  # device address -> its group's type (DMA, DMA-FQ, identity)
    params: tuple[str, ...]  # the kernel parameters that set the mode

    def to_dict(self) -> dict[str, Any]:
        return {"units": list(self.units), "group_types": dict(self.group_types),
                "params": list(self.params)}


IOMMU_PARAMS = ("iommu", "intel_iommu", "amd_iommu", "iommu.passthrough", "iommu.strict")


def read_iommu(host: Host, addresses: tuple[str, ...], params: list[str]) -> IommuState:
    """The IOMMU units, the domain type of each named device's group, and the
    IOMMU parameters of the kernel command line."""
    types: dict[str, str] = {}
    for address in addresses:
        kind = host.read_optional(f"{PCI_DEVICES}/{address}/iommu_group/type")
        if kind:
            types[address] = kind
    chosen = tuple(p for p in params if p.partition("=")[0] in IOMMU_PARAMS)
    return IommuState(units=tuple(host.listdir_optional("/sys/class/iommu")),
                      group_types=types, params=chosen)


def read_path_configs(host: Host, devices: list[PciDevice]) -> dict[str, PcieConfig]:
    """The PCIe facts of each device and of every bridge above it."""
    wanted = sorted({a for d in devices for a in (*d.upstream, d.address)})
    configs = {}
    for address in wanted:
        cfg = read_pcie_config(host, address)
        if cfg is not None:
            configs[address] = cfg
    return configs
