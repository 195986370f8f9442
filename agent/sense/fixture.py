"""Copy what hosttune reads of a live host into a tree that `Host(root=...)`
reads back: for bug reports ("attach `hosttune capture -o mybox`") and for
test fixtures.

Only kernel interfaces and tuning configuration are copied: no process
environments, no command lines but those of the peer tuning daemons (tuned,
irqbalance, numad: their comm and cmdline say who owns what), nothing under
/etc but sysctl files and tuned's and irqbalance's configuration. sysfs
symlinks are kept as relative links so the tree resolves inside itself.

This module copies what the sense layer reads (counters, topology, devices,
peer daemons); the files of each knob family are named by the family
(hosttune.tuners.registry.capture_patterns) and handed in as `knob_files`.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hosttune.agent.sense.errors import HostReadError
from hosttune.agent.sense.host import Host

PROC_FILES = (
    "/proc/stat", "/proc/meminfo", "/proc/vmstat", "/proc/loadavg", "/proc/interrupts",
    "/proc/diskstats", "/proc/net/dev", "/proc/cmdline", "/proc/cpuinfo", "/proc/version",
    "/proc/pressure/cpu", "/proc/pressure/memory", "/proc/pressure/io", "/proc/pressure/irq",
)
PEER_FILES = ("/etc/tuned/active_profile", "/etc/tuned/profile_mode",
              "/etc/tuned/post_loaded_profile", "/etc/tuned/tuned-main.conf",
              "/etc/default/irqbalance", "/etc/sysconfig/irqbalance")
TUNED_PROFILE_DIRS = ("/usr/lib/tuned", "/etc/tuned")
PEER_DAEMONS = ("tuned", "irqbalance", "numad")
PCI_ATTRS = (
    "vendor", "device", "class", "subsystem_vendor", "subsystem_device", "numa_node",
    "local_cpulist", "local_cpus", "current_link_speed", "current_link_width",
    "max_link_speed", "max_link_width", "irq", "enable",
)
NET_ATTRS = ("operstate", "speed", "mtu", "ifindex", "address", "duplex", "carrier")
BLOCK_ATTRS = ("size", "queue/rotational")
# Skip huge or binary attribute files (config space, ROMs, resource maps).
_MAX_FILE = 256 * 1024
_CPU_RE = re.compile(r"^cpu\d+$")
_GLOB_CHARS = frozenset("*?[")


@dataclass
class CaptureReport:
    files: int = 0
    links: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


class Capturer:
    def __init__(self, host: Host, out: Path) -> None:
        self.host = host
        self.out = out
        self.report = CaptureReport()

    def _dest(self, path: str) -> Path:
        return self.out / path.lstrip("/")

    def copy(self, path: str) -> bool:
        try:
            data = self.host.read_bytes(path)
        except HostReadError as exc:
            self.report.skipped[path] = exc.message
            return False
        if len(data) > _MAX_FILE:
            self.report.skipped[path] = f"larger than {_MAX_FILE} bytes"
            return False
        dest = self._dest(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        self.report.files += 1
        return True

    def copy_dir_files(self, path: str, names: tuple[str, ...] | None = None) -> None:
        for name in names or tuple(self.host.listdir_optional(path)):
            if self.host.is_dir(f"{path}/{name}"):
                continue
            self.copy(f"{path}/{name}")

    def link(self, path: str, target_host_path: str) -> None:
        dest = self._dest(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = self._dest(target_host_path)
        if dest.is_symlink() or dest.exists():
            return
        dest.symlink_to(os.path.relpath(target, dest.parent))
        self.report.links += 1

    def copy_matching(self, pattern: str) -> None:
        """Copy the files `pattern` names, a host path whose components may be
        fnmatch patterns ("/proc/irq/[0-9]*/smp_affinity_list"). A last
        component without wildcards is copied (or reported skipped) as named;
        one with wildcards copies the plain files that match."""
        parts = pattern.strip("/").split("/")
        dirs = [""]
        for part in parts[:-1]:
            if _GLOB_CHARS.isdisjoint(part):
                dirs = [f"{d}/{part}" for d in dirs]
            else:
                dirs = [f"{d}/{name}" for d in dirs for name in self.host.listdir_optional(d)
                        if fnmatch.fnmatchcase(name, part)]
        last = parts[-1]
        for directory in dirs:
            if _GLOB_CHARS.isdisjoint(last):
                self.copy(f"{directory}/{last}")
                continue
            names = tuple(n for n in self.host.listdir_optional(directory)
                          if fnmatch.fnmatchcase(n, last))
            if names:
                self.copy_dir_files(directory, names)

    def mkdir(self, path: str) -> None:
        self._dest(path).mkdir(parents=True, exist_ok=True)
        (self._dest(path) / ".keep").touch()

    # -- sections ----------------------------------------------------------

    def proc(self) -> None:
        for path in PROC_FILES:
            self.copy(path)

    def knobs(self, patterns: Sequence[str]) -> None:
        for pattern in patterns:
            self.copy_matching(pattern)

    def peers(self) -> None:
        for path in PEER_FILES:
            if self.host.exists(path):
                self.copy(path)
        for directory in TUNED_PROFILE_DIRS:
            for name in self.host.listdir_optional(directory):
                if self.host.exists(f"{directory}/{name}/tuned.conf"):
                    self.copy(f"{directory}/{name}/tuned.conf")
        for pid, comm in self.host.proc_comms().items():
            if comm in PEER_DAEMONS:
                self.copy(f"/proc/{pid}/comm")
                self.copy(f"/proc/{pid}/cmdline")
        # what tuned matches uname_regex against (the host name stays out)
        for name in ("ostype", "osrelease", "version", "arch"):
            if self.host.exists(f"/proc/sys/kernel/{name}"):
                self.copy(f"/proc/sys/kernel/{name}")

    def cpus_and_nodes(self) -> None:
        base = "/sys/devices/system/cpu"
        self.copy_dir_files(base, ("online", "possible", "present", "offline", "isolated",
                                   "nohz_full"))
        for name in self.host.listdir_optional(base):
            if not _CPU_RE.match(name):
                continue
            self.copy(f"{base}/{name}/online")
            self.copy_dir_files(f"{base}/{name}/topology",
                                ("core_id", "physical_package_id", "die_id",
                                 "thread_siblings_list", "core_cpus_list"))
        nbase = "/sys/devices/system/node"
        self.copy_dir_files(nbase, ("online", "possible", "has_cpu", "has_memory"))
        for name in self.host.listdir_optional(nbase):
            if not name.startswith("node") or not name[4:].isdigit():
                continue
            self.copy_dir_files(f"{nbase}/{name}",
                                ("cpulist", "cpumap", "distance", "meminfo", "numastat", "vmstat"))

    def pci(self) -> None:
        for address in self.host.listdir_optional("/sys/bus/pci/devices"):
            link = f"/sys/bus/pci/devices/{address}"
            real = self.host.resolve(link)
            if real is None:
                continue
            # the bridges above keep their identity, so switch ancestry reads back
            parts = real.split("/")
            for i in range(4, len(parts) + 1):
                prefix = "/".join(parts[:i])
                if ":" in parts[i - 1] and "." in parts[i - 1]:
                    self.copy_dir_files(prefix, ("vendor", "device", "class", "numa_node"))
            self.copy_dir_files(real, PCI_ATTRS)
            for irq in self.host.listdir_optional(f"{real}/msi_irqs"):
                self.copy(f"{real}/msi_irqs/{irq}")
            driver = self.host.readlink_name(f"{real}/driver")
            if driver:
                self.mkdir(f"/sys/bus/pci/drivers/{driver}")
                self.link(f"{real}/driver", f"/sys/bus/pci/drivers/{driver}")
            for ctrl in self.host.listdir_optional(f"{real}/nvme"):
                for ns in self.host.listdir_optional(f"{real}/nvme/{ctrl}"):
                    if ns.startswith(f"{ctrl}n"):
                        # a file, not an empty dir: trees are kept in git
                        self.copy(f"{real}/nvme/{ctrl}/{ns}/size")
            self.link(link, real)

    def net(self) -> None:
        for name in self.host.listdir_optional("/sys/class/net"):
            link = f"/sys/class/net/{name}"
            real = self.host.resolve(link)
            if real is None:
                continue
            self.copy_dir_files(real, NET_ATTRS)
            for q in self.host.listdir_optional(f"{real}/queues"):
                # a file in each queue dir keeps it alive in a git-kept tree
                attr = "rps_cpus" if q.startswith("rx-") else "xps_cpus"
                if not self.copy(f"{real}/queues/{q}/{attr}"):
                    self.copy(f"{real}/queues/{q}/tx_maxrate")
            device = self.host.resolve(f"{link}/device")
            if device is not None:
                self.link(f"{real}/device", device)
                driver = self.host.readlink_name(f"{device}/driver")
                if driver:
                    self.mkdir(f"/sys/bus/pci/drivers/{driver}")
                    self.link(f"{device}/driver", f"/sys/bus/pci/drivers/{driver}")
            self.link(link, real)

    def block(self) -> None:
        for name in self.host.listdir_optional("/sys/block"):
            for attr in BLOCK_ATTRS:
                self.copy(f"/sys/block/{name}/{attr}")


def capture(host: Host, out: Path, *, knob_files: Sequence[str]) -> CaptureReport:
    """Copy `host` into `out`; `knob_files`: the knob families' path patterns
    (hosttune.tuners.registry.capture_patterns)."""
    cap = Capturer(host, out)
    cap.proc()
    cap.knobs(knob_files)
    cap.peers()
    cap.cpus_and_nodes()
    cap.pci()
    cap.net()
    cap.block()
    return cap.report
