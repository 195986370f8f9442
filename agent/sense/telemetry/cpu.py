"""CPU time from /proc/stat: per CPU and in total, as counters in seconds;
plus context switches, forks and the running/blocked task counts.

`cpu.util` and `cpu.<c>.util` are derived from the rates (sampler.rates)."""

from __future__ import annotations

import os

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.collector import KeptFileCollector
from hosttune.agent.sense.telemetry.parsing import nothing_usable, number

STAT = "/proc/stat"
# The order of the first eight columns of every cpu line. guest and
# guest_nice are already included in user and nice, so they are not summed.
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_SCALARS = {
    "ctxt": "cpu.context_switches",
    "intr": "cpu.interrupts",
    "processes": "proc.forks",
    "procs_running": "proc.running",
    "procs_blocked": "proc.blocked",
}
# Precomputed names: formatting f"cpu.{n}.{field}" for every CPU every
# interval is a measurable share of the sample on a many-CPU host.
_TOTAL_NAMES = tuple(f"cpu.{f}" for f in FIELDS)


def clock_ticks() -> int:
    try:
        hz = os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100
    return hz if hz > 0 else 100


def parse_stat(text: str, path: str = STAT, hz: int = 100,
               names: dict[str, tuple[str, ...]] | None = None) -> dict[str, float]:
    """/proc/stat -> metrics. Lines that do not parse are skipped; a text
    without the aggregate `cpu` line raises ParseError."""
    out: dict[str, float] = {}
    cache = {} if names is None else names
    scale = 1.0 / hz
    ncpu = 0
    for line in text.splitlines():
        if line.startswith("cpu"):
            parts = line.split()
            label = parts[0]
            if label == "cpu":
                keys = _TOTAL_NAMES
            else:
                digits = label[3:]
                if not digits.isdigit() or not digits.isascii() or len(digits) > 6:
                    continue
                found = cache.get(digits)
                if found is None:
                    n = int(digits)
                    found = cache[digits] = tuple(f"cpu.{n}.{f}" for f in FIELDS)
                keys = found
            try:
                values = list(map(float, parts[1:9]))
            except ValueError:
                continue
            if len(values) < 4 or sum(values) - sum(values) != 0:  # short, nan or inf
                continue
            for key, value in zip(keys, values, strict=False):
                out[key] = value * scale
            if label != "cpu":
                ncpu += 1
        else:
            head, _, rest = line.partition(" ")
            name = _SCALARS.get(head)
            if name is None:
                continue
            first = rest.lstrip().split(" ", 1)[0]
            scalar = number(first)
            if scalar is not None:
                out[name] = scalar
    if "cpu.user" not in out:
        raise nothing_usable(path, "aggregate 'cpu' line")
    out["cpu.count"] = float(ncpu)
    return out


class CpuCollector(KeptFileCollector):
    name = "cpu"
    path = STAT

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._hz = clock_ticks()
        self._names: dict[str, tuple[str, ...]] = {}

    def parse(self, text: str) -> dict[str, float]:
        return parse_stat(text, self._described, self._hz, self._names)
