"""The one list of hardware vendors hosttune knows: PCI vendor ids, names,
which of their devices are AI accelerators or NICs, and which accelerator
backend serves them. Everything vendor-shaped derives from this table: PCI
classification (`pci.py`), the backends the config accepts and the order
they are tried (`accel/select.py`), the vendor names the backends report,
and the device files a process opens to drive an accelerator.

Adding a vendor is one row here; adding its backend is that row's `backend`
plus one module under `accel/` and its line in `accel/select.DEFAULT_FACTORIES`
(a backend named here without one is accepted by the config and skipped).

Sources: PCI ids and names from the PCI ID Repository (pciutils/pciids
`pci.ids`); 0x1da3 is also PCI_VENDOR_ID_HABANALABS in the kernel's
drivers/accel/habanalabs; 0x1d22 ("Baidu Technology", 3684 "Kunlun AI
Accelerator") and 0x1d94 ("Chengdu Haiguang IC Design Co., Ltd.") were
checked against pci.ids excerpts. 0xcabc (Cambricon) could not be confirmed
from a public source here; it stays only as a name, since its MLUs report
class 0x1200 and are accelerators by class. Device file names are the
drivers' own: nvidia.ko numbers /dev/nvidiaN by its "Device Minor",
amdgpu's render nodes start at /dev/dri/renderD128, Huawei's
devdrv_device_driver makes /dev/davinciN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Vendor:
    name: str  # hosttune's name for the vendor ("nvidia"): metric labels, AccelDevice.vendor
    display: str  # for people (log lines, reports); pci.ids' full name in the row's comment
    pci_ids: tuple[int, ...]
    # display-class (VGA/3D) devices of this vendor are AI accelerators; a
    # processing accelerator (class 0x1200) or co-processor counts whoever made it
    accelerators: bool = False
    nics: bool = False
    # the accelerator backend that serves this vendor's devices, if any
    backend: str | None = None
    # the backend wraps a vendor library that sees only the live machine (it
    # cannot replay a fixture tree, unlike a command run through Host.run)
    library: bool = False
    # what the backend's log lines call the library ("NVML", "amdsmi")
    library_name: str | None = None
    # the kernel driver of its accelerators and the device file a process opens
    # to drive the Nth of them ("{}" is N, counted from device_base)
    driver: str | None = None
    device_file: str | None = None
    device_base: int = 0


VENDORS: tuple[Vendor, ...] = (
    Vendor("nvidia", "NVIDIA", (0x10DE,),  # NVIDIA Corporation
           accelerators=True, backend="nvidia", library=True, library_name="NVML",
           driver="nvidia", device_file="/dev/nvidia{}"),
    Vendor("amd", "AMD", (0x1002,),  # Advanced Micro Devices, Inc. [AMD/ATI]
           accelerators=True, backend="amd", library=True, library_name="amdsmi",
           driver="amdgpu", device_file="/dev/dri/renderD{}", device_base=128),
    Vendor("huawei", "Huawei", (0x19E5,),  # Huawei Technologies Co., Ltd.
           accelerators=True, nics=True, backend="ascend", driver="devdrv_device_driver",
           device_file="/dev/davinci{}"),
    Vendor("cambricon", "Cambricon", (0xCABC,), accelerators=True),  # unverified id, see above
    Vendor("habana", "Habana Labs (Intel Gaudi)", (0x1DA3,), accelerators=True),
    Vendor("kunlunxin", "Kunlunxin", (0x1D22,),  # Baidu Technology (Kunlun AI Accelerator)
           accelerators=True),
    Vendor("hygon", "Hygon", (0x1D94,),  # Chengdu Haiguang IC Design Co., Ltd. (Hygon DCU)
           accelerators=True),
    # the config has accepted backend "intel" since before the backend exists
    Vendor("intel", "Intel", (0x8086,), nics=True, backend="intel"),  # Intel Corporation
    Vendor("mellanox", "Mellanox", (0x15B3,), nics=True),  # Mellanox Technologies
    Vendor("broadcom", "Broadcom", (0x14E4,), nics=True),  # Broadcom Inc. and subsidiaries
    Vendor("virtio", "virtio", (0x1AF4,), nics=True),  # Red Hat, Inc. (virtio)
    Vendor("qlogic", "QLogic", (0x1077,), nics=True),  # QLogic Corp.
)

BY_PCI_ID: Mapping[int, Vendor] = {pci_id: v for v in VENDORS for pci_id in v.pci_ids}
BY_NAME: Mapping[str, Vendor] = {v.name: v for v in VENDORS}
BY_BACKEND: Mapping[str, Vendor] = {v.backend: v for v in VENDORS if v.backend}
BY_DRIVER: Mapping[str, Vendor] = {v.driver: v for v in VENDORS if v.driver}

# every backend a vendor row names, in table order (the default order of trial)
VENDOR_BACKENDS: tuple[str, ...] = tuple(BY_BACKEND)
# every name the config's `backends` accepts, in the default order
BACKENDS: tuple[str, ...] = (*VENDOR_BACKENDS, "sysfs")


def backends_from_config(names: Sequence[str]) -> list[str] | None:
    """The config's `backends` as AccelCollector wants it: None (automatic)
    when it lists every backend, as the default does."""
    return None if set(names) >= set(BACKENDS) else list(names)


def by_pci_id(vendor_id: int) -> Vendor | None:
    return BY_PCI_ID.get(vendor_id)


def for_backend(backend: str) -> Vendor:
    """The vendor a backend serves; KeyError names a backend with no row."""
    try:
        return BY_BACKEND[backend]
    except KeyError:
        raise KeyError(f"no vendor row names backend {backend!r}") from None


def is_ai_vendor(vendor_id: int) -> bool:
    """Whether this vendor's display-class devices are AI accelerators."""
    vendor = BY_PCI_ID.get(vendor_id)
    return vendor is not None and vendor.accelerators


def vendor_name(vendor_id: int) -> str | None:
    """hosttune's name for a PCI vendor id, for the vendors it knows."""
    vendor = BY_PCI_ID.get(vendor_id)
    return vendor.name if vendor is not None else None
