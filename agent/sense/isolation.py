"""CPUs the administrator set apart at boot, and the default IRQ CPUs.

Boot parameters (Documentation/admin-guide/kernel-parameters.txt):
- `isolcpus=[flag,...,]LIST`: flags `domain` (out of the scheduler's load
  balancing; the default when no flag is given), `nohz` (no scheduler tick)
  and `managed_irq` (no managed interrupts). An unknown flag makes the kernel
  ignore the whole parameter, and so does a bad list.
- `nohz_full=LIST`: no tick while one task runs there.
- `rcu_nocbs=LIST`: RCU callbacks offloaded from those CPUs. Given for every
  CPU (`rcu_nocbs=all`, a power setting on some distributions) it sets no
  CPU apart and reserves nothing.
- `irqaffinity=LIST`: the default affinity of interrupts, chosen by the admin.

Lists take the kernel's boot syntax (`N`, `all`, `0-15:2/4`). Every CPU these
reserve is kept free of interrupts and of AI processes hosttune places: the
admin reserved them for latency-critical work.

The kernel's own view wins where it has one: /sys/devices/system/cpu/isolated
(the domain-isolated CPUs) and /sys/devices/system/cpu/nohz_full (which reads
"(null)" on some kernels when nohz_full is off). A parameter the kernel did
not act on (it ignored a bad list, or kept the boot CPU as housekeeping) is
named in a note and does not reserve the CPUs the kernel left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hosttune.agent.sense.bootparams import kernel_params
from hosttune.agent.sense.cpulist import format_cpulist, parse_cpulist, parse_kernel_cpulist
from hosttune.agent.sense.errors import ParseError
from hosttune.agent.sense.host import Host

SYSFS_ISOLATED = "/sys/devices/system/cpu/isolated"
SYSFS_NOHZ_FULL = "/sys/devices/system/cpu/nohz_full"
ISOLCPUS_FLAGS = {"domain": "domain", "nohz": "nohz", "managed_irq": "managed_irq"}
# Which kernel file holds the kernel's view of each kind of isolation.
KERNEL_VIEWS = {"domain": SYSFS_ISOLATED, "nohz": SYSFS_NOHZ_FULL}
_FLAG = re.compile(r"^[A-Za-z_]+$")


def cpus_phrase(cpus: Iterable[int]) -> str:
    """(8, 9) -> "CPUs 8-9 are"; (8,) -> "CPU 8 is"."""
    ordered = sorted(set(cpus))
    if len(ordered) == 1:
        return f"CPU {ordered[0]} is"
    return f"CPUs {format_cpulist(ordered)} are"


@dataclass(frozen=True)
class Reservation:
    """CPUs one boot parameter (or the kernel's own list) sets apart."""

    cpus: tuple[int, ...]
    # the parameter as written ("isolcpus=managed_irq,8-15"), a sysfs path,
    # or for a peer daemon the whole phrase ("by tuned profile ... (...)")
    param: str
    kind: str  # "cmdline", "kernel" or "peer"

    def by(self) -> str:
        if self.kind == "cmdline":
            return f"by {self.param} on the kernel command line"
        if self.kind == "peer":
            return self.param
        return f"according to the kernel ({self.param})"

    def to_dict(self) -> dict[str, object]:
        return {"cpus": format_cpulist(self.cpus), "param": self.param, "kind": self.kind,
                "text": f"{cpus_phrase(self.cpus)} isolated {self.by()}"}


@dataclass(frozen=True)
class CpuIsolation:
    reserved: tuple[Reservation, ...] = ()
    irq_default: Reservation | None = None  # irqaffinity=
    notes: tuple[str, ...] = ()

    @property
    def cpus(self) -> frozenset[int]:
        return frozenset(c for r in self.reserved for c in r.cpus)

    def by_cpu(self) -> dict[int, str]:
        """CPU -> what reserves it ("by isolcpus=8-15 on the kernel command line");
        the first parameter that names a CPU is the one given."""
        out: dict[int, str] = {}
        for r in self.reserved:
            for cpu in r.cpus:
                out.setdefault(cpu, r.by())
        return out

    def explain(self, cpus: Iterable[int] | None = None) -> str:
        """"CPUs 8-15 are isolated by isolcpus=managed_irq,8-15 on the kernel
        command line" for the reserved CPUs among `cpus` (all of them when
        None); "" when none is reserved."""
        return explain_reserved(self.by_cpu(), cpus)


def explain_reserved(by_cpu: dict[int, str], cpus: Iterable[int] | None = None) -> str:
    """The text of `CpuIsolation.explain` from its `by_cpu()` mapping (what
    the recommender keeps in its plain HostState)."""
    wanted = set(by_cpu) if cpus is None else set(cpus) & set(by_cpu)
    groups: dict[str, list[int]] = {}
    for cpu in sorted(wanted):
        groups.setdefault(by_cpu[cpu], []).append(cpu)
    return "; ".join(f"{cpus_phrase(group)} isolated {why}" for why, group in groups.items())


def _last_cpu(host: Host) -> int | None:
    for path in ("/sys/devices/system/cpu/possible", "/sys/devices/system/cpu/online"):
        text = host.read_optional(path)
        if text:
            try:
                cpus = parse_cpulist(text, source=path)
            except ParseError:
                continue
            if cpus:
                return cpus[-1]
    return None


def _online(host: Host) -> frozenset[int]:
    text = host.read_optional("/sys/devices/system/cpu/online")
    try:
        return frozenset(parse_cpulist(text or ""))
    except ParseError:
        return frozenset()


def _kernel_view(host: Host, path: str, notes: list[str]) -> frozenset[int] | None:
    text = host.read_optional(path)
    if text is None:
        return None
    if text == "(null)":
        return frozenset()
    try:
        return frozenset(parse_cpulist(text, source=host.describe(path)))
    except ParseError as exc:
        notes.append(f"{exc}: using the kernel command line instead")
        return None


def _isolcpus_kinds(value: str) -> tuple[tuple[str, ...], str] | None:
    """("domain", "managed_irq"), "8-15" from "domain,managed_irq,8-15"; None
    for an unknown flag (the kernel then ignores the parameter)."""
    parts = value.split(",")
    flags: list[str] = []
    while parts and _FLAG.match(parts[0]) and parts[0] not in ("N", "all"):
        flags.append(parts.pop(0))
    if any(f not in ISOLCPUS_FLAGS for f in flags):
        return None
    kinds = tuple(dict.fromkeys(ISOLCPUS_FLAGS[f] for f in flags)) or ("domain",)
    return kinds, ",".join(parts)


def cpu_isolation(host: Host) -> CpuIsolation:
    """What the boot parameters and the kernel say about reserved CPUs.
    Never raises: a parameter the kernel would ignore is named in a note."""
    notes: list[str] = []
    last = _last_cpu(host)
    online = _online(host)
    # (parameter, its CPUs, the kinds of isolation it asks for)
    asked: list[tuple[str, frozenset[int], tuple[str, ...]]] = []
    irq_default: Reservation | None = None
    for param in kernel_params(host):
        name, sep, value = param.partition("=")
        if name not in ("isolcpus", "nohz_full", "rcu_nocbs", "irqaffinity") or not sep:
            continue
        kinds: tuple[str, ...] = (name,)
        text = value
        if name == "isolcpus":
            split = _isolcpus_kinds(value)
            if split is None:
                notes.append(f"{param} on the kernel command line has an unknown flag "
                             "(domain, nohz, managed_irq): the kernel ignores it")
                continue
            kinds, text = split
        elif name == "nohz_full":
            kinds = ("nohz",)
        try:
            cpus = frozenset(parse_kernel_cpulist(text, last_cpu=last, source=param))
        except ParseError as exc:
            notes.append(f"{param} on the kernel command line: {exc.message}; "
                         "the kernel ignores it")
            continue
        if name == "irqaffinity":
            irq_default = Reservation(tuple(sorted(cpus)), param, "cmdline")
            continue
        if name == "rcu_nocbs" and online and cpus >= online:
            notes.append(f"{param} on the kernel command line offloads RCU callbacks from "
                         "every CPU: it sets no CPU apart")
            continue
        asked.append((param, cpus, kinds))

    final: dict[str, frozenset[int]] = {}
    for kind in ("domain", "nohz", "managed_irq", "rcu_nocbs"):
        final[kind] = frozenset().union(*(c for _, c, k in asked if kind in k))
    for kind, path in KERNEL_VIEWS.items():
        seen = _kernel_view(host, path, notes)
        if seen is None:
            continue
        missing = final[kind] - seen
        if missing:
            names = ", ".join(p for p, c, k in asked if kind in k and c & missing)
            notes.append(f"{names} on the kernel command line names "
                         f"{cpus_phrase(missing).rsplit(' ', 1)[0]} that the kernel does not "
                         f"list in {path}: going by the kernel")
        final[kind] = seen

    reserved: list[Reservation] = []
    covered: dict[str, set[int]] = {kind: set() for kind in final}
    for param, cpus, kinds in asked:
        mine = cpus & frozenset().union(*(final[k] for k in kinds))
        for k in kinds:
            covered[k] |= cpus
        if mine:
            reserved.append(Reservation(tuple(sorted(mine)), param, "cmdline"))
    for kind, path in KERNEL_VIEWS.items():
        extra = final[kind] - covered[kind]
        if extra:
            reserved.append(Reservation(tuple(sorted(extra)), path, "kernel"))
    return CpuIsolation(tuple(reserved), irq_default, tuple(notes))
