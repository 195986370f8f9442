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

from hosttune.agent.sense.accel.base import AccelDevice, ProcessListing, metric_name
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.pci import PCI_DEVICES, PciDevice
from hosttune.agent.sense.pci import classify as classify_pci
from hosttune.agent.sense.pci import scan as scan_pci
from hosttune.agent.sense.vendors import BY_DRIVER

# "16.0 GT/s PCIe" -> generation, by the per-lane rate each generation added.
_GEN_BY_RATE = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}
_RATE_RE = re.compile(r"([\d.]+)\s*GT/s")


def link_generation(speed: str | None) -> int | None:
    if not speed:
        return None
    match = _RATE_RE.search(speed)
    if not match:
        return None
    return _GEN_BY_RATE.get(float(match.group(1)))


def is_accelerator(vendor_id: int, class_code: int) -> bool:
    """By class and vendor (hosttune.agent.sense.pci holds the table and its sources)."""
    return classify_pci(vendor_id, class_code) == "accelerator"


def scan(host: Host) -> list[PciDevice]:
    """Every PCI accelerator on the host, in PCI address order."""
    return scan_pci(host, roles=("accelerator",))


def scan_nics(host: Host) -> list[PciDevice]:
    """Every network controller, with its interface names (`netdevs`)."""
    return scan_pci(host, roles=("nic",))


def vendor_of(dev: PciDevice) -> str:
    return dev.vendor_name or f"pci:{dev.vendor_id:04x}"


def nvidia_minor(host: Host, address: str) -> int | None:
    """The /dev/nvidiaN minor the NVIDIA driver gave a GPU, when it says."""
    text = host.read_optional(f"/proc/driver/nvidia/gpus/{address}/information")
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Device Minor" and value.strip().isdigit():
            return int(value.strip())
    return None


def device_file(host: Host, dev: PciDevice, nth: int) -> str | None:
    """The device file a process opens to drive accelerator `dev`, the
    `nth` (from 0) of its driver's devices in PCI address order (the order
    nvidia-smi and npu-smi number them unless told otherwise); None for a
    driver the vendor table gives no device file. NVIDIA's own minor number
    wins where its driver says it."""
    vendor = BY_DRIVER.get(dev.driver or "")
    if vendor is None or vendor.device_file is None:
        return None
    minor = nvidia_minor(host, dev.address) if vendor.name == "nvidia" else None
    return vendor.device_file.format(minor if minor is not None else vendor.device_base + nth)


def describe(dev: PciDevice, index: int, backend: str = "sysfs") -> AccelDevice:
    facts = {"pci_id": f"{dev.vendor_id:04x}:{dev.device_id:04x}",
             "pci_class": f"0x{dev.class_code:06x}"}
    if dev.pcie_switch:
        facts["pcie_switch"] = dev.pcie_switch
    if dev.upstream:
        facts["pcie_root_port"] = dev.upstream[0]
    return AccelDevice(
        index=index, vendor=vendor_of(dev), backend=backend, pci_address=dev.address,
        numa_node=dev.numa_node, local_cpus=dev.local_cpus, driver=dev.driver,
        pcie_link_speed=dev.link_speed, pcie_link_width=dev.link_width,
        pcie_max_link_speed=dev.max_link_speed, pcie_max_link_width=dev.max_link_width,
        irqs=dev.irqs, facts=facts,
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
            a.address: host.read_optional_int(f"{PCI_DEVICES}/{a.address}/mem_info_vram_total")
            for a in accels
        }

    @property
    def accelerators(self) -> list[PciDevice]:
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
            base = f"{PCI_DEVICES}/{accel.address}"
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

    def processes(self) -> ProcessListing:
        # sysfs does not say which process holds device memory
        return ProcessListing((), {"sysfs": "sysfs has no per-process view"})

    def close(self) -> None:
        pass
