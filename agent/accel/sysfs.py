"""The generic backend: every PCI accelerator, from sysfs alone.

Works on any host with no vendor library: it finds accelerators by PCI class
and vendor id, reports their locality (NUMA node, local CPUs, the PCIe switch
above them, link speed and width, driver, IRQs) and samples what the driver
exposes in sysfs. amdgpu exposes the most (gpu_busy_percent,
mem_busy_percent, mem_info_vram_*, hwmon power1_average/power1_cap and
temp*_input); NVIDIA's and Huawei's drivers expose no hwmon, so for them this
backend gives locality and link state only and leaves the rest absent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from hosttune.agent.accel.base import AccelDevice, AccelProcess, metric_name
from hosttune.agent.cpulist import parse_cpulist
from hosttune.agent.errors import ParseError
from hosttune.agent.host import Host

PCI_DEVICES = "/sys/bus/pci/devices"

# PCI base class/subclass (the top 16 bits of the 24-bit class code) of the
# devices that do AI work, from the PCI Code and ID Assignment Specification.
CLASS_DISPLAY_VGA = 0x0300
CLASS_DISPLAY_3D = 0x0302
CLASS_DISPLAY_OTHER = 0x0380
CLASS_PROCESSING_ACCELERATOR = 0x1200
CLASS_COPROCESSOR = 0x0B40
_DISPLAY_CLASSES = (CLASS_DISPLAY_VGA, CLASS_DISPLAY_3D, CLASS_DISPLAY_OTHER)

# PCI vendor ids of AI accelerator makers. A display-class device counts as an
# accelerator only for these (a server's BMC VGA does not); a processing
# accelerator (0x1200) or co-processor counts whoever made it.
AI_VENDORS: Mapping[int, str] = {
    0x10DE: "nvidia",
    0x1002: "amd",
    0x19E5: "huawei",
    0xCABC: "cambricon",
    0x1DA3: "habana",
    0x1D22: "kunlunxin",
    0x1D94: "hygon",
}

# "16.0 GT/s PCIe" -> generation, by the per-lane rate each generation added.
_GEN_BY_RATE = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}
_RATE_RE = re.compile(r"([\d.]+)\s*GT/s")
_BDF_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def link_generation(speed: str | None) -> int | None:
    if not speed:
        return None
    match = _RATE_RE.search(speed)
    if not match:
        return None
    return _GEN_BY_RATE.get(float(match.group(1)))


@dataclass(frozen=True)
class PciAccelerator:
    """What sysfs says about one accelerator function."""

    address: str
    vendor_id: int
    device_id: int
    class_code: int
    vendor: str
    numa_node: int | None
    local_cpus: tuple[int, ...]
    driver: str | None
    link_speed: str | None
    link_width: int | None
    max_link_speed: str | None
    max_link_width: int | None
    irqs: tuple[int, ...]
    # the bridges between the root complex and the device, root port first
    upstream: tuple[str, ...]

    @property
    def sysfs_path(self) -> str:
        return f"{PCI_DEVICES}/{self.address}"

    @property
    def pcie_switch(self) -> str | None:
        """The upstream port of the PCIe switch the device sits behind (root
        port -> switch upstream port -> switch downstream port -> device), or
        None when it hangs off a root port directly."""
        return self.upstream[1] if len(self.upstream) >= 3 else None


def _hex(host: Host, path: str) -> int | None:
    text = host.read_optional(path)
    if text is None:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def is_accelerator(vendor_id: int, class_code: int) -> bool:
    cls = class_code >> 8
    if cls in (CLASS_PROCESSING_ACCELERATOR, CLASS_COPROCESSOR):
        return True
    return cls in _DISPLAY_CLASSES and vendor_id in AI_VENDORS


def read_accelerator(host: Host, address: str) -> PciAccelerator | None:
    base = f"{PCI_DEVICES}/{address}"
    vendor_id = _hex(host, f"{base}/vendor")
    device_id = _hex(host, f"{base}/device")
    class_code = _hex(host, f"{base}/class")
    if vendor_id is None or device_id is None or class_code is None:
        return None
    if not is_accelerator(vendor_id, class_code):
        return None
    numa = host.read_optional_int(f"{base}/numa_node")
    cpus_text = host.read_optional(f"{base}/local_cpulist")
    try:
        cpus = parse_cpulist(cpus_text, source=host.describe(f"{base}/local_cpulist")) \
            if cpus_text else ()
    except ParseError:
        cpus = ()
    irqs = tuple(sorted(int(n) for n in host.listdir_optional(f"{base}/msi_irqs") if n.isdigit()))
    if not irqs:
        legacy = host.read_optional_int(f"{base}/irq")
        irqs = (legacy,) if legacy else ()
    real = host.resolve(base)
    upstream: tuple[str, ...] = ()
    if real:
        parts = [p for p in real.split("/") if _BDF_RE.match(p)]
        upstream = tuple(parts[:-1])
    return PciAccelerator(
        address=address, vendor_id=vendor_id, device_id=device_id, class_code=class_code,
        vendor=AI_VENDORS.get(vendor_id, f"pci:{vendor_id:04x}"),
        numa_node=numa if numa is not None and numa >= 0 else None,
        local_cpus=cpus,
        driver=host.readlink_name(f"{base}/driver"),
        link_speed=host.read_optional(f"{base}/current_link_speed"),
        link_width=host.read_optional_int(f"{base}/current_link_width"),
        max_link_speed=host.read_optional(f"{base}/max_link_speed"),
        max_link_width=host.read_optional_int(f"{base}/max_link_width"),
        irqs=irqs, upstream=upstream,
    )


def scan(host: Host) -> list[PciAccelerator]:
    """Every PCI accelerator on the host, in PCI address order."""
    found = []
    for address in host.listdir_optional(PCI_DEVICES):
        accel = read_accelerator(host, address)
        if accel is not None:
            found.append(accel)
    return found


@dataclass(frozen=True)
class PciNic:
    """A network function and its interfaces: what an accelerator talks to
    the fabric through. (hosttune.agent.topology has the full NIC view.)"""

    address: str
    interfaces: tuple[str, ...]
    numa_node: int | None
    upstream: tuple[str, ...]

    @property
    def pcie_switch(self) -> str | None:
        return self.upstream[1] if len(self.upstream) >= 3 else None


def scan_nics(host: Host) -> list[PciNic]:
    """Every PCI network controller (class 0x02xx) with its interface names."""
    found = []
    for address in host.listdir_optional(PCI_DEVICES):
        base = f"{PCI_DEVICES}/{address}"
        class_code = _hex(host, f"{base}/class")
        if class_code is None or class_code >> 16 != 0x02:
            continue
        numa = host.read_optional_int(f"{base}/numa_node")
        real = host.resolve(base)
        parts = [p for p in real.split("/") if _BDF_RE.match(p)] if real else []
        found.append(PciNic(address, tuple(host.listdir_optional(f"{base}/net")),
                            numa if numa is not None and numa >= 0 else None,
                            tuple(parts[:-1])))
    return found


def describe(accel: PciAccelerator, index: int, backend: str = "sysfs") -> AccelDevice:
    facts = {"pci_id": f"{accel.vendor_id:04x}:{accel.device_id:04x}",
             "pci_class": f"0x{accel.class_code:06x}"}
    if accel.pcie_switch:
        facts["pcie_switch"] = accel.pcie_switch
    if accel.upstream:
        facts["pcie_root_port"] = accel.upstream[0]
    return AccelDevice(
        index=index, vendor=accel.vendor, backend=backend, pci_address=accel.address,
        numa_node=accel.numa_node, local_cpus=accel.local_cpus, driver=accel.driver,
        pcie_link_speed=accel.link_speed, pcie_link_width=accel.link_width,
        pcie_max_link_speed=accel.max_link_speed, pcie_max_link_width=accel.max_link_width,
        irqs=accel.irqs, facts=facts,
    )


class SysfsBackend:
    """Locality for every accelerator; telemetry where the driver offers it."""

    name = "sysfs"

    def __init__(self, host: Host, only: set[str] | None = None) -> None:
        """`only`: the PCI addresses to serve (the ones no vendor backend
        took); None serves every accelerator found."""
        self.host = host
        accels = scan(host)
        if only is not None:
            accels = [a for a in accels if a.address in only]
        self._accels = accels
        self._index = {a.address: i for i, a in enumerate(accels)}
        self._memory_total: dict[str, int | None] = {
            a.address: host.read_optional_int(f"{a.sysfs_path}/mem_info_vram_total")
            for a in accels
        }

    @property
    def accelerators(self) -> list[PciAccelerator]:
        return list(self._accels)

    def devices(self) -> list[AccelDevice]:
        out = []
        for accel in self._accels:
            dev = describe(accel, self._index[accel.address])
            dev.memory_total_bytes = self._memory_total[accel.address]
            out.append(dev)
        return out

    def reindex(self, by_address: Mapping[str, int]) -> None:
        self._index = {a: by_address.get(a, i) for a, i in self._index.items()}

    def sample(self, values: dict[str, float]) -> None:
        host = self.host
        for accel in self._accels:
            i = self._index[accel.address]
            base = accel.sysfs_path
            if not host.exists(f"{base}/vendor"):
                # hot-removed or fell off the bus: the directory is gone
                values[metric_name(i, "lost")] = 1.0
                continue
            values[metric_name(i, "lost")] = 0.0
            gen = link_generation(host.read_optional(f"{base}/current_link_speed"))
            if gen is not None:
                values[metric_name(i, "pcie_link_gen")] = float(gen)
            width = host.read_optional_int(f"{base}/current_link_width")
            if width:
                values[metric_name(i, "pcie_link_width")] = float(width)
            self._sample_driver_files(i, base, values)
            self._sample_hwmon(i, base, values)

    def _sample_driver_files(self, i: int, base: str, values: dict[str, float]) -> None:
        """amdgpu's own attributes (Documentation/gpu/amdgpu/driver-misc.rst)."""
        host = self.host
        busy = host.read_optional_int(f"{base}/gpu_busy_percent")
        if busy is not None:
            values[metric_name(i, "util")] = busy / 100.0
        mem_busy = host.read_optional_int(f"{base}/mem_busy_percent")
        if mem_busy is not None:
            values[metric_name(i, "mem_util")] = mem_busy / 100.0
        used = host.read_optional_int(f"{base}/mem_info_vram_used")
        if used is not None:
            values[metric_name(i, "mem_used_bytes")] = float(used)
        total = host.read_optional_int(f"{base}/mem_info_vram_total")
        if total is not None:
            values[metric_name(i, "mem_total_bytes")] = float(total)

    def _sample_hwmon(self, i: int, base: str, values: dict[str, float]) -> None:
        """hwmon sysfs ABI (Documentation/hwmon/sysfs-interface.rst): power in
        microwatts, temperature in millidegrees Celsius."""
        host = self.host
        for hw in host.listdir_optional(f"{base}/hwmon"):
            hdir = f"{base}/hwmon/{hw}"
            power = host.read_optional_int(f"{hdir}/power1_average")
            if power is None:
                power = host.read_optional_int(f"{hdir}/power1_input")
            if power is not None:
                values[metric_name(i, "power_watts")] = power / 1e6
            cap = host.read_optional_int(f"{hdir}/power1_cap")
            if cap is not None:
                values[metric_name(i, "power_limit_watts")] = cap / 1e6
            temp = self._die_temperature(hdir)
            if temp is not None:
                values[metric_name(i, "temp_c")] = temp / 1000.0
            break

    def _die_temperature(self, hdir: str) -> int | None:
        """amdgpu labels its sensors edge/junction/mem; the junction (hotspot)
        one is what throttles, so prefer it, then temp1."""
        host = self.host
        first = None
        for n in range(1, 8):
            value = host.read_optional_int(f"{hdir}/temp{n}_input")
            if value is None:
                continue
            if first is None:
                first = value
            if (host.read_optional(f"{hdir}/temp{n}_label") or "").lower() == "junction":
                return value
        return first

    def processes(self) -> list[AccelProcess]:
        # sysfs does not say which process holds device memory
        return []

    def close(self) -> None:
        pass
