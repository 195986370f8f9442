"""sysctl: any key under /proc/sys. net.* keys belong to the network namespace
of the process that writes them; everything else is global."""

from __future__ import annotations

import re

from hosttune.agent.sense.errors import KnobError
from hosttune.agent.sense.host import Host
from hosttune.tuners.base import FileTuner

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+(?:[./][A-Za-z0-9_\-:@+]+)*$")


class SysctlTuner(FileTuner):
    family = "sysctl"

    def _path(self, key: str) -> str:
        if not _KEY_RE.match(key):
            raise KnobError(f"sysctl:{key}", f"not a sysctl key: {key!r}")
        try:
            return Host.sysctl_path(key)
        except ValueError:
            raise KnobError(f"sysctl:{key}", f"not a sysctl key: {key!r}") from None

    def read(self, key: str) -> str:
        return " ".join(self._raw(key).split())

    def validate(self, key: str, value: str) -> str:
        knob = f"sysctl:{key}"
        current = self.read(key)
        fields = value.split()
        if not fields:
            raise KnobError(knob, "empty value")
        if any(c in value for c in "\n\r\0"):
            raise KnobError(knob, "a sysctl value is one line")
        cur_fields = current.split()
        # A knob the kernel prints as integers takes integers, as many as it prints.
        if cur_fields and all(_is_int(f) for f in cur_fields):
            if not all(_is_int(f) for f in fields):
                raise KnobError(knob, f"expected integer value(s) like {current!r}, got {value!r}")
            if len(fields) != len(cur_fields):
                raise KnobError(knob, f"expected {len(cur_fields)} integer(s) like {current!r}, "
                                      f"got {len(fields)}")
            return " ".join(str(int(f)) for f in fields)
        return " ".join(fields)

    def equal(self, a: str, b: str) -> bool:
        fa, fb = a.split(), b.split()
        if len(fa) == len(fb) and all(_is_int(x) for x in fa + fb):
            return [int(x) for x in fa] == [int(y) for y in fb]
        return fa == fb


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
