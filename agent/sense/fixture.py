"""Copy what hosttune reads of a live host into a tree that `Host(root=...)`
reads back: for bug reports ("attach `hosttune capture -o mybox`") and for
test fixtures.

Only kernel interfaces and tuning configuration are copied: no process
environments, no command lines but those of the peer tuning daemons (tuned,
irqbalance, numad: their comm and cmdline say who owns what), nothing under
/etc but sysctl files and tuned's and irqbalance's configuration. sysfs
symlinks are kept as relative links so the tree resolves inside itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from hosttune.agent.sense.errors import HostReadError
from hosttune.agent.sense.host import Host

PROC_FILES = (
    "/proc/stat", "/proc/meminfo", "/proc/vmstat", "/proc/loadavg", "/proc/interrupts",
    "/proc/diskstats", "/proc/net/dev", "/proc/cmdline", "/proc/cpuinfo", "/proc/version",
    "/proc/pressure/cpu", "/proc/pressure/memory", "/proc/pressure/io", "/proc/pressure/irq",
)
SYSCTL_DIRS = ("/proc/sys/vm",)
SYSCTL_FILES = (
    "/proc/sys/kernel/numa_balancing", "/proc/sys/kernel/sched_autogroup_enabled",
    "/proc/sys/net/core/rmem_max", "/proc/sys/net/core/wmem_max",
    "/proc/sys/net/core/netdev_max_backlog", "/proc/sys/net/ipv4/tcp_rmem",
    "/proc/sys/net/ipv4/tcp_wmem",
)
CONFIG_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/lib/sysctl.d", "/usr/local/lib/sysctl.d")
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
BLOCK_ATTRS = ("size", "queue/read_ahead_kb", "queue/scheduler", "queue/rotational",
               "queue/nr_requests")
# Skip huge or binary attribute files (config space, ROMs, resource maps).
_MAX_FILE = 256 * 1024
_CPU_RE = re.compile(r"^cpu\d+$")


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

    def mkdir(self, path: str) -> None:
        self._dest(path).mkdir(parents=True, exist_ok=True)
        (self._dest(path) / ".keep").touch()

    # -- sections ----------------------------------------------------------

    def proc(self) -> None:
        for path in PROC_FILES:
            self.copy(path)
        for d in SYSCTL_DIRS:
            self.copy_dir_files(d)
        for path in SYSCTL_FILES:
            self.copy(path)
        for irq in self.host.listdir_optional("/proc/irq"):
            if irq.isdigit():
                self.copy_dir_files(f"/proc/irq/{irq}",
                                    ("smp_affinity_list", "effective_affinity_list"))

    def config(self) -> None:
        self.copy("/etc/sysctl.conf")
        for d in CONFIG_DIRS:
            for name in self.host.listdir_optional(d):
                if name.endswith(".conf"):
                    self.copy(f"{d}/{name}")

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
            self.copy_dir_files(f"{base}/{name}/cpufreq",
                                ("scaling_governor", "scaling_available_governors",
                                 "energy_performance_preference",
                                 "energy_performance_available_preferences"))
        nbase = "/sys/devices/system/node"
        self.copy_dir_files(nbase, ("online", "possible", "has_cpu", "has_memory"))
        for name in self.host.listdir_optional(nbase):
            if not name.startswith("node") or not name[4:].isdigit():
                continue
            self.copy_dir_files(f"{nbase}/{name}",
                                ("cpulist", "cpumap", "distance", "meminfo", "numastat", "vmstat"))
            for pool in self.host.listdir_optional(f"{nbase}/{name}/hugepages"):
                self.copy_dir_files(f"{nbase}/{name}/hugepages/{pool}")

    def mm(self) -> None:
        thp = "/sys/kernel/mm/transparent_hugepage"
        self.copy_dir_files(thp)
        self.copy_dir_files(f"{thp}/khugepaged")
        for pool in self.host.listdir_optional("/sys/kernel/mm/hugepages"):
            self.copy_dir_files(f"/sys/kernel/mm/hugepages/{pool}")

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


def capture(host: Host, out: Path) -> CaptureReport:
    cap = Capturer(host, out)
    cap.proc()
    cap.config()
    cap.peers()
    cap.cpus_and_nodes()
    cap.mm()
    cap.pci()
    cap.net()
    cap.block()
    return cap.report
