"""block: queue settings of a block device.

Keys: `DEVICE:SETTING` (`nvme0n1:read_ahead_kb`, `sda:scheduler`), files
/sys/block/DEVICE/queue/SETTING. `scheduler` prints "[mq-deadline] none"; its
value is the selected word. The other settings hold one integer.

Owned by tuned's [disk] readahead and elevator, and its [sysfs] settings of
these files."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hosttune.agent.sense import knobfiles
from hosttune.agent.sense.errors import KnobError, ParseError
from hosttune.tuners.base import FileTuner, parse_choice, validate_choice_or_count
from hosttune.tuners.knobs import SearchHint

SETTINGS = ("read_ahead_kb", "scheduler", "nr_requests", "rq_affinity", "max_sectors_kb",
            "nomerges", "add_random", "iostats")
_DEV_RE = re.compile(r"^[A-Za-z0-9_.!\-]+$")
# tuned's [disk] plugin options -> the queue setting they change
_TUNED_DISK = {"readahead": "read_ahead_kb", "readahead_multiply": "read_ahead_kb",
               "elevator": "scheduler"}


class BlockTuner(FileTuner):
    family = "block"
    allowlist: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "block:*:read_ahead_kb": {"min": 0, "max": 16384},
        "block:*:scheduler": {"choices": ["none", "mq-deadline", "kyber", "bfq"]},
        "block:*:nr_requests": {"min": 32, "max": 4096},
    }
    capture = tuple(knobfiles.block_queue("*", s)
                    for s in ("read_ahead_kb", "scheduler", "nr_requests"))
    # The block layer keeps readahead in whole 4 KiB pages (195 reads back as 192).
    search: ClassVar[Mapping[str, SearchHint]] = {"block:*:read_ahead_kb": SearchHint(step=4)}

    def _path(self, key: str) -> str:
        device, sep, setting = key.partition(":")
        if not sep or not _DEV_RE.match(device) or device in (".", ".."):
            raise KnobError(f"block:{key}", "block keys are DEVICE:SETTING (block:sda:scheduler)")
        if setting not in SETTINGS:
            raise KnobError(f"block:{key}", f"unknown block setting {setting!r} "
                                            f"({', '.join(SETTINGS)})")
        return knobfiles.block_queue(device, setting)

    def read(self, key: str) -> str:
        raw = self._raw(key)
        if key.endswith(":scheduler"):
            try:
                return parse_choice(raw, source=self.host.describe(self._path(key)))[0]
            except ParseError as exc:
                raise KnobError(f"block:{key}", str(exc)) from exc
        return raw

    def validate(self, key: str, value: str) -> str:
        raw = self._raw(key)
        options = None
        if key.endswith(":scheduler"):
            options = parse_choice(raw, source=self.host.describe(self._path(key)))[1]
        return validate_choice_or_count(f"block:{key}", value, options)

    @classmethod
    def tuned_knobs(cls, plugin: str, option: str, devices: Sequence[str]) -> list[str]:
        if plugin == "disk" and option in _TUNED_DISK:
            return [f"block:{device}:{_TUNED_DISK[option]}" for device in devices]
        found = knobfiles.block_key(option) if plugin == "sysfs" else None
        return [f"block:{found[0]}:{found[1]}"] if found else []
