"""A plain description of what the recommender looks at: the workload class,
current knob values, telemetry rates, topology (nodes, devices with IRQs),
the AI processes and the disks. Built from a live Host by
`hosttune.agent.service.snapshot`, or written by hand in tests; the rules only ever
see the flat facts derived from it here."""

from __future__ import annotations

from dataclasses import dataclass, field

from hosttune.models.rules import FactValue

MIB = 1 << 20


@dataclass(frozen=True)
class ProcessState:
    pid: int
    comm: str
    cpus: tuple[int, ...] = ()
    rss_bytes: int = 0
    anon_huge_bytes: int = 0
    numa_pages: dict[int, int] = field(default_factory=dict)
    accel_devices: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    # private anonymous memory: what a per-process collapse can reach
    anon_bytes: int = 0
    # with the pid, names this process for the boot (a reused pid differs)
    start_time: str = ""
    # bytes/s it writes to storage, where two looks at it were compared
    write_bytes_rate: float | None = None
    # minor page faults/s measured since its last collapse pass (None before
    # one): a job that keeps touching fresh memory page by page
    fault_rate: float | None = None

    @property
    def huge_fraction(self) -> float:
        """The part of its anonymous memory in huge pages (RSS where the
        anonymous size was not read)."""
        base = self.anon_bytes or self.rss_bytes
        return self.anon_huge_bytes / base if base else 0.0

    @property
    def uses_torch(self) -> bool:
        return any("torch" in r for r in self.reasons)

    @property
    def uses_numpy(self) -> bool:
        return any("numpy" in r or "openblas" in r for r in self.reasons)


@dataclass(frozen=True)
class DeviceState:
    """A PCI device by role: accelerator, nic or nvme."""

    address: str
    role: str
    numa_node: int
    irqs: tuple[int, ...] = ()
    # device files and interface names that identify it to a process
    # (/dev/nvidia0, /dev/davinci3, eth2)
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiskState:
    name: str
    read_bytes_rate: float = 0.0
    write_bytes_rate: float = 0.0
    read_ahead_kb: int | None = None


@dataclass
class HostState:
    workload: str = "unknown"
    knobs: dict[str, str] = field(default_factory=dict)
    telemetry: dict[str, float] = field(default_factory=dict)
    nodes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    devices: tuple[DeviceState, ...] = ()
    processes: tuple[ProcessState, ...] = ()
    disks: tuple[DiskState, ...] = ()
    irq_affinity: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # knob -> where the admin set it (file:line, kernel command line)
    owned: dict[str, str] = field(default_factory=dict)
    # what could not be observed, for the report (collector -> reason)
    gaps: dict[str, str] = field(default_factory=dict)
    # CPU -> what set it apart at boot ("by isolcpus=8-15 on the kernel
    # command line"): no interrupts or placed work go there
    isolated: dict[int, str] = field(default_factory=dict)
    # what the reader should know about ownership and isolation (a tuned
    # profile that could not be read, a boot parameter the kernel ignored)
    notes: list[str] = field(default_factory=list)
    # per-process huge pages (MADV_COLLAPSE of a running process): "yes", why
    # not, or "" when nobody looked (a state written by hand)
    collapse: str = ""

    def accelerators(self) -> tuple[DeviceState, ...]:
        return tuple(d for d in self.devices if d.role == "accelerator")

    def device_for(self, name: str) -> DeviceState | None:
        for dev in self.devices:
            if name in dev.names or name == dev.address:
                return dev
        return None


def facts(state: HostState) -> dict[str, FactValue]:
    """The flat facts the rules' conditions read."""
    out: dict[str, FactValue] = dict(state.knobs)
    out.update(state.telemetry)
    out["workload.class"] = state.workload
    out["host.numa_nodes"] = max(1, len(state.nodes))
    out["host.cpus"] = sum(len(c) for c in state.nodes.values())
    out["host.accelerators"] = len(state.accelerators())
    out["host.nics"] = sum(1 for d in state.devices if d.role == "nic")
    out["host.collapse"] = "yes" if state.collapse == "yes" else "no"
    out["host.collapse_why"] = (state.collapse or "not checked") if state.collapse != "yes" \
        else "supported"

    procs = state.processes
    rss = sum(p.rss_bytes for p in procs)
    huge = sum(p.anon_huge_bytes for p in procs)
    out["ai.processes"] = len(procs)
    out["ai.torch_processes"] = sum(1 for p in procs if p.uses_torch)
    out["ai.numpy_processes"] = sum(1 for p in procs if p.uses_numpy)
    out["ai.accel_processes"] = sum(1 for p in procs if p.accel_devices)
    all_cpus = set().union(*state.nodes.values()) if state.nodes else set()
    out["ai.pinned_processes"] = sum(
        1 for p in procs if p.cpus and all_cpus and set(p.cpus) < all_cpus)
    if procs:
        out["ai.rss_bytes"] = rss
        out["ai.anon_huge_bytes"] = huge
        out["ai.rss_mib"] = round(rss / MIB)
        out["ai.anon_huge_mib"] = round(huge / MIB)
        out["ai.anon_huge_fraction"] = huge / rss if rss else 0.0

    busiest = max(state.disks, key=lambda d: d.read_bytes_rate, default=None)
    if busiest is not None and busiest.read_bytes_rate > 0:
        out["disk.busiest_read"] = busiest.name
        out["disk.busiest_read_bytes_rate"] = busiest.read_bytes_rate
        out["disk.busiest_read_mib_s"] = round(busiest.read_bytes_rate / MIB, 1)
        if busiest.read_ahead_kb is not None:
            out["disk.busiest_read_ahead_kb"] = busiest.read_ahead_kb
    return out
