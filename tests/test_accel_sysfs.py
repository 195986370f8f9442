"""The generic sysfs backend on the fixture host trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hosttune.agent.sense.accel.sysfs import (
    SysfsBackend,
    device_file,
    is_accelerator,
    link_generation,
    scan,
)
from hosttune.agent.sense.host import Host

HOSTS = Path(__file__).parent / "fixtures" / "hosts"


def test_eight_nvidia_gpus_and_nothing_else() -> None:
    accels = scan(Host(HOSTS / "nvidia-8gpu"))
    # 8 GPUs; the 4 InfiniBand NICs and the BMC's VGA are not accelerators
    assert [a.address for a in accels] == [
        "0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
        "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"]
    assert {a.vendor_name for a in accels} == {"nvidia"}
    assert [a.numa_node for a in accels] == [0, 0, 0, 0, 1, 1, 1, 1]
    g0 = accels[0]
    assert g0.local_cpus == tuple(range(56))
    assert g0.driver == "nvidia"
    assert (g0.link_speed, g0.link_width) == ("32.0 GT/s PCIe", 16)
    assert g0.irqs == (200,)
    assert g0.upstream == ("0000:15:01.0", "0000:16:00.0", "0000:17:00.0")
    # pairs of GPUs share a switch
    assert [a.pcie_switch for a in accels] == [
        "0000:16:00.0", "0000:16:00.0", "0000:37:00.0", "0000:37:00.0",
        "0000:98:00.0", "0000:98:00.0", "0000:b8:00.0", "0000:b8:00.0"]


def test_nvidia_sysfs_has_no_power_or_temperature() -> None:
    backend = SysfsBackend(Host(HOSTS / "nvidia-8gpu"))
    values: dict[str, float] = {}
    backend.sample(values)
    assert values["accel.0.pcie_link_gen"] == 5
    assert values["accel.0.pcie_link_width"] == 16
    assert values["accel.0.lost"] == 0
    # what the driver does not expose stays absent, never 0
    for what in ("util", "power_watts", "temp_c", "mem_used_bytes"):
        assert f"accel.0.{what}" not in values
    assert backend.processes().processes == ()


def test_mixed_vendors() -> None:
    backend = SysfsBackend(Host(HOSTS / "mixed"))
    devs = backend.devices()
    assert [(d.pci_address, d.vendor, d.numa_node) for d in devs] == [
        ("0000:17:00.0", "nvidia", 0), ("0000:31:00.0", "huawei", 0),
        ("0000:4b:00.0", "cambricon", 0), ("0000:98:00.0", "amd", 1),
        ("0000:b1:00.0", "nvidia", 1)]
    amd = devs[3]
    assert amd.facts["pci_id"] == "1002:740f" and amd.facts["pci_class"] == "0x038000"
    assert amd.memory_total_bytes == 64 << 30
    assert devs[1].pcie_max_link_speed == "32.0 GT/s PCIe"
    values: dict[str, float] = {}
    backend.sample(values)
    # amdgpu's sysfs: busy percentages, VRAM, hwmon power (uW) and temperature (m°C)
    assert values["accel.3.util"] == pytest.approx(0.37)
    assert values["accel.3.mem_util"] == pytest.approx(0.12)
    assert values["accel.3.mem_used_bytes"] == 5 << 30
    assert values["accel.3.mem_total_bytes"] == 64 << 30
    assert values["accel.3.power_watts"] == pytest.approx(143.0)
    assert values["accel.3.power_limit_watts"] == pytest.approx(300.0)
    assert values["accel.3.temp_c"] == pytest.approx(48.0)  # junction, not edge
    assert values["accel.3.pcie_link_gen"] == 4
    for i in (0, 1, 2, 4):
        assert f"accel.{i}.power_watts" not in values
        assert f"accel.{i}.util" not in values


def test_removed_device_is_lost(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "mixed", root, symlinks=True)
    backend = SysfsBackend(Host(root))
    # surprise removal: the kernel deletes the device directory
    (root / "sys/bus/pci/devices/0000:4b:00.0").unlink()
    values: dict[str, float] = {}
    backend.sample(values)
    assert values["accel.2.lost"] == 1
    assert values["accel.1.lost"] == 0


def test_only_restricts_what_is_served() -> None:
    backend = SysfsBackend(Host(HOSTS / "mixed"), only={"0000:98:00.0"})
    backend.reindex({"0000:98:00.0": 3})
    assert [d.index for d in backend.devices()] == [3]
    values: dict[str, float] = {}
    backend.sample(values)
    assert {k.split(".")[1] for k in values} == {"3"}


def test_classification() -> None:
    assert is_accelerator(0x10DE, 0x030200)  # NVIDIA 3D controller
    assert is_accelerator(0x1002, 0x038000)  # AMD Instinct: display controller class
    assert is_accelerator(0x1234, 0x120000)  # any processing accelerator
    assert not is_accelerator(0x1A03, 0x030000)  # ASPEED BMC VGA
    assert not is_accelerator(0x15B3, 0x020700)  # InfiniBand NIC
    assert link_generation("16.0 GT/s PCIe") == 4
    assert link_generation("2.5 GT/s PCIe") == 1
    assert link_generation("Unknown") is None
    assert link_generation(None) is None


def test_empty_host(tmp_path: Path) -> None:
    backend = SysfsBackend(Host(tmp_path))
    assert backend.devices() == []
    values: dict[str, float] = {}
    backend.sample(values)
    assert values == {}


def _device_files(host: Host) -> list[tuple[str, str | None]]:
    nth: dict[str | None, int] = {}
    out = []
    for dev in scan(host):
        path = device_file(host, dev, nth.get(dev.driver, 0))
        if path is not None:
            nth[dev.driver] = nth.get(dev.driver, 0) + 1
        out.append((dev.address, path))
    return out


def test_device_files_by_driver_order() -> None:
    assert _device_files(Host(HOSTS / "mixed")) == [
        ("0000:17:00.0", "/dev/nvidia0"), ("0000:31:00.0", "/dev/davinci0"),
        ("0000:4b:00.0", None), ("0000:98:00.0", "/dev/dri/renderD128"),
        ("0000:b1:00.0", "/dev/nvidia1")]


def test_device_file_takes_the_nvidia_minor(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "nvidia-8gpu", root, symlinks=True)
    info = root / "proc/driver/nvidia/gpus/0000:18:00.0/information"
    info.parent.mkdir(parents=True)
    info.write_text("Model: \t\t NVIDIA H100\nDevice Minor: \t 5\n")
    files = _device_files(Host(root))
    assert files[0] == ("0000:18:00.0", "/dev/nvidia5")
    # the others keep their place in address order
    assert files[1] == ("0000:2a:00.0", "/dev/nvidia1")
