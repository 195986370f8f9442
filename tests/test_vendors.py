"""The one vendor table, and what derives from it."""

from __future__ import annotations

from hosttune.agent.sense import vendors
from hosttune.agent.sense.accel import select
from hosttune.agent.sense.accel.amd import AmdBackend
from hosttune.agent.sense.accel.ascend import AscendBackend
from hosttune.agent.sense.accel.nvidia import NvidiaBackend
from hosttune.agent.sense.pci import CLASS_DISPLAY_3D, CLASS_DISPLAY_VGA, classify


def test_rows_are_unique() -> None:
    ids = [i for v in vendors.VENDORS for i in v.pci_ids]
    assert len(ids) == len(set(ids))
    names = [v.name for v in vendors.VENDORS]
    assert len(names) == len(set(names))
    backends = [v.backend for v in vendors.VENDORS if v.backend]
    assert len(backends) == len(set(backends))


def test_every_backend_has_a_vendor_row_and_reports_its_name() -> None:
    assert set(select.DEFAULT_FACTORIES) <= set(vendors.VENDOR_BACKENDS)
    for cls in (NvidiaBackend, AmdBackend, AscendBackend):
        assert cls.vendor is vendors.for_backend(cls.name)
        assert cls.name in select.DEFAULT_FACTORIES


def test_config_names_and_choice_derive_from_the_table() -> None:
    # the names and the order the config has always accepted
    assert vendors.BACKENDS == ("nvidia", "amd", "ascend", "intel", "sysfs")
    assert select.BACKEND_NAMES == ("nvidia", "amd", "ascend", "sysfs")
    assert sorted(select.PLANNED_BACKENDS) == ["intel"]
    assert select.BACKEND_VENDORS == {"nvidia": "nvidia", "amd": "amd", "ascend": "huawei"}
    assert sorted(select.LIBRARY_BACKENDS) == ["amd", "nvidia"]


def test_pci_classification_by_vendor() -> None:
    vga, gpu3d = CLASS_DISPLAY_VGA << 8, CLASS_DISPLAY_3D << 8
    for vid in (0x10DE, 0x1002, 0x19E5, 0xCABC, 0x1DA3, 0x1D22, 0x1D94):
        assert classify(vid, gpu3d) == "accelerator"
    # a BMC's VGA (ASPEED 0x1a03) and an Intel iGPU are not AI accelerators
    assert classify(0x1A03, vga) == "other"
    assert classify(0x8086, vga) == "other"
    assert vendors.vendor_name(0x15B3) == "mellanox"
    assert vendors.vendor_name(0x19E5) == "huawei"
    assert vendors.vendor_name(0x1A03) is None


def test_device_files_by_driver() -> None:
    assert {d: (v.device_file, v.device_base) for d, v in vendors.BY_DRIVER.items()} == {
        "nvidia": ("/dev/nvidia{}", 0), "amdgpu": ("/dev/dri/renderD{}", 128),
        "devdrv_device_driver": ("/dev/davinci{}", 0)}
