"""The NVIDIA backend driven through the real pynvml against a fake
libnvidia-ml.so.1 (tests/fixtures/accel/fake_nvml.c), built here with gcc.

pynvml loads the library once per process with CDLL("libnvidia-ml.so.1"), so
each scenario runs in a fresh interpreter with LD_LIBRARY_PATH pointing at
the fake and the FAKE_NVML_* variables configuring it.
"""

from __future__ import annotations

import ctypes.util
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hosttune.agent.sense.accel.nvidia import NvidiaBackend
from hosttune.agent.sense.accel.select import AccelCollector
from hosttune.agent.sense.host import Host

FAKE_SOURCE = Path(__file__).parent / "fixtures" / "accel" / "fake_nvml.c"
NVIDIA_HOST = Path(__file__).parent / "fixtures" / "hosts" / "nvidia-8gpu"

pytest.importorskip("pynvml")


@pytest.fixture(scope="module")
def fake_nvml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the fake NVML (scripts/setup installs it)")
    out = tmp_path_factory.mktemp("fake-nvml")
    subprocess.run([gcc, "-Wall", "-Werror", "-shared", "-fPIC",
                    "-Wl,-soname,libnvidia-ml.so.1", "-o", str(out / "libnvidia-ml.so.1"),
                    str(FAKE_SOURCE)], check=True)
    return out


# Runs in the child: builds an AccelCollector on the nvidia-8gpu tree with the
# NVML backend forced, samples `passes` times, prints what it saw as JSON.
CHILD = textwrap.dedent("""
    import json, logging, os, sys, time
    from hosttune.agent.sense.host import Host
    from hosttune.agent.sense.accel.select import AccelCollector

    lines = []
    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    logging.getLogger("hosttune.accel").addHandler(Keep())
    logging.getLogger("hosttune.accel").setLevel(logging.DEBUG)

    args = json.loads(sys.argv[1])
    coll = AccelCollector(Host(args["root"]), args.get("backends"),
                          deadline=args.get("deadline", 5.0),
                          pcie_every=args.get("pcie_every", 1))
    passes = []
    for _ in range(args.get("passes", 1)):
        values = {}
        start = time.monotonic()
        coll.collect(values)
        passes.append({"values": values, "seconds": time.monotonic() - start})
    out = {
        "backends": coll.backend_names,
        "devices": [d.to_dict() for d in coll.devices()],
        "passes": passes,
        "processes": [[p.pid, p.device, p.memory_bytes] for p in coll.processes().processes],
        "log": lines,
    }
    if args.get("count"):
        # the fake library's own tally (not an NVML function): the same
        # library pynvml loaded, found again by its soname
        import ctypes
        lib = ctypes.CDLL("libnvidia-ml.so.1")
        lib.fake_nvml_calls.restype = ctypes.c_ulong
        out["calls"] = {fn: lib.fake_nvml_calls(fn.encode()) for fn in args["count"]}
    print(json.dumps(out))
    sys.stdout.flush()
    # a deliberately hung NVML call may still sleep in a daemon thread
    os._exit(0)
""")


def run_child(libdir: Path | None, env: dict[str, str], **args: object) -> dict[str, Any]:
    child_env = {k: v for k, v in os.environ.items()
                 if not k.startswith("FAKE_NVML_") and k != "LD_LIBRARY_PATH"}
    if libdir is not None:
        child_env["LD_LIBRARY_PATH"] = str(libdir)
    child_env.update(env)
    args.setdefault("root", str(NVIDIA_HOST))
    args.setdefault("backends", ["nvidia"])
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=child_env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_eight_gpus_joined_with_sysfs(fake_nvml_dir: Path) -> None:
    out = run_child(fake_nvml_dir, {"FAKE_NVML_GPUS": "8"})
    assert out["backends"] == ["nvidia"]
    devs = out["devices"]
    assert [d["pci_address"] for d in devs] == [
        "0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
        "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"]
    assert [d["index"] for d in devs] == list(range(8))
    d0, d5 = devs[0], devs[5]
    assert d0["model"] == "NVIDIA H100 80GB HBM3"
    assert d0["uuid"] == "GPU-fa4e0000-0000-4000-8000-000000000000"
    assert d0["memory_total_bytes"] == 85520809984
    assert d0["backend"] == "nvidia"
    # NVML's affinity, sysfs's switch: both kept
    assert (d0["numa_node"], d5["numa_node"]) == (0, 1)
    assert d0["local_cpus"] == list(range(56)) and d5["local_cpus"] == list(range(56, 112))
    assert d0["facts"]["pcie_switch"] == "0000:16:00.0"
    assert d0["facts"]["persistence_mode"] == "enabled"
    assert d0["facts"]["nvlinks_active"] == "18"
    assert d0["pcie_link_speed"] == "32.0 GT/s PCIe" and d0["irqs"] == [200]
    links = {ln["peer"]: ln for ln in d0["links"]}
    assert set(links) == set(range(1, 8))
    assert all(ln["kind"] == "nvlink" for ln in links.values())
    assert links[1]["detail"] == "PCIe path: pcie-switch"
    assert links[4]["detail"] == "PCIe path: system"

    v = out["passes"][0]["values"]
    assert v["accel.0.util"] == pytest.approx(0.10)
    assert v["accel.3.util"] == pytest.approx(0.40)
    assert v["accel.0.mem_util"] == pytest.approx(0.05)
    assert v["accel.2.mem_used_bytes"] == 3 << 30
    assert v["accel.0.power_watts"] == pytest.approx(250.0)
    assert v["accel.7.power_watts"] == pytest.approx(257.0)
    assert v["accel.0.power_limit_watts"] == pytest.approx(700.0)
    assert v["accel.1.temp_c"] == 41
    assert v["accel.0.sm_clock_mhz"] == 1980 and v["accel.0.mem_clock_mhz"] == 2619
    assert v["accel.1.pcie_tx_bytes"] == 1001 * 1024
    assert v["accel.1.pcie_rx_bytes"] == 2001 * 1024
    assert v["accel.0.pcie_link_gen"] == 5 and v["accel.0.pcie_link_width"] == 16
    assert v["accel.1.ecc_errors"] == 2 and v["accel.0.ecc_errors"] == 0
    assert v["accel.3.ecc_corrected"] == 3 and v["accel.3.retired_pages"] == 3
    assert v["accel.0.processes"] == 2 and v["accel.1.processes"] == 0
    assert all(v[f"accel.{i}.lost"] == 0 for i in range(8))
    assert v["accel.count"] == 8
    assert sorted(out["processes"]) == [[4242, 0, 1 << 30], [4243, 0, 2 << 30]]
    assert out["log"] == []


def test_not_supported_leaves_metrics_absent(fake_nvml_dir: Path) -> None:
    out = run_child(fake_nvml_dir, {
        "FAKE_NVML_GPUS": "2",
        "FAKE_NVML_FAIL": "nvmlDeviceGetPowerUsage@1=3,nvmlDeviceGetTotalEccErrors=3,"
                          "nvmlDeviceGetSerial=3",
    }, root=str(NVIDIA_HOST), passes=2)
    for p in out["passes"]:
        v = p["values"]
        assert v["accel.0.power_watts"] == pytest.approx(250.0)
        assert "accel.1.power_watts" not in v  # absent, not 0
        assert not any(k.endswith((".ecc_errors", ".ecc_corrected")) for k in v)
        assert v["accel.1.util"] == pytest.approx(0.2)
    assert out["devices"][0]["serial"] is None
    assert out["log"] == []


def test_gpu_falling_off_the_bus_is_reported_once(fake_nvml_dir: Path) -> None:
    out = run_child(fake_nvml_dir, {
        "FAKE_NVML_GPUS": "2", "FAKE_NVML_LOST": "1", "FAKE_NVML_LOST_AFTER": "1",
    }, passes=3)
    first, second, third = (p["values"] for p in out["passes"])
    # it answered the utilization query, then fell off within the same pass
    assert first["accel.1.util"] == pytest.approx(0.2) and first["accel.1.lost"] == 1
    assert "accel.1.power_watts" not in first
    for v in (second, third):
        assert v["accel.1.lost"] == 1
        assert "accel.1.util" not in v and "accel.1.power_watts" not in v
        assert v["accel.0.util"] == pytest.approx(0.1) and v["accel.0.lost"] == 0
    lost_lines = [ln for ln in out["log"] if "fell off the bus" in ln]
    assert len(lost_lines) == 1 and "0000:2a:00.0" in lost_lines[0]
    # the fake lists 2 GPUs; sysfs serves the other 6 of the tree
    assert out["backends"] == ["nvidia", "sysfs"]


def test_driver_not_loaded_degrades_to_sysfs(fake_nvml_dir: Path) -> None:
    out = run_child(fake_nvml_dir, {"FAKE_NVML_GPUS": "8", "FAKE_NVML_INIT": "9"}, passes=2)
    assert out["backends"] == ["sysfs"]
    assert len(out["log"]) == 1
    assert "nvidia backend unavailable" in out["log"][0]
    assert "Driver Not Loaded" in out["log"][0]
    assert "using sysfs for 8 nvidia devices" in out["log"][0]
    assert [d["backend"] for d in out["devices"]] == ["sysfs"] * 8
    v = out["passes"][1]["values"]
    assert v["accel.0.pcie_link_gen"] == 5
    assert "accel.0.util" not in v


def test_version_mismatch_mid_run_degrades_once(fake_nvml_dir: Path) -> None:
    # the driver is replaced under a running daemon: every query now fails
    # with LIB_RM_VERSION_MISMATCH (18); the pass still gets sysfs numbers
    out = run_child(fake_nvml_dir, {
        "FAKE_NVML_GPUS": "8", "FAKE_NVML_FAIL": "nvmlDeviceGetUtilizationRates=18",
    }, passes=3)
    assert out["backends"] == ["sysfs"]
    failed = [ln for ln in out["log"] if "falling back to sysfs" in ln]
    assert len(failed) == 1 and len(out["log"]) == 1
    assert "version mismatch" in failed[0] and "its 8 devices" in failed[0]
    for p in out["passes"]:
        assert p["values"]["accel.7.pcie_link_gen"] == 5
        assert "accel.7.util" not in p["values"]


def test_hung_nvml_call_does_not_stall_the_sampler(fake_nvml_dir: Path) -> None:
    out = run_child(fake_nvml_dir, {
        "FAKE_NVML_GPUS": "2", "FAKE_NVML_HANG": "nvmlDeviceGetUtilizationRates:30",
    }, passes=3, deadline=0.5)
    first, second, third = out["passes"]
    assert first["seconds"] < 2.0
    assert second["seconds"] < 0.2 and third["seconds"] < 0.2  # skipped, not waited for
    for p in out["passes"]:
        # NVML's two GPUs are skipped; sysfs still serves the tree's other six
        assert not any(k.startswith(("accel.0.", "accel.1.")) for k in p["values"])
        assert p["values"]["accel.2.pcie_link_gen"] == 5
        assert p["values"]["accel.count"] == 8
    assert len([ln for ln in out["log"] if "did not answer within 0.5 s" in ln]) == 1


def test_no_nvml_library_at_all() -> None:
    """The real pynvml with no libnvidia-ml anywhere: automatic choice on a
    host whose sysfs shows 8 NVIDIA GPUs falls back to sysfs, saying so once."""
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has a real libnvidia-ml")
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    logger = logging.getLogger("hosttune.accel")
    logger.addHandler(handler)
    try:
        coll = AccelCollector(Host(NVIDIA_HOST),
                              factories={"nvidia": lambda host: NvidiaBackend()})
        values: dict[str, float] = {}
        coll.collect(values)
        coll.collect(values)
    finally:
        logger.removeHandler(handler)
    assert coll.backend_names == ["sysfs"]
    assert lines == ["accel: nvidia backend unavailable (NVML init failed: NVML Shared Library "
                     "Not Found); using sysfs for 8 nvidia devices"]
    assert values["accel.count"] == 8
    assert values["accel.0.pcie_link_width"] == 16


def test_xid_events_are_counted_and_logged_once_per_code(fake_nvml_dir: Path) -> None:
    out = run_child(fake_nvml_dir, {
        "FAKE_NVML_GPUS": "2", "FAKE_NVML_XID": "1:79,1:79,0:48",
    }, passes=2)
    for p in out["passes"]:
        assert p["values"]["accel.0.xid_errors"] == 1
        assert p["values"]["accel.1.xid_errors"] == 2
    assert out["log"] == ["accel: NVIDIA GPU 1 (0000:2a:00.0) reported Xid 79",
                          "accel: NVIDIA GPU 0 (0000:18:00.0) reported Xid 48"]


def test_xid_registration_not_supported_leaves_count_absent(fake_nvml_dir: Path) -> None:
    out = run_child(fake_nvml_dir, {
        "FAKE_NVML_GPUS": "2", "FAKE_NVML_FAIL": "nvmlDeviceRegisterEvents@1=3",
    })
    values = out["passes"][0]["values"]
    assert values["accel.0.xid_errors"] == 0
    assert "accel.1.xid_errors" not in values


def test_gpu_lost_before_start_is_left_to_sysfs(fake_nvml_dir: Path) -> None:
    out = run_child(fake_nvml_dir, {
        "FAKE_NVML_GPUS": "2", "FAKE_NVML_FAIL": "nvmlDeviceGetHandleByIndex_v2@1=15",
    })
    assert out["backends"] == ["nvidia", "sysfs"]
    by_address = {d["pci_address"]: d for d in out["devices"]}
    assert by_address["0000:18:00.0"]["backend"] == "nvidia"
    assert by_address["0000:2a:00.0"]["backend"] == "sysfs"
    assert out["log"] == ["accel: NVIDIA GPU 1 is lost (NVML: GPU is lost); left to sysfs"]
    values = out["passes"][0]["values"]
    assert values["accel.0.util"] == pytest.approx(0.1)
    assert values["accel.1.pcie_link_gen"] == 5 and "accel.1.util" not in values


PCIE = "nvmlDeviceGetPcieThroughput"
UTIL = "nvmlDeviceGetUtilizationRates"


def test_pcie_throughput_is_read_every_nth_pass_only(fake_nvml_dir: Path) -> None:
    out = run_child(fake_nvml_dir, {"FAKE_NVML_GPUS": "8"}, passes=7, pcie_every=3,
                    count=[PCIE, UTIL])
    # passes 0, 3 and 6 read it: 8 GPUs, two directions each
    assert out["calls"] == {PCIE: 3 * 8 * 2, UTIL: 7 * 8}
    for n, p in enumerate(out["passes"]):
        v = p["values"]
        for i in range(8):
            assert (f"accel.{i}.pcie_tx_bytes" in v) == (n % 3 == 0), (n, i)
            assert (f"accel.{i}.pcie_rx_bytes" in v) == (n % 3 == 0), (n, i)
            assert v[f"accel.{i}.util"] == pytest.approx(0.1 * (i + 1))
    assert out["passes"][3]["values"]["accel.1.pcie_rx_bytes"] == 2001 * 1024


def test_pcie_throughput_never_read_when_off(fake_nvml_dir: Path) -> None:
    out = run_child(fake_nvml_dir, {"FAKE_NVML_GPUS": "2"}, passes=3, pcie_every=0,
                    count=[PCIE, UTIL])
    assert out["calls"] == {PCIE: 0, UTIL: 3 * 2}
    assert not any("pcie_tx_bytes" in k or "pcie_rx_bytes" in k
                   for p in out["passes"] for k in p["values"])
    assert out["passes"][0]["values"]["accel.1.pcie_link_gen"] == 5  # the rest still read


def test_pcie_throughput_every_pass_by_default(fake_nvml_dir: Path) -> None:
    out = run_child(fake_nvml_dir, {"FAKE_NVML_GPUS": "2"}, passes=2, count=[PCIE])
    assert out["calls"] == {PCIE: 2 * 2 * 2}
