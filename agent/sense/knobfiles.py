"""The kernel files behind every knob family: the one place that names them.

A tuner family (hosttune.tuners) asks here for the file of a key and, where a
peer daemon names the file instead of the knob (tuned's [sysfs] plugin), for
the key of a file. Nothing here decides whether a key is valid: the family
checks its keys before it builds a path.
"""

from __future__ import annotations

import re

from hosttune.agent.sense.host import Host

THP_DIR = "/sys/kernel/mm/transparent_hugepage"
HUGEPAGES_DIR = "/sys/kernel/mm/hugepages"
NODE_DIR = "/sys/devices/system/node"
CPU_DIR = "/sys/devices/system/cpu"
IRQ_DIR = "/proc/irq"
BLOCK_DIR = "/sys/block"
CGROUP_DIR = "/sys/fs/cgroup"
CPUSET_V1_DIR = "/sys/fs/cgroup/cpuset"
PROC_DIR = "/proc"

_BLOCK_QUEUE = re.compile(r"^/sys/block/([^/]+)/queue/([a-z_]+)$")
_CPU_ENTRY = re.compile(r"^cpu(\d+)$")


def sysctl(key: str) -> str:
    """`vm.swappiness` -> /proc/sys/vm/swappiness (ValueError for a malformed key)."""
    return Host.sysctl_path(key)


def thp(key: str) -> str:
    """`khugepaged.defrag` -> .../transparent_hugepage/khugepaged/defrag."""
    return f"{THP_DIR}/{key.replace('.', '/')}"


def thp_key(path: str) -> str | None:
    """The inverse of `thp`, for a path below the THP directory."""
    prefix = THP_DIR + "/"
    return path[len(prefix):].replace("/", ".") if path.startswith(prefix) else None


def hugepages_dir(size_kb: int | str, node: int | str | None = None) -> str:
    """The directory of the pool of `size_kb` pages: global, or on one NUMA node."""
    base = HUGEPAGES_DIR if node is None else f"{NODE_DIR}/node{node}/hugepages"
    return f"{base}/hugepages-{size_kb}kB"


def hugepages(size_kb: int, node: int | None = None, name: str = "nr_hugepages") -> str:
    """A file of the pool of `size_kb` pages (nr_hugepages, free_hugepages, ...)."""
    return f"{hugepages_dir(size_kb, node)}/{name}"


def irq(number: int | str, name: str = "smp_affinity_list") -> str:
    return f"{IRQ_DIR}/{number}/{name}"


def block_queue(device: str, setting: str) -> str:
    return f"{BLOCK_DIR}/{device}/queue/{setting}"


def block_key(path: str) -> tuple[str, str] | None:
    """(device, setting) of a block queue file, the inverse of `block_queue`."""
    match = _BLOCK_QUEUE.match(path)
    return (match.group(1), match.group(2)) if match else None


def cpufreq(cpu: int | str, name: str) -> str:
    return f"{CPU_DIR}/cpu{cpu}/cpufreq/{name}"


def cpufreq_cpus(host: Host, name: str) -> list[int]:
    """The CPUs that have cpufreq file `name` (none on most VMs)."""
    found = []
    for entry in host.listdir_optional(CPU_DIR):
        match = _CPU_ENTRY.match(entry)
        if match and host.exists(cpufreq(int(match.group(1)), name)):
            found.append(int(match.group(1)))
    return sorted(found)


def cpuset_hierarchy(host: Host) -> tuple[str, int] | None:
    """(root directory, cgroup version) of the cpuset controller, if mounted."""
    if host.exists(f"{CPUSET_V1_DIR}/cpuset.cpus"):
        return CPUSET_V1_DIR, 1
    controllers = host.read_optional(f"{CGROUP_DIR}/cgroup.controllers")
    if controllers is not None and "cpuset" in controllers.split():
        return CGROUP_DIR, 2
    return None


def process(pid: int, name: str) -> str:
    """/proc/PID/NAME (status, stat, numa_maps, ...)."""
    return f"{PROC_DIR}/{pid}/{name}"


def process_tasks(pid: int) -> str:
    return f"{PROC_DIR}/{pid}/task"


def thread(pid: int, tid: int | str, name: str) -> str:
    return f"{PROC_DIR}/{pid}/task/{tid}/{name}"
