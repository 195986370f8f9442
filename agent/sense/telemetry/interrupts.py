"""Interrupts from /proc/interrupts: per IRQ row (numbered IRQs and the
per-CPU rows such as LOC, RES, TLB) summed over CPUs, and per CPU summed over
rows. The rows are what IRQ-affinity tuning needs to see move.

On a big host this file is large (one column per CPU, one row per IRQ: 224
CPUs and ~1000 MSI-X vectors make ~2.5 MB), and most rows do not change from
one read to the next (idle queues, unused vectors). `IrqTable`, which the
collector keeps, re-parses only the rows whose text changed and moves the
per-CPU sums by their difference; its results are those of a full parse."""

from __future__ import annotations

from itertools import compress
from operator import add, ne, sub

from hosttune.agent.sense.errors import ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.collector import KeptFileCollector

INTERRUPTS = "/proc/interrupts"

# What one row adds: (metric name, its counts, whether it has one count per
# CPU column); None for a line that adds nothing.
_Row = tuple[str, list[int], bool] | None


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


def _header(lines: list[str], path: str) -> list[int]:
    if not lines:
        raise ParseError(path, "empty file")
    cpus: list[int] = []
    for col in lines[0].split():
        digits = col[3:]
        if (not col.startswith("CPU") or not digits.isdigit() or not digits.isascii()
                or len(digits) > 6):
            raise ParseError(path, f"header is not a list of CPUs: {lines[0][:60]!r}", line=1)
        cpus.append(int(digits))
    if not cpus:
        raise ParseError(path, "header names no CPU", line=1)
    return cpus


def _row(line: str, ncpu: int, names: dict[str, str]) -> _Row:
    raw, sep, rest = line.partition(":")
    if not sep:
        return None
    metric = names.get(raw)
    if metric is None:
        metric = names[raw] = _row_metric(raw)
    if not metric:
        return None
    tokens = rest.split(None, ncpu)[:ncpu]
    try:
        # The usual row: every column a count. int() would also take
        # '+5' or '1_0', which the kernel never writes; on a garbled
        # row that only bends a count, it cannot raise anything else.
        counts = list(map(int, tokens))
    except ValueError:  # the chip name within the columns, or > 4300 digits
        counts = _counts(tokens)
    if not counts:
        return None
    return metric, counts, len(counts) == ncpu


def parse_interrupts(text: str, path: str = INTERRUPTS,
                     names: dict[str, str] | None = None) -> dict[str, float]:
    """The header names the CPU columns ('CPU0 CPU1 ...', only online CPUs,
    not always contiguous). A row gives its name, then one count per column,
    then the chip and handler names. Rows with fewer counts than columns
    (ERR and MIS have one global count; a truncated line) count towards
    their IRQ but not to any CPU. `names` caches row name -> metric name
    between calls."""
    return IrqTable(path, names).update(text)


class IrqTable:
    """/proc/interrupts parsed, kept between reads: `update(text)` returns
    what `parse_interrupts(text)` would, re-parsing only the lines that differ
    from the last read. Any change of shape (the header, the number of
    lines, a row that changed name or became unreadable, a row name seen
    twice) makes it parse the whole text again. The returned dict is the
    table's own: read it, do not keep or change it."""

    def __init__(self, path: str = INTERRUPTS, names: dict[str, str] | None = None) -> None:
        self.path = path
        self.names: dict[str, str] = {} if names is None else names
        self._lines: list[str] = []
        self._rows: list[_Row] = []
        self._per_cpu: list[int] = []
        self._cpu_names: list[str] = []
        self._out: dict[str, float] = {}
        self._incremental = False

    def update(self, text: str) -> dict[str, float]:
        lines = text.splitlines()
        old = self._lines
        if (not self._incremental or len(lines) != len(old) or not lines
                or lines[0] != old[0]):
            return self._full(lines)
        rows = self._rows
        out = self._out
        ncpu = len(self._cpu_names)
        per_cpu = self._per_cpu
        names = self.names
        # The comparison runs in C; only the changed lines reach Python.
        changed = list(compress(range(len(lines)), map(ne, lines, old)))
        if 2 * len(changed) > len(lines):
            # Moving the sums row by row costs more than adding them afresh
            # once most rows moved (on a busy host at a long interval).
            return self._full(lines)
        for i in changed:
            before = rows[i]
            now = _row(lines[i], ncpu, names)
            if before is None and now is None:
                continue
            if before is None or now is None or now[0] != before[0]:
                return self._full(lines)
            metric, counts, full = now
            out[metric] = float(sum(counts))
            if before[2]:
                per_cpu = list(map(sub, per_cpu, before[1]))
            if full:
                per_cpu = list(map(add, per_cpu, counts))
            rows[i] = now
        self._lines = lines
        self._per_cpu = per_cpu
        out.update(zip(self._cpu_names, map(float, per_cpu), strict=True))
        return out

    def _full(self, lines: list[str]) -> dict[str, float]:
        self._incremental = False
        self._lines = []
        cpus = _header(lines, self.path)
        ncpu = len(cpus)
        names = self.names
        rows: list[_Row] = [None]
        full_rows: list[list[int]] = []
        out: dict[str, float] = {}
        for line in lines[1:]:
            row = _row(line, ncpu, names)
            rows.append(row)
            if row is None:
                continue
            metric, counts, full = row
            out[metric] = float(sum(counts))
            if full:
                full_rows.append(counts)
        # Column sums in one pass over the rows (C loops), not one add per cell.
        per_cpu = ([sum(col) for col in zip(*full_rows, strict=True)] if full_rows
                   else [0] * ncpu)
        cpu_names = [f"cpu.{cpu}.irqs" for cpu in cpus]
        out.update(zip(cpu_names, map(float, per_cpu), strict=True))
        self._lines = lines
        self._rows = rows
        self._per_cpu = per_cpu
        self._cpu_names = cpu_names
        self._out = out
        # A row name seen twice: its count is the last row's, so a change to
        # the first could not be applied alone. The kernel never repeats one.
        metrics = [r[0] for r in rows if r is not None]
        self._incremental = len(set(metrics)) == len(metrics)
        return out


class InterruptsCollector(KeptFileCollector):
    name = "interrupts"
    path = INTERRUPTS

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._table = IrqTable(self._described)

    def parse(self, text: str) -> dict[str, float]:
        return self._table.update(text)
