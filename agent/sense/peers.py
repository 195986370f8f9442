"""Peer tuning daemons and what they set, in their own words: hosttune
reports these and does not fight them. Which knob a tuned option or a running
irqbalance stands for is the knob family's to say (hosttune.tuners.owners
asks each family); this module only reads the daemons and their files.

- tuned: when a `tuned` process runs, the options its active profile sets
  (/etc/tuned/active_profile, one or more names; /etc/tuned/post_loaded_profile
  too). Profiles are found as tuned finds them: <dir>/<name>/tuned.conf, the
  last of `profile_dirs` (tuned-main.conf; default /usr/lib/tuned, /etc/tuned)
  first; `include=` in [main] loads other profiles first, and a later
  profile's section updates an earlier one of the same name (`replace=1`
  drops the earlier one). Each option of an enabled unit is reported with
  its plugin (`type=` or the section name), as a `TunedOption`. A file tuned
  could not parse sets nothing (tuned would not load the profile either) and
  is named in a note. [variables] are evaluated as tuned does (in order,
  `include=` files first where they stand); a [scheduler] unit's
  `isolated_cores` (cpu-partitioning) sets CPUs apart like isolcpus= does.
- irqbalance: whether it runs, the IRQs it was told to leave alone
  (--banirq), and whether banned CPUs are configured
  (IRQBALANCE_BANNED_CPULIST / IRQBALANCE_BANNED_CPUS), the admin's way of
  sharing the IRQs with someone else.
- numad: whether it runs (it places processes on NUMA nodes).

Running daemons are found by /proc/PID/comm through the Host. Nothing here
raises on odd files: what cannot be read is a note."""

from __future__ import annotations

import configparser
import posixpath
import re
from dataclasses import dataclass, field

from hosttune.agent.sense.cpulist import (
    format_cpulist,
    parse_cpulist,
    parse_cpumask,
    parse_kernel_cpulist,
)
from hosttune.agent.sense.errors import HostReadError, ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.knobfiles import process
from hosttune.agent.sense.topology import online_cpus

TUNED_DIR = "/etc/tuned"
TUNED_MAIN = "/etc/tuned/tuned-main.conf"
TUNED_ACTIVE = "/etc/tuned/active_profile"
TUNED_POST = "/etc/tuned/post_loaded_profile"
TUNED_PROFILE_DIRS = ("/usr/lib/tuned", "/etc/tuned")
IRQBALANCE_CONFIGS = ("/etc/default/irqbalance", "/etc/sysconfig/irqbalance")
# Options every tuned unit has; the rest of a [sysctl] unit are sysctl keys.
_UNIT_OPTIONS = frozenset((
    "type", "enabled", "replace", "devices", "devices_udev_regex", "cpuinfo_regex",
    "uname_regex", "script_pre", "script_post", "drop", "priority",
))
_SAFE_NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")
_SECTION = re.compile(r"^\[(.+)\]")
_BANIRQ = re.compile(r"^(?:--banirq=|-i)(\d+)$")
# ${NAME}; "\${NAME}" is tuned's escape and stays as it is
_VARIABLE = re.compile(r"(?<!\\)\$\{(\w+)\}")
_VARIABLE_NAME = re.compile(r"^\w+$")


@dataclass(frozen=True)
class TunedOption:
    """One option of an active tuned unit, e.g. plugin "vm", option
    "transparent_hugepages", value "always"."""

    plugin: str
    option: str
    value: str
    said: str  # "transparent_hugepages=always", as the profile writes it
    where: str  # the sentence naming the profile, file and line
    devices: tuple[str, ...] = ("*",)  # a [disk] unit's device name patterns


@dataclass(frozen=True)
class Irqbalance:
    """A running irqbalance and how it is configured."""

    pids: tuple[int, ...]
    # banned CPUs are configured: the admin shares IRQ affinity between
    # irqbalance and someone else, so irqbalance does not own it
    shares: bool
    banned_irqs: tuple[int, ...]  # --banirq: IRQs it leaves alone

    @property
    def who(self) -> str:
        return f"irqbalance (pid {_pids(list(self.pids))})"


@dataclass
class PeerReport:
    """What the running peer daemons set, in the order it was found, and notes."""

    tuned: list[TunedOption] = field(default_factory=list)
    irqbalance: Irqbalance | None = None
    numad: tuple[int, ...] = ()  # pids of a running numad
    notes: list[str] = field(default_factory=list)
    # CPUs a peer keeps for latency-critical work (tuned's [scheduler]
    # isolated_cores, as cpu-partitioning sets it): (CPUs, what says so)
    isolated: list[tuple[tuple[int, ...], str]] = field(default_factory=list)
    # tuned re-applies the sysctl.d files after its own [sysctl] settings
    # (reapply_sysctl, on by default): those files then win over tuned.
    tuned_reapplies_sysctl: bool = True


def pids_of(comms: dict[int, str], name: str) -> list[int]:
    return sorted(pid for pid, comm in comms.items() if comm == name)


def peer_report(host: Host) -> PeerReport:
    """What tuned, irqbalance and numad set while they run here."""
    report = PeerReport()
    comms = host.proc_comms()
    _tuned(host, comms, report)
    _irqbalance(host, comms, report)
    report.numad = tuple(pids_of(comms, "numad"))
    return report


def _pids(pids: list[int]) -> str:
    return ", ".join(map(str, pids))


# -- irqbalance ------------------------------------------------------------------


@dataclass(frozen=True)
class IrqbalanceConfig:
    path: str | None = None  # the file that configures it, if one exists
    banned_cpus: tuple[int, ...] | None = None
    banned_setting: str = ""  # "IRQBALANCE_BANNED_CPULIST=8-15" as written
    args: tuple[str, ...] = ()


def _env_value(raw: str) -> str:
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value.strip()


def irqbalance_config(host: Host, notes: list[str] | None = None) -> IrqbalanceConfig:
    """What /etc/default/irqbalance (or /etc/sysconfig/irqbalance) sets."""
    for path in IRQBALANCE_CONFIGS:
        text = host.read_optional(path)
        if text is None:
            continue
        banned: tuple[int, ...] | None = None
        setting = ""
        args: tuple[str, ...] = ()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if line.startswith("export "):
                line = line[len("export "):].strip()
            name, sep, value = line.partition("=")
            if not sep or line.startswith("#"):
                continue
            value = _env_value(value)
            try:
                if name == "IRQBALANCE_BANNED_CPULIST" and value:
                    banned, setting = parse_cpulist(value, source=f"{path}:{number}"), line
                elif name == "IRQBALANCE_BANNED_CPUS" and value and banned is None:
                    banned, setting = parse_cpumask(value, source=f"{path}:{number}"), line
            except ParseError as exc:
                if notes is not None:
                    notes.append(f"{exc}: irqbalance's banned CPUs are unknown")
            if name == "IRQBALANCE_ARGS":
                args = tuple(value.split())
        return IrqbalanceConfig(path, banned, setting, args)
    return IrqbalanceConfig()


def banned_irqs(args: tuple[str, ...]) -> list[int]:
    """IRQ numbers from `--banirq=N`, `--banirq N`, `-iN` and `-i N`."""
    irqs: list[int] = []
    for i, arg in enumerate(args):
        match = _BANIRQ.match(arg)
        if match:
            irqs.append(int(match.group(1)))
        elif arg in ("--banirq", "-i") and i + 1 < len(args) and args[i + 1].isdigit():
            irqs.append(int(args[i + 1]))
    return irqs


def _irqbalance(host: Host, comms: dict[int, str], report: PeerReport) -> None:
    pids = pids_of(comms, "irqbalance")
    if not pids:
        return
    config = irqbalance_config(host, report.notes)
    if config.banned_cpus:
        report.irqbalance = Irqbalance(tuple(pids), True, ())
        report.notes.append(
            f"{report.irqbalance.who} runs with banned CPUs {format_cpulist(config.banned_cpus)} "
            f"({config.banned_setting} in {config.path}): IRQ affinity is shared with it, "
            "not owned by it")
        return
    args = list(config.args)
    for pid in pids:
        cmdline = host.read_optional(process(pid, "cmdline")) or ""
        args += [a for a in cmdline.split("\0") if a]
    report.irqbalance = Irqbalance(tuple(pids), False, tuple(sorted(set(banned_irqs(tuple(args))))))


# -- tuned ---------------------------------------------------------------------------


@dataclass
class _Setting:
    value: str
    profile: str
    path: str
    line: int | None


_Units = dict[str, dict[str, _Setting]]


def _main_options(host: Host, notes: list[str]) -> tuple[tuple[str, ...], bool]:
    """profile_dirs and reapply_sysctl from tuned-main.conf."""
    dirs: tuple[str, ...] = TUNED_PROFILE_DIRS
    reapply = True
    text = host.read_optional(TUNED_MAIN)
    for raw in (text or "").splitlines():
        line = raw.split("#", 1)[0].strip()
        name, sep, value = line.partition("=")
        if not sep:
            continue
        name, value = name.strip(), value.strip()
        if name == "profile_dirs" and value:
            dirs = tuple(d.strip() for d in value.split(",") if d.strip())
        elif name == "reapply_sysctl":
            if value.lower() in ("0", "false", "no", "off"):
                reapply = False
            elif value.lower() not in ("1", "true", "yes", "on"):
                notes.append(f"{TUNED_MAIN}: reapply_sysctl = {value!r} is not a boolean")
    return dirs, reapply


def _locate(host: Host, name: str, dirs: tuple[str, ...], skip: set[str]) -> str | None:
    for directory in reversed(dirs):
        path = f"{directory.rstrip('/')}/{name}/tuned.conf"
        if path not in skip and host.exists(path) and not host.is_dir(path):
            return path
    return None


def _option_lines(text: str) -> dict[tuple[str, str], int]:
    """(section, option) -> the line that sets it last (for the report)."""
    lines: dict[tuple[str, str], int] = {}
    section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        match = _SECTION.match(line)
        if match:
            section = match.group(1)
            continue
        name, sep, _ = line.partition("=")
        if sep and not raw[:1].isspace():
            lines[(section, name.strip())] = number
    return lines


class _CaseKeepingParser(configparser.ConfigParser):
    """ConfigParser as tuned sets it up: option names keep their case."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def _read_profile(host: Host, path: str, profile: str,
                  notes: list[str]) -> tuple[dict[str, str], _Units] | None:
    """([main] options, units) of one tuned.conf, parsed as tuned parses it."""
    try:
        text = host.read_bytes(path).decode("utf-8")
    except HostReadError as exc:
        notes.append(f"tuned profile {profile}: {exc}")
        return None
    except UnicodeDecodeError:
        notes.append(f"tuned profile {profile}: {path} is not UTF-8 text; tuned cannot load "
                     "it, so it owns nothing")
        return None
    parser = _CaseKeepingParser(delimiters=("=",), inline_comment_prefixes=("#",),
                                strict=False, interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        notes.append(f"tuned profile {profile}: {path} is malformed ({first}); tuned cannot "
                     "load it, so it owns nothing")
        return None
    lines = _option_lines(text)
    main: dict[str, str] = {}
    units: _Units = {}
    for section in parser.sections():
        options = {k: v for k, v in parser.items(section, raw=True)}
        if section == "main":
            main = {k: v.strip() for k, v in options.items()}
            continue
        units[section] = {k: _Setting(v.strip(), profile, path, lines.get((section, k)))
                          for k, v in options.items()}
    return main, units


def _load(host: Host, names: list[str], dirs: tuple[str, ...], *, done: set[str],
          notes: list[str], out: list[_Units], depth: int = 0) -> bool:
    """Load `names` and their includes in tuned's order into `out`; False if
    one of them cannot be loaded (tuned then loads no profile at all)."""
    if depth > 16:
        notes.append("tuned profiles include each other too deeply")
        return False
    for name in names:
        if not _SAFE_NAME.match(name):
            notes.append(f"tuned profile name {name!r} is not one tuned accepts")
            return False
        path = _locate(host, name, dirs, done)
        if path is None:
            notes.append(f"tuned profile {name} not found in {', '.join(dirs)}")
            return False
        done.add(path)
        loaded = _read_profile(host, path, name, notes)
        if loaded is None:
            return False
        main, units = loaded
        include = main.get("include", "")
        if include:
            if "${" in include:
                notes.append(f"tuned profile {name} includes {include!r} ({path}), which needs "
                             "tuned's own functions to resolve: its settings are not counted")
            else:
                included = [n for n in re.split(r"\s*[,;]\s*", include) if n]
                if not _load(host, included, dirs, done=done, notes=notes, out=out,
                             depth=depth + 1):
                    return False
        out.append(units)
    return True


def _merge(profiles: list[_Units]) -> _Units:
    merged: _Units = {}
    for units in profiles:
        for name, options in units.items():
            replace = options.get("replace")
            if name not in merged or (replace is not None and replace.value.lower() in (
                    "1", "true", "yes", "on")):
                merged[name] = dict(options)
            else:
                merged[name].update(options)
    return merged


def _devices(options: dict[str, _Setting]) -> list[str]:
    """Device name patterns a [disk] unit applies to ("*" when all)."""
    spec = options.get("devices")
    if spec is None or "devices_udev_regex" in options:
        return ["*"]
    names = [d.strip() for d in spec.value.split(",") if d.strip()]
    positive = [d for d in names if not d.startswith("!")]
    return positive or ["*"]


def _enabled(options: dict[str, _Setting]) -> bool:
    flag = options.get("enabled")
    return flag is None or flag.value.lower() not in ("0", "false", "no", "off")


def _expand(text: str, variables: dict[str, str]) -> str:
    """${name} from the profile's [variables] (tuned's own functions, ${f:...},
    stay as they are)."""
    for _ in range(8):
        expanded = _VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), text)
        if expanded == text:
            break
        text = expanded
    return text


def _unit_applies(host: Host, unit: str, options: dict[str, _Setting],
                  variables: dict[str, str], notes: list[str]) -> bool:
    """Whether tuned applies a unit here: its uname_regex and cpuinfo_regex
    (matched as tuned matches them, with re.search over `uname -a` and
    /proc/cpuinfo) both match. One that cannot be decided is not counted."""
    for option, subject in (("uname_regex", "uname"), ("cpuinfo_regex", "cpuinfo")):
        setting = options.get(option)
        if setting is None:
            continue
        regex = _expand(setting.value, variables)
        text = host.uname() if subject == "uname" else host.read_optional("/proc/cpuinfo")
        if "${" in regex or text is None:
            notes.append(f"tuned unit [{unit}] ({setting.path}) applies only where {option} "
                         "matches, which cannot be decided here: its settings are not counted")
            return False
        try:
            if re.search(regex, text, re.MULTILINE) is None:
                return False
        except re.error as exc:
            notes.append(f"tuned unit [{unit}] ({setting.path}): bad {option}: {exc}")
            return False
    return True


def _tuned(host: Host, comms: dict[int, str], report: PeerReport) -> None:
    pids = pids_of(comms, "tuned")
    names: list[str] = []
    for path in (TUNED_ACTIVE, TUNED_POST):
        names += (host.read_optional(path) or "").split()
    if not pids:
        if names:
            report.notes.append(f"tuned profile {' '.join(names)} is selected in "
                                f"{TUNED_ACTIVE} but tuned is not running: it owns nothing now")
        return
    if not names:
        if host.exists(TUNED_DIR):
            report.notes.append(f"tuned is running (pid {_pids(pids)}) with no active profile "
                                f"in {TUNED_ACTIVE}")
        return
    dirs, report.tuned_reapplies_sysctl = _main_options(host, report.notes)
    profiles: list[_Units] = []
    if not _load(host, names, dirs, done=set(), notes=report.notes, out=profiles):
        report.notes.append(f"tuned profile {' '.join(names)} could not be read as tuned "
                            "reads it: no knob is counted as tuned's")
        return
    active = " ".join(names)
    merged = _merge(profiles)
    variables = _variables(host, merged.get("variables", {}), report.notes)
    for unit, options in merged.items():
        if not _enabled(options) or not _unit_applies(host, unit, options, variables,
                                                      report.notes):
            continue
        plugin = options["type"].value if "type" in options else unit
        if plugin == "scheduler" and "isolated_cores" in options:
            _isolated_cores(host, active, options["isolated_cores"], variables, report)
        devices = tuple(_devices(options))
        for name, setting in options.items():
            if name in _UNIT_OPTIONS:
                continue
            said = f"{name}={setting.value}"
            via = "" if setting.profile == active else f" (through {setting.profile})"
            where = setting.path + (f":{setting.line}" if setting.line else "")
            report.tuned.append(TunedOption(
                plugin, name, setting.value, said,
                f"tuned profile {active}{via} sets {said} ({where})", devices))


def _variables(host: Host, options: dict[str, _Setting], notes: list[str]) -> dict[str, str]:
    """A profile's [variables] as tuned evaluates them: in order, each value
    expanded with the variables defined before it; `include=FILE` (relative
    to the profile's directory) adds the NAME=VALUE lines of that file there."""
    values: dict[str, str] = {}
    for name, setting in options.items():
        if name == "include":
            base = setting.path.rsplit("/", 1)[0]
            path = posixpath.normpath(posixpath.join(base, _expand(setting.value, values)))
            text = host.read_optional(path)
            if text is None:
                notes.append(f"tuned variables file {path} (included from {setting.path}) is "
                             "missing")
                continue
            for raw in text.splitlines():
                line = raw.strip()
                key, sep, value = line.partition("=")
                key = key.strip()
                if line.startswith("#") or not sep or not _VARIABLE_NAME.match(key):
                    continue
                values[key] = _expand(_env_value(value.split(" #", 1)[0]), values)
        elif _VARIABLE_NAME.match(name):
            values[name] = _expand(setting.value, values)
    return values


def _isolated_cores(host: Host, active: str, setting: _Setting, variables: dict[str, str],
                    report: PeerReport) -> None:
    """tuned's scheduler plugin keeps processes and IRQs off `isolated_cores`
    (a CPU list; `^N` leaves N out)."""
    text = _expand(setting.value, variables)
    where = setting.path + (f":{setting.line}" if setting.line else "")
    if not text.strip():
        return
    plus = ",".join(p for p in text.split(",") if not p.strip().startswith("^"))
    minus = ",".join(p.strip()[1:] for p in text.split(",") if p.strip().startswith("^"))
    online = online_cpus(host)
    last = online[-1] if online else None
    try:
        chosen = set(parse_kernel_cpulist(plus, last_cpu=last, source=where))
        chosen -= set(parse_kernel_cpulist(minus, last_cpu=last, source=where))
    except ParseError as exc:
        report.notes.append(f"tuned profile {active}: isolated_cores={text!r} ({where}): "
                            f"{exc.message}; the CPUs it isolates are unknown")
        return
    if chosen:
        report.isolated.append((tuple(sorted(chosen)), f"by tuned profile {active} "
                                f"(isolated_cores={text}, {where})"))
