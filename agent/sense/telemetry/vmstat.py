"""/proc/vmstat: THP, compaction, page faults, swap, reclaim, NUMA hinting and
migration. Only the keys in the catalogue are kept (a kernel has ~180)."""

from __future__ import annotations

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.catalogue import VMSTAT_KEYS
from hosttune.agent.sense.telemetry.collector import KeptFileCollector
from hosttune.agent.sense.telemetry.parsing import Layout, nothing_usable

VMSTAT = "/proc/vmstat"
_NAMES = {key: f"vmstat.{key}" for key in VMSTAT_KEYS}


def _value(rest: str) -> float | None:
    # number() inlined: this runs for ~60 lines a sample.
    try:
        value = float(rest)
    except ValueError:
        return None
    return value if value - value == 0 else None  # nan and inf give nan


def parse_vmstat(text: str, path: str = VMSTAT, layout: Layout | None = None) -> dict[str, float]:
    """'key value' lines -> vmstat.<key> for the catalogued keys. A kernel
    that lacks some keys (THP off, no NUMA) simply does not report them.
    `layout` (kept by the collector between reads) skips the other lines."""
    lines = text.splitlines()
    if layout is not None:
        known = layout.values(lines)
        if known is not None:
            return known
    out: dict[str, float] = {}
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


class VmstatCollector(KeptFileCollector):
    name = "vmstat"
    path = VMSTAT

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._layout = Layout()

    def parse(self, text: str) -> dict[str, float]:
        return parse_vmstat(text, self._described, self._layout)
