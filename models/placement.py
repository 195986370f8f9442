"""Topology-aware placement: each AI process on the NUMA node of the
accelerators it drives, its CPUs and memory there; the interrupts of those
accelerators and of the NICs on that node served on the same node but off
the cores that feed the accelerators.

CPUs the admin isolated at boot (`HostState.isolated`: isolcpus=, nohz_full=,
...) are reserved for latency-critical work: no interrupt is placed there,
they are never counted as housekeeping cores, and a process is placed there
only on the isolated CPUs it was already pinned to."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hosttune.agent.sense.cpulist import format_cpulist
from hosttune.models.state import HostState, ProcessState


@dataclass(frozen=True)
class ProcessPlacement:
    pid: int
    comm: str
    node: int
    cpus: tuple[int, ...]  # the feeder cores it should run on
    current_cpus: tuple[int, ...]
    memory_off_node_pages: int
    accelerators: tuple[str, ...]

    @property
    def needs_change(self) -> bool:
        return set(self.current_cpus) != set(self.cpus) or self.memory_off_node_pages > 0


@dataclass(frozen=True)
class IrqPlacement:
    irq: int
    device: str
    role: str
    node: int
    cpus: tuple[int, ...]
    current: tuple[int, ...]
    feeders: tuple[int, ...]

    @property
    def needs_change(self) -> bool:
        return set(self.current) != set(self.cpus)


@dataclass(frozen=True)
class NodePlan:
    node: int
    irq_cpus: tuple[int, ...]
    processes: tuple[ProcessPlacement, ...]
    irqs: tuple[IrqPlacement, ...]
    isolated: tuple[int, ...] = ()  # the node's CPUs the admin isolated
    notes: tuple[str, ...] = ()


def _process_node(state: HostState, proc: ProcessState) -> tuple[int, tuple[str, ...]] | None:
    nodes: Counter[int] = Counter()
    names: list[str] = []
    for dev_name in proc.accel_devices:
        dev = state.device_for(dev_name)
        if dev is None or dev.role != "accelerator" or dev.numa_node < 0:
            continue
        nodes[dev.numa_node] += 1
        names.append(dev.address)
    if not nodes:
        return None
    # A process driving accelerators on two nodes goes where most of them are.
    return nodes.most_common(1)[0][0], tuple(names)


def irq_cores(node_cpus: tuple[int, ...]) -> tuple[int, ...]:
    """The housekeeping cores of a node that serve interrupts: one in eight,
    at least one, taken from the top of the node's list (the scheduler fills
    from the bottom). A one-CPU node has none to spare."""
    if len(node_cpus) < 2:
        return ()
    count = max(1, len(node_cpus) // 8)
    return tuple(sorted(node_cpus)[-count:])


def plan_placement(state: HostState) -> list[NodePlan]:
    by_node: dict[int, list[tuple[ProcessState, tuple[str, ...]]]] = {}
    for proc in state.processes:
        found = _process_node(state, proc)
        if found is None:
            continue
        node, accels = found
        if node in state.nodes:
            by_node.setdefault(node, []).append((proc, accels))

    isolated = set(state.isolated)
    all_cpus = set().union(*state.nodes.values()) if state.nodes else set()
    plans: list[NodePlan] = []
    for node in sorted(by_node):
        node_cpus = tuple(sorted(state.nodes[node]))
        node_isolated = tuple(c for c in node_cpus if c in isolated)
        # The CPUs hosttune may give work or interrupts to on this node.
        usable = tuple(c for c in node_cpus if c not in isolated)
        notes: list[str] = []
        members = sorted(by_node[node], key=lambda item: item[0].pid)
        node_set = set(node_cpus)
        # A process already pinned inside the node keeps its cores (isolated
        # ones included: it runs there by the admin's choice); the rest of the
        # node's usable cores (less the IRQ cores) are shared out among the others.
        pinned = [(p, a) for p, a in members if p.cpus and set(p.cpus) < node_set]
        loose = [(p, a) for p, a in members if (p, a) not in pinned]
        taken = set().union(*(set(p.cpus) for p, _ in pinned)) if pinned else set()
        spare = tuple(c for c in usable if c not in taken)
        irq_set = tuple(c for c in irq_cores(usable) if c not in taken) or tuple(
            c for c in spare[-1:])
        pool = [c for c in spare if c not in irq_set]
        placements: list[ProcessPlacement] = []
        for p, accels in pinned:
            placements.append(_placement(p, node, tuple(sorted(p.cpus)), accels))
        if loose and not usable:
            notes.append(f"every CPU of node {node} is isolated: its AI processes are left "
                         "where they run")
            loose = []
        if loose:
            share = max(1, len(pool) // len(loose)) if pool else 0
            for i, (p, accels) in enumerate(loose):
                cpus = tuple(pool[i * share:(i + 1) * share]) if share else usable
                if i == len(loose) - 1 and share:
                    cpus = tuple(pool[i * share:])  # the remainder to the last one
                # isolated CPUs of the node it was deliberately pinned to stay its own
                deliberate = bool(p.cpus) and not set(p.cpus) >= all_cpus
                kept = (set(p.cpus) & isolated & node_set) if deliberate else set()
                cpus = tuple(sorted(set(cpus or usable) | kept))
                placements.append(_placement(p, node, cpus, accels))
        feeders = tuple(sorted(set().union(*(set(pl.cpus) for pl in placements))))
        target = tuple(c for c in usable if c not in feeders) or irq_set or usable
        irqs: list[IrqPlacement] = []
        used_accels = {a for pl in placements for a in pl.accelerators}
        for dev in state.devices:
            if dev.numa_node != node or not target:
                continue
            if dev.role == "accelerator" and dev.address not in used_accels:
                continue
            if dev.role not in ("accelerator", "nic"):
                continue
            for irq in dev.irqs:
                irqs.append(IrqPlacement(
                    irq=irq, device=dev.address, role=dev.role, node=node, cpus=target,
                    current=state.irq_affinity.get(irq, ()), feeders=feeders))
        if not target:
            notes.append(f"every CPU of node {node} is isolated: its device interrupts are "
                         "left where they are")
        plans.append(NodePlan(node=node, irq_cpus=target, processes=tuple(placements),
                              irqs=tuple(irqs), isolated=node_isolated, notes=tuple(notes)))
    return plans


def _placement(proc: ProcessState, node: int, cpus: tuple[int, ...],
               accels: tuple[str, ...]) -> ProcessPlacement:
    off = sum(pages for n, pages in proc.numa_pages.items() if n != node)
    return ProcessPlacement(pid=proc.pid, comm=proc.comm, node=node, cpus=cpus,
                            current_cpus=proc.cpus, memory_off_node_pages=off,
                            accelerators=accels)


def describe_cpus(cpus: tuple[int, ...]) -> str:
    return format_cpulist(cpus) if cpus else "(none)"
