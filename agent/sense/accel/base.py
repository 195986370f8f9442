"""One interface for every accelerator backend.

A backend (NVML, amdsmi, npu-smi, plain sysfs) lists its devices with their
locality and, each sampling pass, writes `accel.<i>.<metric>` numbers into the
pass's value mapping. What a backend cannot know it leaves out: a metric that
is absent means "unknown", never 0.

Device indices are global to the host (all vendors together, in PCI address
order) so that `accel.3.util` names one device whatever mix of vendors the
host has; `vendor_index` keeps the vendor tool's own number (nvidia-smi's GPU
index, npu-smi's NPU id) for display.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from hosttune.agent.sense.errors import HosttuneError

# accel.<i>.<suffix>: unit and meaning. The telemetry catalogue
# (hosttune.agent.sense.telemetry.catalogue) lists the same names; these are the
# ones a backend may write. Ratios are 0-1, as everywhere in the catalogue.
METRICS: Mapping[str, tuple[str, str]] = {
    "util": ("ratio", "compute engine busy (NVIDIA GPU util, AMD gfx activity, Ascend AI core)"),
    "mem_util": ("ratio", "device memory busy (NVIDIA memory util, AMD UMC, Ascend HBM bandwidth)"),
    "mem_used_bytes": ("bytes", "device memory in use"),
    "mem_total_bytes": ("bytes", "device memory size"),
    "power_watts": ("W", "board power draw"),
    "power_limit_watts": ("W", "enforced power limit"),
    "temp_c": ("degC", "die (GPU/hotspot) temperature"),
    "sm_clock_mhz": ("MHz", "compute clock (SM, gfx, AI core)"),
    "mem_clock_mhz": ("MHz", "memory clock"),
    "pcie_rx_bytes": ("B/s", "PCIe receive throughput (host to device)"),
    "pcie_tx_bytes": ("B/s", "PCIe transmit throughput (device to host)"),
    "pcie_link_gen": ("generation", "current PCIe link generation"),
    "pcie_link_width": ("lanes", "current PCIe link width"),
    "ecc_errors": ("errors", "uncorrected ECC errors since driver load (volatile)"),
    "ecc_corrected": ("errors", "corrected ECC errors since driver load (volatile)"),
    "retired_pages": ("pages", "memory pages retired after ECC errors"),
    "xid_errors": ("errors", "driver-reported device errors (NVIDIA Xid) since backend start"),
    "processes": ("processes", "processes holding device memory"),
    "lost": ("bool", "1 when the device fell off the bus or stopped answering"),
}


def metric_name(index: int, suffix: str) -> str:
    if suffix not in METRICS:
        raise KeyError(f"not an accelerator metric: {suffix!r}")
    return f"accel.{index}.{suffix}"


class BackendUnavailable(HosttuneError):
    """A backend cannot serve this host: its library is missing, the driver is
    not loaded, the library and driver versions disagree, or it finds no
    device. The caller falls back to the sysfs view."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(reason, subject=f"accel backend {backend}")
        self.backend = backend
        self.reason = reason


@dataclass(frozen=True)
class AccelLink:
    """How this device reaches another one. `kind` is the best path known:
    "nvlink", "xgmi", "hccs" (direct links) or the PCIe path the vendor
    reports ("pcie-switch" = one switch, "pcie-switches" = several,
    "pcie-hostbridge", "numa" = same socket, "system" = across sockets)."""

    peer: int  # global index of the other device
    kind: str
    detail: str = ""


@dataclass
class AccelDevice:
    index: int  # global, see module docstring
    vendor: str  # a name of hosttune.agent.sense.vendors ("nvidia", "huawei"), or "pci:<id>"
    backend: str  # which backend describes it
    pci_address: str | None = None  # "0000:3b:00.0", lower case
    model: str | None = None
    vendor_index: int | None = None
    numa_node: int | None = None
    local_cpus: tuple[int, ...] = ()
    memory_total_bytes: int | None = None
    driver: str | None = None
    serial: str | None = None
    uuid: str | None = None
    pcie_link_speed: str | None = None  # as sysfs prints it: "16.0 GT/s PCIe"
    pcie_link_width: int | None = None
    pcie_max_link_speed: str | None = None
    pcie_max_link_width: int | None = None
    irqs: tuple[int, ...] = ()
    links: tuple[AccelLink, ...] = ()
    # vendor facts with no common field: persistence mode, NVLink count, health
    facts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "vendor": self.vendor, "backend": self.backend,
            "pci_address": self.pci_address, "model": self.model,
            "vendor_index": self.vendor_index, "numa_node": self.numa_node,
            "local_cpus": list(self.local_cpus),
            "memory_total_bytes": self.memory_total_bytes, "driver": self.driver,
            "serial": self.serial, "uuid": self.uuid,
            "pcie_link_speed": self.pcie_link_speed, "pcie_link_width": self.pcie_link_width,
            "pcie_max_link_speed": self.pcie_max_link_speed,
            "pcie_max_link_width": self.pcie_max_link_width,
            "irqs": list(self.irqs),
            "links": [{"peer": ln.peer, "kind": ln.kind, "detail": ln.detail}
                      for ln in self.links],
            "facts": dict(self.facts),
        }


@dataclass(frozen=True)
class AccelProcess:
    """One process holding one device, as its vendor tool lists it. The pid
    is in the vendor's view, which is the host's pid namespace when hosttune
    runs on the host (a container of its own would see other numbers)."""

    pid: int
    device: int  # global index
    memory_bytes: int | None  # None where the vendor cannot say (NVML under WDDM, ...)
    name: str | None = None
    pci_address: str | None = None
    # share of the device's compute engine (0-1) over the vendor's last
    # sampling period(s); None where the vendor keeps no per-process figure
    util: float | None = None
    mem_util: float | None = None  # share of device memory bandwidth (NVML only)
    backend: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "device": self.device, "pci_address": self.pci_address,
                "memory_bytes": self.memory_bytes, "util": self.util,
                "mem_util": self.mem_util, "name": self.name, "backend": self.backend}


@dataclass(frozen=True)
class ProcessListing:
    """What the backends said about which process uses which device.
    `problems` names each backend (or device) that could not list its
    processes and why ("no permission", "npu-smi exited 255", ...): its
    processes are then unknown, not absent. A listing with no backend able
    to list (sysfs alone) is empty with a problem, never an error."""

    processes: tuple[AccelProcess, ...] = ()
    problems: Mapping[str, str] = field(default_factory=dict)

    def by_pid(self) -> dict[int, list[AccelProcess]]:
        out: dict[int, list[AccelProcess]] = {}
        for p in self.processes:
            out.setdefault(p.pid, []).append(p)
        return out

    def problem_text(self) -> str | None:
        if not self.problems:
            return None
        return "; ".join(f"{k}: {v}" for k, v in sorted(self.problems.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"processes": [p.to_dict() for p in self.processes],
                "problems": dict(self.problems)}


@runtime_checkable
class AccelBackend(Protocol):
    """What every backend offers. Calls may block in vendor code; the
    collector (select.AccelCollector) bounds them in time."""

    name: str

    def devices(self) -> list[AccelDevice]:
        """The devices this backend serves, with global indices."""
        ...

    def reindex(self, by_address: Mapping[str, int]) -> None:
        """Adopt the host-wide index of each device, keyed by PCI address."""
        ...

    def sample(self, values: dict[str, float]) -> None:
        """Write this pass's `accel.<i>.*` numbers. Raises BackendUnavailable
        when the whole backend stopped working (driver unloaded, say)."""
        ...

    def processes(self) -> ProcessListing:
        """Which processes use which of its devices now, with memory and,
        where the vendor keeps it, utilization per process. Never raises for
        a vendor error: what could not be listed is named in `problems`."""
        ...

    def close(self) -> None:
        ...

    # Optional: a backend whose throughput reads are slow (NVML's PCIe
    # throughput) offers `read_throughput_every(passes: int) -> None`, which
    # AccelCollector calls once after opening it.


def normalize_pci_address(text: str) -> str:
    """Vendor tools print bus ids in several shapes ("00000000:3B:00.0" from
    NVML, "0000:9D:00.0" from npu-smi); sysfs uses "0000:3b:00.0"."""
    text = text.strip().lower()
    if text.count(":") == 1:
        text = "0000:" + text
    domain, rest = text.split(":", 1)
    return f"{int(domain, 16):04x}:{rest}"
