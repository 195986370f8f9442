"""The /proc parsers as they were before the cost work (main at 7d966a1):
/proc/interrupts parsed whole every read, and the vmstat/meminfo layouts
walked with a Python loop. Kept here, unchanged, as the reference that
tests/test_telemetry_equivalence.py holds the faster parsers to: same
names, same values, for every input."""

from __future__ import annotations

from collections.abc import Callable

from hosttune.agent.sense.errors import ParseError
from hosttune.agent.sense.telemetry.catalogue import VMSTAT_KEYS
from hosttune.agent.sense.telemetry.memory import _MEMINFO_KEYS, _NODE_KEYS, _kb_value, _ratio
from hosttune.agent.sense.telemetry.parsing import nothing_usable, number

_NAMES = {key: f"vmstat.{key}" for key in VMSTAT_KEYS}


class OldLayout:
    __slots__ = ("lines", "spots")

    def __init__(self) -> None:
        self.lines = -1
        self.spots: list[tuple[int, str, str]] = []

    def usable(self, lines: list[str]) -> bool:
        return bool(self.spots) and self.lines == len(lines)

    def record(self, lines: list[str], spots: dict[str, tuple[int, str]]) -> None:
        self.lines = len(lines)
        self.spots = sorted((i, prefix, name) for name, (i, prefix) in spots.items())


def _row_metric(raw: str) -> str:
    """'  24' -> 'irq.24.count'; '' for a row name that cannot be a metric."""
    name = raw.strip()
    if not name or "." in name or len(name.split()) != 1:
        return ""
    return f"irq.{name}.count"


def _counts(tokens: list[str]) -> list[int]:
    """The leading decimal counts; the first other token is the chip name."""
    counts: list[int] = []
    for tok in tokens:
        # (A u64 has at most 20 digits; int() refuses over 4300.)
        if not tok.isdigit() or not tok.isascii() or len(tok) > 20:
            break
        counts.append(int(tok))
    return counts


def parse_interrupts(text: str, path: str = "/proc/interrupts",
                     names: dict[str, str] | None = None) -> dict[str, float]:
    """The header names the CPU columns ('CPU0 CPU1 ...', only online CPUs,
    not always contiguous). A row gives its name, then one count per column,
    then the chip and handler names. Rows with fewer counts than columns
    (ERR and MIS have one global count; a truncated line) count towards
    their IRQ but not to any CPU. `names` caches row name -> metric name
    between calls."""
    lines = text.splitlines()
    if not lines:
        raise ParseError(path, "empty file")
    header = lines[0].split()
    cpus: list[int] = []
    for col in header:
        digits = col[3:]
        if (not col.startswith("CPU") or not digits.isdigit() or not digits.isascii()
                or len(digits) > 6):
            raise ParseError(path, f"header is not a list of CPUs: {lines[0][:60]!r}", line=1)
        cpus.append(int(digits))
    if not cpus:
        raise ParseError(path, "header names no CPU", line=1)
    ncpu = len(cpus)
    cache = {} if names is None else names
    full_rows: list[list[int]] = []
    out: dict[str, float] = {}
    for line in lines[1:]:
        raw, sep, rest = line.partition(":")
        if not sep:
            continue
        metric = cache.get(raw)
        if metric is None:
            metric = cache[raw] = _row_metric(raw)
        if not metric:
            continue
        tokens = rest.split(None, ncpu)[:ncpu]
        try:
            # The usual row: every column a count. int() would also take
            # '+5' or '1_0', which the kernel never writes; on a garbled
            # row that only bends a count, it cannot raise anything else.
            counts = list(map(int, tokens))
        except ValueError:  # the chip name within the columns, or > 4300 digits
            counts = _counts(tokens)
        if not counts:
            continue
        out[metric] = float(sum(counts))
        if len(counts) == ncpu:
            full_rows.append(counts)
    # Column sums in one pass over the rows (C loops), not one add per cell.
    per_cpu = [sum(col) for col in zip(*full_rows, strict=True)] if full_rows else [0] * ncpu
    for cpu, total in zip(cpus, per_cpu, strict=True):
        out[f"cpu.{cpu}.irqs"] = float(total)
    return out


def _value(rest: str) -> float | None:
    # number() inlined: this runs for ~60 lines a sample.
    try:
        value = float(rest)
    except ValueError:
        return None
    return value if value - value == 0 else None  # nan and inf give nan


def parse_vmstat(text: str, path: str = "/proc/vmstat",
                 layout: OldLayout | None = None) -> dict[str, float]:
    """'key value' lines -> vmstat.<key> for the catalogued keys. A kernel
    that lacks some keys (THP off, no NUMA) simply does not report them.
    `layout` (kept by the collector between reads) skips the other lines."""
    lines = text.splitlines()
    out: dict[str, float] = {}
    if layout is not None and layout.usable(lines):
        for i, prefix, name in layout.spots:
            line = lines[i]
            if not line.startswith(prefix):
                break
            try:  # _value() inlined: the one loop that runs every sample
                value = float(line[len(prefix):])
            except ValueError:
                continue
            if value - value == 0:  # finite: nan and inf give nan
                out[name] = value
        else:
            return out
        out = {}
    spots: dict[str, tuple[int, str]] = {}
    seen_any = False
    names = _NAMES
    for i, line in enumerate(lines):
        key, sep, rest = line.partition(" ")
        if not sep:
            continue
        seen_any = True
        metric = names.get(key)
        if metric is None:
            continue
        spots[metric] = (i, key + " ")
        parsed = _value(rest)
        if parsed is not None:
            out[metric] = parsed
        else:
            out.pop(metric, None)
    if not seen_any:
        raise nothing_usable(path, "'key value' line")
    if layout is not None:
        layout.record(lines, spots)
    return out


def _keyed(lines: list[str], layout: OldLayout | None,
           find: Callable[[str], tuple[str, str] | None]) -> dict[str, float]:
    """'<head>: value [kB]' lines whose head `find` maps to (prefix, metric
    name), going straight to the known lines when `layout` still fits."""
    out: dict[str, float] = {}
    if layout is not None and layout.usable(lines):
        for i, prefix, name in layout.spots:
            line = lines[i]
            if not line.startswith(prefix):
                break
            try:  # _kb_value() inlined: this loop runs every sample
                value = (float(line[len(prefix):-3]) * 1024 if line.endswith(" kB")
                         else float(line[len(prefix):]))
            except ValueError:
                continue
            if value - value == 0:
                out[name] = value
        else:
            return out
        out = {}
    spots: dict[str, tuple[int, str]] = {}
    for i, line in enumerate(lines):
        head, sep, rest = line.partition(":")
        if not sep:
            continue
        found = find(head)
        if found is None:
            continue
        name = found[1]
        spots[name] = (i, head + ":")
        parsed = _kb_value(rest)
        if parsed is not None:
            out[name] = parsed
        else:
            out.pop(name, None)
    if layout is not None:
        layout.record(lines, spots)
    return out


def _meminfo_key(head: str) -> tuple[str, str] | None:
    name = _MEMINFO_KEYS.get(head)
    return None if name is None else (head, name)


def parse_meminfo(text: str, path: str = "/proc/meminfo",
                  layout: OldLayout | None = None) -> dict[str, float]:
    """'Key:   value kB' lines -> bytes (or page counts for HugePages_*)."""
    out = _keyed(text.splitlines(), layout, _meminfo_key)
    if not out:
        raise nothing_usable(path, "known meminfo field")
    total = out.get("mem.total_bytes")
    avail = out.get("mem.available_bytes")
    if avail is not None:
        _ratio(out, "mem.used_ratio", total - avail if total else None, total)
    swap_total = out.get("mem.swap_total_bytes")
    swap_free = out.get("mem.swap_free_bytes")
    if swap_free is not None and swap_total:
        out["mem.swap_used_ratio"] = (swap_total - swap_free) / swap_total
    _ratio(out, "mem.dirty_ratio", out.get("mem.dirty_bytes"), total)
    _ratio(out, "mem.anon_huge_ratio", out.get("mem.anon_huge_bytes"), out.get("mem.anon_bytes"))
    return out


def parse_node_meminfo(text: str, node: int, path: str = "",
                       layout: OldLayout | None = None) -> dict[str, float]:
    """'Node 0 MemTotal:   4942028 kB' lines -> node.<node>.* metrics."""
    prefix = f"node.{node}."

    def find(head: str) -> tuple[str, str] | None:
        if not head.startswith("Node "):
            return None
        suffix = _NODE_KEYS.get(head[head.rfind(" ") + 1:])
        return None if suffix is None else (head, prefix + suffix)

    out = _keyed(text.splitlines(), layout, find)
    if not out:
        raise nothing_usable(path or f"node{node}/meminfo", "known node meminfo field")
    total = out.get(prefix + "mem_total_bytes")
    _ratio(out, prefix + "mem_used_ratio", out.get(prefix + "mem_used_bytes"), total)
    return out




_AVGS = frozenset(("avg10", "avg60", "avg300"))


def parse_pressure(text: str, resource: str, path: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        scope, _, rest = line.partition(" ")
        if scope not in ("some", "full"):
            continue
        prefix = f"psi.{resource}.{scope}."
        for field in rest.split():
            key, sep, raw = field.partition("=")
            if not sep:
                continue
            value = number(raw)
            if value is None:
                continue
            if key == "total":
                out[prefix + "total"] = value / 1e6  # microseconds
            elif key in _AVGS:
                out[prefix + key] = value
    if not out:
        raise nothing_usable(path or f"/proc/pressure/{resource}", "'some'/'full' line")
    return out
