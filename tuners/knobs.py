"""The knob vocabulary: knob names, Change and Plan, search hints, and how a
knob finds its entry in a table of knob patterns (the allowlist). Plain data, no host access:
the decide layer (hosttune.models) builds plans from it without importing any
tuner's write path.

A knob is `family:key` (`sysctl:vm.swappiness`, `thp:enabled`,
`hugepages:node0:2048kB`, `irq:41`, `numa:pid:4242`). Values are always text,
as the kernel reads and prints them; each tuner normalises what it accepts.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hosttune.agent.sense.errors import ConfigError, KnobError

# Who decided a change: an expert rule, a learned model, the optimizer, the
# administrator by hand, or hosttune undoing an earlier change.
SOURCES: tuple[str, ...] = ("expert", "model", "optimizer", "admin", "rollback")

_FAMILY_RE = re.compile(r"^[a-z][a-z0-9_]*$")

_Entry = TypeVar("_Entry")


def parse_knob(knob: str) -> tuple[str, str]:
    """"sysctl:vm.swappiness" -> ("sysctl", "vm.swappiness"). Only the first
    colon splits: keys may hold colons ("hugepages:node0:2048kB")."""
    if not isinstance(knob, str) or ":" not in knob:
        raise KnobError(str(knob), "a knob is named family:key (e.g. sysctl:vm.swappiness)")
    family, key = knob.split(":", 1)
    if not _FAMILY_RE.match(family):
        raise KnobError(knob, f"bad knob family {family!r}")
    if not key or key != key.strip() or any(c in key for c in "\n\r\t\0 "):
        raise KnobError(knob, f"bad knob key {key!r}")
    return family, key


def knob_name(family: str, key: str) -> str:
    return f"{family}:{key}"


@dataclass(frozen=True)
class Change:
    """One knob to set. `before` is filled in by the transaction when it reads
    the knob (a plan may carry the value it saw, for display)."""

    knob: str
    after: str
    before: str | None = None
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    source: str = "admin"

    def __post_init__(self) -> None:
        parse_knob(self.knob)
        if not isinstance(self.after, str):
            raise KnobError(self.knob, f"value must be text, got {type(self.after).__name__}")
        if self.source not in SOURCES:
            raise KnobError(self.knob,
                            f"unknown source {self.source!r} (one of {', '.join(SOURCES)})")

    @property
    def family(self) -> str:
        return parse_knob(self.knob)[0]

    @property
    def key(self) -> str:
        return parse_knob(self.knob)[1]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"knob": self.knob, "value": self.after}
        if self.before is not None:
            data["before"] = self.before
        if self.reason:
            data["reason"] = self.reason
        if self.evidence:
            data["evidence"] = dict(self.evidence)
        data["source"] = self.source
        return data


@dataclass
class Plan:
    """Ordered changes, applied all-or-nothing by `transaction.apply_plan`."""

    changes: list[Change]
    workload: str | None = None
    note: str = ""

    def knobs(self) -> list[str]:
        return [c.knob for c in self.changes]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.workload is not None:
            data["workload"] = self.workload
        if self.note:
            data["note"] = self.note
        data["changes"] = [c.to_dict() for c in self.changes]
        return data

    def to_yaml(self) -> str:
        # PyYAML costs 28 ms and 1.7 MB: only plans read or written as files need it,
        # and a daemon without a config file never does.
        import yaml

        return str(yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False))

    @classmethod
    def from_yaml(cls, text: str, path: str = "<plan>") -> Plan:
        """Parse a plan file:

            workload: training          # optional
            note: why this plan         # optional
            changes:
              - knob: sysctl:vm.swappiness
                value: 10               # or `after:`; a list is joined by spaces
                reason: keep the page cache for the dataset
                source: expert          # optional, default admin
                evidence: {psi.memory.some.avg10: 3.2}   # optional

        Every error is a ConfigError naming the file and the line."""
        import yaml  # see to_yaml

        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"not valid YAML: {problem}", path=path, line=line) from None
        if root is None or data is None:
            raise ConfigError("empty plan (expected a mapping with `changes:`)", path=path, line=1)
        if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
            raise ConfigError("a plan is a mapping with `changes:`", path=path,
                              line=root.start_mark.line + 1)
        lines = {str(k.value): v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
        unknown = sorted(set(map(str, data)) - {"workload", "note", "changes"})
        if unknown:
            node = lines[unknown[0]]
            raise ConfigError(f"unknown key {unknown[0]!r} (expected workload, note, changes)",
                              path=path, line=node.start_mark.line + 1)
        workload = data.get("workload")
        if workload is not None and not isinstance(workload, str):
            raise ConfigError("workload must be text", path=path, key="workload",
                              line=lines["workload"].start_mark.line + 1)
        note = data.get("note") or ""
        if not isinstance(note, str):
            raise ConfigError("note must be text", path=path, key="note",
                              line=lines["note"].start_mark.line + 1)
        raw_changes = data.get("changes")
        if not isinstance(raw_changes, list) or "changes" not in lines:
            line = lines["changes"].start_mark.line + 1 if "changes" in lines else 1
            raise ConfigError("`changes:` must be a list of {knob, value, reason}", path=path,
                              key="changes", line=line)
        nodes = lines["changes"].value
        changes = [
            _change_from_yaml(item, path, node.start_mark.line + 1)
            for item, node in zip(raw_changes, nodes, strict=True)
        ]
        return cls(changes=changes, workload=workload, note=note)


def _value_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and all(
        isinstance(v, int | str) and not isinstance(v, bool) for v in value
    ):
        return " ".join(str(v) for v in value)
    return None


def _change_from_yaml(item: Any, path: str, line: int) -> Change:
    if not isinstance(item, dict):
        raise ConfigError("each change is a mapping {knob, value, reason}", path=path, line=line)
    allowed = {"knob", "value", "after", "before", "reason", "source", "evidence"}
    unknown = sorted(set(map(str, item)) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in change", path=path, line=line)
    knob = item.get("knob")
    if not isinstance(knob, str):
        raise ConfigError("change has no `knob:` (family:key)", path=path, line=line)
    if "value" in item and "after" in item:
        raise ConfigError("give `value:` or `after:`, not both", path=path, line=line, key=knob)
    raw = item.get("value", item.get("after"))
    value = _value_text(raw)
    if value is None:
        raise ConfigError(
            f"value {raw!r} is not text or a number (quote words such as 'on' and 'off')",
            path=path, line=line, key=knob,
        )
    before = item.get("before")
    before_text = None if before is None else _value_text(before)
    reason = item.get("reason", "")
    if not isinstance(reason, str):
        raise ConfigError("reason must be text", path=path, line=line, key=knob)
    evidence = item.get("evidence") or {}
    if not isinstance(evidence, dict):
        raise ConfigError("evidence must be a mapping", path=path, line=line, key=knob)
    source = item.get("source", "admin")
    try:
        return Change(knob=knob, after=value, before=before_text, reason=reason,
                      evidence={str(k): v for k, v in evidence.items()}, source=str(source))
    except KnobError as exc:
        raise ConfigError(exc.message, path=path, line=line, key=knob) from None


@dataclass(frozen=True)
class SearchHint:
    """How `hosttune tune` moves through a knob's allowed range: in steps of
    `step` (the block layer keeps readahead in whole 4 KiB pages), on a log
    scale or not (None: log when the range spans three decades or more)."""

    step: int = 1
    log: bool | None = None


def entry_for(table: Mapping[str, _Entry], knob: str) -> _Entry | None:
    """The entry for `knob`: an exact name first, else the longest matching
    pattern (an allowlist entry, a search hint)."""
    if knob in table:
        return table[knob]
    matches = [p for p in table if fnmatch.fnmatchcase(knob, p)]
    if not matches:
        return None
    return table[max(matches, key=len)]


# When a change reaches the workload: "running" (a job already running feels
# it at once), "new" (only what is allocated, opened or started after it),
# "next job" (a running job cannot use it; the next one started can), or
# "reboot" (a boot parameter). The first matching pattern wins.
REACH: tuple[tuple[str, str, str], ...] = (
    ("numa:pid:*", "running", "the process's threads move and its memory is migrated now"),
    ("irq:*", "running", "the next interrupt is served on the new CPUs"),
    ("cpuset:*", "running", "the cgroup's tasks move at once"),
    ("cpu:*", "running", "takes effect at once"),
    ("thp:enabled", "new", "serves memory allocated after it; a running job keeps the small "
                           "pages it has (a per-process collapse reaches those)"),
    ("thp:khugepaged.*", "running", "khugepaged's next scans, including running jobs' "
                                    "memory that THP mode makes eligible"),
    ("thp:*", "new", "serves later page faults"),
    ("hugepages:*", "next job", "a pool is used by jobs that map hugetlb pages when "
                                "they start; a running job does not switch to it"),
    ("block:*", "running", "later reads and queued I/O use it at once"),
    ("sysctl:vm.*", "running", "the kernel reads it at its next reclaim or writeback"),
    ("sysctl:kernel.numa_balancing", "running", "the scheduler's next scan"),
    ("sysctl:net.*", "new", "new sockets and connections (open ones keep their sizes)"),
    ("sysctl:*", "running", "takes effect at once"),
)


def reach_of(knob: str) -> tuple[str, str]:
    """(reach, why) of a change to `knob` (see REACH)."""
    for pattern, reach, why in REACH:
        if fnmatch.fnmatchcase(knob, pattern):
            return reach, why
    return "running", "takes effect at once"
