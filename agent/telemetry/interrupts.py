"""Interrupts from /proc/interrupts: per IRQ row (numbered IRQs and the
per-CPU rows such as LOC, RES, TLB) summed over CPUs, and per CPU summed over
rows. The rows are what IRQ-affinity tuning needs to see move."""

from __future__ import annotations

from hosttune.agent.errors import ParseError
from hosttune.agent.host import Host

INTERRUPTS = "/proc/interrupts"


def parse_interrupts(text: str, path: str = INTERRUPTS) -> dict[str, float]:
    """The header names the CPU columns ('CPU0 CPU1 ...', only online CPUs,
    not always contiguous). A row gives its name, then one count per column,
    then the chip and handler names. Rows with fewer counts than columns
    (ERR and MIS have one global count; a truncated line) count towards
    their IRQ but not to any CPU."""
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
    per_cpu = [0] * ncpu
    out: dict[str, float] = {}
    for line in lines[1:]:
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or not name or "." in name or any(c.isspace() for c in name):
            continue
        counts: list[int] = []
        for tok in rest.split(None, ncpu)[:ncpu]:
            # Counts are plain decimal; the first non-number is the chip name.
            # (A u64 has at most 20 digits; int() refuses over 4300.)
            if not tok.isdigit() or not tok.isascii() or len(tok) > 20:
                break
            counts.append(int(tok))
        if not counts:
            continue
        out[f"irq.{name}.count"] = float(sum(counts))
        if len(counts) == ncpu:
            for i, count in enumerate(counts):
                per_cpu[i] += count
    for cpu, total in zip(cpus, per_cpu, strict=True):
        out[f"cpu.{cpu}.irqs"] = float(total)
    return out


class InterruptsCollector:
    name = "interrupts"

    def __init__(self, host: Host) -> None:
        self._file = host.kept(INTERRUPTS)
        self._path = host.describe(INTERRUPTS)

    def collect(self, values: dict[str, float]) -> None:
        values.update(parse_interrupts(self._file.read(), self._path))

    def paths(self) -> list[str]:
        return [INTERRUPTS]

    def close(self) -> None:
        self._file.close()
