"""sysctl: any key under /proc/sys. net.* keys belong to the network namespace
of the process that writes them; everything else is global."""

from __future__ import annotations

import re

from hosttune.agent.errors import HostReadError, KnobError
from hosttune.agent.host import Host

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+(?:[./][A-Za-z0-9_\-:@+]+)*$")


class SysctlTuner:
    family = "sysctl"

    def __init__(self, host: Host) -> None:
        self.host = host

    def _path(self, key: str) -> str:
        if not _KEY_RE.match(key):
            raise KnobError(f"sysctl:{key}", f"not a sysctl key: {key!r}")
        try:
            return Host.sysctl_path(key)
        except ValueError:
            raise KnobError(f"sysctl:{key}", f"not a sysctl key: {key!r}") from None

    def available(self, key: str) -> bool:
        try:
            path = self._path(key)
        except KnobError:
            return False
        return self.host.exists(path) and not self.host.is_dir(path)

    def read(self, key: str) -> str:
        path = self._path(key)
        if not self.available(key):
            raise KnobError(f"sysctl:{key}", f"this kernel has no {path}")
        try:
            return " ".join(self.host.read_text(path).split())
        except HostReadError as exc:
            # kernel.sched_* and a few others answer EPERM to reads on recent kernels.
            raise KnobError(f"sysctl:{key}", f"cannot read {path}: {exc.message}") from exc

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

    def apply(self, key: str, value: str) -> None:
        self.host.write_text(self._path(key), value)

    def verify(self, key: str, value: str) -> bool:
        return self.equal(self.read(key), value)

    def equal(self, a: str, b: str) -> bool:
        fa, fb = a.split(), b.split()
        if len(fa) == len(fb) and all(_is_int(x) for x in fa + fb):
            return [int(x) for x in fa] == [int(y) for y in fb]
        return fa == fb

    def advise(self, key: str, value: str) -> list[str]:
        return []


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
