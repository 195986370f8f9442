"""hugepages: persistent hugepage pools, globally and per NUMA node.

Keys: `2048kB` (/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages) and
`node0:2048kB` (/sys/devices/system/node/node0/hugepages/...). The value is
the number of pages. The kernel may give fewer pages than asked when memory
is fragmented: `apply` reads the pool back and raises, naming both counts,
rather than pretend.

Owned by the kernel command line: `hugepages=N` reserves the pool of the size
named by the `hugepagesz=` before it (else `default_hugepagesz=`, else 2 MB),
and `default_hugepagesz=` owns the pool of its size."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hosttune.agent.sense import knobfiles
from hosttune.agent.sense.errors import KnobError
from hosttune.agent.sense.ownership import Owner
from hosttune.tuners.base import FileTuner

_KEY_RE = re.compile(r"^(?:node(\d+):)?(\d+)kB$")


class HugepagesShortfall(KnobError):
    """The kernel allocated fewer hugepages than asked (fragmentation)."""

    def __init__(self, knob: str, asked: int, got: int) -> None:
        super().__init__(knob, f"asked for {asked} pages, the kernel gave {got} "
                               "(memory too fragmented or too little free)")
        self.asked = asked
        self.got = got


class HugepagesTuner(FileTuner):
    family = "hugepages"
    allowlist: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        # Persistent hugepage pools, global and per node.
        "hugepages:*": {"min": 0, "max_memory_fraction": 0.5},
    }
    capture = (knobfiles.hugepages_dir("*") + "/*",
               knobfiles.hugepages_dir("*", node="[0-9]*") + "/*")

    @staticmethod
    def parse_key(key: str) -> tuple[int | None, int]:
        """"node0:2048kB" -> (0, 2048); "2048kB" -> (None, 2048)."""
        match = _KEY_RE.match(key)
        if not match:
            raise KnobError(f"hugepages:{key}",
                            "hugepage keys are SIZEkB or nodeN:SIZEkB (e.g. 2048kB, node0:2048kB)")
        node = int(match.group(1)) if match.group(1) is not None else None
        return node, int(match.group(2))

    def _path(self, key: str) -> str:
        node, size = self.parse_key(key)
        return knobfiles.hugepages(size, node)

    def read(self, key: str) -> str:
        raw = self._raw(key)
        try:
            return str(int(raw))
        except ValueError:
            raise KnobError(f"hugepages:{key}", f"{self.host.describe(self._path(key))}: "
                                                f"expected a number of pages, got {raw[:40]!r}"
                            ) from None

    def free(self, key: str) -> int | None:
        node, size = self.parse_key(key)
        return self.host.read_optional_int(knobfiles.hugepages(size, node, "free_hugepages"))

    def validate(self, key: str, value: str) -> str:
        knob = f"hugepages:{key}"
        self.read(key)
        try:
            number = int(value.strip())
        except ValueError:
            raise KnobError(knob, f"expected a number of pages, got {value!r}") from None
        if number < 0:
            raise KnobError(knob, f"expected a non-negative number of pages, got {number}")
        return str(number)

    def apply(self, key: str, value: str) -> None:
        knob = f"hugepages:{key}"
        asked = int(value)
        self.host.write_text(self._path(key), value)
        got = int(self.read(key))
        # Shrinking can also fall short (pages in use become surplus pages and
        # leave the pool only when freed); report both directions.
        if got != asked:
            raise HugepagesShortfall(knob, asked, got)

    def equal(self, a: str, b: str) -> bool:
        try:
            return int(a) == int(b)
        except ValueError:
            return a.strip() == b.strip()

    @classmethod
    def owned_by_cmdline(cls, params: Sequence[str]) -> dict[str, Owner]:
        owned: dict[str, Owner] = {}
        default_kb = 2048
        size_kb: int | None = None
        for param in params:
            name, _, value = param.partition("=")
            if name == "default_hugepagesz":
                kb = _size_kb(value)
                if kb:
                    default_kb = kb
                    owned[f"hugepages:{kb}kB"] = Owner("cmdline", param)
                    owned[f"hugepages:node*:{kb}kB"] = Owner("cmdline", param)
            elif name == "hugepagesz":
                size_kb = _size_kb(value)
            elif name == "hugepages":
                kb = size_kb or default_kb
                owned[f"hugepages:{kb}kB"] = Owner("cmdline", param)
                owned[f"hugepages:node*:{kb}kB"] = Owner("cmdline", param)
                size_kb = None
        return owned


def _size_kb(text: str) -> int | None:
    """A kernel parameter's size ("1G", "2M", "2097152") in kB."""
    units = {"k": 1, "m": 1024, "g": 1024 * 1024}
    text = text.strip().lower()
    if text.endswith("b"):
        text = text[:-1]
    if text and text[-1] in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1]]
    if text.isdigit():
        return int(text) // 1024
    return None
