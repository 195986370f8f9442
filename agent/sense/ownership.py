"""Who owns a setting, in the words of the place that sets it: `Owner`, the
sysctl configuration files (key -> file and line), the CPUs set apart for
latency-critical work, and `owner_of`, the lookup in a table of knob names and
patterns. hosttune reports owned knobs and does not fight them. Turning a
sysctl.d line, a kernel parameter or a peer daemon's option into a knob is the
knob family's part (hosttune.tuners.owners assembles the table).

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

CPUs set apart by `isolcpus=`/`nohz_full=` (sense.isolation) or a running
tuned's isolated_cores (sense.peers) are not knobs: the tuners keep off them.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, replace

from hosttune.agent.sense.errors import HostReadError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.isolation import CpuIsolation, Reservation, cpu_isolation
from hosttune.agent.sense.peers import peer_report

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


def cpu_reservations(host: Host) -> CpuIsolation:
    """The CPUs set apart for latency-critical work: by boot parameters and
    the kernel (agent.isolation), then by a running peer daemon (tuned's
    isolated_cores)."""
    boot = cpu_isolation(host)
    peers = peer_report(host)
    extra = tuple(Reservation(cpus, why, "peer") for cpus, why in peers.isolated)
    return replace(boot, reserved=boot.reserved + extra,
                   notes=boot.notes + tuple(n for n in peers.notes if "isolated_cores" in n))


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def owner_of(knob: str, owned: dict[str, Owner]) -> Owner | None:
    """The owner of `knob` in a knob -> owner table (hosttune.tuners.owners).
    An exact entry wins over every pattern (systemd-sysctl never lets a glob
    set a key named explicitly); an exact "excluded" entry keeps the patterns
    of its kind off the knob. Among
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
