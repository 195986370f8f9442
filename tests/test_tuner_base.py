from __future__ import annotations

import pytest

from hosttune.agent.sense.errors import ConfigError, KnobError
from hosttune.tuners.allowlist import DEFAULT_ALLOWLIST, check, merge
from hosttune.tuners.base import parse_choice
from hosttune.tuners.knobs import Change, Plan, entry_for, parse_knob


def test_parse_knob() -> None:
    assert parse_knob("sysctl:vm.swappiness") == ("sysctl", "vm.swappiness")
    assert parse_knob("hugepages:node0:2048kB") == ("hugepages", "node0:2048kB")
    for bad in ("vm.swappiness", ":x", "sysctl:", "Sys:x", "sysctl:a b"):
        with pytest.raises(KnobError):
            parse_knob(bad)


def test_change_checks_source_and_knob() -> None:
    with pytest.raises(KnobError, match="unknown source"):
        Change("sysctl:vm.swappiness", "10", source="someone")
    with pytest.raises(KnobError):
        Change("swappiness", "10")
    change = Change("sysctl:vm.swappiness", "10", evidence={"psi": 1.0})
    assert (change.family, change.key) == ("sysctl", "vm.swappiness")


PLAN = """\
workload: training
note: from the expert rules
changes:
  - knob: sysctl:vm.swappiness
    value: 10
    reason: keep the dataset in page cache
    source: expert
    evidence: {psi.memory.some.avg10: 3.5}
  - knob: sysctl:net.ipv4.tcp_rmem
    value: [4096, 131072, 6291456]
  - knob: thp:enabled
    after: always
"""


def test_plan_yaml_round_trip() -> None:
    plan = Plan.from_yaml(PLAN, "p.yaml")
    assert plan.workload == "training"
    assert [c.after for c in plan.changes] == ["10", "4096 131072 6291456", "always"]
    assert plan.changes[0].evidence == {"psi.memory.some.avg10": 3.5}
    assert plan.changes[0].source == "expert" and plan.changes[1].source == "admin"
    again = Plan.from_yaml(plan.to_yaml(), "again.yaml")
    assert again.changes == plan.changes and again.note == plan.note


@pytest.mark.parametrize(("text", "line", "words"), [
    ("changes:\n  - knob: sysctl:vm.swappiness\n    value: 10\n  - value: 3\n", 4, "no `knob:`"),
    ("changes:\n  - knob: thp:enabled\n    value: on\n", 2, "quote"),
    ("changes:\n  - knob: bad\n    value: 1\n", 2, "family:key"),
    ("changes: [\n", 2, "not valid YAML"),
    ("workload: x\nbogus: 1\nchanges: []\n", 2, "unknown key 'bogus'"),
    ("changes:\n  - knob: sysctl:vm.swappiness\n    value: 1\n    colour: red\n", 2, "colour"),
])
def test_bad_plans_name_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        Plan.from_yaml(text, "/etc/plan.yaml")
    assert err.value.line == line
    assert f"/etc/plan.yaml: line {line}" in str(err.value)
    assert words in str(err.value)


def test_parse_choice() -> None:
    assert parse_choice("always [madvise] never") == ("madvise", ("always", "madvise", "never"))
    assert parse_choice("[none] mq-deadline")[0] == "none"
    assert parse_choice("none") == ("none", ("none",))


def test_allowlist_bounds_and_merge() -> None:
    check(DEFAULT_ALLOWLIST, "sysctl:vm.swappiness", "10")
    with pytest.raises(KnobError, match="above the allowed maximum 100"):
        check(DEFAULT_ALLOWLIST, "sysctl:vm.swappiness", "150")
    with pytest.raises(KnobError, match="not on the allowlist"):
        check(DEFAULT_ALLOWLIST, "sysctl:kernel.panic", "1")
    check(DEFAULT_ALLOWLIST, "sysctl:net.ipv4.tcp_rmem", "4096 131072 6291456")
    with pytest.raises(KnobError, match="below"):
        check(DEFAULT_ALLOWLIST, "sysctl:net.ipv4.tcp_rmem", "1 131072 6291456")
    assert entry_for(DEFAULT_ALLOWLIST, "block:nvme0n1:read_ahead_kb") == {"min": 0, "max": 16384}
    with pytest.raises(KnobError, match="of memory"):
        check(DEFAULT_ALLOWLIST, "hugepages:node0:2048kB", "10000", mem_total_kb=1 << 20)
    merged = merge(DEFAULT_ALLOWLIST, {"sysctl:vm.swappiness": {"min": 0, "max": 200},
                                       "thp:enabled": None})
    check(merged, "sysctl:vm.swappiness", "150")
    assert "thp:enabled" not in merged and "thp:enabled" in DEFAULT_ALLOWLIST
    with pytest.raises(ConfigError, match=r"hosttune\.yaml: sysctl:x"):
        merge(DEFAULT_ALLOWLIST, {"sysctl:x": {"maximum": 3}}, source="hosttune.yaml")
