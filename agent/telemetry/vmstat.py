"""/proc/vmstat: THP, compaction, page faults, swap, reclaim, NUMA hinting and
migration. Only the keys in the catalogue are kept (a kernel has ~180)."""

from __future__ import annotations

from hosttune.agent.host import Host
from hosttune.agent.telemetry.catalogue import VMSTAT_KEYS
from hosttune.agent.telemetry.parsing import nothing_usable, number

VMSTAT = "/proc/vmstat"
_NAMES = {key: f"vmstat.{key}" for key in VMSTAT_KEYS}


def parse_vmstat(text: str, path: str = VMSTAT) -> dict[str, float]:
    """'key value' lines -> vmstat.<key> for the catalogued keys. A kernel
    that lacks some keys (THP off, no NUMA) simply does not report them."""
    out: dict[str, float] = {}
    seen_any = False
    names = _NAMES
    for line in text.splitlines():
        key, sep, rest = line.partition(" ")
        if not sep:
            continue
        seen_any = True
        name = names.get(key)
        if name is None:
            continue
        value = number(rest)
        if value is not None:
            out[name] = value
    if not seen_any:
        raise nothing_usable(path, "'key value' line")
    return out


class VmstatCollector:
    name = "vmstat"

    def __init__(self, host: Host) -> None:
        self._file = host.kept(VMSTAT)
        self._path = host.describe(VMSTAT)

    def collect(self, values: dict[str, float]) -> None:
        values.update(parse_vmstat(self._file.read(), self._path))

    def paths(self) -> list[str]:
        return [VMSTAT]

    def close(self) -> None:
        self._file.close()
