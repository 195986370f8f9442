"""Choosing accelerator backends, and the Collector that samples them.

Automatic choice: sysfs finds every PCI accelerator; for each vendor that has
devices there, its backend is tried (NVML for NVIDIA, amdsmi for AMD,
`npu-smi` for Huawei). A vendor backend that opens and finds devices serves
them; sysfs serves the rest. Library backends (NVML, amdsmi) see only the
live machine, so on a fixture tree they are tried only when named in the
config; `npu-smi` runs through `Host.run` and replays recorded output there.

Config (`backends`, a list of names) restricts and orders the choice: only
the vendor backends listed are tried. sysfs always serves what no vendor
backend took: locality is known for every device.

A backend that fails (library present but no driver, a driver/library version
mismatch, a call that raises, a device that fell off the bus) degrades to
sysfs for its devices with one log line; the sampler never sees an exception
from here. Every vendor call runs in a worker thread with a deadline: a hung
call makes that pass skip the backend's metrics (logged once), and while it
stays hung the backend is skipped without waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from hosttune.agent.sense.accel.base import (
    AccelBackend,
    AccelDevice,
    AccelProcess,
    BackendUnavailable,
    ProcessListing,
)
from hosttune.agent.sense.accel.sysfs import SysfsBackend
from hosttune.agent.sense.errors import ConfigError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.pci import PCI_DEVICES
from hosttune.agent.sense.vendors import (
    VENDOR_BACKENDS,
    for_backend,
)

log = logging.getLogger("hosttune.accel")

DEFAULT_DEADLINE_S = 2.0
DEFAULT_OPEN_TIMEOUT_S = 20.0

Factory = Callable[[Host], AccelBackend]


# Each backend module is imported when its backend is tried: the three
# together cost 15 ms and 0.8 MB RSS (ctypes included), which the daemon on a
# host without that vendor's devices need not carry.


def _open_nvidia(host: Host) -> AccelBackend:
    from hosttune.agent.sense.accel.nvidia import NvidiaBackend  # see above

    return NvidiaBackend()


def _open_amd(host: Host) -> AccelBackend:
    from hosttune.agent.sense.accel.amd import AmdBackend  # see above

    return AmdBackend()


def _open_ascend(host: Host) -> AccelBackend:
    from hosttune.agent.sense.accel.ascend import AscendBackend  # see above

    return AscendBackend(host)


# The backends that exist, by the name their vendor row gives them.
DEFAULT_FACTORIES: Mapping[str, Factory] = {
    "nvidia": _open_nvidia, "amd": _open_amd, "ascend": _open_ascend,
}

# Everything below derives from the vendor table (hosttune.agent.sense.vendors).
# implemented vendor backends and sysfs, in the default order of trial
BACKEND_NAMES = (*(b for b in VENDOR_BACKENDS if b in DEFAULT_FACTORIES), "sysfs")
# names the config accepts that have no backend yet: listed, they are skipped quietly
PLANNED_BACKENDS = frozenset(b for b in VENDOR_BACKENDS if b not in DEFAULT_FACTORIES)
# backend -> the vendor name (as sysfs reports it) of the devices it serves
BACKEND_VENDORS = {b: for_backend(b).name for b in BACKEND_NAMES if b != "sysfs"}
# backends that wrap a vendor library: they see only the live machine
LIBRARY_BACKENDS = frozenset(b for b in BACKEND_NAMES if b != "sysfs" and for_backend(b).library)


def validate_backends(names: Sequence[str] | None, *, source: str | None = None) -> None:
    if names is None:
        return
    for name in names:
        if name not in BACKEND_NAMES and name not in PLANNED_BACKENDS:
            raise ConfigError(f"unknown accelerator backend {name!r} "
                              f"(known: {', '.join(BACKEND_NAMES)})",
                              path=source, key="backends")


@dataclass
class _Outcome:
    state: str  # "ok", "error", "timeout", "busy"
    value: Any = None
    error: BaseException | None = None


class _Worker:
    """Runs one backend's calls on a daemon thread so a hung vendor call can
    be abandoned: the caller waits at most `timeout`, and while the abandoned
    call is still running, later calls are refused ("busy") instead of queued."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def call(self, fn: Callable[[], Any], timeout: float) -> _Outcome:
        if self.busy:
            return _Outcome("busy")
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed to the caller, whatever it is
                box["error"] = exc
            finally:
                done.set()

        thread = threading.Thread(target=run, name=f"hosttune-accel-{self.name}", daemon=True)
        self._thread = thread
        thread.start()
        if not done.wait(timeout):
            return _Outcome("timeout")
        self._thread = None
        if "error" in box:
            return _Outcome("error", error=box["error"])
        return _Outcome("ok", box.get("value"))


@dataclass
class _Slot:
    backend: AccelBackend
    worker: _Worker
    addresses: frozenset[str]
    hung: bool = False


class AccelCollector:
    """The telemetry Collector for accelerators (name "accel"), and the one
    place that knows which backend serves which device."""

    name = "accel"

    def __init__(
        self, host: Host, backends: Sequence[str] | None = None, *,
        deadline: float = DEFAULT_DEADLINE_S, open_timeout: float = DEFAULT_OPEN_TIMEOUT_S,
        factories: Mapping[str, Factory] | None = None, pcie_every: int = 1,
    ) -> None:
        """`pcie_every`: backends whose PCIe throughput reads are slow (NVML:
        20 ms per GPU and direction) read it on every Nth pass only; 0: never.
        1 (every pass) suits a view someone asked for; the daemon passes the
        configuration's `accelerators.pcie_every`."""
        validate_backends(backends)
        if pcie_every < 0:
            raise ValueError("pcie_every must be >= 0")
        self.pcie_every = pcie_every
        self.host = host
        self.deadline = deadline
        self.open_timeout = open_timeout
        self.forced = list(backends) if backends is not None else None
        self.factories = dict(DEFAULT_FACTORIES if factories is None else factories)
        self._slots: list[_Slot] = []
        self._devices: list[AccelDevice] = []
        self._index: dict[str, int] = {}
        self._sysfs_devices: dict[str, AccelDevice] = {}
        # one log line per (backend, kind of trouble) until it recovers
        self._open()

    # -- choosing ----------------------------------------------------------

    def _wanted(self, vendors: set[str]) -> list[str]:
        """The vendor backends to try, in order. One is tried where sysfs shows
        devices of its vendor, or everywhere when this host offers no PCI
        view in sysfs at all (some containers). Backends that wrap a vendor
        library describe the live machine, so on a fixture tree they are
        tried only when listed explicitly or given as a test factory."""
        order = self.forced if self.forced is not None else list(BACKEND_VENDORS)
        no_pci_view = not self.host.is_dir(PCI_DEVICES)
        wanted = []
        for name in order:
            if name == "sysfs" or name in wanted:
                continue
            if name not in self.factories:
                log.debug("accel: backend %s is not implemented; skipped", name)
                continue
            if BACKEND_VENDORS.get(name) not in vendors and not no_pci_view:
                continue
            if name in LIBRARY_BACKENDS and not self.host.is_live and self.forced is None \
                    and self.factories[name] is DEFAULT_FACTORIES.get(name):
                continue
            wanted.append(name)
        return wanted

    def _open(self) -> None:
        sysfs_all = SysfsBackend(self.host)
        self._sysfs_devices = {d.pci_address: d for d in sysfs_all.devices() if d.pci_address}
        counts: dict[str, int] = {}
        for d in self._sysfs_devices.values():
            counts[d.vendor] = counts.get(d.vendor, 0) + 1
        opened: list[tuple[AccelBackend, _Worker, list[AccelDevice]]] = []
        for name in self._wanted(set(counts)):
            factory = self.factories.get(name)
            if factory is None:
                log.warning("accel: no way to open backend %s here; using sysfs", name)
                continue
            worker = _Worker(name)
            outcome = worker.call(partial(_open_and_list, factory, self.host), self.open_timeout)
            vendor = BACKEND_VENDORS.get(name, name)
            seen = counts.get(vendor, 0)
            if outcome.state == "ok":
                backend, devices = outcome.value
                throttle = getattr(backend, "read_throughput_every", None)
                if callable(throttle):
                    throttle(self.pcie_every)
                opened.append((backend, worker, devices))
                continue
            if outcome.state == "timeout":
                why = f"did not open within {self.open_timeout:g} s"
            else:
                err = outcome.error
                why = err.reason if isinstance(err, BackendUnavailable) \
                    else f"{type(err).__name__}: {err}"
            if seen:
                log.warning("accel: %s backend unavailable (%s); using sysfs for %d %s device%s",
                            name, why, seen, vendor, "" if seen == 1 else "s")
            else:
                log.debug("accel: %s backend not used: %s", name, why)
        self._assemble(opened)

    def _assemble(self, opened: list[tuple[AccelBackend, _Worker, list[AccelDevice]]]) -> None:
        """Give every device one host-wide index (PCI address order), attach
        each to the backend that serves it, and let sysfs take the rest."""
        taken: dict[str, AccelDevice] = {}
        loose: list[AccelDevice] = []
        for _backend, _worker, devices in opened:
            for d in devices:
                if d.pci_address and d.pci_address not in taken:
                    taken[d.pci_address] = d
                elif not d.pci_address:
                    loose.append(d)
        addresses = sorted(set(self._sysfs_devices) | set(taken))
        self._index = {a: n for n, a in enumerate(addresses)}
        slots = []
        for backend, worker, devices in opened:
            backend.reindex(self._index)
            slots.append(_Slot(backend, worker,
                               frozenset(d.pci_address for d in devices if d.pci_address)))
        rest = set(self._sysfs_devices) - set(taken)
        if rest:
            sysfs = SysfsBackend(self.host, only=rest)
            sysfs.reindex(self._index)
            slots.append(_Slot(sysfs, _Worker("sysfs"), frozenset(rest)))
        self._slots = slots
        self._devices = self._describe(loose_start=len(addresses), loose=loose)

    def _describe(self, *, loose_start: int = 0,
                  loose: Sequence[AccelDevice] = ()) -> list[AccelDevice]:
        merged: dict[int, AccelDevice] = {}
        for slot in self._slots:
            outcome = slot.worker.call(slot.backend.devices, self.open_timeout)
            if outcome.state != "ok":
                devices = [replace(self._sysfs_devices[a], index=self._index[a])
                           for a in slot.addresses if a in self._sysfs_devices]
            else:
                devices = outcome.value
            for d in devices:
                merged[d.index] = _fill_from_sysfs(d, self._sysfs_devices.get(d.pci_address or ""))
        for n, d in enumerate(loose):
            merged[loose_start + n] = replace(d, index=loose_start + n)
        return [merged[i] for i in sorted(merged)]

    # -- what callers use --------------------------------------------------

    @property
    def backend_names(self) -> list[str]:
        """The backends serving devices now, in order, each named once."""
        names: list[str] = []
        for slot in self._slots:
            if slot.backend.name not in names:
                names.append(slot.backend.name)
        return names

    def devices(self) -> list[AccelDevice]:
        return list(self._devices)

    def collect(self, values: dict[str, float]) -> None:
        for slot in list(self._slots):
            self._sample(slot, values, may_degrade=True)
        values["accel.count"] = float(len(self._devices))

    def _sample(self, slot: _Slot, values: dict[str, float], *, may_degrade: bool) -> None:
        # the backend writes into its own dict: an abandoned call that finishes
        # later must not leak numbers into a later pass
        local: dict[str, float] = {}
        outcome = slot.worker.call(partial(slot.backend.sample, local), self.deadline)
        if outcome.state == "ok":
            if slot.hung:
                slot.hung = False
                log.warning("accel: %s backend answers again", slot.backend.name)
            values.update(local)
        elif outcome.state == "timeout":
            if not slot.hung:
                slot.hung = True
                log.warning("accel: %s backend did not answer within %g s; its metrics are "
                            "skipped until it does", slot.backend.name, self.deadline)
        elif outcome.state == "error":
            replacement = self._degrade(slot, outcome.error)
            if replacement is not None and may_degrade:
                self._sample(replacement, values, may_degrade=False)
        # "busy": the abandoned call still hangs; skip it without waiting

    def _degrade(self, slot: _Slot, error: BaseException | None) -> _Slot | None:
        name = slot.backend.name
        why = error.reason if isinstance(error, BackendUnavailable) \
            else f"{type(error).__name__}: {error}"
        if name == "sysfs":
            # nothing to fall back to; sysfs reads are tolerant, so this is a bug: say it
            log.warning("accel: sysfs backend failed (%s); accel metrics skipped this pass", why)
            return None
        log.warning("accel: %s backend failed (%s); falling back to sysfs for its %d device%s",
                    name, why, len(slot.addresses), "" if len(slot.addresses) == 1 else "s")
        slot.worker.call(slot.backend.close, self.deadline)
        sysfs = SysfsBackend(self.host, only=set(slot.addresses))
        sysfs.reindex(self._index)
        replacement = _Slot(sysfs, _Worker("sysfs"), slot.addresses)
        self._slots[self._slots.index(slot)] = replacement
        self._devices = self._describe()
        return replacement

    def processes(self) -> ProcessListing:
        """Every backend's process listing in one, each call bounded by the
        deadline like a sample. A backend that hangs, raises or cannot list
        is named in `problems`; this never raises."""
        out: list[AccelProcess] = []
        problems: dict[str, str] = {}
        for slot in list(self._slots):
            name = slot.backend.name
            outcome = slot.worker.call(slot.backend.processes, self.deadline)
            if outcome.state == "ok" and isinstance(outcome.value, ProcessListing):
                out.extend(outcome.value.processes)
                problems.update(outcome.value.problems)
            elif outcome.state == "timeout":
                problems[name] = f"did not answer within {self.deadline:g} s"
            elif outcome.state == "busy":
                problems[name] = "an earlier call still hangs"
            else:
                err = outcome.error
                problems[name] = (err.reason if isinstance(err, BackendUnavailable)
                                  else f"{type(err).__name__}: {err}")
        return ProcessListing(tuple(out), problems)

    def close(self) -> None:
        for slot in self._slots:
            slot.worker.call(slot.backend.close, self.deadline)
        self._slots = []


def _open_and_list(factory: Factory, host: Host) -> tuple[AccelBackend, list[AccelDevice]]:
    backend = factory(host)
    try:
        return backend, backend.devices()
    except BaseException:
        backend.close()
        raise


def _fill_from_sysfs(dev: AccelDevice, sysfs: AccelDevice | None) -> AccelDevice:
    """Vendor libraries know the device; sysfs knows where it sits. Keep the
    vendor's answers and fill what it left out."""
    if sysfs is None:
        return dev
    facts = {**sysfs.facts, **dev.facts}
    return replace(
        dev,
        numa_node=dev.numa_node if dev.numa_node is not None else sysfs.numa_node,
        local_cpus=dev.local_cpus or sysfs.local_cpus,
        memory_total_bytes=dev.memory_total_bytes if dev.memory_total_bytes is not None
        else sysfs.memory_total_bytes,
        driver=sysfs.driver or dev.driver,
        pcie_link_speed=dev.pcie_link_speed or sysfs.pcie_link_speed,
        pcie_link_width=dev.pcie_link_width or sysfs.pcie_link_width,
        pcie_max_link_speed=dev.pcie_max_link_speed or sysfs.pcie_max_link_speed,
        pcie_max_link_width=dev.pcie_max_link_width or sysfs.pcie_max_link_width,
        irqs=dev.irqs or sysfs.irqs,
        facts=facts,
    )
