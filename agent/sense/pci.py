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
        netdevs=tuple(host.listdir_optional(f"{base}/net")),
        block_devs=tuple(_nvme_block_devs(host, base)),
    )


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
