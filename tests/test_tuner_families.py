"""Every tuner family on fixture trees built here (Host(root=tmp_path))."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hosttune.agent.sense.errors import HostWriteError, KnobError
from hosttune.agent.sense.host import Host
from hosttune.tuners.base import Tuner
from hosttune.tuners.block import BlockTuner
from hosttune.tuners.cpu import CpuTuner
from hosttune.tuners.cpuset import CpusetTuner
from hosttune.tuners.hugepages import HugepagesShortfall, HugepagesTuner
from hosttune.tuners.irq import IrqTuner
from hosttune.tuners.numa import NumaTuner
from hosttune.tuners.registry import bind_tuners
from hosttune.tuners.sysctl import SysctlTuner
from hosttune.tuners.thp import ThpTuner


def put(root: Path, path: str, text: str) -> Path:
    file = root / path.lstrip("/")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    return file


def test_registry_has_every_family(tmp_path: Path) -> None:
    tuners = bind_tuners(Host(tmp_path))
    assert set(tuners) == {"sysctl", "thp", "hugepages", "irq", "numa", "cpuset", "cpu", "block"}
    for family, tuner in tuners.items():
        assert isinstance(tuner, Tuner) and tuner.family == family


def test_sysctl(tmp_path: Path) -> None:
    put(tmp_path, "/proc/sys/vm/swappiness", "60\n")
    put(tmp_path, "/proc/sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456\n")
    put(tmp_path, "/proc/sys/kernel/core_pattern", "core\n")
    t = SysctlTuner(Host(tmp_path))
    assert t.read("vm.swappiness") == "60"
    assert t.validate("vm.swappiness", " 010 ") == "10"
    t.apply("vm.swappiness", "10")
    assert t.verify("vm.swappiness", "10") and not t.verify("vm.swappiness", "60")
    assert t.read("net.ipv4.tcp_rmem") == "4096 131072 6291456"
    assert t.equal("4096\t131072\t6291456", "4096 131072  6291456")
    assert not t.equal("4096 131072 6291456", "4096 131072 6291457")
    with pytest.raises(KnobError, match="expected 3 integer"):
        t.validate("net.ipv4.tcp_rmem", "4096 131072")
    with pytest.raises(KnobError, match="integer"):
        t.validate("vm.swappiness", "lots")
    assert t.validate("kernel.core_pattern", "|/bin/x %p") == "|/bin/x %p"
    assert not t.available("vm.nope") and not t.available("vm")
    with pytest.raises(KnobError, match="no /proc/sys/vm/nope"):
        t.read("vm.nope")
    with pytest.raises(KnobError, match="not a sysctl key"):
        t.read("../../etc/passwd")


def test_thp(tmp_path: Path) -> None:
    base = "/sys/kernel/mm/transparent_hugepage"
    put(tmp_path, f"{base}/enabled", "always [madvise] never\n")
    put(tmp_path, f"{base}/defrag", "always defer defer+madvise [madvise] never\n")
    put(tmp_path, f"{base}/khugepaged/defrag", "1\n")
    t = ThpTuner(Host(tmp_path))
    assert t.read("enabled") == "madvise"
    assert t.read("khugepaged.defrag") == "1"
    with pytest.raises(KnobError, match="not one of always, madvise, never"):
        t.validate("enabled", "sometimes")
    assert t.validate("defrag", "defer+madvise") == "defer+madvise"
    with pytest.raises(KnobError, match="integer"):
        t.validate("khugepaged.defrag", "yes")
    # A fixture file cannot act like the kernel's selector: a write replaces it.
    t.apply("khugepaged.defrag", "0")
    assert t.verify("khugepaged.defrag", "0")
    assert not t.available("shmem_enabled")


def test_hugepages_reports_a_shortfall(tmp_path: Path) -> None:
    put(tmp_path, "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "0\n")
    put(tmp_path, "/sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages",
        "0\n")
    t = HugepagesTuner(Host(tmp_path))
    assert HugepagesTuner.parse_key("node1:1048576kB") == (1, 1048576)
    assert t.read("2048kB") == "0" and t.read("node1:1048576kB") == "0"
    assert not t.available("node0:2048kB") and not t.available("2M")
    with pytest.raises(KnobError, match="SIZEkB"):
        t.validate("2M", "1")
    with pytest.raises(KnobError, match="non-negative"):
        t.validate("2048kB", "-1")
    t.apply("2048kB", "8")
    assert t.verify("2048kB", "8")


def test_hugepages_shortfall_on_a_pool_that_gives_less(tmp_path: Path) -> None:
    # The real kernel's shortfall is tested in test_tuners_kernel.py; here a
    # Host whose write allocates at most 3 pages, as a fragmented kernel does.
    pool = put(tmp_path, "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "0\n")
    host = Host(tmp_path)
    t = HugepagesTuner(host)

    class Fragmented(Host):
        def write_text(self, path: str, value: str) -> None:
            # The kernel accepts the write and allocates what it can.
            pool.write_text(str(min(int(value), 3)) + "\n")

    short = HugepagesTuner(Fragmented(tmp_path))
    with pytest.raises(HugepagesShortfall, match="asked for 8 pages, the kernel gave 3") as err:
        short.apply("2048kB", "8")
    assert (err.value.asked, err.value.got) == (8, 3)
    assert t.read("2048kB") == "3"


def test_irq(tmp_path: Path) -> None:
    put(tmp_path, "/sys/devices/system/cpu/online", "0-3\n")
    put(tmp_path, "/proc/irq/41/smp_affinity_list", "0-3\n")
    put(tmp_path, "/proc/irq/41/effective_affinity_list", "1\n")
    t = IrqTuner(Host(tmp_path))
    assert t.read("41") == "0-3" and t.effective("41") == "1"
    assert t.validate("41", "3,2") == "2-3"
    with pytest.raises(KnobError, match=r"CPU\(s\) 7 are not online"):
        t.validate("41", "1,7")
    with pytest.raises(KnobError, match="at least one CPU"):
        t.validate("41", "")
    with pytest.raises(KnobError, match="IRQ numbers"):
        t.read("eth0")
    t.apply("41", "2-3")
    assert t.verify("41", "3,2")
    assert t.advise("41", "2-3") == []
    put(tmp_path, "/proc/812/comm", "irqbalance\n")
    put(tmp_path, "/etc/default/irqbalance", 'IRQBALANCE_BANNED_CPULIST="3"\n')
    (advice,) = t.advise("41", "2-3")
    assert "pid 812" in advice and "--banirq=41" in advice and "now '3'" in advice


def test_irq_that_cannot_move(tmp_path: Path) -> None:
    put(tmp_path, "/proc/irq/24/smp_affinity_list", "0-1\n")

    class Managed(Host):
        def write_text(self, path: str, value: str) -> None:
            raise HostWriteError(path, "kernel refused write: Input/output error", errno=5)

    with pytest.raises(KnobError, match="IRQ 24 cannot be moved"):
        IrqTuner(Managed(tmp_path)).apply("24", "1")


def numa_host(tmp_path: Path) -> Host:
    put(tmp_path, "/sys/devices/system/cpu/online", "0-7\n")
    put(tmp_path, "/sys/devices/system/node/has_memory", "0-1\n")
    put(tmp_path, "/sys/devices/system/node/node0/cpulist", "0-3\n")
    put(tmp_path, "/sys/devices/system/node/node1/cpulist", "4-7\n")
    status = "Name:\tpython\nCpus_allowed_list:\t0-7\nMems_allowed_list:\t0-1\n"
    put(tmp_path, "/proc/4242/status", status)
    put(tmp_path, "/proc/4242/task/4242/status", status)
    put(tmp_path, "/proc/4242/task/4243/status", status.replace("0-7", "0-3"))
    put(tmp_path, "/proc/4242/numa_maps",
        "7f00 default file=/usr/lib/libc.so mapped=10 N1=10\n"
        "55aa default heap anon=300 dirty=300 N0=200 N1=100\n")
    put(tmp_path, "/proc/4242/stat", "4242 (py thon) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0"
        " 20 0 2 0 98765 1000 1\n")
    return Host(tmp_path)


def test_numa_values(tmp_path: Path) -> None:
    t = NumaTuner(numa_host(tmp_path))
    assert t.read("pid:4242") == "cpus=0-7 mems=0-1"
    assert t.validate("pid:4242", "node=1") == "cpus=4-7 mems=1"
    assert t.validate("pid:4242", "1") == "cpus=4-7 mems=1"
    assert t.validate("pid:4242", "cpus=0,1") == "cpus=0-1"
    assert t.validate("pid:4242", "cpus=0-1 mems=0") == "cpus=0-1 mems=0"
    assert t.identity("pid:4242") == "98765"
    with pytest.raises(KnobError, match="no NUMA node 5"):
        t.validate("pid:4242", "node=5")
    with pytest.raises(KnobError, match="not online"):
        t.validate("pid:4242", "cpus=9")
    with pytest.raises(KnobError, match="have no memory"):
        t.validate("pid:4242", "cpus=0 mems=3")
    with pytest.raises(KnobError, match="node=N, cpus=LIST"):
        t.validate("pid:4242", "everywhere")
    with pytest.raises(KnobError, match="no process 99"):
        t.validate("pid:99", "node=0")
    # One thread still runs on 0-3: the process is not placed on 0-7 as a whole.
    assert not t.verify("pid:4242", "cpus=0-7")
    assert t.equal("cpus=0-3 mems=0", "cpus=3,2,1,0 mems=0-1")
    assert not t.equal("cpus=0-3", "cpus=0-4")


def test_numa_node_leaves_out_isolated_cpus(tmp_path: Path) -> None:
    host = numa_host(tmp_path)
    put(tmp_path, "/proc/cmdline", "root=/dev/vda isolcpus=6-7\n")
    t = NumaTuner(host)
    assert t.validate("pid:4242", "node=1") == "cpus=4-5 mems=1"
    assert t.validate("pid:4242", "node=0") == "cpus=0-3 mems=0"
    put(tmp_path, "/proc/cmdline", "root=/dev/vda isolcpus=4-7\n")
    with pytest.raises(KnobError, match=r"every CPU of node 1 is isolated.*isolcpus=4-7"):
        t.validate("pid:4242", "node=1")


def test_numa_mems_ignore_a_few_pages_elsewhere(tmp_path: Path) -> None:
    host = numa_host(tmp_path)
    put(tmp_path, "/proc/4242/numa_maps",
        "55aa default heap anon=16400 dirty=16400 N0=16390 N1=10\n"
        "7ffc default stack anon=30 dirty=30 N1=30\n")
    # 40 of 16430 pages on node 1: the process lives on node 0, and rolling
    # back to this reading moves everything there again
    assert NumaTuner(host).read("pid:4242") == "cpus=0-7 mems=0"


def test_numa_syscalls_refuse_on_a_fixture(tmp_path: Path) -> None:
    t = NumaTuner(numa_host(tmp_path))
    with pytest.raises(HostWriteError, match="refusing a process syscall on a fixture host"):
        t.apply("pid:4242", "node=0")
    with pytest.raises(HostWriteError, match="fixture host"):
        Host(tmp_path).migrate_pages(os.getpid(), [1], [0])


@pytest.mark.parametrize("version", [1, 2])
def test_cpuset(tmp_path: Path, version: int) -> None:
    root = "/sys/fs/cgroup/cpuset" if version == 1 else "/sys/fs/cgroup"
    if version == 2:
        put(tmp_path, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory\n")
    put(tmp_path, f"{root}/cpuset.cpus", "0-7\n")
    put(tmp_path, f"{root}/train/cpuset.cpus", "0-7\n")
    put(tmp_path, f"{root}/train/cpuset.mems", "0-1\n")
    t = CpusetTuner(Host(tmp_path))
    assert t.hierarchy() == (root, version)
    assert t.read("/train") == "cpus=0-7 mems=0-1"
    assert t.validate("/train", "mems=1 cpus=4,5,6,7") == "cpus=4-7 mems=1"
    t.apply("/train", "cpus=4-7 mems=1")
    assert t.read("/train") == "cpus=4-7 mems=1" and t.verify("/train", "cpus=4-7")
    with pytest.raises(KnobError, match="cgroup paths"):
        t.read("/../etc")
    assert not t.available("/serve")


def test_cpu_unavailable_without_cpufreq(tmp_path: Path) -> None:
    put(tmp_path, "/sys/devices/system/cpu/cpu0/topology/core_id", "0\n")
    t = CpuTuner(Host(tmp_path))
    assert not t.available("governor")
    with pytest.raises(KnobError, match="unavailable: this host has no cpufreq"):
        t.read("governor")


def test_cpu_governor_per_cpu(tmp_path: Path) -> None:
    for cpu, gov in ((0, "powersave"), (1, "performance")):
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
        put(tmp_path, f"{base}/scaling_governor", f"{gov}\n")
        put(tmp_path, f"{base}/scaling_available_governors", "performance powersave\n")
    t = CpuTuner(Host(tmp_path))
    assert t.read("governor") == "0=powersave 1=performance"
    assert t.validate("governor", "performance") == "performance"
    with pytest.raises(KnobError, match="not offered"):
        t.validate("governor", "ondemand")
    t.apply("governor", "performance")
    assert t.read("governor") == "performance"
    t.apply("governor", "0=powersave 1=performance")
    assert t.verify("governor", "0=powersave 1=performance")
    assert not t.verify("governor", "performance")
    with pytest.raises(KnobError, match="unknown cpu knob"):
        t.read("turbo")


def test_block(tmp_path: Path) -> None:
    put(tmp_path, "/sys/block/nvme0n1/queue/read_ahead_kb", "128\n")
    put(tmp_path, "/sys/block/nvme0n1/queue/scheduler", "[none] mq-deadline kyber\n")
    t = BlockTuner(Host(tmp_path))
    assert t.read("nvme0n1:read_ahead_kb") == "128"
    assert t.read("nvme0n1:scheduler") == "none"
    assert t.validate("nvme0n1:scheduler", "kyber") == "kyber"
    with pytest.raises(KnobError, match="not offered"):
        t.validate("nvme0n1:scheduler", "bfq")
    t.apply("nvme0n1:read_ahead_kb", "4096")
    assert t.verify("nvme0n1:read_ahead_kb", "4096")
    with pytest.raises(KnobError, match="unavailable"):
        t.read("sda:read_ahead_kb")
    with pytest.raises(KnobError, match="unknown block setting"):
        t.read("sda:colour")
    with pytest.raises(KnobError, match="DEVICE:SETTING"):
        t.read("../x:read_ahead_kb")
