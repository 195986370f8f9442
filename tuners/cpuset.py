"""cpuset: the CPUs and memory nodes of a cgroup, cgroup v1 or v2.

Key: the cgroup's path below the hierarchy root (`cpuset:/hosttune/train`).
Value: `cpus=LIST mems=LIST` (either may be left out to keep it; on cgroup v2
an empty list means "inherit from the parent"). v1 files are
/sys/fs/cgroup/cpuset/PATH/cpuset.{cpus,mems}; v2 files are
/sys/fs/cgroup/PATH/cpuset.{cpus,mems} (the cpuset controller must be enabled
in the parent's cgroup.subtree_control)."""

from __future__ import annotations

import re

from hosttune.agent.sense import knobfiles
from hosttune.agent.sense.cpulist import format_cpulist, parse_cpulist
from hosttune.agent.sense.errors import HostReadError, KnobError, ParseError
from hosttune.tuners.base import Tuner

_PATH_RE = re.compile(r"^(/[A-Za-z0-9_.@:\-]+)+$|^/$")


class CpusetTuner(Tuner):
    family = "cpuset"

    def hierarchy(self) -> tuple[str, int] | None:
        """(root directory, cgroup version) of the cpuset controller."""
        return knobfiles.cpuset_hierarchy(self.host)

    def _dir(self, key: str) -> str:
        if not _PATH_RE.match(key) or "/../" in f"{key}/" or "/./" in f"{key}/":
            raise KnobError(f"cpuset:{key}",
                            "cpuset keys are cgroup paths (cpuset:/hosttune/train)")
        found = self.hierarchy()
        if found is None:
            raise KnobError(f"cpuset:{key}", "this host has no cpuset cgroup controller")
        return found[0] + ("" if key == "/" else key)

    def available(self, key: str) -> bool:
        try:
            return self.host.exists(self._dir(key) + "/cpuset.cpus")
        except KnobError:
            return False

    def _fields(self, key: str, value: str) -> dict[str, tuple[int, ...]]:
        knob = f"cpuset:{key}"
        fields: dict[str, tuple[int, ...]] = {}
        for field in value.split():
            name, sep, text = field.partition("=")
            if not sep or name not in ("cpus", "mems") or name in fields:
                raise KnobError(knob, f"bad cpuset value {value!r} (cpus=LIST mems=LIST)")
            try:
                fields[name] = parse_cpulist(text, source=knob)
            except ParseError as exc:
                raise KnobError(knob, exc.message) from None
        if not fields:
            raise KnobError(knob, "empty cpuset value (cpus=LIST mems=LIST)")
        return fields

    def read(self, key: str) -> str:
        self._dir(key)
        if not self.available(key):
            raise KnobError(f"cpuset:{key}", f"no cgroup {key} with a cpuset")
        base = self._dir(key)
        try:
            cpus = parse_cpulist(self.host.read_str(base + "/cpuset.cpus"))
            mems = parse_cpulist(self.host.read_str(base + "/cpuset.mems"))
        except (HostReadError, ParseError) as exc:
            raise KnobError(f"cpuset:{key}", str(exc)) from exc
        return f"cpus={format_cpulist(cpus)} mems={format_cpulist(mems)}"

    def validate(self, key: str, value: str) -> str:
        self.read(key)
        fields = self._fields(key, value)
        return " ".join(f"{n}={format_cpulist(fields[n])}" for n in ("cpus", "mems") if n in fields)

    def apply(self, key: str, value: str) -> None:
        base = self._dir(key)
        for name, cpus in self._fields(key, value).items():
            self.host.write_text(f"{base}/cpuset.{name}", format_cpulist(cpus))

    def equal(self, a: str, b: str) -> bool:
        try:
            fa, fb = self._fields("/", a), self._fields("/", b)
        except KnobError:
            return a.split() == b.split()
        return all(set(fa[n]) == set(fb[n]) for n in fa.keys() & fb.keys())
