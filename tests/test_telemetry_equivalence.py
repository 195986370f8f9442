"""The cheaper /proc parsers give exactly what the old ones gave.

`tests/telemetry_reference.py` holds the parsers as they were before the
cost work. Here the new ones (IrqTable re-parsing only changed rows, the
C-loop layouts of vmstat and meminfo) are compared with them read after
read, on every fixture tree, on the live host, on sequences of edited files
and on a synthetic 224-CPU /proc/interrupts."""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hosttune.agent.sense.errors import ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.interrupts import InterruptsCollector, IrqTable
from hosttune.agent.sense.telemetry.memory import (
    MemoryCollector,
    NumaMemoryCollector,
    parse_meminfo,
    parse_node_meminfo,
)
from hosttune.agent.sense.telemetry.parsing import Layout
from hosttune.agent.sense.telemetry.pressure import parse_pressure
from hosttune.agent.sense.telemetry.vmstat import VmstatCollector, parse_vmstat
from tests import telemetry_reference as ref

FIX = Path(__file__).parent / "fixtures"
TREES = sorted(p for p in (FIX / "telemetry").iterdir() if p.is_dir()) + sorted(
    p for p in (FIX / "hosts").iterdir() if p.is_dir())
NODE0 = "/sys/devices/system/node/node0/meminfo"


def _read(tree: Path, path: str) -> str | None:
    f = tree / path.lstrip("/")
    return f.read_text() if f.exists() else None


def _same(new: Callable[..., dict[str, float]], old: Callable[..., dict[str, float]],
          *args: object) -> None:
    """new(*args) gives what old(*args) gives, or both raise ParseError."""
    try:
        expected = old(*args)
    except ParseError:
        with pytest.raises(ParseError):
            new(*args)
        return
    got = dict(new(*args))
    assert got == expected
    assert list(got) == list(expected)  # the same order too (the store keeps it)


def _check_sequence(reads: list[tuple[str, str, str]]) -> None:
    """(interrupts, vmstat, meminfo) texts read after read: the new parsers
    with their kept states against the old ones with theirs."""
    table = IrqTable()
    old_vm, new_vm = ref.OldLayout(), Layout()
    old_mem, new_mem = ref.OldLayout(), Layout()
    for ti, tv, tm in reads:
        _same(table.update, ref.parse_interrupts, ti)
        _same(partial(parse_vmstat, layout=new_vm), partial(ref.parse_vmstat, layout=old_vm), tv)
        _same(partial(parse_meminfo, layout=new_mem), partial(ref.parse_meminfo, layout=old_mem),
              tm)


def _fresh_table(text: str) -> dict[str, float]:
    return IrqTable().update(text)


@pytest.mark.parametrize("tree", TREES, ids=[f"{t.parent.name}/{t.name}" for t in TREES])
def test_fixture_trees_parse_as_before(tree: Path) -> None:
    cases: list[tuple[str, Callable[[str], dict[str, float]], Callable[[str], dict[str, float]]]]
    cases = [
        ("/proc/interrupts", _fresh_table, ref.parse_interrupts),
        ("/proc/vmstat", parse_vmstat, ref.parse_vmstat),
        ("/proc/meminfo", parse_meminfo, ref.parse_meminfo),
        (NODE0, partial(parse_node_meminfo, node=0), partial(ref.parse_node_meminfo, node=0)),
    ]
    for path, new, old in cases:
        text = _read(tree, path)
        if text is not None:
            _same(new, old, text)
    # and read after read through the kept states (later reads: the fast paths)
    ti, tv, tm = (_read(tree, p) for p in ("/proc/interrupts", "/proc/vmstat", "/proc/meminfo"))
    if ti is not None and tv is not None and tm is not None:
        _check_sequence([(ti, tv, tm)] * 3)


def test_live_host_parses_as_before() -> None:
    """The collectors (kept states, fast paths) against the old parsers on the
    very text they read: the collectors' files are read here through the same
    kept fds, so both parse one text."""
    host = Host()
    irq = InterruptsCollector(host)
    vm = VmstatCollector(host)
    mem = MemoryCollector(host)
    numa = NumaMemoryCollector(host)
    old_vm, old_mem = ref.OldLayout(), ref.OldLayout()
    try:
        for _ in range(5):
            t = irq._file.read()
            assert irq.parse(t) == ref.parse_interrupts(t)
            t = vm._file.read()
            assert vm.parse(t) == ref.parse_vmstat(t, layout=old_vm)
            t = mem._file.read()
            assert mem.parse(t) == ref.parse_meminfo(t, layout=old_mem)
        for node, kept, _numastat in numa._files:
            t = kept.read()
            layout = Layout()
            for _ in range(2):
                assert parse_node_meminfo(t, node, layout=layout) == \
                    ref.parse_node_meminfo(t, node)
    finally:
        for c in (irq, vm, mem, numa):
            c.close()


def _edit(lines: list[str], data: st.DataObject) -> list[str]:
    lines = list(lines)
    for _ in range(data.draw(st.integers(0, 6))):
        if not lines:
            break
        i = data.draw(st.integers(0, len(lines) - 1))
        kind = data.draw(st.sampled_from(
            ["count", "count", "count", "drop", "dup", "cut", "token", "header"]))
        line = lines[i]
        toks = line.split()
        if kind == "count" and toks:
            # a counter moves: the usual change between two reads
            j = data.draw(st.integers(0, len(toks) - 1))
            if toks[j].isdigit():
                toks[j] = str(int(toks[j]) + data.draw(st.integers(0, 10**6)))
            lines[i] = " ".join(toks)
        elif kind == "drop":
            del lines[i]
        elif kind == "dup":
            lines.insert(i, line)
        elif kind == "cut":
            lines[i] = line[: data.draw(st.integers(0, len(line)))]
        elif kind == "token" and toks:
            toks[data.draw(st.integers(0, len(toks) - 1))] = data.draw(
                st.sampled_from(["nan", "-1", "inf", "1e999", "x:", "9" * 30, "CPU9"]))
            lines[i] = " ".join(toks)
        elif kind == "header":
            lines[0] = lines[0] + "   CPU9"
    return lines


@settings(max_examples=150, deadline=None)
@given(data=st.data(), tree=st.sampled_from([t for t in TREES if (t / "proc/interrupts").exists()
                                              and (t / "proc/vmstat").exists()]))
def test_edited_reads_parse_as_before(data: st.DataObject, tree: Path) -> None:
    """A run of reads, each an edit of the one before (counters moving, and
    sometimes lines dropped, duplicated, cut, garbled): after every read the
    kept states give what the old parsers give."""
    files = [_read(tree, p) for p in ("/proc/interrupts", "/proc/vmstat", "/proc/meminfo")]
    assert all(f is not None for f in files)
    irq, vm, mem = (f.splitlines() for f in files if f is not None)
    texts: list[tuple[str, str, str]] = []
    for _ in range(data.draw(st.integers(1, 5))):
        irq, vm, mem = _edit(irq, data), _edit(vm, data), _edit(mem, data)
        texts.append(("\n".join(irq) + "\n", "\n".join(vm) + "\n", "\n".join(mem) + "\n"))
    _check_sequence(texts)


def big_interrupts(cpus: int = 224, rows: int = 1000, seed: int = 0) -> list[list[int]]:
    """Counts of a synthetic many-CPU host: most MSI-X vectors idle."""
    rng = random.Random(seed)
    return [[rng.randrange(10**9) if rng.random() < 0.05 else 0 for _ in range(cpus)]
            for _ in range(rows)]


def render_interrupts(counts: list[list[int]], names: list[str], cpus: list[int]) -> str:
    out = ["   " + "".join(f"{'CPU' + str(c):>11}" for c in cpus)]
    for name, row in zip(names, counts, strict=True):
        out.append(f"{name:>4}:" + "".join(f"{row[c]:>11}" for c in cpus)
                   + "  IR-PCI-MSIX-0000:3b:00.0  12-edge      mlx5_comp12@pci:0000:3b:00.0")
    return "\n".join(out) + "\n"


def test_big_host_reads_parse_as_before() -> None:
    """224 CPUs, 1000 rows; between reads some rows move, a row appears, one
    goes, and a CPU goes offline (its column leaves the file)."""
    rng = random.Random(1)
    counts = big_interrupts()
    names = [str(24 + i) for i in range(len(counts) - 6)] + ["LOC", "RES", "CAL", "TLB",
                                                              "ERR", "MIS"]
    cpus = list(range(len(counts[0])))
    table = IrqTable()
    for step in range(8):
        for _ in range(rng.randrange(0, 120)):
            row = counts[rng.randrange(len(counts))]
            row[rng.randrange(len(row))] += rng.randrange(1, 10**6)
        if step == 4:
            counts.insert(3, [1] * len(counts[0]))
            names.insert(3, "9999")
        if step == 5:
            del counts[10], names[10]
        if step == 6:
            cpus.remove(5)
        text = render_interrupts(counts, names, cpus)
        assert dict(table.update(text)) == ref.parse_interrupts(text)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "1e999", "x", "", "5 6"])
def test_kept_layouts_skip_bad_values_as_before(bad: str) -> None:
    """A wanted line whose value is not a finite number, on a read after the
    layout was recorded: left out, the rest kept, exactly as before."""
    vm_text = _read(FIX / "telemetry" / "vm-2cpu", "/proc/vmstat")
    mem_text = _read(FIX / "telemetry" / "vm-2cpu", "/proc/meminfo")
    assert vm_text is not None and mem_text is not None
    vm_lines = vm_text.splitlines()
    at = next(i for i, line in enumerate(vm_lines) if line.startswith("pgfault "))
    vm_lines[at] = f"pgfault {bad}"
    mem_lines = mem_text.splitlines()
    at = next(i for i, line in enumerate(mem_lines) if line.startswith("Dirty:"))
    mem_lines[at] = f"Dirty:          {bad} kB"
    later = ("\n".join(vm_lines) + "\n", "\n".join(mem_lines) + "\n")
    for parse, old, first, second in (
            (parse_vmstat, ref.parse_vmstat, vm_text, later[0]),
            (parse_meminfo, ref.parse_meminfo, mem_text, later[1])):
        layout, old_layout = Layout(), ref.OldLayout()
        assert parse(first, layout=layout) == old(first, layout=old_layout)
        got = parse(second, layout=layout)
        assert got == old(second, layout=old_layout) == old(second)
        assert "vmstat.pgfault" not in got and "mem.dirty_bytes" not in got


PSI_TEXT = st.text(alphabet=st.sampled_from(list("somefulavg1036=.5 x\ntinan-e9")), max_size=200)


@settings(max_examples=300, deadline=None)
@given(text=PSI_TEXT, edits=st.lists(st.sampled_from(
    ["nan", "inf", "1e999", "-1", "x", "", "avg10", "total=", "=5"]), max_size=3))
def test_pressure_parses_as_before(text: str, edits: list[str]) -> None:
    real = _read(FIX / "telemetry" / "vm-2cpu", "/proc/pressure/io") or ""
    names: dict[tuple[str, str], dict[str, str]] = {}
    for t in (text, real, real.replace("0.00", edits[0]) if edits else real,
              real + " ".join(edits) + "\n"):
        _same(partial(parse_pressure, resource="io", names=names),
              partial(ref.parse_pressure, resource="io"), t)
