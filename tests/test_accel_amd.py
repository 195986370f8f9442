"""The AMD backend at its library boundary.

amdsmi from PyPI needs libamd_smi.so (ROCm) and fails to import here, so the
backend is given a module object that reproduces amdsmi 7.0's Python API as
the backend uses it: the same function names and signatures, the dict shapes
and units of amdsmi_interface.py ("N/A" for unsupported fields, W, MB, MHz,
MT/s, degrees C), the isinstance check on processor handles, and the
exception classes of amdsmi_exception.py (AmdSmiLibraryException carrying an
amdsmi_status_t err_code and err_info, AmdSmiRetryException, ...).
"""

from __future__ import annotations

import logging
import types
from enum import IntEnum
from pathlib import Path
from typing import Any

import pytest

from hosttune.agent.sense.accel.amd import AmdBackend, import_amdsmi
from hosttune.agent.sense.accel.base import BackendUnavailable
from hosttune.agent.sense.accel.select import AccelCollector
from hosttune.agent.sense.host import Host

MIXED = Path(__file__).parent / "fixtures" / "hosts" / "mixed"

# amdsmi_status_t values and texts (amdsmi_wrapper.py / amdsmi_exception.py)
STATUS_TEXT = {
    2: "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported",
    8: "AMDSMI_STATUS_TIMEOUT - Timeout in API call",
    9: "AMDSMI_STATUS_RETRY - Retry operation",
    10: "AMDSMI_STATUS_NO_PERM - Permission Denied",
    31: "AMDSMI_STATUS_NOT_FOUND - Device Not found",
    34: "AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded",
}


def make_amdsmi(gpus: list[dict[str, Any]], *, init_status: int = 0) -> types.ModuleType:
    """`gpus`: per GPU, "bdf" and optional "fail" = {function name: status}."""
    m = types.ModuleType("amdsmi")

    class AmdSmiException(Exception):
        pass

    class AmdSmiLibraryException(AmdSmiException):
        def __init__(self, err_code: int) -> None:
            err_code = abs(err_code)
            super().__init__(err_code)
            self.err_code = err_code
            self.err_info = STATUS_TEXT.get(
                err_code, "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred")

        def __str__(self) -> str:
            return f"Error code:\n\t{self.err_code} | {self.err_info}"

    class AmdSmiRetryException(AmdSmiLibraryException):
        def __init__(self) -> None:
            super().__init__(9)

    class AmdSmiTimeoutException(AmdSmiLibraryException):
        def __init__(self) -> None:
            super().__init__(8)

    class AmdSmiParameterException(AmdSmiException):
        def __init__(self, received: Any, expected: Any) -> None:
            super().__init__(f"Invalid parameter: {type(received)} expected {expected}")
            self.err_code = None

    class AmdSmiInitFlags(IntEnum):
        INIT_ALL_PROCESSORS = 0xFFFFFFFF
        INIT_AMD_CPUS = 1 << 0
        INIT_AMD_GPUS = 1 << 1

    class AmdSmiTemperatureType(IntEnum):
        EDGE = 0
        HOTSPOT = 1
        JUNCTION = 1
        VRAM = 2

    class AmdSmiTemperatureMetric(IntEnum):
        CURRENT = 0
        MAX = 1

    class AmdSmiClkType(IntEnum):
        SYS = 0
        GFX = 0
        DF = 1
        DCEF = 2
        SOC = 3
        MEM = 4

    class amdsmi_processor_handle:  # amdsmi's own name; its functions check isinstance
        def __init__(self, n: int) -> None:
            self.n = n

    state = {"init": False}
    handles = [amdsmi_processor_handle(n) for n in range(len(gpus))]

    def _check_res(status: int) -> None:
        # as amdsmi_interface._check_res
        if status == 9:
            raise AmdSmiRetryException()
        if status == 8:
            raise AmdSmiTimeoutException()
        if status != 0:
            raise AmdSmiLibraryException(status)

    def gpu(handle: Any, fn: str) -> dict[str, Any]:
        if not isinstance(handle, amdsmi_processor_handle):
            raise AmdSmiParameterException(handle, amdsmi_processor_handle)
        if not state["init"]:
            _check_res(32)
        g = gpus[handle.n]
        _check_res(g.get("fail", {}).get(fn, 0))
        return g

    def amdsmi_init(flag: Any = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
        if not isinstance(flag, AmdSmiInitFlags):
            raise AmdSmiParameterException(flag, AmdSmiInitFlags)
        _check_res(init_status)
        state["init"] = True

    def amdsmi_shut_down() -> None:
        state["init"] = False

    def amdsmi_get_processor_handles() -> list[Any]:
        if not state["init"]:
            _check_res(32)
        return list(handles)

    def amdsmi_get_gpu_device_bdf(h: Any) -> str:
        return str(gpu(h, "amdsmi_get_gpu_device_bdf")["bdf"])

    def amdsmi_get_gpu_device_uuid(h: Any) -> str:
        gpu(h, "amdsmi_get_gpu_device_uuid")
        return f"e1ff74a1-0000-1000-80a0-{h.n:012x}"

    def amdsmi_get_gpu_asic_info(h: Any) -> dict[str, Any]:
        gpu(h, "amdsmi_get_gpu_asic_info")
        return {"market_name": "AMD Instinct MI210", "vendor_id": "0x1002",
                "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]", "subvendor_id": "0x1002",
                "device_id": "0x740f", "rev_id": "0x02", "asic_serial": f"0x{0xABCD00 + h.n:016X}",
                "oam_id": "N/A", "num_compute_units": 104, "target_graphics_version": "gfx90a",
                "subsystem_id": "0x0c34"}

    def amdsmi_get_gpu_vram_usage(h: Any) -> dict[str, Any]:
        gpu(h, "amdsmi_get_gpu_vram_usage")
        return {"vram_total": 65520, "vram_used": 5120 + h.n}  # MB

    def amdsmi_get_gpu_topo_numa_affinity(h: Any) -> int:
        return int(gpu(h, "amdsmi_get_gpu_topo_numa_affinity").get("numa", -1))

    def amdsmi_topo_get_link_type(a: Any, b: Any) -> dict[str, Any]:
        gpu(a, "amdsmi_topo_get_link_type")
        gpu(b, "amdsmi_topo_get_link_type")
        return {"hops": 1, "type": 2}  # AMDSMI_LINK_TYPE_XGMI

    def amdsmi_get_gpu_activity(h: Any) -> dict[str, Any]:
        g = gpu(h, "amdsmi_get_gpu_activity")
        return {"gfx_activity": g.get("gfx", 37), "umc_activity": 12, "mm_activity": "N/A"}

    def amdsmi_get_power_info(h: Any) -> dict[str, Any]:
        g = gpu(h, "amdsmi_get_power_info")
        return {"socket_power": 143, "current_socket_power": g.get("current_power", "N/A"),
                "average_socket_power": 143, "gfx_voltage": 806, "soc_voltage": 856,
                "mem_voltage": 1250, "power_limit": 300}

    def amdsmi_get_temp_metric(h: Any, sensor: Any, metric: Any) -> int:
        if not isinstance(sensor, AmdSmiTemperatureType):
            raise AmdSmiParameterException(sensor, AmdSmiTemperatureType)
        if not isinstance(metric, AmdSmiTemperatureMetric):
            raise AmdSmiParameterException(metric, AmdSmiTemperatureMetric)
        gpu(h, "amdsmi_get_temp_metric")
        return 48 if sensor == AmdSmiTemperatureType.HOTSPOT else 41

    def amdsmi_get_clock_info(h: Any, clk: Any) -> dict[str, Any]:
        if not isinstance(clk, AmdSmiClkType):
            raise AmdSmiParameterException(clk, AmdSmiClkType)
        gpu(h, "amdsmi_get_clock_info")
        clk_mhz = 1700 if clk == AmdSmiClkType.GFX else 1600
        return {"clk": clk_mhz, "min_clk": 500, "max_clk": 1700, "clk_locked": False,
                "clk_deep_sleep": 0}

    def amdsmi_get_pcie_info(h: Any) -> dict[str, Any]:
        gpu(h, "amdsmi_get_pcie_info")
        return {"pcie_static": {"max_pcie_width": 16, "max_pcie_speed": 16,
                                "pcie_interface_version": 4, "slot_type": "PCIE"},
                "pcie_metric": {"pcie_width": 16, "pcie_speed": 16000, "pcie_bandwidth": "N/A",
                                "pcie_replay_count": 0, "pcie_l0_to_recovery_count": 0,
                                "pcie_replay_roll_over_count": 0, "pcie_nak_sent_count": 0,
                                "pcie_nak_received_count": 0,
                                "pcie_lc_perf_other_end_recovery_count": "N/A"}}

    def amdsmi_get_gpu_total_ecc_count(h: Any) -> dict[str, Any]:
        gpu(h, "amdsmi_get_gpu_total_ecc_count")
        return {"correctable_count": 3, "uncorrectable_count": 0, "deferred_count": 0}

    def amdsmi_get_gpu_process_list(h: Any) -> list[dict[str, Any]]:
        g = gpu(h, "amdsmi_get_gpu_process_list")
        return [{"name": "python3", "pid": pid, "mem": 1 << 30,
                 "engine_usage": {"gfx": 0, "enc": 0},
                 "memory_usage": {"gtt_mem": 0, "cpu_mem": 0, "vram_mem": 1 << 30},
                 "cu_occupancy": "N/A"} for pid in g.get("pids", [])]

    for name, value in list(locals().items()):
        if name.startswith(("amdsmi_", "AmdSmi")):
            setattr(m, name, value)
    return m


def test_devices_and_sample_on_the_mixed_host() -> None:
    smi = make_amdsmi([{"bdf": "0000:98:00.0", "numa": 1, "pids": [5151]}])
    coll = AccelCollector(Host(MIXED), factories={"amd": lambda host: AmdBackend(smi)})
    assert coll.backend_names == ["amd", "sysfs"]
    devices = {d.pci_address: d for d in coll.devices()}
    amd = devices["0000:98:00.0"]
    assert amd.backend == "amd" and amd.index == 3
    assert amd.model == "AMD Instinct MI210"
    assert amd.memory_total_bytes == 65520 << 20
    assert amd.numa_node == 1 and amd.local_cpus == tuple(range(32, 64))  # sysfs cpus
    assert amd.serial == "0x0000000000ABCD00"
    assert amd.driver == "amdgpu"
    values: dict[str, float] = {}
    coll.collect(values)
    assert values["accel.3.util"] == pytest.approx(0.37)
    assert values["accel.3.mem_util"] == pytest.approx(0.12)
    assert values["accel.3.mem_used_bytes"] == 5120 << 20
    # current_socket_power is "N/A" on MI210: the average is used
    assert values["accel.3.power_watts"] == 143
    assert values["accel.3.power_limit_watts"] == 300
    assert values["accel.3.temp_c"] == 48  # hotspot
    assert values["accel.3.sm_clock_mhz"] == 1700 and values["accel.3.mem_clock_mhz"] == 1600
    assert values["accel.3.pcie_link_gen"] == 4 and values["accel.3.pcie_link_width"] == 16
    assert values["accel.3.ecc_corrected"] == 3 and values["accel.3.ecc_errors"] == 0
    assert values["accel.3.processes"] == 1 and values["accel.3.lost"] == 0
    assert [(p.pid, p.device, p.memory_bytes, p.name) for p in coll.processes().processes] == [
        (5151, 3, 1 << 30, "python3")]
    # the other vendors on the host are still there, from sysfs
    assert values["accel.count"] == 5
    assert values["accel.0.pcie_link_gen"] == 5


def test_xgmi_links_between_two_gpus() -> None:
    smi = make_amdsmi([{"bdf": "0000:98:00.0"}, {"bdf": "0000:b1:00.0"}])
    backend = AmdBackend(smi)
    backend.reindex({"0000:98:00.0": 3, "0000:b1:00.0": 4})
    d3, d4 = backend.devices()
    assert [(ln.peer, ln.kind) for ln in d3.links] == [(4, "xgmi")]
    assert [(ln.peer, ln.kind) for ln in d4.links] == [(3, "xgmi")]
    assert d3.numa_node is None  # amdsmi said -1: unknown, not node 0


def test_unsupported_and_na_fields_stay_absent() -> None:
    smi = make_amdsmi([{"bdf": "0000:98:00.0", "current_power": "N/A",
                        "fail": {"amdsmi_get_gpu_total_ecc_count": 2,
                                 "amdsmi_get_temp_metric": 2}}])
    backend = AmdBackend(smi)
    for _ in range(2):
        values: dict[str, float] = {}
        backend.sample(values)
        assert "accel.0.ecc_errors" not in values and "accel.0.ecc_corrected" not in values
        assert "accel.0.temp_c" not in values
        assert values["accel.0.util"] == pytest.approx(0.37)


def test_retry_is_absent_for_one_pass_only() -> None:
    gpus = [{"bdf": "0000:98:00.0", "fail": {"amdsmi_get_gpu_activity": 9}}]
    backend = AmdBackend(make_amdsmi(gpus))
    values: dict[str, float] = {}
    backend.sample(values)
    assert "accel.0.util" not in values
    gpus[0]["fail"] = {}
    values = {}
    backend.sample(values)
    assert values["accel.0.util"] == pytest.approx(0.37)


def test_device_not_found_is_lost(caplog: pytest.LogCaptureFixture) -> None:
    gpus: list[dict[str, Any]] = [{"bdf": "0000:98:00.0"}, {"bdf": "0000:b1:00.0"}]
    backend = AmdBackend(make_amdsmi(gpus))
    gpus[1]["fail"] = {"amdsmi_get_gpu_activity": 31}
    with caplog.at_level(logging.WARNING, logger="hosttune.accel"):
        for _ in range(3):
            values: dict[str, float] = {}
            backend.sample(values)
    assert values["accel.1.lost"] == 1 and "accel.1.util" not in values
    assert values["accel.0.lost"] == 0 and values["accel.0.util"] == pytest.approx(0.37)
    assert len([r for r in caplog.records if "is gone" in r.getMessage()]) == 1


def test_driver_not_loaded() -> None:
    with pytest.raises(BackendUnavailable, match="Driver not loaded"):
        AmdBackend(make_amdsmi([{"bdf": "0000:98:00.0"}], init_status=34))
    backend = AmdBackend(make_amdsmi(
        [{"bdf": "0000:98:00.0", "fail": {"amdsmi_get_gpu_activity": 34}}]))
    with pytest.raises(BackendUnavailable, match="stopped working"):
        backend.sample({})


def test_no_gpu_is_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="finds no GPU"):
        AmdBackend(make_amdsmi([]))


def test_driver_lost_mid_run_degrades_to_sysfs(caplog: pytest.LogCaptureFixture) -> None:
    gpus: list[dict[str, Any]] = [{"bdf": "0000:98:00.0"}]
    coll = AccelCollector(Host(MIXED), factories={"amd": lambda host: AmdBackend(
        make_amdsmi(gpus))})
    gpus[0]["fail"] = {"amdsmi_get_gpu_activity": 34}
    with caplog.at_level(logging.WARNING, logger="hosttune.accel"):
        for _ in range(2):
            values: dict[str, float] = {}
            coll.collect(values)
    assert coll.backend_names == ["sysfs"]
    degraded = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert degraded == ["accel: amd backend failed (amdsmi stopped working: "
                        "AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded); "
                        "falling back to sysfs for its 1 device"]
    # amdgpu's own sysfs files still give numbers
    assert values["accel.3.util"] == pytest.approx(0.37)
    assert values["accel.3.power_watts"] == pytest.approx(143.0)


def test_import_without_rocm() -> None:
    try:
        import amdsmi  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("amdsmi imports on this machine")
    with pytest.raises(BackendUnavailable, match="amdsmi is unusable"):
        import_amdsmi()
