"""The tables assembled from what each knob family declares: the allowlist,
what `hosttune capture` copies, the owner mapping, the search steps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hosttune.agent.sense import topology
from hosttune.agent.sense.fixture import capture
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.ownership import owner_of
from hosttune.agent.sense.peers import Irqbalance, PeerReport, TunedOption
from hosttune.agent.sense.telemetry.memory import mem_total_kb
from hosttune.models.space import space_for
from hosttune.tuners.allowlist import DEFAULT_ALLOWLIST
from hosttune.tuners.base import Tuner
from hosttune.tuners.knobs import SearchHint
from hosttune.tuners.owners import owners, peer_knobs
from hosttune.tuners.registry import (
    FAMILIES,
    bind_tuners,
    capture_patterns,
    default_allowlist,
    search_hints,
)

TUNERS = Path(__file__).resolve().parent.parent / "tuners"

# The table as it stood in tuners/allowlist.py before each family declared its
# own part: the assembled one must not differ in any entry or in order.
_BEFORE = {
    "sysctl:vm.swappiness": {"min": 0, "max": 100},
    "sysctl:vm.dirty_ratio": {"min": 5, "max": 80},
    "sysctl:vm.dirty_background_ratio": {"min": 1, "max": 50},
    "sysctl:vm.dirty_expire_centisecs": {"min": 500, "max": 30000},
    "sysctl:vm.dirty_writeback_centisecs": {"min": 100, "max": 6000},
    "sysctl:vm.min_free_kbytes": {"min": 8192, "max": 4194304},
    "sysctl:vm.zone_reclaim_mode": {"min": 0, "max": 1},
    "sysctl:vm.max_map_count": {"min": 65530, "max": 16777216},
    "sysctl:vm.vfs_cache_pressure": {"min": 10, "max": 200},
    "sysctl:vm.overcommit_memory": {"min": 0, "max": 1},
    "sysctl:vm.watermark_scale_factor": {"min": 10, "max": 1000},
    "sysctl:kernel.numa_balancing": {"min": 0, "max": 1},
    "sysctl:kernel.sched_autogroup_enabled": {"min": 0, "max": 1},
    "sysctl:net.core.rmem_max": {"min": 212992, "max": 536870912},
    "sysctl:net.core.wmem_max": {"min": 212992, "max": 536870912},
    "sysctl:net.core.rmem_default": {"min": 212992, "max": 67108864},
    "sysctl:net.core.wmem_default": {"min": 212992, "max": 67108864},
    "sysctl:net.ipv4.tcp_rmem": {"min": 4096, "max": 536870912},
    "sysctl:net.ipv4.tcp_wmem": {"min": 4096, "max": 536870912},
    "sysctl:net.core.netdev_max_backlog": {"min": 1000, "max": 250000},
    "sysctl:net.core.somaxconn": {"min": 128, "max": 65535},
    "sysctl:net.ipv4.tcp_mtu_probing": {"min": 0, "max": 2},
    "thp:enabled": {"choices": ["always", "madvise", "never"]},
    "thp:defrag": {"choices": ["always", "defer", "defer+madvise", "madvise", "never"]},
    "thp:shmem_enabled": {"choices": ["always", "within_size", "advise", "never"]},
    "thp:khugepaged.defrag": {"min": 0, "max": 1},
    "thp:khugepaged.pages_to_scan": {"min": 512, "max": 65536},
    # added with the khugepaged catch-up (kernels without MADV_COLLAPSE)
    "thp:khugepaged.scan_sleep_millisecs": {"min": 500, "max": 60000},
    "hugepages:*": {"min": 0, "max_memory_fraction": 0.5},
    "irq:*": {},
    "numa:pid:*": {},
    "block:*:read_ahead_kb": {"min": 0, "max": 16384},
    "block:*:scheduler": {"choices": ["none", "mq-deadline", "kyber", "bfq"]},
    "block:*:nr_requests": {"min": 32, "max": 4096},
    "cpu:governor": {"choices": ["performance", "schedutil", "ondemand", "powersave"]},
    "cpu:epp": {"choices": ["performance", "balance_performance", "balance_power", "power"]},
}


def put(root: Path, path: str, text: str) -> Path:
    file = root / path.lstrip("/")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    return file


def test_default_allowlist_is_assembled_from_the_families_unchanged() -> None:
    assert list(DEFAULT_ALLOWLIST.items()) == list(_BEFORE.items())
    fresh = default_allowlist()
    fresh["thp:enabled"]["choices"].append("x")  # a copy: the families' tables stay as they are
    assert default_allowlist()["thp:enabled"] == _BEFORE["thp:enabled"]


def test_every_family_declares_only_its_own_knobs(tmp_path: Path) -> None:
    tuners = bind_tuners(Host(tmp_path))
    assert list(tuners) == [f.family for f in FAMILIES]
    for family in FAMILIES:
        assert family.family and family.__init__ is Tuner.__init__
        for table in (family.allowlist, family.search):
            assert all(knob.startswith(f"{family.family}:") for knob in table), family
        assert all(p.startswith(("/proc/", "/sys/", "/etc/", "/run/", "/usr/", "/lib/"))
                   for p in family.capture), family


def test_no_kernel_path_literal_in_the_tuners() -> None:
    # sense.knobfiles is the one place that names kernel files
    for path in sorted(TUNERS.glob("*.py")):
        code = path.read_text()
        assert not re.search(r"[\"'](/proc|/sys)", code), path.name


def test_hooks_a_family_leaves_out_have_defaults(tmp_path: Path) -> None:
    class Toy(Tuner):
        family = "toy"

    toy = Toy(Host(tmp_path))
    assert toy.identity("k") == "" and toy.conflict("k", "1", "0") is None
    assert toy.advise("k", "1") == [] and toy.equal(" 1", "1 ")
    assert toy.owned_by_files() == {} and Toy.owned_by_cmdline(["hugepages=4"]) == {}
    assert Toy.tuned_knobs("sysctl", "vm.swappiness", ("*",)) == []
    assert Toy.owned_by_daemons(PeerReport(numad=(7,))) == {}
    with pytest.raises(NotImplementedError):
        toy.read("k")


def test_capture_copies_what_the_families_name(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    wanted = [
        "/proc/sys/vm/swappiness", "/proc/sys/net/ipv4/tcp_rmem",
        "/etc/sysctl.d/90-ai.conf", "/etc/sysctl.conf",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/mm/transparent_hugepage/khugepaged/defrag",
        "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
        "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages",
        "/proc/irq/41/smp_affinity_list",
        "/sys/block/sda/queue/scheduler",
        "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
    ]
    left = ["/etc/sysctl.d/README", "/proc/irq/default_smp_affinity",
            "/sys/block/sda/queue/max_hw_sectors_kb", "/etc/passwd"]
    for path in wanted + left:
        put(src, path, "1\n")
    report = capture(Host(src), out, knob_files=capture_patterns())
    copied = {"/" + str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert set(wanted) <= copied
    assert not set(left) & copied
    # a file named without wildcards that the host lacks is reported, not fatal
    assert "/proc/irq/41/effective_affinity_list" in report.skipped


def test_tuned_options_map_to_the_knobs_of_their_family(tmp_path: Path) -> None:
    tuners = bind_tuners(Host(tmp_path))

    def knobs(plugin: str, option: str, devices: tuple[str, ...] = ("*",)) -> list[str]:
        report = PeerReport(tuned=[TunedOption(plugin, option, "v", f"{option}=v", "there",
                                               devices)])
        return list(peer_knobs(report, tuners))

    assert knobs("sysctl", "net/ipv4/conf/eth0.100/rp_filter") == [
        "sysctl:net.ipv4.conf.eth0/100.rp_filter"]
    assert knobs("vm", "dirty_ratio") == ["sysctl:vm.dirty_ratio"]
    assert knobs("vm", "transparent_hugepages") == ["thp:enabled"]
    assert knobs("sysfs", "/sys/kernel/mm/transparent_hugepage/khugepaged/defrag") == [
        "thp:khugepaged.defrag"]
    assert knobs("sysfs", "/sys/block/nvme0n1/queue/read_ahead_kb") == [
        "block:nvme0n1:read_ahead_kb"]
    assert knobs("disk", "elevator", ("sda", "sdb")) == ["block:sda:scheduler",
                                                         "block:sdb:scheduler"]
    assert knobs("cpu", "energy_performance_preference") == ["cpu:epp"]
    assert knobs("vm", "no_such_option") == [] and knobs("audio", "timeout") == []


def test_peer_daemons_map_to_irq_and_numa(tmp_path: Path) -> None:
    tuners = bind_tuners(Host(tmp_path))
    owned = peer_knobs(PeerReport(irqbalance=Irqbalance((812,), False, (41,)), numad=(9,)),
                       tuners)
    assert str(owner_of("irq:40", owned)) == "irqbalance (pid 812) balances IRQ affinity"
    assert owner_of("irq:41", owned) is None
    assert "numad (pid 9)" in str(owner_of("numa:pid:4242", owned))
    shared = peer_knobs(PeerReport(irqbalance=Irqbalance((812,), True, ())), tuners)
    assert shared == {}


def test_kernel_command_line_owners_come_from_each_family(tmp_path: Path) -> None:
    put(tmp_path, "/proc/cmdline", "ro hugepagesz=1G hugepages=4 hugepages=512 "
                                   "transparent_hugepage=never irqaffinity=0-1 -- hugepages=9\n")
    owned = owners(Host(tmp_path))
    assert str(owner_of("hugepages:1048576kB", owned)) == "kernel command line (hugepages=4)"
    assert str(owner_of("hugepages:node1:2048kB", owned)) == (
        "kernel command line (hugepages=512)")
    assert str(owner_of("thp:enabled", owned)) == (
        "kernel command line (transparent_hugepage=never)")
    assert owner_of("thp:defrag", owned) is None
    assert str(owner_of("irq:7", owned)) == "kernel command line (irqaffinity=0-1)"


def test_search_steps_come_from_the_families() -> None:
    hints = search_hints()
    assert hints == {"block:*:read_ahead_kb": SearchHint(step=4)}
    space = space_for(["block:sda:read_ahead_kb", "sysctl:vm.swappiness", "thp:enabled"],
                      DEFAULT_ALLOWLIST, hints=hints)
    ahead, swappiness, thp = space.dims
    assert (ahead.step, ahead.log, ahead.low) == (4, True, 4)
    assert (swappiness.step, swappiness.log, swappiness.low) == (1, False, 0)
    assert thp.choices == ("always", "madvise", "never")
    flat = space_for(["block:sda:read_ahead_kb"], DEFAULT_ALLOWLIST,
                     hints={"block:*:read_ahead_kb": SearchHint(step=4, log=False)})
    assert (flat.dims[0].log, flat.dims[0].low) == (False, 0)


def test_topology_single_facts(tmp_path: Path) -> None:
    host = Host(tmp_path)
    assert topology.online_cpus(host) == () and topology.memory_nodes(host) == (0,)
    assert topology.node_cpus(host, 0) is None and mem_total_kb(host) is None
    put(tmp_path, "/sys/devices/system/cpu/online", "0-3,6\n")
    put(tmp_path, "/sys/devices/system/node/has_memory", "0-1\n")
    put(tmp_path, "/sys/devices/system/node/node1/cpulist", "2-3\n")
    put(tmp_path, "/proc/meminfo", "MemTotal:       24576000 kB\nMemFree: 1 kB\n")
    assert topology.online_cpus(host) == (0, 1, 2, 3, 6)
    assert topology.memory_nodes(host) == (0, 1)
    assert topology.node_cpus(host, 1) == (2, 3)
    assert mem_total_kb(host) == 24576000
