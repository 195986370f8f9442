"""Every /proc parser of the telemetry collectors: exact values on fixture
trees, and malformed text gives a ParseError or skipped fields, never any
other exception."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hosttune.agent.sense.errors import HostReadError, ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.catalogue import lookup
from hosttune.agent.sense.telemetry.cpu import CpuCollector, parse_stat
from hosttune.agent.sense.telemetry.disks import DiskCollector, looks_whole, parse_diskstats
from hosttune.agent.sense.telemetry.interrupts import parse_interrupts
from hosttune.agent.sense.telemetry.load import parse_loadavg
from hosttune.agent.sense.telemetry.memory import (
    MemoryCollector,
    NumaMemoryCollector,
    parse_meminfo,
    parse_node_meminfo,
    parse_numastat,
)
from hosttune.agent.sense.telemetry.network import parse_net_dev
from hosttune.agent.sense.telemetry.parsing import Layout
from hosttune.agent.sense.telemetry.pressure import PressureCollector, parse_pressure
from hosttune.agent.sense.telemetry.processes import parse_numa_maps, parse_stat_cpu_seconds
from hosttune.agent.sense.telemetry.vmstat import VmstatCollector, parse_vmstat

FIX = Path(__file__).parent / "fixtures" / "telemetry"
TWO = FIX / "two-node"
ODD = FIX / "odd"
VM = FIX / "vm-2cpu"


def text(root: Path, path: str) -> str:
    return (root / path.lstrip("/")).read_text()


# -- exact values on fixtures ---------------------------------------------------


def test_stat_two_node() -> None:
    out = parse_stat(text(TWO, "/proc/stat"), hz=100)
    assert out["cpu.user"] == 110.0
    assert out["cpu.7.user"] == 17.0
    assert out["cpu.7.idle"] == pytest.approx(1700 * 9 / 100)
    assert out["cpu.count"] == 8
    assert out["cpu.context_switches"] == 5551212
    assert out["cpu.interrupts"] == 987654
    assert out["proc.forks"] == 43210
    assert (out["proc.running"], out["proc.blocked"]) == (9, 1)


def test_stat_odd_skips_bad_lines() -> None:
    out = parse_stat(text(ODD, "/proc/stat"))
    assert "cpu.0.user" not in out  # 'x' in its iowait column
    assert "cpu.3.user" not in out  # too few columns
    assert out["cpu.1.user"] == 0.4
    assert "cpu.context_switches" not in out
    assert out["proc.running"] == 2


def test_stat_without_aggregate_line_is_an_error() -> None:
    with pytest.raises(ParseError, match="/proc/stat"):
        parse_stat("cpu0 1 2 3 4\n")


def test_loadavg() -> None:
    assert parse_loadavg(text(TWO, "/proc/loadavg")) == {
        "load.1": 7.5, "load.5": 6.25, "load.15": 5.0, "proc.threads": 812.0}
    assert "proc.threads" not in parse_loadavg(text(ODD, "/proc/loadavg"))
    with pytest.raises(ParseError, match=r"/proc/loadavg:1"):
        parse_loadavg("0.1 zz\n")


def test_meminfo() -> None:
    out = parse_meminfo(text(TWO, "/proc/meminfo"))
    assert out["mem.total_bytes"] == 263921664 * 1024
    assert out["mem.hugepages_total"] == 1024  # a count, not scaled
    assert out["mem.hugepage_size_bytes"] == 2 << 20
    assert out["mem.used_ratio"] == pytest.approx(1 - 200000000 / 263921664)
    assert out["mem.anon_huge_ratio"] == pytest.approx(20480000 / 41000000)
    assert out["mem.swap_used_ratio"] == 0.0
    odd = parse_meminfo(text(ODD, "/proc/meminfo"))
    assert odd["mem.free_bytes"] == 500000  # no unit given: taken as is
    assert "mem.anon_huge_bytes" not in odd and "mem.used_ratio" not in odd
    with pytest.raises(ParseError):
        parse_meminfo("nothing: here\n")


def test_node_meminfo_and_numastat() -> None:
    out = parse_node_meminfo(text(TWO, "/sys/devices/system/node/node1/meminfo"), 1)
    assert out["node.1.mem_free_bytes"] == 60000000 * 1024
    assert out["node.1.hugepages_total"] == 512
    assert out["node.1.mem_used_ratio"] == pytest.approx(1 - 60000000 / 131960832)
    stat = parse_numastat(text(TWO, "/sys/devices/system/node/node1/numastat"), 1)
    assert stat["node.1.other_node"] == 200000
    assert len(stat) == 6


def test_numa_collector_copes_with_odd_nodes() -> None:
    coll = NumaMemoryCollector(Host(ODD))
    values: dict[str, float] = {}
    coll.collect(values)
    assert values["node.count"] == 2  # node2 has no meminfo
    assert "node.1.numa_hit" not in values  # node1 has no numastat
    assert "node.1.mem_used_ratio" not in values  # MemTotal 0
    coll.close()
    assert NumaMemoryCollector(Host(FIX / "absent")).paths() == []


def test_vmstat() -> None:
    out = parse_vmstat(text(TWO, "/proc/vmstat"))
    assert out["vmstat.thp_fault_fallback"] == 1234
    assert out["vmstat.numa_pages_migrated"] == 777
    assert "vmstat.some_future_counter" not in out
    odd = parse_vmstat(text(ODD, "/proc/vmstat"))
    assert odd == {"vmstat.pgfault": 10.0}


def test_pressure() -> None:
    out = parse_pressure(text(VM, "/proc/pressure/memory"), "memory")
    assert {k.rsplit(".", 1)[1] for k in out} == {"avg10", "avg60", "avg300", "total"}
    assert len(out) == 8
    odd = parse_pressure(text(ODD, "/proc/pressure/irq"), "irq")
    assert "psi.irq.full.avg60" not in odd  # nan
    assert odd["psi.irq.full.total"] == pytest.approx(42e-6)


def test_pressure_absent_is_normal() -> None:
    coll = PressureCollector(Host(TWO))
    assert not coll.available
    values: dict[str, float] = {}
    coll.collect(values)
    assert values == {}
    odd = PressureCollector(Host(ODD))
    assert [p.rsplit("/", 1)[1] for p in odd.paths()] == ["cpu", "irq"]


def test_diskstats_whole_disks_only() -> None:
    coll = DiskCollector(Host(TWO))
    values: dict[str, float] = {}
    coll.collect(values)
    disks = {k.split(".")[1] for k in values if k.count(".") == 2}
    assert disks == {"nvme0n1", "sda", "dm-0", "md0"}
    assert values["disk.nvme0n1.read_bytes"] == 80000 * 512
    assert values["disk.nvme0n1.busy_seconds"] == 1.2
    assert values["disk.nvme0n1.flushes"] == 7
    # totals leave stacked devices out
    assert values["disk.read_bytes"] == 2 * 80000 * 512
    assert values["disk.count"] == 4
    odd = parse_diskstats(text(ODD, "/proc/diskstats"))
    assert "disk.sda.reads" not in odd  # short line
    assert odd["disk.sdb.reads"] == 10 and "disk.sdb.flushes" not in odd  # old kernel: 11 cols
    assert odd["disk.read_bytes"] == 80 * 512  # dm-0 not totalled


def test_partition_names() -> None:
    for name in ("sda1", "nvme0n1p2", "mmcblk0p1", "vdb3", "xvda1"):
        assert not looks_whole(name)
    for name in ("sda", "nvme0n1", "mmcblk0", "dm-0", "md0", "vda"):
        assert looks_whole(name)


def test_net_dev() -> None:
    out = parse_net_dev(text(TWO, "/proc/net/dev"))
    assert out["net.eth0.100.rx_bytes"] == 700000
    assert out["net.eth0.tx_drops"] == 3
    assert out["net.rx_bytes"] == 5000000 + 700000 + 90000000  # loopback left out
    odd = parse_net_dev(text(ODD, "/proc/net/dev"))
    assert "net.bad0.rx_bytes" not in odd and odd["net.eth0.tx_bytes"] == 200


def test_interrupts() -> None:
    out = parse_interrupts(text(TWO, "/proc/interrupts"))
    assert out["irq.120.count"] == sum(i * 1000 for i in range(8))
    assert out["irq.ERR.count"] == 3
    assert out["cpu.7.irqs"] == 10 + 7000 + 5 + 100000
    odd = parse_interrupts(text(ODD, "/proc/interrupts"))
    assert odd["irq.26.count"] == 20  # truncated: counted, not attributed
    assert "irq.MIS.count" not in odd
    assert odd["cpu.3.irqs"] == 5 + 100  # columns follow the header's CPU numbers
    with pytest.raises(ParseError, match="header"):
        parse_interrupts("  24:  1  0  IO-APIC\n")


def test_process_file_parsers() -> None:
    assert parse_stat_cpu_seconds("1 (a) b) c) S 1 1 1 0 -1 0 0 0 0 0 300 100 0", 100) == 4.0
    assert parse_stat_cpu_seconds("garbage", 100) == 0.0
    pages = parse_numa_maps(text(TWO, "/proc/4242/numa_maps"))
    assert pages == {0: 700100, 1: 300000 + 10 * 512}


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    coll = CpuCollector(Host(tmp_path))
    with pytest.raises(HostReadError, match="/proc/stat"):
        coll.collect({})


# -- malformed text -------------------------------------------------------------

PARSERS: dict[str, tuple[Callable[[str], dict[str, float]], str]] = {
    "stat": (parse_stat, "/proc/stat"),
    "loadavg": (parse_loadavg, "/proc/loadavg"),
    "meminfo": (parse_meminfo, "/proc/meminfo"),
    "node_meminfo": (lambda t: parse_node_meminfo(t, 0),
                     "/sys/devices/system/node/node0/meminfo"),
    "numastat": (lambda t: parse_numastat(t, 0), "/sys/devices/system/node/node0/numastat"),
    "vmstat": (parse_vmstat, "/proc/vmstat"),
    "pressure": (lambda t: parse_pressure(t, "io"), "/proc/pressure/io"),
    "diskstats": (parse_diskstats, "/proc/diskstats"),
    "net_dev": (parse_net_dev, "/proc/net/dev"),
    "interrupts": (parse_interrupts, "/proc/interrupts"),
}


def check_parse(parser: Callable[[str], dict[str, float]], data: str) -> None:
    try:
        out = parser(data)
    except ParseError as exc:
        assert str(exc)
        return
    for name, value in out.items():
        assert lookup(name) is not None, name
        assert isinstance(value, float) and math.isfinite(value), (name, value)


# Text made of the characters /proc files are made of, plus a few others.
PROCISH = st.text(alphabet=st.sampled_from(list("0123456789 \t\n:=./-_abcdefxyzCPUNode()kBé\x00")),
                  max_size=400)


@pytest.mark.parametrize("which", sorted(PARSERS))
@settings(max_examples=150, deadline=None)
@given(data=PROCISH)
def test_random_text(which: str, data: str) -> None:
    check_parse(PARSERS[which][0], data)


@pytest.mark.parametrize("which", sorted(PARSERS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutated_real_files(which: str, data: st.DataObject) -> None:
    """Real files with lines cut short, tokens replaced and lines dropped."""
    parser, path = PARSERS[which]
    root = TWO if (TWO / path.lstrip("/")).exists() else VM
    lines = text(root, path).splitlines()
    edits = data.draw(st.lists(st.tuples(
        st.integers(0, max(0, len(lines) - 1)),
        st.sampled_from(["cut", "drop", "token", "dup", "huge"]),
        st.integers(0, 200)), max_size=6))
    for at, kind, pos in edits:
        if not lines:
            break
        index = at % len(lines)
        line = lines[index]
        if kind == "cut":
            lines[index] = line[: pos % (len(line) + 1)]
        elif kind == "drop":
            del lines[index]
        elif kind == "dup":
            lines.insert(index, line)
        else:
            toks = line.split()
            if toks:
                new = "9" * 5000 if kind == "huge" else data.draw(
                    st.sampled_from(["nan", "-1", "inf", "1e999", "", "x:", "=", "0x10"]))
                toks[pos % len(toks)] = new
                lines[index] = " ".join(toks)
    check_parse(parser, "\n".join(lines) + "\n")


# -- layouts: going straight to the known lines gives the same result ---------------


@pytest.mark.parametrize("which", ["vmstat", "meminfo", "node_meminfo"])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_layout_gives_the_same_values(which: str, data: st.DataObject) -> None:
    path = {"vmstat": "/proc/vmstat", "meminfo": "/proc/meminfo",
            "node_meminfo": "/sys/devices/system/node/node0/meminfo"}[which]

    def parse(t: str, layout: Layout | None) -> dict[str, float]:
        if which == "vmstat":
            return parse_vmstat(t, layout=layout)
        if which == "meminfo":
            return parse_meminfo(t, layout=layout)
        return parse_node_meminfo(t, 0, layout=layout)

    layout = Layout()
    first = text(VM, path)
    assert parse(first, layout) == parse(first, None)
    assert layout.spots
    # The next read: new values, and sometimes a line changed, dropped or added.
    lines = first.splitlines()
    for i in data.draw(st.lists(st.integers(0, len(lines) - 1), max_size=8)):
        head = lines[i].rpartition(" ")[0] if which == "vmstat" else (
            lines[i].partition(":")[0] + ":")
        lines[i] = f"{head} {data.draw(st.integers(0, 2**64))}" + (
            "" if which == "vmstat" else " kB")
    change = data.draw(st.sampled_from(["none", "drop", "add", "garble"]))
    at = data.draw(st.integers(0, len(lines) - 1))
    if change == "drop":
        del lines[at]
    elif change == "add":
        lines.insert(at, "Brand_new: 5 kB" if which != "vmstat" else "brand_new 5")
    elif change == "garble":
        lines[at] = lines[at][::-1]
    second = "\n".join(lines) + "\n"
    assert parse(second, layout) == parse(second, None)
    assert parse(second, layout) == parse(second, None)  # with the layout just recorded


def test_live_layouts_match_fresh_parses() -> None:
    host = Host()
    for coll, path, parse in ((VmstatCollector(host), "/proc/vmstat", parse_vmstat),
                              (MemoryCollector(host), "/proc/meminfo", parse_meminfo)):
        for _ in range(3):
            values: dict[str, float] = {}
            coll.collect(values)
            fresh = parse(host.read_text(path))
            # counters move between the two reads; the names must not
            assert set(values) == set(fresh)
        coll.close()
