"""thp: transparent hugepages under /sys/kernel/mm/transparent_hugepage.

Keys are paths below that directory with '.' for '/': `enabled`, `defrag`,
`shmem_enabled`, `use_zero_page`, `khugepaged.defrag`,
`khugepaged.pages_to_scan`, and per-size mTHP modes such as
`hugepages-64kB.enabled`. Mode files print "always [madvise] never"; the value
is the selected word. Numeric files hold one integer."""

from __future__ import annotations

import re

from hosttune.agent.sense.errors import KnobError, ParseError
from hosttune.tuners.base import FileTuner, parse_choice, validate_choice_or_count

THP_DIR = "/sys/kernel/mm/transparent_hugepage"
_KEY_RE = re.compile(r"^[a-z0-9_\-]+(?:\.[a-z0-9_\-]+)?$", re.IGNORECASE)
# The kernel's menus (Documentation/admin-guide/mm/transhuge.rst), for a mode
# file that shows a bare word instead: a fixture tree after a plain write, or a
# copy of the file made with `cat` of only the selected value.
_MODES = {
    "enabled": ("always", "inherit", "madvise", "never"),
    "defrag": ("always", "defer", "defer+madvise", "madvise", "never"),
    "shmem_enabled": ("always", "within_size", "advise", "never", "deny", "force", "inherit"),
}


class ThpTuner(FileTuner):
    family = "thp"

    def _path(self, key: str) -> str:
        if not _KEY_RE.match(key):
            raise KnobError(f"thp:{key}", f"not a THP key: {key!r}")
        return f"{THP_DIR}/{key.replace('.', '/')}"

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
