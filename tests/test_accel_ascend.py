"""npu-smi parsing against recorded outputs (tests/fixtures/accel/ascend/README.md
says where each was recorded), and the Ascend backend on the ascend-8npu tree,
whose commands/ replays those recordings through Host.run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hosttune.agent.sense.accel.ascend import (
    AscendBackend,
    parse_npu_smi_info,
    parse_topo,
    parse_usages,
)
from hosttune.agent.sense.accel.base import BackendUnavailable
from hosttune.agent.sense.accel.select import AccelCollector
from hosttune.agent.sense.errors import ParseError
from hosttune.agent.sense.host import Host

REC = Path(__file__).parent / "fixtures" / "accel" / "ascend"
HOST = Path(__file__).parent / "fixtures" / "hosts" / "ascend-8npu"
MB = 1 << 20


def read(name: str) -> str:
    return (REC / name).read_text()


def test_a2_eight_npus_with_a_process() -> None:
    info = parse_npu_smi_info(read("atlas800t-a2_910b1x8_npu-smi-24.1.0_info.txt"))
    assert info.version == "24.1.0"
    assert [c.npu for c in info.chips] == list(range(8))
    assert [c.bus_id for c in info.chips] == [
        "0000:c1:00.0", "0000:01:00.0", "0000:c2:00.0", "0000:02:00.0",
        "0000:81:00.0", "0000:41:00.0", "0000:82:00.0", "0000:42:00.0"]
    c0, c7 = info.chips[0], info.chips[7]
    assert (c0.name, c0.health, c0.chip, c0.phy_id) == ("910B1", "OK", 0, None)
    assert (c0.power_w, c0.temp_c, c0.aicore_pct) == (89.1, 32, 0)
    assert (c0.hbm_used_mb, c0.hbm_total_mb) == (3437, 65536)
    assert (c0.memory_used_mb, c0.memory_total_mb) == (0, 0)
    assert (c7.power_w, c7.temp_c, c7.hbm_used_mb) == (91.1, 32, 3380)
    assert len(info.processes) == 1
    p = info.processes[0]
    assert (p.npu, p.chip, p.pid, p.name, p.memory_mb) == (0, 0, 641248, "", 113)


def test_a3_two_chips_per_npu() -> None:
    info = parse_npu_smi_info(read("atlas-a3_ascend910x2chips_npu-smi-24.1.rc3.7_info.txt"))
    assert info.version == "24.1.rc3.7"
    first, second = info.chips
    assert (first.npu, first.chip, first.phy_id, first.bus_id) == (2, 0, 4, "0000:95:00.0")
    assert (second.npu, second.chip, second.phy_id, second.bus_id) == (2, 1, 5, "0000:97:00.0")
    assert first.power_w == 176.3
    assert second.power_w is None  # "-": the card's power is reported on chip 0 only
    assert second.temp_c == 36 and second.hbm_used_mb == 3208
    assert info.processes == []


def test_26x_excerpt_with_container_pid_column() -> None:
    info = parse_npu_smi_info(read("atlas-a3_npu-smi-26.0.rc2_info_excerpt.txt"))
    (chip,) = info.chips
    assert (chip.npu, chip.chip, chip.phy_id, chip.bus_id) == (7, 1, 15, "0000:83:00.0")
    assert (chip.hbm_used_mb, chip.hbm_total_mb) == (31877, 65536)  # "31877/ 65536"
    assert chip.power_w is None
    (p,) = info.processes
    assert (p.npu, p.chip, p.pid, p.name, p.memory_mb) == (0, 0, 632268, "python3.1", 197)


def test_not_a_table() -> None:
    with pytest.raises(ParseError, match="no NPU rows"):
        parse_npu_smi_info("dcmi model initialized failed, because the device is used. "
                           "ret is -8020\n", source="npu-smi info")


def test_usages_blocks() -> None:
    usage = parse_usages(read("atlas800t-a2_910b1_npu-smi-23.0.rc2_usages-i0.txt"))
    assert set(usage) == {0}
    assert usage[0]["HBM Capacity(MB)"] == 65536
    assert usage[0]["HBM Usage Rate(%)"] == 4
    assert usage[0]["HBM Bandwidth Usage Rate(%)"] == 0
    assert "NPU ID" not in usage[0]
    # a newer card's answer has no Chip ID line at all
    doc = parse_usages(read("huawei-doc_npu-smi_usages-i0.txt"))
    assert doc[0]["HBM Capacity(MB)"] == 131072
    assert doc[0]["HBM Bandwidth Usage Rate(%)"] == 3


def test_topo_matrix() -> None:
    topo = parse_topo(read("atlas800t-a2_910b1x8_npu-smi-23.0.rc2_topo.txt"))
    assert sorted(topo) == list(range(8))
    assert topo[0].cpus == tuple(range(144, 168))
    assert topo[5].cpus == tuple(range(48, 72))
    assert topo[0].links == {n: "HCCS" for n in range(1, 8)}
    assert 3 not in topo[3].links


def test_backend_on_the_ascend_host() -> None:
    backend = AscendBackend(Host(HOST))
    assert backend.version == "24.1.0"
    coll = AccelCollector(Host(HOST))
    assert coll.backend_names == ["ascend"]
    devs = coll.devices()
    # host-wide indices follow PCI order; NPU ids stay as vendor_index
    assert [d.pci_address for d in devs] == [
        "0000:01:00.0", "0000:02:00.0", "0000:41:00.0", "0000:42:00.0",
        "0000:81:00.0", "0000:82:00.0", "0000:c1:00.0", "0000:c2:00.0"]
    assert [d.vendor_index for d in devs] == [1, 3, 5, 7, 4, 6, 0, 2]
    npu0 = devs[6]
    assert (npu0.model, npu0.vendor, npu0.backend) == ("910B1", "huawei", "ascend")
    assert npu0.numa_node == 6  # from sysfs
    assert npu0.local_cpus == tuple(range(144, 168))  # from npu-smi -t topo
    assert npu0.driver == "devdrv_device_driver"
    assert npu0.memory_total_bytes == 65536 * MB
    assert npu0.pcie_link_speed == "16.0 GT/s PCIe"
    assert npu0.pcie_max_link_speed == "32.0 GT/s PCIe"
    assert npu0.facts["health"] == "OK"
    # NPU0's HCCS peers, by host-wide index
    assert sorted(ln.peer for ln in npu0.links) == [0, 1, 2, 3, 4, 5, 7]
    assert {ln.kind for ln in npu0.links} == {"hccs"}

    values: dict[str, float] = {}
    coll.collect(values)
    assert values["accel.6.power_watts"] == pytest.approx(89.1)
    assert values["accel.6.temp_c"] == 32
    assert values["accel.6.util"] == 0
    assert values["accel.6.mem_used_bytes"] == 3437 * MB
    assert values["accel.6.mem_total_bytes"] == 65536 * MB
    assert values["accel.6.mem_util"] == 0  # from -t usages -i 0
    assert "accel.0.mem_util" not in values  # no -t usages recorded for NPU 1
    assert values["accel.6.processes"] == 1 and values["accel.0.processes"] == 0
    assert all(values[f"accel.{i}.lost"] == 0 for i in range(8))
    assert [(p.pid, p.device, p.memory_bytes) for p in coll.processes().processes] == [
        (641248, 6, 113 * MB)]


def test_npu_disappearing_is_lost(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(HOST, root, symlinks=True)
    coll = AccelCollector(Host(root))
    # the next `npu-smi info` no longer lists NPU 7 (bus 42)
    record = root / "commands" / "npu-smi_info.txt"
    lines = record.read_text().splitlines(keepends=True)
    at = next(n for n, ln in enumerate(lines) if ln.startswith("| 7     910B1"))
    record.write_text("".join(lines[:at] + lines[at + 3:]))
    values: dict[str, float] = {}
    coll.collect(values)
    assert values["accel.3.lost"] == 1 and "accel.3.power_watts" not in values
    assert values["accel.2.lost"] == 0


def test_missing_tool_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="command not found"):
        AscendBackend(Host(tmp_path))


def test_failing_tool_is_unavailable(tmp_path: Path) -> None:
    commands = tmp_path / "commands"
    commands.mkdir()
    (commands / "npu-smi_info.txt").write_text("")
    (commands / "npu-smi_info.rc").write_text("255\n")
    with pytest.raises(BackendUnavailable, match="exited 255"):
        AscendBackend(Host(tmp_path))
