from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hosttune.agent.sense.errors import ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.pci import classify, read_device
from hosttune.agent.sense.telemetry.memory import mem_total_kb
from hosttune.agent.sense.topology import discover
from hosttune.agent.service.cli import main
from hosttune.agent.service.render.topology import affinity, topology_lines

HOSTS = Path(__file__).parent / "fixtures" / "hosts"


def test_dgx_like_locality() -> None:
    topo = discover(Host(HOSTS / "dgx-like-2s8g"))
    assert [n.id for n in topo.nodes] == [0, 1]
    assert topo.nodes[0].distances == (10, 21)
    assert topo.nodes[1].hugepages[2048].total == 1024
    assert len(topo.online_cpus()) == 112
    assert {c.package_id for c in topo.cpus} == {0, 1}
    accels = topo.accelerators()
    assert len(accels) == 8  # the ASPEED BMC VGA is not one
    assert [a.numa_node for a in accels].count(0) == 4
    assert len(topo.nics()) == 4 and len(topo.nvme()) == 2
    gpu0 = next(a for a in accels if a.address == "0000:18:00.0")
    nic0 = next(n for n in topo.nics() if n.address == "0000:19:00.0")
    far = next(n for n in topo.nics() if n.numa_node == 1)
    assert gpu0.pcie_switch == nic0.pcie_switch == "0000:16:00.0"
    assert affinity(gpu0, nic0) == "PIX" and affinity(gpu0, far) == "SYS"
    assert gpu0.local_cpus == tuple(range(56))
    assert gpu0.link_speed == "32.0 GT/s PCIe" and gpu0.link_width == 16
    assert nic0.irqs and nic0.netdevs == ("ibp25s0",)
    assert topo.nvme()[0].block_devs == ("nvme0n1",)
    nets = {n.name: n for n in topo.netifs}
    assert nets["ibp25s0"].pci_address == "0000:19:00.0"


def test_odd_host_still_gives_a_topology() -> None:
    topo = discover(Host(HOSTS / "odd"))
    assert "numa" in topo.gaps
    assert [n.id for n in topo.nodes] == [0]
    assert topo.nodes[0].cpus == (0, 1, 2)
    cpu3 = next(c for c in topo.cpus if c.id == 3)
    assert not cpu3.online and cpu3.core_id is None
    addresses = {d.address for d in topo.pci}
    assert addresses == {"0000:00:03.0", "0000:00:06.0"}  # ghost and vanished dropped
    nic = next(d for d in topo.pci if d.address == "0000:00:03.0")
    assert nic.numa_node is None and nic.local_cpus == ()
    gpu = next(d for d in topo.pci if d.address == "0000:00:06.0")
    assert gpu.link_speed is None and gpu.link_width is None
    assert any("no NUMA node known" in line for line in topology_lines(topo))


def test_this_vm_capture_reads_back() -> None:
    topo = discover(Host(HOSTS / "this-vm"))
    assert topo.online_cpus() == (0, 1)
    assert topo.nodes[0].mem_total_kb and topo.nodes[0].mem_total_kb > 1_000_000
    assert any(n.name == "eth0" and n.pci_address for n in topo.netifs)


def test_live_host() -> None:
    topo = discover(Host())
    assert topo.online_cpus()
    assert topo.nodes
    json.dumps(topo.to_dict())


@pytest.mark.parametrize("name", ["dgx-like-2s8g", "odd", "this-vm", "nvidia-8gpu", "mixed"])
def test_cli_on_fixtures(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topology", "--root", str(HOSTS / name)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPUs:")
    assert main(["topology", "--json", "--root", str(HOSTS / name)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["nodes"]


def test_cli_live_in_subprocess() -> None:
    proc = subprocess.run([sys.executable, "-m", "hosttune.agent.service.cli", "topology"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "node 0" in proc.stdout


def test_classify_roles() -> None:
    assert classify(0x10DE, 0x030200) == "accelerator"
    assert classify(0x1A03, 0x030000) == "other"  # BMC VGA
    assert classify(0x19E5, 0x120000) == "accelerator"
    assert classify(0x15B3, 0x020700) == "nic"
    assert classify(0x144D, 0x010802) == "nvme"


def test_capture_roundtrip(tmp_path: Path) -> None:
    out = tmp_path / "cap"
    assert main(["capture", "-o", str(out)]) == 0
    live, captured = discover(Host()), discover(Host(out))
    assert live.online_cpus() == captured.online_cpus()
    assert [d.address for d in live.pci] == [d.address for d in captured.pci]
    assert not list(out.rglob("environ")) and not list(out.rglob("cmdline_of_*"))
    assert main(["capture", "-o", str(out)]) == 1  # refuses a non-empty directory


attr_text = st.one_of(st.text(max_size=20), st.sampled_from(["0x10de", "-1", "0x030200", "",
                                                               "0-3", "ff,ff", "Unknown"]))


PCI_ATTRS = ("vendor", "device", "class", "numa_node", "local_cpulist", "current_link_width")


@settings(max_examples=60, deadline=None)
@given(texts=st.tuples(*(attr_text for _ in PCI_ATTRS)))
def test_malformed_pci_attributes_never_crash(
    tmp_path_factory: pytest.TempPathFactory, texts: tuple[str, ...],
) -> None:
    root = tmp_path_factory.mktemp("pci")
    d = root / "sys/bus/pci/devices/0000:00:01.0"
    d.mkdir(parents=True)
    for name, text in zip(PCI_ATTRS, texts, strict=True):
        (d / name).write_text(text)
    dev = read_device(Host(root), "0000:00:01.0")
    assert dev is None or dev.role in {"accelerator", "nic", "nvme", "bridge", "other"}


NODE_FILES = ("cpulist", "distance", "meminfo", "hugepages/hugepages-2048kB/nr_hugepages")
CPU_FILES = ("online", "cpu0/topology/core_id", "cpu0/topology/physical_package_id",
             "cpu0/topology/thread_siblings_list")
sys_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["0-1", "1-0", "10 21", "10 x", "-1", "0x", "Node 0 MemTotal: 12 kB",
                     "Node 0 MemTotal: lots kB", "Node 0 MemTotal:", "4294967296", "\x00"]),
)


@settings(max_examples=80, deadline=None)
@given(node=st.tuples(*(sys_text for _ in NODE_FILES)),
       cpu=st.tuples(*(sys_text for _ in CPU_FILES)))
def test_malformed_cpu_and_node_files_never_crash(
    tmp_path_factory: pytest.TempPathFactory, node: tuple[str, ...], cpu: tuple[str, ...],
) -> None:
    root = tmp_path_factory.mktemp("sys")
    base = root / "sys/devices/system"
    for rel, text in zip(NODE_FILES, node, strict=True):
        path = base / "node/node0" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for rel, text in zip(CPU_FILES, cpu, strict=True):
        path = base / "cpu" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    topo = discover(Host(root), netifs=False)
    # whatever the text, the shape is there and every field is typed or absent
    assert [n.id for n in topo.nodes] == [0]
    n0 = topo.nodes[0]
    assert all(isinstance(d, int) for d in n0.distances)
    assert n0.mem_total_kb is None or isinstance(n0.mem_total_kb, int)
    assert all(p.size_kb == 2048 and isinstance(p.total, int) for p in n0.hugepages.values())
    assert [c.id for c in topo.cpus] == [0]
    assert topo.cpus[0].core_id is None or isinstance(topo.cpus[0].core_id, int)
    json.dumps(topo.to_dict())
    topology_lines(topo)


def test_well_formed_node_files_are_read(tmp_path: Path) -> None:
    node = tmp_path / "sys/devices/system/node/node0"
    (node / "hugepages/hugepages-2048kB").mkdir(parents=True)
    (node / "cpulist").write_text("0-3\n")
    (node / "distance").write_text("10 21\n")
    (node / "meminfo").write_text("Node 0 MemTotal:       1024 kB\nNode 0 MemFree:  512 kB\n")
    for name, value in (("nr_hugepages", 8), ("free_hugepages", 6), ("surplus_hugepages", 1)):
        (node / "hugepages/hugepages-2048kB" / name).write_text(f"{value}\n")
    n0 = discover(Host(tmp_path), netifs=False).nodes[0]
    assert n0.cpus == (0, 1, 2, 3) and n0.distances == (10, 21)
    assert (n0.mem_total_kb, n0.mem_free_kb) == (1024, 512)
    assert n0.hugepages[2048].total == 8 and n0.hugepages[2048].free == 6
    assert n0.hugepages[2048].surplus == 1


def test_mem_total_kb(tmp_path: Path) -> None:
    text = (HOSTS / "this-vm/proc/meminfo").read_text()
    want = int(next(ln for ln in text.splitlines() if ln.startswith("MemTotal:")).split()[1])
    assert mem_total_kb(Host(HOSTS / "this-vm")) == want
    assert mem_total_kb(Host(tmp_path)) is None
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal:  lots kB\n")
    with pytest.raises(ParseError, match=r"/proc/meminfo.*MemTotal"):
        mem_total_kb(Host(tmp_path))
    assert (mem_total_kb(Host()) or 0) > 0


def test_virtio_nic_names_its_interface(tmp_path: Path) -> None:
    # virtio-net's interface hangs off the virtio device, not the PCI function
    # (…/0000:44:00.0/virtio3/net/enp68s0): as the two-node guest shows it
    base = tmp_path / "sys/devices/pci0000:40/0000:40:00.0/0000:44:00.0"
    (base / "virtio3/net/enp68s0").mkdir(parents=True)
    for name, value in (("vendor", "0x1af4"), ("device", "0x1041"), ("class", "0x020000"),
                        ("numa_node", "1")):
        (base / name).write_text(value + "\n")
    devices = tmp_path / "sys/bus/pci/devices"
    devices.mkdir(parents=True)
    (devices / "0000:44:00.0").symlink_to(base)
    dev = read_device(Host(tmp_path), "0000:44:00.0")
    assert dev is not None and dev.netdevs == ("enp68s0",) and dev.numa_node == 1
