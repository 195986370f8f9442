"""sysctl: any key under /proc/sys. net.* keys belong to the network namespace
of the process that writes them; everything else is global.

Owned by the administrator where a sysctl.d file or /etc/sysctl.conf sets the
key, and by tuned where its [sysctl] unit (or [vm] dirty settings) does."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hosttune.agent.sense import knobfiles
from hosttune.agent.sense.errors import KnobError
from hosttune.agent.sense.ownership import (
    SYSCTL_CONF,
    SYSCTL_DIRS,
    Owner,
    normalise_sysctl_key,
    sysctl_settings,
)
from hosttune.tuners.base import FileTuner

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+(?:[./][A-Za-z0-9_\-:@+]+)*$")
# tuned's [vm] plugin options that are plain vm sysctls
_TUNED_VM = ("dirty_bytes", "dirty_ratio", "dirty_background_bytes", "dirty_background_ratio")


class SysctlTuner(FileTuner):
    family = "sysctl"
    allowlist: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        # Memory reclaim and writeback.
        "sysctl:vm.swappiness": {"min": 0, "max": 100},
        "sysctl:vm.dirty_ratio": {"min": 5, "max": 80},
        "sysctl:vm.dirty_background_ratio": {"min": 1, "max": 50},
        "sysctl:vm.dirty_expire_centisecs": {"min": 500, "max": 30000},
        "sysctl:vm.dirty_writeback_centisecs": {"min": 100, "max": 6000},
        "sysctl:vm.min_free_kbytes": {"min": 8192, "max": 4194304},
        "sysctl:vm.zone_reclaim_mode": {"min": 0, "max": 1},
        "sysctl:vm.max_map_count": {"min": 65530, "max": 16777216},
        "sysctl:vm.vfs_cache_pressure": {"min": 10, "max": 200},
        "sysctl:vm.overcommit_memory": {"min": 0, "max": 1},
        "sysctl:vm.watermark_scale_factor": {"min": 10, "max": 1000},
        # Scheduler and NUMA.
        "sysctl:kernel.numa_balancing": {"min": 0, "max": 1},
        "sysctl:kernel.sched_autogroup_enabled": {"min": 0, "max": 1},
        # Network buffers (per network namespace).
        "sysctl:net.core.rmem_max": {"min": 212992, "max": 536870912},
        "sysctl:net.core.wmem_max": {"min": 212992, "max": 536870912},
        "sysctl:net.core.rmem_default": {"min": 212992, "max": 67108864},
        "sysctl:net.core.wmem_default": {"min": 212992, "max": 67108864},
        "sysctl:net.ipv4.tcp_rmem": {"min": 4096, "max": 536870912},
        "sysctl:net.ipv4.tcp_wmem": {"min": 4096, "max": 536870912},
        "sysctl:net.core.netdev_max_backlog": {"min": 1000, "max": 250000},
        "sysctl:net.core.somaxconn": {"min": 128, "max": 65535},
        "sysctl:net.ipv4.tcp_mtu_probing": {"min": 0, "max": 2},
    }
    capture = (
        knobfiles.sysctl("vm") + "/*",
        *(knobfiles.sysctl(k) for k in (
            "kernel.numa_balancing", "kernel.sched_autogroup_enabled", "net.core.rmem_max",
            "net.core.wmem_max", "net.core.netdev_max_backlog", "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_wmem")),
        # the administrator's settings (owned_by_files)
        SYSCTL_CONF,
        *(f"{d}/*.conf" for d in SYSCTL_DIRS),
    )

    def _path(self, key: str) -> str:
        if not _KEY_RE.match(key):
            raise KnobError(f"sysctl:{key}", f"not a sysctl key: {key!r}")
        try:
            return knobfiles.sysctl(key)
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

    def owned_by_files(self) -> dict[str, Owner]:
        return {f"sysctl:{key}": owner for key, owner in sysctl_settings(self.host).items()}

    @classmethod
    def tuned_knobs(cls, plugin: str, option: str, devices: Sequence[str]) -> list[str]:
        if plugin == "sysctl":
            return [f"sysctl:{normalise_sysctl_key(option)}"]
        if plugin == "vm" and option in _TUNED_VM:
            return [f"sysctl:vm.{option}"]
        return []


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
