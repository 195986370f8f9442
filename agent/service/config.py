"""`/etc/hosttune/hosttune.yaml`: the schema, its defaults and the loader.

The file is optional: every key has a default and the defaults are the safe
choice (observe mode, no network listener). `config/hosttune.yaml` in the
source tree is the shipped, fully commented default file; a test checks that it
loads to exactly the defaults defined here.

Errors name the file, the key (dotted: `metrics.port`) and the line, as
cloud-init does: the YAML is composed into nodes, which keep their position,
and each section is checked against its schema before anything is built from
it. Unknown keys are errors (a typo such as `intervall` must not silently
leave the default in force), and so are wrong types and values out of range.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hosttune.agent.sense.errors import ConfigError
from hosttune.agent.sense.paths import Paths
from hosttune.agent.sense.vendors import BACKENDS, backends_from_config

MODES = ("observe", "recommend", "auto")
LOG_LEVELS = ("debug", "info", "warning", "error")
# `family:key`; the key part may hold dots, slashes and `*` wildcards.
KNOB_RE = re.compile(r"^[a-z][a-z0-9_]*:[A-Za-z0-9_.:/*@+-]+$")
GROUP_RE = re.compile(r"^[a-z_][a-z0-9_-]*\$?$")


@dataclass(frozen=True)
class Objective:
    command: str | None = None
    metric: str | None = None
    higher_is_better: bool = True
    timeout: float = 300.0


@dataclass(frozen=True)
class AutoPolicy:
    watch_windows: int = 3
    regression: float = 0.05
    cooldown_windows: int = 6


@dataclass(frozen=True)
class CollapseSettings:
    """Per-process huge pages in auto mode (hosttune.tuners.procthp)."""

    enabled: bool = True
    # processes never touched: pids, fnmatch patterns on the command name or
    # command line, fnmatch patterns on the cgroup path (/system.slice/*)
    exclude_pids: tuple[int, ...] = ()
    exclude_commands: tuple[str, ...] = ()
    exclude_cgroups: tuple[str, ...] = ()
    min_mapping_mib: int = 32
    max_mib_per_pass: int = 1024
    max_seconds_per_pass: float = 2.0


@dataclass(frozen=True)
class MetricsListener:
    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True)
class Retention:
    # A sample row is about 1-3 kB compressed: 10000 rows stay under ~30 MB.
    rows: int = 10000
    max_age_hours: float = 24.0


@dataclass(frozen=True)
class AcceleratorSettings:
    # NVML's PCIe throughput costs 20 ms per GPU and direction (it watches the
    # link): 320 ms for 8 GPUs, against well under 1 ms for the rest of a
    # pass. Every 12th pass is once a minute at the default 5 s interval.
    pcie_every: int = 12


@dataclass(frozen=True)
class SocketSettings:
    group: str = "hosttune"
    max_clients: int = 32
    timeout: float = 2.0
    max_request_bytes: int = 65536


@dataclass(frozen=True)
class Config:
    mode: str = "observe"
    interval: float = 5.0
    window: int = 6
    hysteresis: int = 2
    # Entries merged over the tuners' default allowlist (hosttune.tuners.allowlist):
    # knob or pattern -> {min, max, choices, max_memory_fraction}; None removes it.
    allowlist: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    # Knobs the administrator owns beyond those hosttune detects itself.
    overrides: tuple[str, ...] = ()
    objective: Objective = field(default_factory=Objective)
    auto: AutoPolicy = field(default_factory=AutoPolicy)
    collapse: CollapseSettings = field(default_factory=CollapseSettings)
    backends: tuple[str, ...] = BACKENDS
    accelerators: AcceleratorSettings = field(default_factory=AcceleratorSettings)
    metrics: MetricsListener = field(default_factory=MetricsListener)
    retention: Retention = field(default_factory=Retention)
    revert_on_stop: bool = False
    # Judge each window by the per-process roles (models/artifacts/roles-v4): a process
    # scan with every sample, sharing the sampler's pass over /proc (see
    # benchmarks/daemon_cost.py for what it costs; README "Per-process roles").
    roles: bool = True
    socket: SocketSettings = field(default_factory=SocketSettings)
    log_level: str = "info"
    source: str | None = None  # the file it came from; None: defaults only

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["allowlist"] = {
            knob: (None if entry is None else dict(entry))
            for knob, entry in sorted(self.allowlist.items())
        }
        out["overrides"] = list(self.overrides)
        out["backends"] = list(self.backends)
        return out

    def effective_allowlist(self, defaults: Mapping[str, Mapping[str, Any] | None]
                            ) -> dict[str, dict[str, Any]]:
        """The tuners' default table with this config's entries merged over it and
        the administrator's overrides taken off: what `auto` may change."""
        merged: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in defaults.items() if v is not None}
        for knob, entry in self.allowlist.items():
            if entry is None:
                merged.pop(knob, None)
            else:
                merged[knob] = dict(entry)
        for knob in self.overrides:
            merged.pop(knob, None)
        return merged


# -- schema ---------------------------------------------------------------

# What each key holds, for errors and for `hosttune config show --schema`.
DOC: dict[str, str] = {
    "mode": "observe (default): only watch; recommend: keep a plan ready; auto: apply it",
    "interval": "seconds between samples (0.1 to 3600)",
    "window": "samples per classification window (1 to 1000)",
    "hysteresis": "windows in a row a new workload class must win before it is believed",
    "allowlist": "knob -> {min, max, choices, max_memory_fraction}, or false to remove one",
    "overrides": "knobs the administrator owns: reported, never changed",
    "objective": "command or metric that measures the workload (auto mode judges changes by it)",
    "auto": "watch_windows, regression (fraction), cooldown_windows",
    "collapse": "per-process huge pages in auto mode: enabled, exclude_pids, "
                "exclude_commands, exclude_cgroups (fnmatch patterns), min_mapping_mib, "
                "max_mib_per_pass, max_seconds_per_pass",
    "backends": f"accelerator backends to try, in order, from {', '.join(BACKENDS)}",
    "accelerators": "pcie_every: read PCIe throughput (NVML: 20 ms per GPU and direction) "
                    "on every Nth sample (12), 0 never",
    "metrics": "Prometheus endpoint: enabled (false), address (127.0.0.1), port (9464)",
    "retention": "history store bounds: rows, max_age_hours",
    "revert_on_stop": "revert hosttune's changes when the daemon stops",
    "roles": "judge the workload by each process's role (true; false: by the host's "
             "aggregates alone)",
    "socket": "control socket: group, max_clients, timeout, max_request_bytes",
    "log_level": f"one of {', '.join(LOG_LEVELS)}",
}


class _Reader:
    """Checks composed YAML nodes against the schema, naming file, key and line."""

    def __init__(self, path: str | None) -> None:
        import yaml  # 24 ms; a host without a config file runs on the defaults without it

        self.path = path
        self._yaml = yaml
        self._constructor = yaml.SafeLoader("")

    def error(self, message: str, key: str | None, node: Any | None) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else None
        return ConfigError(message, path=self.path, key=key, line=line)

    def value(self, node: Any) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: Any, key: str | None, allowed: Mapping[str, Any] | None
                ) -> dict[str, tuple[Any, Any]]:
        """name -> (key node, value node); unknown and duplicate keys are errors."""
        yaml = self._yaml
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f"expected a mapping, got {_kind(self, node)}", key, node)
        out: dict[str, tuple[Any, Any]] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode) or not isinstance(self.value(knode), str):
                raise self.error("keys must be strings", key, knode)
            name = str(knode.value)
            dotted = f"{key}.{name}" if key else name
            if allowed is not None and name not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.error(f"unknown key (known keys: {known})", dotted, knode)
            if name in out:
                raise self.error("duplicate key", dotted, knode)
            out[name] = (knode, vnode)
        return out

    def scalar(self, node: Any, key: str, kinds: tuple[type, ...], what: str) -> Any:
        yaml = self._yaml
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(f"expected {what}, got {_kind(self, node)}", key, node)
        value = self.value(node)
        # bool is an int in Python; `interval: yes` must not pass as 1.
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(f"expected {what}, got a boolean", key, node)
        if not isinstance(value, kinds):
            raise self.error(f"expected {what}, got {_kind(self, node)} {node.value!r}", key, node)
        return value

    def number(self, node: Any, key: str, lo: float, hi: float) -> float:
        value = float(self.scalar(node, key, (int, float), "a number"))
        if not (lo <= value <= hi) or math.isnan(value):
            raise self.error(f"{value:g} is out of range {lo:g}..{hi:g}", key, node)
        return value

    def integer(self, node: Any, key: str, lo: int, hi: int) -> int:
        value = int(self.scalar(node, key, (int,), "an integer"))
        if not lo <= value <= hi:
            raise self.error(f"{value} is out of range {lo}..{hi}", key, node)
        return value

    def string(self, node: Any, key: str, *, choices: tuple[str, ...] | None = None,
               pattern: re.Pattern[str] | None = None, nullable: bool = False) -> str | None:
        if nullable and isinstance(node, self._yaml.ScalarNode) and self.value(node) is None:
            return None
        value = str(self.scalar(node, key, (str,), "a string"))
        if choices is not None and value not in choices:
            raise self.error(f"{value!r} is not one of {', '.join(choices)}", key, node)
        if pattern is not None and not pattern.match(value):
            raise self.error(f"{value!r} is not valid here", key, node)
        return value

    def boolean(self, node: Any, key: str) -> bool:
        return bool(self.scalar(node, key, (bool,), "true or false"))

    def sequence(self, node: Any, key: str) -> list[Any]:
        if not isinstance(node, self._yaml.SequenceNode):
            raise self.error(f"expected a list, got {_kind(self, node)}", key, node)
        return list(node.value)


def _kind(reader: _Reader, node: Any) -> str:
    yaml = reader._yaml
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = reader.value(node)
    if value is None:
        return "nothing (null)"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__)


def _section(reader: _Reader, node: Any, key: str, cls: Any, fields: Mapping[
        str, Callable[[Any, str], Any]]) -> Any:
    values = {}
    for name, (_knode, vnode) in reader.mapping(node, key, fields).items():
        values[name] = fields[name](vnode, f"{key}.{name}")
    return cls(**values)


def _allow_entry(reader: _Reader, node: Any, key: str) -> dict[str, Any] | None:
    yaml = reader._yaml
    if isinstance(node, yaml.ScalarNode) and reader.value(node) in (False, None):
        return None
    items = reader.mapping(node, key, {"min": 0, "max": 0, "choices": 0,
                                       "max_memory_fraction": 0})
    entry: dict[str, Any] = {}
    for name in ("min", "max"):
        if name in items:
            entry[name] = reader.integer(items[name][1], f"{key}.{name}", -(1 << 62), 1 << 62)
    if "choices" in items:
        seq = reader.sequence(items["choices"][1], f"{key}.choices")
        entry["choices"] = [
            str(reader.scalar(v, f"{key}.choices", (str, int), "a value")) for v in seq]
        if not entry["choices"]:
            raise reader.error("needs at least one value", f"{key}.choices",
                               items["choices"][1])
    if "max_memory_fraction" in items:
        entry["max_memory_fraction"] = reader.number(
            items["max_memory_fraction"][1], f"{key}.max_memory_fraction", 0.0, 1.0)
    if "min" in entry and "max" in entry and entry["min"] > entry["max"]:
        raise reader.error(f"min {entry['min']} is above max {entry['max']}", key, node)
    return entry


def _build(reader: _Reader, root: Any) -> Config:
    r = reader
    top: dict[str, Callable[[Any, str], Any]] = {
        "mode": lambda n, k: r.string(n, k, choices=MODES),
        "interval": lambda n, k: r.number(n, k, 0.1, 3600),
        "window": lambda n, k: r.integer(n, k, 1, 1000),
        "hysteresis": lambda n, k: r.integer(n, k, 1, 100),
        "allowlist": lambda n, k: {
            name: _allow_entry(r, v, f"{k}.{name}") for name, (kn, v) in _knobs(r, n, k).items()
        },
        "overrides": lambda n, k: tuple(
            str(r.string(item, k, pattern=KNOB_RE)) for item in r.sequence(n, k)),
        "objective": lambda n, k: _section(r, n, k, Objective, {
            "command": lambda n2, k2: r.string(n2, k2, nullable=True),
            "metric": lambda n2, k2: r.string(n2, k2, nullable=True),
            "higher_is_better": r.boolean,
            "timeout": lambda n2, k2: r.number(n2, k2, 1, 86400),
        }),
        "auto": lambda n, k: _section(r, n, k, AutoPolicy, {
            "watch_windows": lambda n2, k2: r.integer(n2, k2, 1, 100),
            "regression": lambda n2, k2: r.number(n2, k2, 0.0, 1.0),
            "cooldown_windows": lambda n2, k2: r.integer(n2, k2, 0, 10000),
        }),
        "collapse": lambda n, k: _section(r, n, k, CollapseSettings, {
            "enabled": r.boolean,
            "exclude_pids": lambda n2, k2: tuple(
                int(r.integer(item, k2, 1, 1 << 22)) for item in r.sequence(n2, k2)),
            "exclude_commands": lambda n2, k2: tuple(
                str(r.string(item, k2)) for item in r.sequence(n2, k2)),
            "exclude_cgroups": lambda n2, k2: tuple(
                str(r.string(item, k2)) for item in r.sequence(n2, k2)),
            "min_mapping_mib": lambda n2, k2: r.integer(n2, k2, 2, 1 << 20),
            "max_mib_per_pass": lambda n2, k2: r.integer(n2, k2, 2, 1 << 20),
            "max_seconds_per_pass": lambda n2, k2: r.number(n2, k2, 0.05, 60),
        }),
        "backends": lambda n, k: tuple(
            str(r.string(item, k, choices=BACKENDS)) for item in r.sequence(n, k)),
        "accelerators": lambda n, k: _section(r, n, k, AcceleratorSettings, {
            "pcie_every": lambda n2, k2: r.integer(n2, k2, 0, 1_000_000),
        }),
        "metrics": lambda n, k: _section(r, n, k, MetricsListener, {
            "enabled": r.boolean,
            "address": r.string,
            "port": lambda n2, k2: r.integer(n2, k2, 1, 65535),
        }),
        "retention": lambda n, k: _section(r, n, k, Retention, {
            "rows": lambda n2, k2: r.integer(n2, k2, 100, 10_000_000),
            "max_age_hours": lambda n2, k2: r.number(n2, k2, 0.1, 24 * 3650),
        }),
        "revert_on_stop": r.boolean,
        "roles": r.boolean,
        "socket": lambda n, k: _section(r, n, k, SocketSettings, {
            "group": lambda n2, k2: r.string(n2, k2, pattern=GROUP_RE),
            "max_clients": lambda n2, k2: r.integer(n2, k2, 1, 1024),
            "timeout": lambda n2, k2: r.number(n2, k2, 0.1, 60),
            "max_request_bytes": lambda n2, k2: r.integer(n2, k2, 1024, 16 << 20),
        }),
        "log_level": lambda n, k: r.string(n, k, choices=LOG_LEVELS),
    }
    if root is None:
        return Config(source=reader.path)
    values = {}
    items = reader.mapping(root, None, top)
    for name, (_knode, vnode) in items.items():
        values[name] = top[name](vnode, name)
    config = Config(source=reader.path, **values)
    if config.metrics.enabled:
        _check_address(reader, config.metrics.address, items["metrics"][1])
    objective = config.objective
    if objective.command and objective.metric:
        raise reader.error("give a command or a metric, not both", "objective",
                           items["objective"][1])
    return config


def _knobs(reader: _Reader, node: Any, key: str) -> dict[str, tuple[Any, Any]]:
    items = reader.mapping(node, key, None)
    for name, (knode, _v) in items.items():
        if not KNOB_RE.match(name):
            raise reader.error("knob names are family:key (sysctl:vm.swappiness)",
                               f"{key}.{name}", knode)
    return items


def _check_address(reader: _Reader, address: str, node: Any) -> None:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if address != "localhost":
            raise reader.error(f"{address!r} is not an IP address", "metrics.address",
                               node) from None


# -- loading --------------------------------------------------------------

def parse(text: str, path: str | None = None) -> Config:
    """A Config from YAML text; ConfigError names `path`, the key and the line."""
    import yaml  # see _Reader

    reader = _Reader(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"not valid YAML: {exc.problem or exc}", path=path,
                          line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=path) from None
    return _build(reader, root)


def _read(path: Path) -> bytes | None:
    """The file's bytes; None when there is no such file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a file", path=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start}); expected a YAML file", path=str(path)) from None


def read_text(path: str | Path) -> str:
    """A YAML file's text (configuration, plan). Anything but readable UTF-8
    text is a ConfigError naming the file: a plan of random bytes gets one
    line, not a UnicodeDecodeError traceback."""
    path = Path(path)
    data = _read(path)
    if data is None:
        raise ConfigError("no such file", path=str(path))
    return _decode(path, data)


def load(path: str | Path, *, missing_ok: bool = True) -> Config:
    """Load a config file. A missing file means the defaults (the package does
    not have to ship /etc/hosttune/hosttune.yaml for the daemon to start)."""
    path = Path(path)
    data = _read(path)
    if data is None:
        if missing_ok:
            return Config()
        raise ConfigError("no such file", path=str(path))
    return parse(_decode(path, data), str(path))


def with_mode(config: Config, mode: str) -> Config:
    if mode not in MODES:
        raise ConfigError(f"{mode!r} is not one of {', '.join(MODES)}", key="mode")
    return replace(config, mode=mode)


def configured_backends() -> list[str] | None:
    """`backends` from the installed configuration (HOSTTUNE_CONFIG moves it),
    as AccelCollector wants it. A broken file raises its ConfigError."""
    return backends_from_config(load(Paths.from_env().config).backends)
