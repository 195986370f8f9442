"""Block I/O per whole disk from /proc/diskstats, and totals over the
physical disks (stacked devices such as dm-* and md* are listed on their own
but left out of the totals, which would otherwise count the same I/O twice)."""

from __future__ import annotations

import re
from collections.abc import Callable

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.parsing import nothing_usable

DISKSTATS = "/proc/diskstats"
SECTOR = 512  # diskstats counts 512-byte sectors whatever the device's own size

_SKIP = re.compile(r"(loop|ram|zram)\d+")
_STACKED = ("dm-", "md", "bcache", "drbd")
# Fallback when /sys/block cannot tell (a fixture tree without /sys): the
# common partition names.
_PARTITION = re.compile(
    r"(?:[shv]d[a-z]+|xvd[a-z]+)\d+|(?:nvme\d+n\d+|mmcblk\d+|nbd\d+|md\d+)p\d+"
)

# (column index after the name, metric suffix, scale)
_COLUMNS: tuple[tuple[int, str, float], ...] = (
    (0, "reads", 1.0),
    (2, "read_bytes", SECTOR),
    (3, "read_seconds", 1e-3),
    (4, "writes", 1.0),
    (6, "write_bytes", SECTOR),
    (7, "write_seconds", 1e-3),
    (8, "in_flight", 1.0),
    (9, "busy_seconds", 1e-3),
    (10, "weighted_seconds", 1e-3),
    (11, "discards", 1.0),
    (15, "flushes", 1.0),
)
_TOTALLED = ("reads", "read_bytes", "read_seconds", "writes", "write_bytes", "write_seconds",
             "discards", "flushes")


def looks_whole(name: str) -> bool:
    """Whether a device name has the form of a whole disk (not a partition)."""
    return not _PARTITION.fullmatch(name)


def parse_diskstats(
    text: str, path: str = DISKSTATS, *, is_disk: Callable[[str], bool] = looks_whole,
) -> dict[str, float]:
    """One line per device: 'major minor name' then 11 to 17 counters.
    `is_disk` says whether a name is a whole disk; partitions, loop, ram and
    zram devices are skipped."""
    out: dict[str, float] = {}
    totals = dict.fromkeys(_TOTALLED, 0.0)
    lines = 0
    disks = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 14:
            continue
        lines += 1
        name = parts[2]
        if _SKIP.fullmatch(name) or not is_disk(name):
            continue
        try:
            stats = list(map(float, parts[3:]))
        except ValueError:
            continue
        if sum(stats) - sum(stats) != 0:  # a nan or inf among them
            continue
        disks += 1
        stacked = name.startswith(_STACKED)
        prefix = f"disk.{name}."
        for col, suffix, scale in _COLUMNS:
            if col < len(stats):
                value = stats[col] * scale
                out[prefix + suffix] = value
                if not stacked and suffix in totals:
                    totals[suffix] += value
    if lines == 0 and text.strip():
        raise nothing_usable(path, "device line")
    if disks:
        for suffix, value in totals.items():
            out["disk." + suffix] = value
        out["disk.count"] = float(disks)
    return out


class DiskCollector:
    name = "disks"

    def __init__(self, host: Host) -> None:
        self._host = host
        self._file = host.kept(DISKSTATS)
        self._path = host.describe(DISKSTATS)
        self._has_sys_block = host.is_dir("/sys/block")
        self._is_disk: dict[str, bool] = {}

    def _whole(self, name: str) -> bool:
        # Asked of sysfs once per device name: whole disks have /sys/block/<name>
        # (a '/' in a kernel name, as in cciss/c0d0, is a '!' in sysfs).
        found = self._is_disk.get(name)
        if found is None:
            if self._has_sys_block:
                found = self._host.exists(f"/sys/block/{name.replace('/', '!')}")
            else:
                found = looks_whole(name)
            self._is_disk[name] = found
        return found

    def collect(self, values: dict[str, float]) -> None:
        values.update(parse_diskstats(self._file.read(), self._path, is_disk=self._whole))

    def paths(self) -> list[str]:
        return [DISKSTATS]

    def close(self) -> None:
        self._file.close()
