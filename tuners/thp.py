"""thp: transparent hugepages under /sys/kernel/mm/transparent_hugepage.

Keys are paths below that directory with '.' for '/': `enabled`, `defrag`,
`shmem_enabled`, `use_zero_page`, `khugepaged.defrag`,
`khugepaged.pages_to_scan`, and per-size mTHP modes such as
`hugepages-64kB.enabled`. Mode files print "always [madvise] never"; the value
is the selected word. Numeric files hold one integer.

Owned by the kernel command line's `transparent_hugepage=` (enabled) and
`transparent_hugepage_shmem=` (shmem_enabled), and by tuned's [vm]
transparent_hugepages and [sysfs] settings of these files."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hosttune.agent.sense import knobfiles
from hosttune.agent.sense.errors import KnobError, ParseError
from hosttune.agent.sense.ownership import Owner
from hosttune.tuners.base import FileTuner, parse_choice, validate_choice_or_count

_KEY_RE = re.compile(r"^[a-z0-9_\-]+(?:\.[a-z0-9_\-]+)?$", re.IGNORECASE)
# The kernel's menus (Documentation/admin-guide/mm/transhuge.rst), for a mode
# file that shows a bare word instead: a fixture tree after a plain write, or a
# copy of the file made with `cat` of only the selected value.
_MODES = {
    "enabled": ("always", "inherit", "madvise", "never"),
    "defrag": ("always", "defer", "defer+madvise", "madvise", "never"),
    "shmem_enabled": ("always", "within_size", "advise", "never", "deny", "force", "inherit"),
}


_CMDLINE = {"transparent_hugepage": "thp:enabled",
            "transparent_hugepage_shmem": "thp:shmem_enabled"}
_TUNED_VM = {"transparent_hugepages": "thp:enabled", "transparent_hugepage": "thp:enabled",
             "transparent_hugepage.defrag": "thp:defrag"}


class ThpTuner(FileTuner):
    family = "thp"
    allowlist: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "thp:enabled": {"choices": ["always", "madvise", "never"]},
        "thp:defrag": {"choices": ["always", "defer", "defer+madvise", "madvise", "never"]},
        "thp:shmem_enabled": {"choices": ["always", "within_size", "advise", "never"]},
        "thp:khugepaged.defrag": {"min": 0, "max": 1},
        "thp:khugepaged.pages_to_scan": {"min": 512, "max": 65536},
        "thp:khugepaged.scan_sleep_millisecs": {"min": 500, "max": 60000},
    }
    capture = (knobfiles.thp("*"), knobfiles.thp("khugepaged.*"))

    def _path(self, key: str) -> str:
        if not _KEY_RE.match(key):
            raise KnobError(f"thp:{key}", f"not a THP key: {key!r}")
        return knobfiles.thp(key)

    def options(self, key: str) -> tuple[str, ...] | None:
        """The modes a mode file offers, or None for a numeric file."""
        raw = self._raw(key)
        if "[" not in raw:
            if raw.isdigit():
                return None
            modes = _MODES.get(key.rsplit(".", 1)[-1])
            return modes if modes is not None and raw in modes else None
        return parse_choice(raw, source=self.host.describe(self._path(key)))[1]

    def read(self, key: str) -> str:
        raw = self._raw(key)
        if "[" in raw:
            try:
                return parse_choice(raw, source=self.host.describe(self._path(key)))[0]
            except ParseError as exc:
                raise KnobError(f"thp:{key}", str(exc)) from exc
        return raw

    def validate(self, key: str, value: str) -> str:
        return validate_choice_or_count(f"thp:{key}", value, self.options(key))

    def advise(self, key: str, value: str) -> list[str]:
        if key == "enabled" and value == "always":
            return ["THP always can raise memory use of sparse allocations; "
                    "check AnonHugePages of the workload"]
        return []

    @classmethod
    def owned_by_cmdline(cls, params: Sequence[str]) -> dict[str, Owner]:
        owned: dict[str, Owner] = {}
        for param in params:
            knob = _CMDLINE.get(param.partition("=")[0])
            if knob is not None:
                owned[knob] = Owner("cmdline", param)
        return owned

    @classmethod
    def tuned_knobs(cls, plugin: str, option: str, devices: Sequence[str]) -> list[str]:
        if plugin == "vm" and option in _TUNED_VM:
            return [_TUNED_VM[option]]
        key = knobfiles.thp_key(option) if plugin == "sysfs" else None
        return [f"thp:{key}"] if key else []
