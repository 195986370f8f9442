"""The recommender's snapshot of a host (`HostState`): the telemetry the
caller already holds (the daemon's latest sample and rates), plus host facts:
knob values through the tuners, NUMA nodes and devices through topology
discovery, admin ownership and isolated CPUs through sense.ownership. A part
that cannot be observed is recorded in `gaps` and the rest still works:
recommend must never fail because one /proc file is odd.

Only a caller without samples of its own (`hosttune recommend` with no daemon,
`hosttune tune`) takes a short window here, through `sample_window`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hosttune.agent.sense import procmem
from hosttune.agent.sense.accel.sysfs import device_file
from hosttune.agent.sense.cpulist import parse_cpulist
from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.ownership import cpu_reservations, owner_of
from hosttune.agent.sense.sample import Sample
from hosttune.agent.sense.telemetry.sampler import open_sampler, rates
from hosttune.agent.sense.topology import discover
from hosttune.models.rules import Leaf, Node, load_priors
from hosttune.models.state import DeviceState, DiskState, HostState, ProcessState
from hosttune.tuners.owners import owners_report
from hosttune.tuners.registry import bind_tuners, tuner_and_key


@dataclass(frozen=True)
class Telemetry:
    """A sample and its rates against the sample before it."""

    sample: Sample
    rates: Mapping[str, float]


def sample_window(host: Host, seconds: float) -> Telemetry | str:
    """Two samples `seconds` apart, for a caller that holds none (text: why
    there are none)."""
    try:
        sampler = open_sampler(host, accelerators=False)
        try:
            first = sampler.sample()
            time.sleep(seconds)
            second = sampler.sample()
        finally:
            sampler.close()
    except HosttuneError as exc:
        return str(exc)
    return Telemetry(second, rates(first, second))


def _leaf_facts(cond: Leaf | Node) -> Iterable[str]:
    if isinstance(cond, Leaf):
        yield cond.fact
    else:
        for child in cond.children:
            yield from _leaf_facts(child)


def prior_knobs() -> list[str]:
    """Every knob the priors read or set (templated ones are filled per disk)."""
    names: dict[str, None] = {}
    for rule in load_priors().rules:
        for fact in _leaf_facts(rule.when):
            if ":" in fact:
                names[fact] = None
        for knob in rule.knobs:
            if "{" not in knob:
                names[knob] = None
    return list(names)


def read_knobs(host: Host, knobs: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Current values of the knobs this host has, and why others were skipped."""
    tuners = bind_tuners(host)
    values: dict[str, str] = {}
    gaps: dict[str, str] = {}
    for knob in knobs:
        try:
            tuner, key = tuner_and_key(tuners, knob)
            if not tuner.available(key):
                continue
            values[knob] = tuner.read(key)
        except HosttuneError as exc:
            gaps[f"knob {knob}"] = str(exc)
    return values, gaps


def owned_knobs(host: Host, knobs: Iterable[str],
                notes: list[str] | None = None) -> dict[str, str]:
    """knob -> who owns it and where ("owned by the administrator: set in
    /etc/sysctl.d/90-ai.conf:3 (...)", "owned by a peer tuning daemon: tuned
    profile ..."); what could not be read goes to `notes`."""
    owned, found_notes = owners_report(host)
    if notes is not None:
        notes.extend(found_notes)
    out: dict[str, str] = {}
    for knob in knobs:
        owner = owner_of(knob, owned)
        if owner is not None:
            out[knob] = owner.why()
    return out


def observe_isolation(host: Host, state: HostState) -> None:
    """The CPUs the admin set apart at boot, and what set them apart."""
    isolation = cpu_reservations(host)
    state.isolated = isolation.by_cpu()
    state.notes.extend(isolation.notes)


def observe(host: Host, *, workload: str, window: float = 1.0) -> HostState:
    """The snapshot for a caller that holds no samples: a `window`-second
    sample of its own, then `host_state`."""
    return host_state(host, workload=workload, telemetry=sample_window(host, window))


def host_state(host: Host, *, workload: str, telemetry: Telemetry | str | None) -> HostState:
    """The recommender's snapshot from the telemetry the caller holds (text:
    why it has none)."""
    state = HostState(workload=workload)
    state.collapse = procmem.collapse_unsupported(host) or "yes"
    observe_topology(host, state)
    observe_isolation(host, state)
    if isinstance(telemetry, Telemetry):
        _add_telemetry(state, telemetry)
    else:
        state.gaps["telemetry"] = telemetry or "no sample taken yet"
    knobs = prior_knobs()
    knobs += [f"block:{d.name}:read_ahead_kb" for d in state.disks]
    knobs += [f"irq:{irq}" for dev in state.devices for irq in dev.irqs]
    values, gaps = read_knobs(host, knobs)
    state.knobs.update(values)
    state.gaps.update({k: v for k, v in gaps.items() if not k.startswith("knob irq:")})
    for disk in state.disks:
        ra = values.get(f"block:{disk.name}:read_ahead_kb")
        if ra is not None and ra.isdigit():
            idx = state.disks.index(disk)
            state.disks = (*state.disks[:idx],
                           DiskState(disk.name, disk.read_bytes_rate, disk.write_bytes_rate,
                                     int(ra)), *state.disks[idx + 1:])
    for dev in state.devices:
        for irq in dev.irqs:
            text = values.get(f"irq:{irq}")
            if text is not None:
                state.irq_affinity[irq] = parse_cpulist(text)
    try:
        # placement and IRQ knobs are proposed whether or not they were read
        candidates = [*state.knobs, *(f"numa:pid:{p.pid}" for p in state.processes),
                      *(f"irq:{irq}" for dev in state.devices for irq in dev.irqs)]
        state.owned = owned_knobs(host, dict.fromkeys(candidates), state.notes)
    except HosttuneError as exc:
        state.gaps["ownership"] = str(exc)
    return state


def observe_topology(host: Host, state: HostState) -> None:
    try:
        topo = discover(host, netifs=False)
    except HosttuneError as exc:
        state.gaps["topology"] = str(exc)
        return
    for part, why in topo.gaps.items():
        state.gaps[f"topology {part}"] = why
    nodes = {n.id: tuple(n.cpus) for n in topo.nodes}
    devices: list[DeviceState] = []
    per_driver: dict[str, int] = {}
    for dev in topo.pci:
        if dev.role not in ("accelerator", "nic", "nvme"):
            continue
        names: tuple[str, ...] = dev.netdevs + dev.block_devs
        driver = dev.driver or ""
        dev_file = (device_file(host, dev, per_driver.get(driver, 0))
                    if dev.role == "accelerator" else None)
        if dev_file is not None:
            per_driver[driver] = per_driver.get(driver, 0) + 1
            names = (dev_file, *names)
        node = dev.numa_node if dev.numa_node is not None else -1
        devices.append(DeviceState(dev.address, dev.role, node, tuple(dev.irqs), names))
        # A tree without /sys/devices/system/node (a capture of PCI only)
        # still says which CPUs are local to each device.
        if node >= 0 and node not in nodes and dev.local_cpus:
            nodes[node] = tuple(dev.local_cpus)
    state.nodes = dict(sorted(nodes.items()))
    state.devices = tuple(devices)


def _add_telemetry(state: HostState, telemetry: Telemetry) -> None:
    second = telemetry.sample
    values = dict(second.values)
    values.update(telemetry.rates)
    state.telemetry = {k: float(v) for k, v in values.items()}
    disks: dict[str, DiskState] = {}
    for name, value in values.items():
        parts = name.split(".")
        if len(parts) >= 3 and parts[0] == "disk" and parts[2] == "read_bytes" and (
                len(parts) == 4 and parts[3] == "rate"):
            disks[parts[1]] = DiskState(parts[1], read_bytes_rate=float(value))
    state.disks = tuple(disks[k] for k in sorted(disks))
    state.processes = tuple(
        ProcessState(pid=p.pid, comm=p.comm, cpus=tuple(p.cpus), rss_bytes=p.rss_bytes,
                     anon_huge_bytes=p.anon_huge_bytes, numa_pages=dict(p.numa_pages),
                     accel_devices=tuple(p.accel_devices), reasons=tuple(p.reasons),
                     anon_bytes=p.anon_bytes, start_time=p.start_time)
        for p in second.processes)
