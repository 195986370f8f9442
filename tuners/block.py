"""block: queue settings of a block device.

Keys: `DEVICE:SETTING` (`nvme0n1:read_ahead_kb`, `sda:scheduler`), files
/sys/block/DEVICE/queue/SETTING. `scheduler` prints "[mq-deadline] none"; its
value is the selected word. The other settings hold one integer."""

from __future__ import annotations

import re

from hosttune.agent.sense.errors import KnobError, ParseError
from hosttune.tuners.base import FileTuner, parse_choice, validate_choice_or_count

SETTINGS = ("read_ahead_kb", "scheduler", "nr_requests", "rq_affinity", "max_sectors_kb",
            "nomerges", "add_random", "iostats")
_DEV_RE = re.compile(r"^[A-Za-z0-9_.!\-]+$")


class BlockTuner(FileTuner):
    family = "block"

    def _path(self, key: str) -> str:
        device, sep, setting = key.partition(":")
        if not sep or not _DEV_RE.match(device) or device in (".", ".."):
            raise KnobError(f"block:{key}", "block keys are DEVICE:SETTING (block:sda:scheduler)")
        if setting not in SETTINGS:
            raise KnobError(f"block:{key}", f"unknown block setting {setting!r} "
                                            f"({', '.join(SETTINGS)})")
        return f"/sys/block/{device}/queue/{setting}"

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

