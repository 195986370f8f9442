"""Host trees for `hosttune doctor`: sysfs PCI hierarchies with config space
bytes, written into a test's tmp_path.

Each tree mirrors a real server's PCIe layout, register values included:

- `rccl_547`: the 4 x AMD Instinct MI100 server of ROCm/rccl issue #547
  (https://github.com/ROCm/rccl/issues/547, `lspci -tv` and `lspci -vvv` in
  the 2022-06-28 comments): an EPYC (Starship/Matisse) GPP bridge 40:01.1 on
  NUMA node 1, a PMC-Sierra switch (11f8:4000) below it with a ConnectX-6
  (15b3:101b), two MI100 (1002:738c, each behind its own on-board switch) and
  two SK hynix NVMe drives. The root port's ACSCtl is the one the issue shows
  (SrcValid+ ReqRedir+ CmpltRedir+ UpstreamFwd+ = 0x001d); Linux writes the
  same bits into every ACS-capable downstream port when the IOMMU is on,
  which it was (AMD IOMMU at 40:00.2 in the tree), with translated DMA
  domains (the kernel's default without iommu=pt).
- `dgx_h100`: two sockets as in NVIDIA's DGX H100 (DGX H100 user guide,
  https://docs.nvidia.com/dgx/dgxh100-user-guide/introduction-to-dgxh100.html:
  GPUs and ConnectX-7 NICs paired behind PCIe switches on both sockets),
  shrunk to one Broadcom PEX switch (1000:c030) per socket with two H100
  (10de:2330, Gen5 x16) and one ConnectX-7 (15b3:1021) behind it, set up
  the way DGX OS ships it: ACS off on the switch ports, iommu=pt (identity
  domains), MPS 256 B and MRRS 512 B everywhere, every link at Gen5 x16. A
  clean host: the checks find nothing, and each test breaks one thing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

SPEED_CODE = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5}
PORT_CODE = {"endpoint": 0, "root-port": 4, "upstream-port": 5, "downstream-port": 6}
SIZE_CODE = {128: 0, 256: 1, 512: 2, 1024: 3, 2048: 4, 4096: 5}
CLASS_BRIDGE = 0x060400


@dataclass
class Fn:
    """One PCI function of a fixture tree."""

    address: str
    vendor: int
    device: int
    cls: int
    port: str  # endpoint | root-port | upstream-port | downstream-port
    node: int
    link: tuple[float, int]  # LnkCap speed (GT/s), width
    status: tuple[float, int] | None = None  # LnkSta; None: as LnkCap
    mps_supported: int = 256
    mps: int = 256
    mrrs: int = 512
    acs_cap: int | None = None
    acs_ctrl: int | None = None
    driver: str | None = None
    iommu_type: str | None = None
    children: list[Fn] = field(default_factory=list)

    def config(self) -> bytes:
        """4 KiB of config space: header, PCI Express capability at 0x40,
        ACS extended capability at 0x100 where the function has one."""
        data = bytearray(4096)
        data[0:2] = self.vendor.to_bytes(2, "little")
        data[2:4] = self.device.to_bytes(2, "little")
        data[6:8] = (0x0010).to_bytes(2, "little")  # Status: capabilities list
        data[9:12] = self.cls.to_bytes(3, "little")
        data[0x0E] = 0x01 if self.port != "endpoint" else 0x00
        data[0x34] = 0x40
        exp = 0x40
        data[exp] = 0x10
        data[exp + 1] = 0x00
        data[exp + 2:exp + 4] = ((PORT_CODE[self.port] << 4) | 2).to_bytes(2, "little")
        data[exp + 4:exp + 8] = SIZE_CODE[self.mps_supported].to_bytes(4, "little")
        devctl = (SIZE_CODE[self.mps] << 5) | (SIZE_CODE[self.mrrs] << 12) | 0x0010
        data[exp + 8:exp + 10] = devctl.to_bytes(2, "little")
        speed, width = self.link
        data[exp + 0x0C:exp + 0x10] = (SPEED_CODE[speed] | (width << 4)).to_bytes(4, "little")
        sspeed, swidth = self.status or self.link
        data[exp + 0x12:exp + 0x14] = (SPEED_CODE[sspeed] | (swidth << 4)).to_bytes(2, "little")
        if self.acs_cap is not None:
            data[0x100:0x104] = (0x000D | (1 << 16)).to_bytes(4, "little")
            data[0x104:0x106] = self.acs_cap.to_bytes(2, "little")
            data[0x106:0x108] = (self.acs_ctrl or 0).to_bytes(2, "little")
        return bytes(data)


def _speed_text(speed: float) -> str:
    return f"{speed:.1f} GT/s PCIe"


def write_tree(root: Path, domain_bus: str, top: list[Fn], *, iommu_units: tuple[str, ...] = (),
               cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro") -> Path:
    """Write the functions under /sys/devices/pciDOMAIN:BUS/, with the
    /sys/bus/pci/devices links, IOMMU groups and /proc/cmdline."""
    devices = root / "sys/bus/pci/devices"
    devices.mkdir(parents=True, exist_ok=True)
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc/cmdline").write_text(cmdline + "\n")
    for unit in iommu_units:
        (root / "sys/class/iommu" / unit).mkdir(parents=True, exist_ok=True)
    groups = root / "sys/kernel/iommu_groups"
    group = [len(list(groups.iterdir())) if groups.is_dir() else 0]

    def put(fn: Fn, parent: Path) -> None:
        d = parent / fn.address
        d.mkdir(parents=True)
        (d / "vendor").write_text(f"0x{fn.vendor:04x}\n")
        (d / "device").write_text(f"0x{fn.device:04x}\n")
        (d / "class").write_text(f"0x{fn.cls:06x}\n")
        (d / "numa_node").write_text(f"{fn.node}\n")
        (d / "config").write_bytes(fn.config())
        speed, width = fn.link
        sspeed, swidth = fn.status or fn.link
        (d / "max_link_speed").write_text(_speed_text(speed) + "\n")
        (d / "max_link_width").write_text(f"{width}\n")
        (d / "current_link_speed").write_text(_speed_text(sspeed) + "\n")
        (d / "current_link_width").write_text(f"{swidth}\n")
        if fn.driver:
            drv = root / "sys/bus/pci/drivers" / fn.driver
            drv.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(drv, d), d / "driver")
        if fn.iommu_type:
            g = groups / str(group[0])
            group[0] += 1
            g.mkdir(parents=True)
            (g / "type").write_text(fn.iommu_type + "\n")
            os.symlink(os.path.relpath(g, d), d / "iommu_group")
        os.symlink(os.path.relpath(d, devices), devices / fn.address)
        for child in fn.children:
            put(child, d)

    bus = root / "sys/devices" / f"pci{domain_bus}"
    for fn in top:
        put(fn, bus)
    return root


# -- the trees ----------------------------------------------------------------------

ACS_LINUX_IOMMU = 0x001D  # SrcValid ReqRedir CmpltRedir UpstreamFwd (rccl#547's ACSCtl)
ACS_CAP_EPYC = 0x005F  # SrcValid TransBlk ReqRedir CmpltRedir UpstreamFwd DirectTrans


def _pmc_dsp(address: str, child: Fn, acs_ctrl: int) -> Fn:
    return Fn(address, 0x11F8, 0x4000, CLASS_BRIDGE, "downstream-port", 1, (16.0, 16),
              acs_cap=ACS_CAP_EPYC, acs_ctrl=acs_ctrl, driver="pcieport", children=[child])


def _mi100(chain: list[str], gpu: str, acs_ctrl: int) -> Fn:
    """The MI100's own on-board switch (two levels, as the issue's tree shows)
    and the GPU below it."""
    gpu_fn = Fn(gpu, 0x1002, 0x738C, 0x038000, "endpoint", 1, (16.0, 16), driver="amdgpu",
                iommu_type="DMA")
    inner_dsp = Fn(chain[3], 0x1002, 0x14A1, CLASS_BRIDGE, "downstream-port", 1, (16.0, 16),
                   acs_cap=ACS_CAP_EPYC, acs_ctrl=acs_ctrl, driver="pcieport",
                   children=[gpu_fn])
    inner_usp = Fn(chain[2], 0x1002, 0x14A0, CLASS_BRIDGE, "upstream-port", 1, (16.0, 16),
                   driver="pcieport", children=[inner_dsp])
    board_dsp = Fn(chain[1], 0x11F8, 0x4000, CLASS_BRIDGE, "downstream-port", 1, (16.0, 16),
                   acs_cap=ACS_CAP_EPYC, acs_ctrl=acs_ctrl, driver="pcieport",
                   children=[inner_usp])
    board_usp = Fn(chain[0], 0x11F8, 0x4000, CLASS_BRIDGE, "upstream-port", 1, (16.0, 16),
                   driver="pcieport", children=[board_dsp])
    return board_usp


def rccl_547(root: Path, *, acs_ctrl: int = ACS_LINUX_IOMMU) -> Path:
    cx6 = Fn("0000:45:00.0", 0x15B3, 0x101B, 0x020700, "endpoint", 1, (16.0, 16),
             driver="mlx5_core", iommu_type="DMA")
    nvme = [Fn(f"0000:{b}:00.0", 0x1C5C, 0x2839, 0x010802, "endpoint", 1, (16.0, 4),
               driver="nvme", iommu_type="DMA") for b in ("52", "53")]
    switch = Fn("0000:43:00.0", 0x11F8, 0x4000, CLASS_BRIDGE, "upstream-port", 1, (16.0, 16),
                driver="pcieport", children=[
                    _pmc_dsp("0000:44:00.0", cx6, acs_ctrl),
                    _pmc_dsp("0000:44:01.0", _mi100(
                        ["0000:46:00.0", "0000:47:00.0", "0000:48:00.0", "0000:49:00.0"],
                        "0000:4a:00.0", acs_ctrl), acs_ctrl),
                    _pmc_dsp("0000:44:02.0", _mi100(
                        ["0000:4c:00.0", "0000:4d:00.0", "0000:4e:00.0", "0000:4f:00.0"],
                        "0000:50:00.0", acs_ctrl), acs_ctrl),
                    _pmc_dsp("0000:44:03.0", nvme[0], acs_ctrl),
                    _pmc_dsp("0000:44:04.0", nvme[1], acs_ctrl),
                ])
    rp = Fn("0000:40:01.1", 0x1022, 0x1483, CLASS_BRIDGE, "root-port", 1, (16.0, 16),
            acs_cap=ACS_CAP_EPYC, acs_ctrl=ACS_LINUX_IOMMU, driver="pcieport",
            children=[switch])
    return write_tree(root, "0000:40", [rp], iommu_units=("ivhd0",),
                      cmdline="BOOT_IMAGE=/vmlinuz-5.13.0 root=/dev/nvme0n1p2 ro quiet")


@dataclass
class DgxSocket:
    node: int
    rp: Fn
    switch_usp: Fn
    gpus: list[Fn]
    nic: Fn


def dgx_sockets() -> list[DgxSocket]:
    """The functions of the clean two-socket tree, to change before writing."""
    sockets = []
    for node, bus in ((0, 0x10), (1, 0x90)):
        def addr(b: int, dev: int = 0) -> str:
            return f"0000:{b:02x}:{dev:02x}.0"
        gpus = [Fn(addr(bus + 3 + i), 0x10DE, 0x2330, 0x030200, "endpoint", node, (32.0, 16),
                   driver="nvidia", iommu_type="identity") for i in range(2)]
        nic = Fn(addr(bus + 5), 0x15B3, 0x1021, 0x020700, "endpoint", node, (32.0, 16),
                 driver="mlx5_core", iommu_type="identity")
        dsps = [Fn(addr(bus + 2, i), 0x1000, 0xC030, CLASS_BRIDGE, "downstream-port", node,
                   (32.0, 16), acs_cap=ACS_CAP_EPYC, acs_ctrl=0, driver="pcieport",
                   children=[child]) for i, child in enumerate([*gpus, nic])]
        usp = Fn(addr(bus + 1), 0x1000, 0xC030, CLASS_BRIDGE, "upstream-port", node, (32.0, 16),
                 driver="pcieport", children=dsps)
        rp = Fn(addr(bus, 1), 0x8086, 0x352A, CLASS_BRIDGE, "root-port", node, (32.0, 16),
                acs_cap=ACS_CAP_EPYC, acs_ctrl=ACS_LINUX_IOMMU, driver="pcieport",
                children=[usp])
        sockets.append(DgxSocket(node, rp, usp, gpus, nic))
    return sockets


def write_dgx(root: Path, sockets: list[DgxSocket]) -> Path:
    for sock in sockets:
        write_tree(root, f"0000:{sock.rp.address[5:7]}", [sock.rp], iommu_units=("dmar0",),
                   cmdline="BOOT_IMAGE=/boot/vmlinuz root=/dev/md0 ro intel_iommu=on iommu=pt")
    return root
