"""Per-process accelerator use at each vendor's library boundary.

NVML: the backend is given a module object standing where `import pynvml`
would put nvidia-ml-py. Its error class and constants are nvidia-ml-py's own
(NVMLError with `.value`, NVMLError_NotFound..., NVMLLibraryMismatchError,
NVML_ERROR_* codes, nvmlFriendlyObject and c_nvmlProcessUtilizationSample_t
from pynvml.py of nvidia-ml-py 13.x); the functions return what pynvml's do:
nvmlDeviceGet{Compute,Graphics}RunningProcesses give friendly objects with
`pid` and `usedGpuMemory` (None where NVML said NVML_VALUE_NOT_AVAILABLE),
nvmlDeviceGetProcessUtilization gives the ctypes samples and raises
NVML_ERROR_NOT_FOUND when none is newer than the timestamp asked for. Every
NVML call a scenario does not script answers NVML_ERROR_NOT_SUPPORTED, as on
a board without that feature.

amdsmi: the module of tests/test_accel_amd.py (amdsmi 7.0's Python API and
exception classes) with the process list of amdsmi_interface.py in both its
shapes (dicts since ROCm 6.x; process handles plus amdsmi_get_gpu_process_info
in amdsmi 5.7/6.0).

npu-smi: output recorded on a real Atlas A3 host (tests/fixtures/accel/
ascend/README.md names the source) replayed through Host.run.
"""

from __future__ import annotations

import ctypes
import shutil
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from hosttune.agent.sense.accel.amd import AmdBackend
from hosttune.agent.sense.accel.ascend import AscendBackend
from hosttune.agent.sense.accel.base import (
    AccelDevice,
    AccelProcess,
    BackendUnavailable,
    ProcessListing,
)
from hosttune.agent.sense.accel.nvidia import NvidiaBackend
from hosttune.agent.sense.accel.select import AccelCollector
from hosttune.agent.sense.host import CommandResult, Host
from tests.test_accel_amd import make_amdsmi

pynvml = pytest.importorskip("pynvml")

ASCEND = Path(__file__).parent / "fixtures" / "accel" / "ascend"
MB = 1 << 20
GB = 1 << 30
NOT_AVAILABLE = (1 << 64) - 1  # NVML_VALUE_NOT_AVAILABLE as c_ulonglong


class Gpu:
    """What one fake GPU answers. `compute`/`graphics`: pid -> usedGpuMemory
    (None: not available); `util`: samples as (pid, timeStamp µs, smUtil,
    memUtil); `fail`: NVML function name -> nvmlReturn_t it fails with."""

    def __init__(self, bus: str, *, compute: Mapping[int, int | None] | None = None,
                 graphics: Mapping[int, int | None] | None = None,
                 util: list[tuple[int, int, int, int]] | None = None,
                 fail: Mapping[str, int] | None = None, has_v3: bool = True) -> None:
        self.bus = bus
        self.compute = dict(compute or {})
        self.graphics = dict(graphics or {})
        self.util = list(util or [])
        self.fail = dict(fail or {})
        self.has_v3 = has_v3
        self.util_asked: list[int] = []


def make_pynvml(gpus: list[Gpu]) -> types.ModuleType:
    m = types.ModuleType("pynvml")
    for name, value in vars(pynvml).items():
        if name.startswith(("NVML_", "NVMLError", "NVMLLibraryMismatchError",
                            "nvmlFriendlyObject", "c_nvml")):
            setattr(m, name, value)
    handles = [ctypes.c_void_p(0x1000 + n) for n in range(len(gpus))]

    def gpu(handle: Any, fn: str) -> Gpu:
        n = handles.index(handle)
        g = gpus[n]
        code = g.fail.get(fn)
        if code is not None:
            raise pynvml.NVMLError(code)
        return g

    def friendly(pid: int, used: int | None) -> Any:
        # pynvml turns NVML_VALUE_NOT_AVAILABLE into None; an older binding
        # passes the raw value through: both are reproduced
        return pynvml.nvmlFriendlyObject({"pid": pid, "usedGpuMemory": used,
                                          "gpuInstanceId": NOT_AVAILABLE & 0xFFFFFFFF,
                                          "computeInstanceId": NOT_AVAILABLE & 0xFFFFFFFF})

    def running(kind: str, version: str) -> Callable[[Any], list[Any]]:
        def fn(handle: Any) -> list[Any]:
            g = gpu(handle, f"nvmlDeviceGet{kind}RunningProcesses{version}")
            if version == "" and not g.has_v3:
                # pynvml's throwOnVersionMismatch when the driver lacks _v3
                raise pynvml.NVMLLibraryMismatchError("Unversioned function called and the "
                                                      "pyNVML version does not match the NVML "
                                                      "lib version.")
            table = g.compute if kind == "Compute" else g.graphics
            return [friendly(pid, used) for pid, used in table.items()]
        return fn

    def nvmlDeviceGetProcessUtilization(handle: Any, timeStamp: int) -> list[Any]:
        g = gpu(handle, "nvmlDeviceGetProcessUtilization")
        g.util_asked.append(timeStamp)
        newer = [s for s in g.util if s[1] > timeStamp]
        if not newer:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return [pynvml.c_nvmlProcessUtilizationSample_t(pid, ts, sm, mem, 0, 0)
                for pid, ts, sm, mem in newer]

    def nvmlDeviceGetPciInfo(handle: Any) -> Any:
        g = gpu(handle, "nvmlDeviceGetPciInfo")
        return pynvml.nvmlFriendlyObject({"busId": ("0000" + g.bus).upper().encode()})

    def not_supported(*_args: Any) -> Any:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    funcs: dict[str, Callable[..., Any]] = {
        "nvmlInit": lambda: None, "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": lambda i: handles[i],
        "nvmlDeviceGetPciInfo": nvmlDeviceGetPciInfo,
        "nvmlDeviceGetComputeRunningProcesses": running("Compute", ""),
        "nvmlDeviceGetComputeRunningProcesses_v2": running("Compute", "_v2"),
        "nvmlDeviceGetGraphicsRunningProcesses": running("Graphics", ""),
        "nvmlDeviceGetGraphicsRunningProcesses_v2": running("Graphics", "_v2"),
        "nvmlDeviceGetProcessUtilization": nvmlDeviceGetProcessUtilization,
    }
    for name, fn in funcs.items():
        setattr(m, name, fn)

    def __getattr__(name: str) -> Any:
        if name.startswith("nvml"):
            return not_supported
        raise AttributeError(name)

    m.__getattr__ = __getattr__  # type: ignore[method-assign]
    return m


def listing(gpus: list[Gpu]) -> tuple[NvidiaBackend, ProcessListing]:
    b = NvidiaBackend(make_pynvml(gpus))
    return b, b.processes()


def rows(lst: ProcessListing) -> list[tuple[Any, ...]]:
    return [(p.pid, p.device, p.memory_bytes, p.util, p.mem_util) for p in lst.processes]


def test_nvml_two_gpus_sharing_a_pid_with_memory_and_utilization() -> None:
    # models: a data-parallel job (pid 100) on both GPUs, a CUDA program that
    # also draws (pid 101: compute and graphics lists), and a process whose
    # memory NVML cannot report (pid 102: usedGpuMemory None, as under MIG
    # without privileges or WDDM)
    g0 = Gpu(":18:00.0", compute={100: 30 * GB, 101: GB},
             graphics={101: 2 * GB},
             util=[(100, 1_000, 80, 40), (100, 2_000, 60, 20), (101, 2_000, 5, 1)])
    g1 = Gpu(":2a:00.0", compute={100: 30 * GB, 102: None},
             fail={"nvmlDeviceGetProcessUtilization": pynvml.NVML_ERROR_NOT_SUPPORTED})
    b, lst = listing([g0, g1])
    assert rows(lst) == [
        (100, 0, 30 * GB, pytest.approx(0.70), pytest.approx(0.30)),  # mean of its samples
        (101, 0, 2 * GB, pytest.approx(0.05), pytest.approx(0.01)),  # the larger figure
        (100, 1, 30 * GB, None, None),
        (102, 1, None, None, None),
    ]
    assert lst.problems == {}
    assert {p.backend for p in lst.processes} == {"nvidia"}
    assert [p.pci_address for p in lst.processes] == ["0000:18:00.0"] * 2 + ["0000:2a:00.0"] * 2
    assert [p.device for p in lst.by_pid()[100]] == [0, 1]
    # the next listing asks only for samples after the newest one seen; none
    # came (NOT_FOUND: a normal answer) so no share is known
    again = b.processes()
    assert g0.util_asked == [0, 2_000]
    assert rows(again)[0] == (100, 0, 30 * GB, None, None)
    # NOT_SUPPORTED is remembered: GPU 1 is not asked again
    assert g1.util_asked == []


def test_nvml_raw_not_available_value_and_no_processes() -> None:
    g0 = Gpu(":18:00.0", compute={7: NOT_AVAILABLE})
    g1 = Gpu(":2a:00.0")
    _, lst = listing([g0, g1])
    assert rows(lst) == [(7, 0, None, None, None)]
    assert lst.problems == {}
    # no process anywhere: an empty listing, not a problem, and no
    # utilization call for a GPU with nobody on it
    _, empty = listing([Gpu(":18:00.0")])
    assert empty == ProcessListing((), {})


def test_nvml_permission_error_names_the_gpu_and_keeps_the_others() -> None:
    g0 = Gpu(":18:00.0", compute={100: GB})
    g1 = Gpu(":2a:00.0", compute={200: GB},
             fail={"nvmlDeviceGetComputeRunningProcesses": pynvml.NVML_ERROR_NO_PERMISSION})
    _, lst = listing([g0, g1])
    assert rows(lst) == [(100, 0, GB, None, None)]
    assert lst.problems == {"nvidia accel1": "compute processes: no permission"}
    assert "no permission" in (lst.problem_text() or "")


def test_nvml_lost_gpu_and_driver_gone_are_reasons_not_crashes() -> None:
    g0 = Gpu(":18:00.0", compute={100: GB},
             fail={"nvmlDeviceGetComputeRunningProcesses": pynvml.NVML_ERROR_GPU_IS_LOST})
    g1 = Gpu(":2a:00.0", compute={200: GB},
             fail={"nvmlDeviceGetComputeRunningProcesses":
                   pynvml.NVML_ERROR_DRIVER_NOT_LOADED})
    b, lst = listing([g0, g1])
    assert lst.processes == ()
    assert lst.problems["nvidia accel0"] == "compute processes: device lost"
    assert lst.problems["nvidia accel1"] == (
        "compute processes: NVML stopped working: driver not loaded")
    # the lost GPU stays lost for the sampler too
    values: dict[str, float] = {}
    with pytest.raises(BackendUnavailable):
        b.sample(values)  # the driver is gone: the collector falls back to sysfs
    assert b.processes().problems["nvidia accel0"] == "compute processes: device lost"


def test_nvml_older_driver_without_v3_uses_v2() -> None:
    g0 = Gpu(":18:00.0", compute={100: GB}, has_v3=False)
    _, lst = listing([g0])
    assert rows(lst) == [(100, 0, GB, None, None)]
    assert lst.problems == {}


def _with_process_table(smi: types.ModuleType, table: dict[int, list[dict[str, Any]]],
                        *, old_api: bool = False, gone: frozenset[int] = frozenset()
                        ) -> None:
    """Replace the fake's process list with `table` (GPU number -> rows in
    amdsmi_interface.py's dict shape). `old_api`: amdsmi 5.7/6.0, a list of
    amdsmi_process_handle_t and amdsmi_get_gpu_process_info; a pid in
    `gone` exited between the two calls, which fails with
    AMDSMI_STATUS_NOT_FOUND."""
    listed = smi.amdsmi_get_gpu_process_list

    class amdsmi_process_handle_t:  # amdsmi_wrapper's name
        def __init__(self, value: int) -> None:
            self.value = value

    def amdsmi_get_gpu_process_list(h: Any) -> list[Any]:
        listed(h)  # the fake's checks: handle type, init, scripted failures
        got = [dict(r) for r in table.get(h.n, [])]
        if old_api:
            return [amdsmi_process_handle_t(r["pid"]) for r in got]
        return got

    def amdsmi_get_gpu_process_info(h: Any, process: Any) -> dict[str, Any]:
        if not isinstance(process, amdsmi_process_handle_t):
            raise smi.AmdSmiParameterException(process, amdsmi_process_handle_t)
        if process.value in gone:
            raise smi.AmdSmiLibraryException(31)
        row = next(r for r in table[h.n] if r["pid"] == process.value)
        return {k: v for k, v in row.items() if k != "cu_occupancy"}

    smi.amdsmi_get_gpu_process_list = amdsmi_get_gpu_process_list  # type: ignore[attr-defined]
    if old_api:
        smi.amdsmi_get_gpu_process_info = amdsmi_get_gpu_process_info  # type: ignore[attr-defined]


def _amd_row(pid: int, vram: int, gfx_ns: int, name: str = "python3") -> dict[str, Any]:
    return {"name": name, "pid": pid, "mem": vram,
            "engine_usage": {"gfx": gfx_ns, "enc": 0},
            "memory_usage": {"gtt_mem": 2 * MB, "cpu_mem": 0, "vram_mem": vram},
            "cu_occupancy": "N/A"}


@pytest.mark.parametrize("old_api", [False, True], ids=["amdsmi-6.x", "amdsmi-5.7"])
def test_amd_process_list_memory_and_gfx_share(old_api: bool) -> None:
    smi = make_amdsmi([{"bdf": "0000:98:00.0"}, {"bdf": "0000:b1:00.0"}])
    table = {0: [_amd_row(300, 8 * GB, 10_000_000_000), _amd_row(301, GB, 0, name="N/A")],
             1: [_amd_row(300, 8 * GB, 4_000_000_000)]}
    _with_process_table(smi, table, old_api=old_api)
    clock = [100.0]
    b = AmdBackend(smi, clock=lambda: clock[0])
    first = b.processes()
    assert [(p.pid, p.device, p.memory_bytes, p.name, p.util) for p in first.processes] == [
        (300, 0, 8 * GB, "python3", None), (301, 0, GB, None, None),
        (300, 1, 8 * GB, "python3", None)]
    assert first.problems == {}
    # 2 s later pid 300 kept GPU 0's gfx engine busy 1.5 s and GPU 1's 0.5 s
    clock[0] = 102.0
    table[0][0]["engine_usage"] = {"gfx": 11_500_000_000, "enc": 0}
    table[1][0]["engine_usage"] = {"gfx": 4_500_000_000, "enc": 0}
    second = b.processes()
    assert [(p.pid, p.device, p.util) for p in second.processes] == [
        (300, 0, pytest.approx(0.75)), (301, 0, 0.0), (300, 1, pytest.approx(0.25))]
    assert {p.pci_address for p in second.processes} == {"0000:98:00.0", "0000:b1:00.0"}


def test_amd_exited_process_permission_and_lost_gpu() -> None:
    smi = make_amdsmi([
        {"bdf": "0000:98:00.0"},
        {"bdf": "0000:b1:00.0", "fail": {"amdsmi_get_gpu_process_list": 10}},  # NO_PERM
    ])
    _with_process_table(smi, {0: [_amd_row(300, GB, 0), _amd_row(301, GB, 0)]},
                        old_api=True, gone=frozenset({301}))
    b = AmdBackend(smi)
    lst = b.processes()
    # 301 ended between the list and its info call: left out, GPU 0 not lost
    assert [p.pid for p in lst.processes] == [300]
    assert not b._devices[0].lost
    assert lst.problems == {
        "amd accel1": "AMDSMI_STATUS_NO_PERM - Permission Denied"}
    smi2 = make_amdsmi([{"bdf": "0000:98:00.0",
                         "fail": {"amdsmi_get_gpu_process_list": 31}}])  # NOT_FOUND: gone
    b2 = AmdBackend(smi2)
    assert b2.processes().problems == {"amd accel0": "device lost"}
    assert b2._devices[0].lost


def _ascend_host(tmp_path: Path, record: str) -> Host:
    commands = tmp_path / "commands"
    commands.mkdir()
    shutil.copy(ASCEND / record, commands / "npu-smi_info.txt")
    return Host(tmp_path)


def test_ascend_process_table_with_pids_on_two_chips(tmp_path: Path) -> None:
    # recorded on an Atlas A3 host during a vLLM tensor-parallel run
    # (vllm-project/vllm-ascend issue #4930): 16 chips, 14 process rows
    b = AscendBackend(_ascend_host(
        tmp_path, "atlas-a3_ascend910x8_npu-smi-25.2.3_info_processes.txt"))
    lst = b.processes()
    assert lst.problems == {}
    assert len(lst.processes) == 14
    by_pid = lst.by_pid()
    # one process on NPU 0 chip 0 (130 MB of context) and NPU 0 chip 1 (its 50 GB)
    assert [(p.pci_address, p.memory_bytes) for p in by_pid[3328327]] == [
        ("0000:9d:00.0", 133 * MB), ("0000:9f:00.0", 50119 * MB)]
    assert [p.pci_address for p in by_pid[3330598]] == ["0000:9d:00.0", "0000:99:00.0"]
    assert all(p.util is None and p.name is None and p.backend == "ascend"
               for p in lst.processes)
    # chips without processes (NPU 2-5) list nobody
    busy = {p.pci_address for p in lst.processes}
    assert "0000:95:00.0" not in busy and len(busy) == 8


def test_ascend_listing_reuses_the_samples_table_then_runs_npu_smi(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = _ascend_host(tmp_path, "atlas800t-a2_910b1x8_npu-smi-24.1.0_info.txt")
    b = AscendBackend(host, usages=False)
    runs: list[list[str]] = []
    real = host.run

    def counting(argv: Sequence[str], timeout: float) -> CommandResult:
        runs.append(list(argv))
        return real(argv, timeout)

    monkeypatch.setattr(host, "run", counting)
    b.sample({})
    assert [(p.pid, p.memory_bytes) for p in b.processes().processes] == [(641248, 113 * MB)]
    assert runs == [["npu-smi", "info"]]  # the sample's run served the listing
    assert len(b.processes().processes) == 1
    assert len(runs) == 2  # no sample since: npu-smi ran for the listing
    # npu-smi failing or gone: a reason, not an exception
    (tmp_path / "commands" / "npu-smi_info.txt").write_text("dcmi model initialized failed\n")
    (tmp_path / "commands" / "npu-smi_info.rc").write_text("255\n")
    assert b.processes() == ProcessListing(
        (), {"ascend": "npu-smi info exited 255: dcmi model initialized failed"})
    (tmp_path / "commands" / "npu-smi_info.txt").unlink()
    (tmp_path / "commands" / "npu-smi_info.rc").unlink()
    assert "command not found" in b.processes().problems["ascend"]


class _Backend:
    """A vendor backend whose listing raises or hangs, as a broken vendor
    library might; its samples are fine."""

    name = "nvidia"

    def __init__(self, how: str) -> None:
        self.how = how
        self.release = threading.Event()

    def devices(self) -> list[AccelDevice]:
        return [AccelDevice(index=0, vendor="nvidia", backend="nvidia",
                            pci_address="0000:18:00.0")]

    def reindex(self, by_address: Mapping[str, int]) -> None:
        pass

    def sample(self, values: dict[str, float]) -> None:
        pass

    def processes(self) -> ProcessListing:
        if self.how == "raise":
            raise RuntimeError("vendor library bug")
        if self.how == "hang":
            self.release.wait(10)
        return ProcessListing((AccelProcess(1, 0, GB, backend="nvidia"),), {})

    def close(self) -> None:
        self.release.set()


@pytest.mark.parametrize("how", ["raise", "hang"])
def test_collector_never_raises_for_a_listing(tmp_path: Path, how: str) -> None:
    backend = _Backend(how)
    coll = AccelCollector(Host(tmp_path), ["nvidia"], deadline=0.2,
                          factories={"nvidia": lambda host: backend})
    try:
        lst = coll.processes()
        assert lst.processes == ()
        want = ("RuntimeError: vendor library bug" if how == "raise"
                else "did not answer within 0.2 s")
        assert lst.problems == {"nvidia": want}
        if how == "hang":
            assert coll.processes().problems == {"nvidia": "an earlier call still hangs"}
    finally:
        backend.release.set()
        coll.close()


def test_collector_on_a_host_without_accelerators_lists_nothing(tmp_path: Path) -> None:
    (tmp_path / "sys" / "bus" / "pci" / "devices").mkdir(parents=True)
    coll = AccelCollector(Host(tmp_path))
    assert coll.processes() == ProcessListing((), {})
