"""Which knobs the administrator owns: set in sysctl configuration files or on
the kernel command line. hosttune reports these and does not fight them.

sysctl files follow sysctl.d(5) as systemd-sysctl applies them: `*.conf` in
/etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d (and
/lib/sysctl.d); a file in an earlier directory shadows a file of the same name
in a later one (a link to /dev/null masks it); all files are read in
lexicographic order of their names, and a later setting of a key wins.
/etc/sysctl.conf is read last, as `sysctl --system` does (Debian also links
it in as /etc/sysctl.d/99-sysctl.conf; the same file is not counted twice).
Keys may use '/' as the separator (then '.' is part of a name) and globs
(`net.ipv4.conf.*.rp_filter`); a leading '-' before an assignment only
silences errors. As systemd-sysctl applies them, a glob never sets a key that
has an explicit line of its own, whatever the order: either an assignment,
or an exclusion (`-net.ipv4.conf.eth0.rp_filter`, a '-' and no '='), which
keeps the key out of every glob and sets nothing. A later line for the same
key replaces an earlier one (an exclusion replaces an assignment and the
other way round).

The command line: `hugepages=`, `hugepagesz=`, `default_hugepagesz=` own the
hugepage pools of the sizes they name; `transparent_hugepage=` owns
thp:enabled and `transparent_hugepage_shmem=` thp:shmem_enabled;
`irqaffinity=` (the admin chose the default IRQ CPUs) owns the affinity of
every IRQ. CPUs set apart by `isolcpus=`/`nohz_full=` are not knobs: the
tuners keep off them (agent.isolation).

Peer daemons (tuners.peers: tuned, irqbalance, numad) own what they set
while they run. With tuned's `reapply_sysctl` (the default) the sysctl.d
files are applied after tuned's [sysctl] settings, so a key both set is
reported as the file's.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, replace

from hosttune.agent.sense.bootparams import kernel_params
from hosttune.agent.sense.errors import HostReadError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.isolation import CpuIsolation, Reservation, cpu_isolation

SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
               "/lib/sysctl.d")
SYSCTL_CONF = "/etc/sysctl.conf"


@dataclass(frozen=True)
class Owner:
    """Who owns a knob, and where they set it."""

    # "file" (sysctl configuration), "cmdline" (kernel command line), "config"
    # (hosttune's own overrides), "peer" (a tuning daemon: `where` is the whole
    # sentence), or "excluded": an exact entry that keeps the knob out of the
    # patterns of kind `value` (a sysctl.d exclusion line, irqbalance --banirq).
    kind: str
    where: str  # "/etc/sysctl.d/90-ai.conf:3" or "hugepages=16"
    value: str | None = None

    def __str__(self) -> str:
        if self.kind == "cmdline":
            return f"kernel command line ({self.where})"
        if self.kind == "peer":
            return self.where
        return f"{self.where} ({self.value})" if self.value is not None else self.where

    def why(self) -> str:
        """The reason a change of this knob is refused or only advised."""
        if self.kind == "peer":
            return f"owned by a peer tuning daemon: {self}"
        return f"owned by the administrator: set in {self}"

    def to_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "where": self.where, "value": self.value, "text": str(self)}


def sysctl_files(host: Host) -> list[str]:
    """The sysctl.d files in the order systemd-sysctl reads them, then sysctl.conf."""
    chosen: dict[str, str] = {}
    for directory in SYSCTL_DIRS:
        for name in host.listdir_optional(directory):
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = f"{directory}/{name}"
    files = []
    seen: set[str] = set()
    for name in sorted(chosen):
        path = chosen[name]
        real = os.path.realpath(host.path(path))
        if real == "/dev/null" or os.path.isdir(real):
            continue  # masked
        seen.add(real)
        files.append(path)
    if host.exists(SYSCTL_CONF) and os.path.realpath(host.path(SYSCTL_CONF)) not in seen:
        files.append(SYSCTL_CONF)
    return files


def normalise_sysctl_key(key: str) -> str:
    """sysctl.d's "net/ipv4/conf/eth0.100/rp_filter" -> our "net.ipv4.conf.eth0/100.rp_filter"
    (in knob names, as in sysctl(8), '/' stands for a '.' inside one name)."""
    slash, dot = key.find("/"), key.find(".")
    if slash != -1 and (dot == -1 or slash < dot):
        return key.translate(str.maketrans("/.", "./"))
    return key


def sysctl_settings(host: Host) -> dict[str, Owner]:
    """sysctl key (or glob) -> the file and line that set it last."""
    settings: dict[str, Owner] = {}
    for path in sysctl_files(host):
        try:
            text = host.read_text(path)
        except HostReadError:
            continue
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep and not key.startswith("-"):
                continue  # systemd-sysctl: "Line is not an assignment, ignoring"
            key = normalise_sysctl_key(key[1:].strip() if key.startswith("-") else key)
            if not key:
                continue
            if sep:
                owner = Owner("file", f"{path}:{number}", f"{key} = {value.strip()}")
            else:
                owner = Owner("excluded", f"{path}:{number}", "file")
            earlier = settings.get(key)
            if earlier is not None and _same_setting(earlier, owner):
                continue  # systemd keeps the first of equal assignments
            settings.pop(key, None)  # re-insert: later wins and keeps file order
            settings[key] = owner
    return settings


def _same_setting(a: Owner, b: Owner) -> bool:
    if a.kind != b.kind:
        return False
    return a.kind == "excluded" or a.value == b.value


def _size_kb(text: str) -> int | None:
    units = {"k": 1, "m": 1024, "g": 1024 * 1024}
    text = text.strip().lower()
    if text.endswith("b"):
        text = text[:-1]
    if text and text[-1] in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1]]
    if text.isdigit():
        return int(text) // 1024
    return None


def cmdline_settings(host: Host) -> dict[str, Owner]:
    """knob (or glob) -> the kernel command line parameter that owns it."""
    owned: dict[str, Owner] = {}
    tokens = kernel_params(host)
    default_kb = 2048
    size_kb: int | None = None
    for token in tokens:
        name, _, value = token.partition("=")
        if name == "default_hugepagesz":
            kb = _size_kb(value)
            if kb:
                default_kb = kb
                owned[f"hugepages:{kb}kB"] = Owner("cmdline", token)
                owned[f"hugepages:node*:{kb}kB"] = Owner("cmdline", token)
        elif name == "hugepagesz":
            size_kb = _size_kb(value)
        elif name == "hugepages":
            kb = size_kb or default_kb
            owned[f"hugepages:{kb}kB"] = Owner("cmdline", token)
            owned[f"hugepages:node*:{kb}kB"] = Owner("cmdline", token)
            size_kb = None
        elif name == "transparent_hugepage":
            owned["thp:enabled"] = Owner("cmdline", token)
        elif name == "transparent_hugepage_shmem":
            owned["thp:shmem_enabled"] = Owner("cmdline", token)
        elif name == "irqaffinity" and value:
            owned["irq:*"] = Owner("cmdline", token)
    return owned


def owners_report(host: Host) -> tuple[dict[str, Owner], list[str]]:
    """`owners(host)` and notes on what could not be read (a malformed tuned
    profile, a peer daemon that runs without a profile, ...)."""
    from hosttune.agent.sense.peers import peer_owners

    peers = peer_owners(host)
    files = {f"sysctl:{key}": owner for key, owner in sysctl_settings(host).items()}
    owned: dict[str, Owner] = {}
    # The one applied last is the one reported for a knob both set.
    order = [peers.owned, files] if peers.tuned_reapplies_sysctl else [files, peers.owned]
    for part in order:
        for knob, owner in part.items():
            if owner.kind == "excluded" and knob in owned and owned[knob].kind != "excluded":
                continue  # an exclusion only keeps its own kind's patterns off
            owned.pop(knob, None)
            owned[knob] = owner
    owned.update(cmdline_settings(host))
    return owned, peers.notes


def cpu_reservations(host: Host) -> CpuIsolation:
    """The CPUs set apart for latency-critical work: by boot parameters and
    the kernel (agent.isolation), then by a running peer daemon (tuned's
    isolated_cores)."""
    from hosttune.agent.sense.peers import peer_owners

    boot = cpu_isolation(host)
    peers = peer_owners(host)
    extra = tuple(Reservation(cpus, why, "peer") for cpus, why in peers.isolated)
    return replace(boot, reserved=boot.reserved + extra,
                   notes=boot.notes + tuple(n for n in peers.notes if "isolated_cores" in n))


def owners(host: Host) -> dict[str, Owner]:
    """Every knob name (or fnmatch pattern of knob names) the administrator
    or a peer daemon owns. Use `owner_of` to look one knob up: it matches the
    patterns too."""
    return owners_report(host)[0]


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def owner_of(knob: str, owned: dict[str, Owner]) -> Owner | None:
    """The owner of `knob` in `owners(host)`. An exact entry wins over every
    pattern (systemd-sysctl never lets a glob set a key named explicitly); an
    exact "excluded" entry keeps the patterns of its kind off the knob. Among
    patterns, the last one that matches (entries keep the order they were
    read in, and the setting read last is the one the kernel holds)."""
    exact = owned.get(knob)
    if exact is not None and exact.kind != "excluded":
        return exact
    shut_out = exact.value if exact is not None else None
    found = None
    for pattern, owner in owned.items():
        if (owner.kind not in ("excluded", shut_out) and _is_pattern(pattern)
                and fnmatch.fnmatchcase(knob, pattern)):
            found = owner
    return found
