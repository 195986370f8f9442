"""AMD Instinct/Radeon GPUs through amdsmi (ROCm's AMD SMI Python library).

Names, units and errors follow ROCm/amdsmi py-interface (amdsmi_interface.py,
amdsmi_exception.py, amdsmi.h): power_info in W, vram_usage in MB,
temperatures in degrees C, clocks in MHz, PCIe speed in MT/s; fields the
device does not support come back as the string "N/A". Every failure is an
AmdSmiException; library failures are AmdSmiLibraryException with `err_code`
an amdsmi_status_t (2 NOT_SUPPORTED, 31 NOT_FOUND, 34 DRIVER_NOT_LOADED, ...).

Importing amdsmi without libamd_smi.so prints "Unable to find libamd_smi.so"
and raises (KeyError with amdsmi 7.0 from PyPI): that is BackendUnavailable.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
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

# amdsmi_status_t (amdsmi.h)
STATUS_NOT_SUPPORTED = 2
STATUS_NOT_YET_IMPLEMENTED = 3
STATUS_FAIL_LOAD_MODULE = 4
STATUS_FAIL_LOAD_SYMBOL = 5
STATUS_INIT_ERROR = 18
STATUS_NOT_FOUND = 31
STATUS_NOT_INIT = 32
STATUS_DRIVER_NOT_LOADED = 34
STATUS_NO_DATA = 40
_FATAL = {STATUS_FAIL_LOAD_MODULE, STATUS_FAIL_LOAD_SYMBOL, STATUS_INIT_ERROR,
          STATUS_NOT_INIT, STATUS_DRIVER_NOT_LOADED}
_ABSENT = {STATUS_NOT_SUPPORTED, STATUS_NOT_YET_IMPLEMENTED, STATUS_NO_DATA}

# amdsmi_link_type_t
_LINK_KINDS = {0: "board", 1: "pcie", 2: "xgmi"}

MB = 1 << 20


def import_amdsmi() -> ModuleType:
    """The amdsmi module, or BackendUnavailable. Its import prints to stdout
    when the C library is missing; keep that out of our output."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            # optional: amdsmi is installed only where AMD GPUs are
            import amdsmi
    # amdsmi raises KeyError/OSError, not ImportError, when its C library is missing
    except Exception as exc:
        said = sink.getvalue().strip()
        reason = said or f"{type(exc).__name__}: {exc}"
        raise BackendUnavailable("amd", f"amdsmi is unusable ({reason})") from None
    module: ModuleType = amdsmi
    return module


def _number(value: Any) -> float | None:
    """amdsmi marks unsupported fields "N/A" (and all-ones integers before that)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class AmdBackend(LibraryBackend[LibraryDevice]):
    name = "amd"
    vendor = for_backend(name)
    lost_words = "is gone"

    def __init__(self, amdsmi: ModuleType | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        smi: Any = amdsmi if amdsmi is not None else import_amdsmi()
        self._clock = clock
        # (device index, pid) -> (when, the process's gfx engine time in ns):
        # its busy share is the change of that time between two listings
        self._gfx: dict[tuple[int, int], tuple[float, float]] = {}
        self.smi = smi
        try:
            smi.amdsmi_init(smi.AmdSmiInitFlags.INIT_AMD_GPUS)
        except smi.AmdSmiException as exc:
            raise BackendUnavailable(self.name, f"amdsmi_init failed: {_reason(exc)}") from None
        self._initialised = True
        try:
            handles = smi.amdsmi_get_processor_handles()
            gpus = [LibraryDevice(i, h, normalize_pci_address(smi.amdsmi_get_gpu_device_bdf(h)),
                                  i) for i, h in enumerate(handles)]
        except smi.AmdSmiException as exc:
            self.close()
            raise BackendUnavailable(self.name,
                                     f"amdsmi cannot list GPUs: {_reason(exc)}") from None
        if not gpus:
            self.close()
            raise BackendUnavailable(self.name, "amdsmi finds no GPU")
        self._devices = gpus

    def fault(self, exc: Exception) -> Fault | None:
        smi = self.smi
        if isinstance(exc, smi.AmdSmiLibraryException):
            code = exc.err_code
            if code in _FATAL:
                return Fault.FATAL
            if code == STATUS_NOT_FOUND:
                return Fault.LOST
            # retry/timeout/busy and the rest: absent this pass only
            return Fault.UNSUPPORTED if code in _ABSENT else Fault.TRANSIENT
        if isinstance(exc, smi.AmdSmiException):
            # parameter/key errors: this amdsmi does not offer the call as we use it
            return Fault.UNSUPPORTED
        return None

    def reason(self, exc: Exception) -> str:
        return _reason(exc)

    def devices(self) -> list[AccelDevice]:
        smi = self.smi
        out = []
        for gpu in self._devices:
            h = gpu.handle
            asic = self._call(gpu, "asic", smi.amdsmi_get_gpu_asic_info, h) or {}
            uuid = self._call(gpu, "uuid", smi.amdsmi_get_gpu_device_uuid, h)
            vram = self._call(gpu, "vram", smi.amdsmi_get_gpu_vram_usage, h) or {}
            numa = self._call(gpu, "numa", smi.amdsmi_get_gpu_topo_numa_affinity, h)
            total = _number(vram.get("vram_total"))
            serial = asic.get("asic_serial")
            model = asic.get("market_name")
            out.append(AccelDevice(
                index=gpu.index, vendor=self.vendor.name, backend=self.name,
                pci_address=gpu.address,
                model=model if model and model != "N/A" else None, vendor_index=gpu.local,
                # amdsmi answers -1 when the kernel has no NUMA information
                numa_node=numa if isinstance(numa, int) and numa >= 0 else None,
                memory_total_bytes=int(total * MB) if total is not None else None,
                driver=self.vendor.driver, serial=serial if serial and serial != "N/A" else None,
                uuid=uuid or None, links=self._links(gpu),
                facts={"state": "lost"} if gpu.lost else {},
            ))
        return out

    def _links(self, gpu: LibraryDevice) -> tuple[AccelLink, ...]:
        smi = self.smi
        links = []
        for peer in self._devices:
            if peer is gpu or gpu.lost or peer.lost:
                continue
            link = self._call(gpu, "link_type", smi.amdsmi_topo_get_link_type,
                              gpu.handle, peer.handle)
            if not link:
                continue
            kind = _LINK_KINDS.get(link.get("type"), "unknown")
            links.append(AccelLink(peer.index, kind, f"hops {link.get('hops')}"))
        return tuple(links)

    def sample(self, values: dict[str, float]) -> None:
        smi = self.smi
        for gpu in self._devices:
            h = gpu.handle
            i = gpu.index
            if gpu.lost:
                values[metric_name(i, "lost")] = 1.0
                continue

            def put(suffix: str, value: Any, scale: float = 1.0, i: int = i) -> None:
                number = _number(value)
                if number is not None:
                    values[metric_name(i, suffix)] = number * scale

            activity = self._call(gpu, "activity", smi.amdsmi_get_gpu_activity, h)
            if activity:
                put("util", activity.get("gfx_activity"), 0.01)
                put("mem_util", activity.get("umc_activity"), 0.01)
            vram = self._call(gpu, "vram", smi.amdsmi_get_gpu_vram_usage, h)
            if vram:
                put("mem_used_bytes", vram.get("vram_used"), MB)
                put("mem_total_bytes", vram.get("vram_total"), MB)
            power = self._call(gpu, "power", smi.amdsmi_get_power_info, h)
            if power:
                # MI300 fills current_socket_power, older parts average_socket_power
                current = _number(power.get("current_socket_power"))
                put("power_watts", current if current is not None
                    else power.get("average_socket_power"))
                put("power_limit_watts", power.get("power_limit"))
            temp = self._call(gpu, "temp", smi.amdsmi_get_temp_metric, h,
                              smi.AmdSmiTemperatureType.HOTSPOT,
                              smi.AmdSmiTemperatureMetric.CURRENT)
            put("temp_c", temp)
            gfx = self._call(gpu, "gfx_clock", smi.amdsmi_get_clock_info, h, smi.AmdSmiClkType.GFX)
            if gfx:
                put("sm_clock_mhz", gfx.get("clk"))
            mclk = self._call(gpu, "mem_clock", smi.amdsmi_get_clock_info, h, smi.AmdSmiClkType.MEM)
            if mclk:
                put("mem_clock_mhz", mclk.get("clk"))
            pcie = self._call(gpu, "pcie", smi.amdsmi_get_pcie_info, h)
            if pcie:
                metric = pcie.get("pcie_metric", {})
                put("pcie_link_width", metric.get("pcie_width"))
                gen = _pcie_generation(_number(metric.get("pcie_speed")))
                if gen is not None:
                    values[metric_name(i, "pcie_link_gen")] = float(gen)
            ecc = self._call(gpu, "ecc", smi.amdsmi_get_gpu_total_ecc_count, h)
            if ecc:
                put("ecc_errors", ecc.get("uncorrectable_count"))
                put("ecc_corrected", ecc.get("correctable_count"))
            procs = self._call(gpu, "processes", smi.amdsmi_get_gpu_process_list, h)
            if procs is not None:
                values[metric_name(i, "processes")] = float(len(procs))
            values[metric_name(i, "lost")] = 1.0 if gpu.lost else 0.0

    def processes(self) -> ProcessListing:
        """Every GPU's processes with their VRAM and gfx engine share.

        amdsmi has had two shapes (ROCm/amdsmi py-interface,
        amdsmi_interface.py): since ROCm 6.x amdsmi_get_gpu_process_list
        returns one dict per process {"name", "pid", "mem", "engine_usage":
        {"gfx", "enc"}, "memory_usage": {"gtt_mem", "cpu_mem", "vram_mem"},
        "cu_occupancy"}; amdsmi 5.7/6.0 return process handles, each read
        with amdsmi_get_gpu_process_info(handle, process) into the same dict
        without cu_occupancy. Memory is in bytes; engine_usage is the time
        the process kept that engine busy, in ns (amdsmi.h,
        amdsmi_proc_info_t), so its share is the change between two
        listings over the time between them."""
        smi = self.smi
        out: list[AccelProcess] = []
        problems: dict[str, str] = {}
        now = self._clock()
        gfx_now: dict[tuple[int, int], tuple[float, float]] = {}
        for gpu in self._devices:
            i = gpu.index
            procs, why = self._listing_call(gpu, "process_list",
                                            smi.amdsmi_get_gpu_process_list, gpu.handle)
            if why is not None:
                problems[f"amd accel{i}"] = why
                continue
            for p in procs or []:
                info = p if isinstance(p, dict) else self._process_info(gpu, p)
                if info is None:
                    continue  # exited between the list and the info call
                pid = int(info["pid"])
                usage = info.get("memory_usage") or {}
                vram = _number(usage.get("vram_mem"))
                if vram is None:
                    vram = _number(info.get("mem"))
                gfx = _number((info.get("engine_usage") or {}).get("gfx"))
                util = None
                if gfx is not None:
                    gfx_now[(i, pid)] = (now, gfx)
                    before = self._gfx.get((i, pid))
                    if before is not None and now > before[0] and gfx >= before[1]:
                        util = min(1.0, (gfx - before[1]) / ((now - before[0]) * 1e9))
                name = info.get("name")
                out.append(AccelProcess(
                    pid, i, int(vram) if vram is not None else None,
                    name if isinstance(name, str) and name and name != "N/A" else None,
                    pci_address=gpu.address, util=util, backend=self.name))
        self._gfx = gfx_now
        return ProcessListing(tuple(out), problems)

    def _process_info(self, gpu: LibraryDevice, process: Any) -> dict[str, Any] | None:
        """Older amdsmi: one process handle's dict. A process that ended since
        the list was taken makes the call fail; that is not the GPU's fault,
        so any amdsmi error here drops that process only."""
        try:
            info = self.smi.amdsmi_get_gpu_process_info(gpu.handle, process)
        except self.smi.AmdSmiException:
            return None
        return info if isinstance(info, dict) else None

    def close(self) -> None:
        if getattr(self, "_initialised", False):
            self._initialised = False
            with contextlib.suppress(self.smi.AmdSmiException):
                self.smi.amdsmi_shut_down()


def _pcie_generation(mts: float | None) -> int | None:
    """amdsmi's pcie_speed is the per-lane rate in MT/s (16000 = Gen4)."""
    if mts is None:
        return None
    return {2500: 1, 5000: 2, 8000: 3, 16000: 4, 32000: 5, 64000: 6}.get(int(mts))


def _reason(exc: Exception) -> str:
    info = getattr(exc, "err_info", None)
    return str(info) if info else str(exc)
