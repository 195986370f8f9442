"""NVIDIA GPUs through NVML (the nvidia-ml-py package, module `pynvml`).

Error handling follows NVML's return codes (nvml.h): NOT_SUPPORTED leaves that
metric absent for the device from then on; GPU_IS_LOST marks the device lost
(it fell off the bus; the rest keep being sampled); DRIVER_NOT_LOADED,
LIBRARY_NOT_FOUND, LIB_RM_VERSION_MISMATCH and UNINITIALIZED mean the whole
backend is unusable (BackendUnavailable), and the caller falls back to sysfs.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from hosttune.agent.sense.accel.base import (
    AccelDevice,
    AccelLink,
    AccelProcess,
    BackendUnavailable,
    ProcessListing,
    metric_name,
    normalize_pci_address,
)
from hosttune.agent.sense.accel.library import Fault, LibraryBackend, LibraryDevice
from hosttune.agent.sense.vendors import for_backend

log = logging.getLogger("hosttune.accel")

# nvml.h nvmlReturn_t values, used when the module lacks a constant (old bindings).
_FATAL_NAMES = ("NVML_ERROR_DRIVER_NOT_LOADED", "NVML_ERROR_LIBRARY_NOT_FOUND",
                "NVML_ERROR_LIB_RM_VERSION_MISMATCH", "NVML_ERROR_UNINITIALIZED")
_ABSENT_NAMES = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND",
                 "NVML_ERROR_INVALID_ARGUMENT", "NVML_ERROR_NO_DATA")

# nvmlGpuTopologyLevel_t -> the path kind AccelLink names
_TOPOLOGY_KINDS = {0: "board", 10: "pcie-switch", 20: "pcie-switches", 30: "pcie-hostbridge",
                   40: "numa", 50: "system"}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class _Gpu(LibraryDevice):
    xid_events: int | None = None  # None: not registered for Xid events
    xids_seen: set[int] = field(default_factory=set)
    # NVML timestamp (µs) of the newest per-process utilization sample
    # read: the next read asks only for samples after it
    util_seen: int = 0


class NvidiaBackend(LibraryBackend[_Gpu]):
    name = "nvidia"
    vendor = for_backend(name)
    lost_words = "fell off the bus"

    def __init__(self, nvml: ModuleType | None = None, *, cpu_count: int | None = None,
                 pcie_every: int = 1) -> None:
        """`nvml` is the pynvml module (tests pass the real one loaded against
        a fake libnvidia-ml); None imports it. `pcie_every`: see
        `read_throughput_every`."""
        super().__init__()
        self.read_throughput_every(pcie_every)
        self._passes = 0
        if nvml is None:
            try:
                # optional: nvidia-ml-py is installed only where NVIDIA GPUs are
                import pynvml
            except ImportError as exc:
                raise BackendUnavailable(self.name, f"nvidia-ml-py is not installed ({exc})") \
                    from None
            nvml = pynvml
        self.nvml: Any = nvml
        # the affinity array must cover every CPU the host may have; the
        # process may see fewer (containers, cpusets), so never size it below 1024
        self._cpu_words = math.ceil(max(cpu_count or 0, os.cpu_count() or 0, 1024) / 64)
        self._fatal = {getattr(nvml, n) for n in _FATAL_NAMES if hasattr(nvml, n)}
        self._absent = {getattr(nvml, n) for n in _ABSENT_NAMES if hasattr(nvml, n)}
        self._lost_code = getattr(nvml, "NVML_ERROR_GPU_IS_LOST", 15)
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise BackendUnavailable(self.name, f"NVML init failed: {exc}") from None
        self._initialised = True
        try:
            count = nvml.nvmlDeviceGetCount()
            gpus = []
            for i in range(count):
                try:
                    handle = nvml.nvmlDeviceGetHandleByIndex(i)
                    pci = nvml.nvmlDeviceGetPciInfo(handle)
                except nvml.NVMLError as exc:
                    if getattr(exc, "value", None) != self._lost_code:
                        raise
                    # NVML cannot even say where it is; sysfs still lists it
                    log.warning("accel: NVIDIA GPU %d is lost (NVML: %s); left to sysfs", i, exc)
                    continue
                gpus.append(_Gpu(i, handle, normalize_pci_address(_text(pci.busId)), i))
        except nvml.NVMLError as exc:
            self.close()
            raise BackendUnavailable(self.name, f"NVML cannot list GPUs: {exc}") from None
        if not gpus:
            self.close()
            raise BackendUnavailable(self.name, "NVML finds no usable GPU")
        self._devices = gpus
        self._events = self._register_xid_events()

    def _register_xid_events(self) -> Any | None:
        """Xid errors arrive as NVML events (nvmlEventTypeXidCriticalError);
        each pass drains the set without waiting. GPUs that cannot register
        (NOT_SUPPORTED on some boards, or without root) report no Xid count."""
        nvml = self.nvml
        try:
            events = nvml.nvmlEventSetCreate()
        except nvml.NVMLError:
            return None
        for gpu in self._devices:
            try:
                nvml.nvmlDeviceRegisterEvents(gpu.handle, nvml.nvmlEventTypeXidCriticalError,
                                              events)
            except nvml.NVMLError:
                continue  # any trouble with the GPU itself shows in the first sample
            gpu.xid_events = 0
        return events

    def _drain_xid_events(self) -> None:
        nvml = self.nvml
        by_handle = {_address(g.handle): g for g in self._devices}
        for _ in range(256):  # a bound, should a storm of events keep coming
            try:
                event = nvml.nvmlEventSetWait_v2(self._events, 0)
            except nvml.NVMLError:
                return  # TIMEOUT: nothing pending (or the set broke: try next pass)
            gpu = by_handle.get(_address(event.device))
            if gpu is None or gpu.xid_events is None:
                continue
            gpu.xid_events += 1
            xid = int(event.eventData)
            if xid not in gpu.xids_seen:
                gpu.xids_seen.add(xid)
                log.warning("accel: NVIDIA GPU %d (%s) reported Xid %d", gpu.local, gpu.address,
                            xid)

    def read_throughput_every(self, passes: int) -> None:
        """Read PCIe throughput on every `passes`-th sampling pass (the first
        pass included), all GPUs on the same pass; 0: never. NVML measures it
        by watching the link for 20 ms per GPU and direction, so one read of
        8 GPUs holds a pass for ~320 ms, against well under a millisecond for
        everything else. The passes in between leave the two metrics absent
        (unknown), so a window's mean is the mean of real readings."""
        if passes < 0:
            raise ValueError("passes must be >= 0")
        self.pcie_every = passes

    # -- helpers -----------------------------------------------------------

    def fault(self, exc: Exception) -> Fault | None:
        nvml = self.nvml
        if isinstance(exc, nvml.NVMLError):
            code = getattr(exc, "value", None)
            if code == self._lost_code:
                return Fault.LOST
            if code in self._fatal:
                return Fault.FATAL
            return Fault.UNSUPPORTED if code in self._absent else Fault.TRANSIENT
        # pynvml raises NVMLLibraryMismatchError (not an NVMLError) when an
        # unversioned function is missing from an older driver's library
        if type(exc).__name__ == "NVMLLibraryMismatchError":
            return Fault.UNSUPPORTED
        return None

    # -- AccelBackend ------------------------------------------------------

    def devices(self) -> list[AccelDevice]:
        nvml = self.nvml
        out = []
        for gpu in self._devices:
            h = gpu.handle
            name = self._call(gpu, "name", nvml.nvmlDeviceGetName, h)
            uuid = self._call(gpu, "uuid", nvml.nvmlDeviceGetUUID, h)
            serial = self._call(gpu, "serial", nvml.nvmlDeviceGetSerial, h)
            mem = self._call(gpu, "memory", nvml.nvmlDeviceGetMemoryInfo, h)
            cpus = self._call(gpu, "cpu_affinity",
                              nvml.nvmlDeviceGetCpuAffinity, h, self._cpu_words)
            nodes = self._call(gpu, "memory_affinity", nvml.nvmlDeviceGetMemoryAffinity, h, 1,
                               getattr(nvml, "NVML_AFFINITY_SCOPE_NODE", 0))
            persistence = self._call(gpu, "persistence",
                                     nvml.nvmlDeviceGetPersistenceMode, h)
            facts: dict[str, str] = {}
            if persistence is not None:
                facts["persistence_mode"] = "enabled" if persistence else "disabled"
            nvlinks = self._active_nvlinks(gpu)
            if nvlinks is not None:
                facts["nvlinks_active"] = str(nvlinks)
            if gpu.lost:
                facts["state"] = "lost"
            node_list = _bits(nodes) if nodes is not None else []
            out.append(AccelDevice(
                index=gpu.index, vendor=self.vendor.name, backend=self.name,
                pci_address=gpu.address,
                model=_text(name) if name is not None else None, vendor_index=gpu.local,
                numa_node=node_list[0] if len(node_list) == 1 else None,
                local_cpus=tuple(_bits(cpus)) if cpus is not None else (),
                memory_total_bytes=int(mem.total) if mem is not None else None,
                driver=self.vendor.driver, serial=_text(serial) if serial is not None else None,
                uuid=_text(uuid) if uuid is not None else None,
                links=self._links(gpu), facts=facts,
            ))
        return out

    def _active_nvlinks(self, gpu: _Gpu) -> int | None:
        nvml = self.nvml
        active = 0
        for link in range(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18)):
            try:
                state = nvml.nvmlDeviceGetNvLinkState(gpu.handle, link)
            except nvml.NVMLError as exc:
                if getattr(exc, "value", None) == self._lost_code:
                    gpu.lost = True
                # links past the last one, or no NVLink at all
                return active if link else None
            active += 1 if state else 0
        return active

    def _links(self, gpu: _Gpu) -> tuple[AccelLink, ...]:
        nvml = self.nvml
        links = []
        nvlink_index = getattr(nvml, "NVML_P2P_CAPS_INDEX_NVLINK", 2)
        ok = getattr(nvml, "NVML_P2P_STATUS_OK", 0)
        for peer in self._devices:
            if peer is gpu or gpu.lost or peer.lost:
                continue
            status = self._call(gpu, "p2p_nvlink", nvml.nvmlDeviceGetP2PStatus,
                                gpu.handle, peer.handle, nvlink_index)
            level = self._call(gpu, "topology", nvml.nvmlDeviceGetTopologyCommonAncestor,
                               gpu.handle, peer.handle)
            path = _TOPOLOGY_KINDS.get(level, f"level-{level}") if level is not None else ""
            if status is not None and status == ok:
                links.append(AccelLink(peer.index, "nvlink", f"PCIe path: {path}" if path else ""))
            elif level is not None:
                links.append(AccelLink(peer.index, path))
        return tuple(links)

    def sample(self, values: dict[str, float]) -> None:
        nvml = self.nvml
        if self._events is not None:
            self._drain_xid_events()
        every = self.pcie_every
        pcie = every > 0 and self._passes % every == 0
        self._passes += 1
        for gpu in self._devices:
            h = gpu.handle
            i = gpu.index
            if gpu.xid_events is not None:
                values[metric_name(i, "xid_errors")] = float(gpu.xid_events)
            if gpu.lost:
                values[metric_name(i, "lost")] = 1.0
                continue

            def put(suffix: str, fn: Callable[..., Any], *args: Any, scale: float = 1.0,
                    gpu: _Gpu = gpu, i: int = i) -> None:
                value = self._call(gpu, suffix, fn, *args)
                if value is not None:
                    values[metric_name(i, suffix)] = float(value) * scale

            util = self._call(gpu, "util", nvml.nvmlDeviceGetUtilizationRates, h)
            if util is not None:
                values[metric_name(i, "util")] = util.gpu / 100.0
                values[metric_name(i, "mem_util")] = util.memory / 100.0
            mem = self._call(gpu, "memory", nvml.nvmlDeviceGetMemoryInfo, h)
            if mem is not None:
                values[metric_name(i, "mem_used_bytes")] = float(mem.used)
                values[metric_name(i, "mem_total_bytes")] = float(mem.total)
            # NVML reports power in milliwatts, PCIe throughput in KB/s
            put("power_watts", nvml.nvmlDeviceGetPowerUsage, h, scale=1e-3)
            put("power_limit_watts", nvml.nvmlDeviceGetEnforcedPowerLimit, h, scale=1e-3)
            put("temp_c", nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU)
            put("sm_clock_mhz", nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM)
            put("mem_clock_mhz", nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_MEM)
            if pcie:
                put("pcie_tx_bytes", nvml.nvmlDeviceGetPcieThroughput, h,
                    nvml.NVML_PCIE_UTIL_TX_BYTES, scale=1024.0)
                put("pcie_rx_bytes", nvml.nvmlDeviceGetPcieThroughput, h,
                    nvml.NVML_PCIE_UTIL_RX_BYTES, scale=1024.0)
            put("pcie_link_gen", nvml.nvmlDeviceGetCurrPcieLinkGeneration, h)
            put("pcie_link_width", nvml.nvmlDeviceGetCurrPcieLinkWidth, h)
            put("ecc_errors", nvml.nvmlDeviceGetTotalEccErrors, h,
                nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC)
            put("ecc_corrected", nvml.nvmlDeviceGetTotalEccErrors, h,
                nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC)
            put("retired_pages", self._retired_pages, h)
            procs = self._call(gpu, "processes",
                               nvml.nvmlDeviceGetComputeRunningProcesses, h)
            if procs is not None:
                values[metric_name(i, "processes")] = float(len(procs))
            # a call above may have found the GPU gone
            values[metric_name(i, "lost")] = 1.0 if gpu.lost else 0.0

    def reason(self, exc: Exception) -> str:
        code = getattr(exc, "value", None)
        words = _CODE_WORDS.get(code) if isinstance(code, int) else None
        return words or str(exc)

    def processes(self) -> ProcessListing:
        """Compute and graphics processes of every GPU (a CUDA program that
        also draws is listed by both: once here, with the larger memory
        figure), and each one's SM and memory-bandwidth share from NVML's
        per-process utilization samples since the last call.

        Shapes are pynvml's (nvidia-ml-py 13.x, pynvml.py): the running
        process lists are nvmlFriendlyObjects with `pid` and
        `usedGpuMemory`, which pynvml sets to None where NVML says
        NVML_VALUE_NOT_AVAILABLE (the raw all-ones value is treated the
        same, for older bindings); nvmlDeviceGetProcessUtilization returns
        c_nvmlProcessUtilizationSample_t (pid, timeStamp, smUtil, memUtil,
        ...) and raises NVML_ERROR_NOT_FOUND when no sample is newer than
        the timestamp asked for, a normal answer for an idle GPU."""
        out: list[AccelProcess] = []
        problems: dict[str, str] = {}
        for gpu in self._devices:
            seen: dict[int, int | None] = {}
            names: list[str] = []
            for kind in ("Compute", "Graphics"):
                procs, why = self._running(gpu, kind)
                if why is not None:
                    # a board that cannot hold graphics contexts has none to list
                    if not (kind == "Graphics" and why == "not supported"):
                        names.append(f"{kind.lower()} processes: {why}")
                    if gpu.lost or "stopped working" in why:
                        break  # nothing more to ask it
                    continue
                for p in procs or []:
                    pid = int(p.pid)
                    used = _memory(getattr(p, "usedGpuMemory", None))
                    old = seen.get(pid)
                    seen[pid] = used if old is None else max(old, used or 0)
            if names:
                problems[f"nvidia accel{gpu.index}"] = "; ".join(names)
            util = self._process_util(gpu) if seen else {}
            for pid in sorted(seen):
                sm, mem = util.get(pid, (None, None))
                out.append(AccelProcess(pid, gpu.index, seen[pid], pci_address=gpu.address,
                                        util=sm, mem_util=mem, backend=self.name))
        return ProcessListing(tuple(out), problems)

    def _running(self, gpu: _Gpu, kind: str) -> tuple[list[Any] | None, str | None]:
        """nvmlDeviceGet<kind>RunningProcesses: the unversioned name (pynvml
        maps it to _v3), or _v2 where the driver's library is older than
        _v3 (pynvml then raises NVMLLibraryMismatchError or
        FUNCTION_NOT_FOUND)."""
        nvml = self.nvml
        what = f"{kind.lower()}_processes"
        procs, why = self._listing_call(gpu, what,
                                        getattr(nvml, f"nvmlDeviceGet{kind}RunningProcesses"),
                                        gpu.handle)
        older = getattr(nvml, f"nvmlDeviceGet{kind}RunningProcesses_v2", None)
        if why == "not supported" and older is not None:
            # `what` is now marked unsupported: later calls go straight to _v2
            procs, why = self._listing_call(gpu, what + "_v2", older, gpu.handle)
        return procs, why

    def _process_util(self, gpu: _Gpu) -> dict[int, tuple[float | None, float | None]]:
        """pid -> (SM share, memory-bandwidth share), 0-1, the mean of the
        samples NVML kept since the last call (its buffer covers the last
        few seconds only; the first call takes all of it)."""
        nvml = self.nvml
        if gpu.lost or "process_util" in gpu.unsupported:
            return {}
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(gpu.handle, gpu.util_seen)
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in (getattr(nvml, "NVML_ERROR_NOT_FOUND", 6), 0):
                return {}  # no sample since the last call; 0: pynvml's "no samples" shape
            fault = self.fault(exc)
            if fault is Fault.UNSUPPORTED:
                gpu.unsupported.add("process_util")
            elif fault is Fault.LOST:
                gpu.lost = True
            return {}
        sums: dict[int, list[float]] = {}
        for s in samples:
            ts = int(s.timeStamp)
            gpu.util_seen = max(gpu.util_seen, ts)
            acc = sums.setdefault(int(s.pid), [0.0, 0.0, 0.0])
            acc[0] += float(s.smUtil)
            acc[1] += float(s.memUtil)
            acc[2] += 1.0
        return {pid: (min(1.0, a[0] / a[2] / 100.0), min(1.0, a[1] / a[2] / 100.0))
                for pid, a in sums.items()}

    def _retired_pages(self, handle: Any) -> int:
        nvml = self.nvml
        return sum(len(nvml.nvmlDeviceGetRetiredPages(handle, cause)) for cause in (
            nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
            nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR))

    def close(self) -> None:
        if getattr(self, "_initialised", False):
            self._initialised = False
            if getattr(self, "_events", None) is not None:
                with contextlib.suppress(self.nvml.NVMLError):
                    self.nvml.nvmlEventSetFree(self._events)
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlShutdown()


# what a listing that failed says, by nvmlReturn_t (nvml.h)
_CODE_WORDS = {3: "not supported", 4: "no permission", 6: "not found", 15: "GPU is lost",
               9: "driver not loaded", 13: "function not in this driver's library"}
_NOT_AVAILABLE = (1 << 64) - 1  # NVML_VALUE_NOT_AVAILABLE as an unsigned long long


def _memory(value: Any) -> int | None:
    if value is None or int(value) == _NOT_AVAILABLE:
        return None
    return int(value)


def _address(handle: Any) -> int | None:
    """NVML device handles are opaque pointers; events carry the same pointer."""
    return ctypes.cast(handle, ctypes.c_void_p).value


def _bits(words: Any) -> list[int]:
    """NVML affinity masks: an array of 64-bit words, bit b of word w = item 64w+b."""
    out: list[int] = []
    for w, word in enumerate(words):
        value = int(word)
        out.extend(64 * w + b for b in range(64) if value >> b & 1)
    return out
