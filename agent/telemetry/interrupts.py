"""Interrupts from /proc/interrupts: per IRQ row (numbered IRQs and the
per-CPU rows such as LOC, RES, TLB) summed over CPUs, and per CPU summed over
rows. The rows are what IRQ-affinity tuning needs to see move."""

from __future__ import annotations

from hosttune.agent.errors import ParseError
from hosttune.agent.host import Host
from hosttune.agent.telemetry.collector import KeptFileCollector

INTERRUPTS = "/proc/interrupts"


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


def parse_interrupts(text: str, path: str = INTERRUPTS,
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


class InterruptsCollector(KeptFileCollector):
    name = "interrupts"
    path = INTERRUPTS

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._names: dict[str, str] = {}

    def parse(self, text: str) -> dict[str, float]:
        return parse_interrupts(text, self._described, self._names)
