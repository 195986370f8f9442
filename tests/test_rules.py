"""The rule engine and the priors file's schema."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from hosttune.agent.sense.errors import ConfigError
from hosttune.models import workload_classes
from hosttune.models.rules import DEFAULT_PRIORS, evaluate, fill, load_priors, parse_priors
from hosttune.models.state import HostState, ProcessState, facts

GIB = 1 << 30


def torch_proc(huge: int = 0, rss: int = 2 * GIB) -> ProcessState:
    return ProcessState(pid=100, comm="python", rss_bytes=rss, anon_huge_bytes=huge,
                        reasons=("lib:libtorch_cpu.so",))


def numpy_proc(huge: int) -> ProcessState:
    return ProcessState(pid=101, comm="python", rss_bytes=2 * GIB, anon_huge_bytes=huge,
                        reasons=("lib:libopenblas.so", "lib:numpy"))


def base_knobs(**over: str) -> dict[str, str]:
    knobs = {"thp:enabled": "madvise", "sysctl:vm.swappiness": "60",
             "sysctl:vm.dirty_ratio": "20", "sysctl:vm.dirty_background_ratio": "10",
             "sysctl:vm.dirty_bytes": "0", "sysctl:kernel.numa_balancing": "1"}
    knobs.update({k.replace("__", ":").replace("_DOT_", "."): v for k, v in over.items()})
    return knobs


def fired(state: HostState) -> set[str]:
    return {f.rule.id for f in evaluate(load_priors().rules, facts(state), state.workload)}


def test_every_rule_has_a_source_reason_and_effect() -> None:
    priors = load_priors()
    assert len(priors.rules) >= 10
    for rule in priors.rules:
        assert rule.source.strip(), rule.id
        assert rule.reason.strip() and rule.effect.strip(), rule.id
        # a citation names where (a file of tuned, a URL) or says it is unsourced
        assert ("tuned" in rule.source or "http" in rule.source
                or "(unsourced:" in rule.source), rule.id


def test_schema_rejects_a_rule_without_source(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_PRIORS.read_text())
    broken = copy.deepcopy(data)
    del broken["rules"][2]["source"]
    with pytest.raises(ConfigError, match="missing 'source'") as err:
        parse_priors(broken, "priors.yaml")
    assert "thp-keep-madvise-numpy" in str(err.value)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.update(action="reboot"), "unknown action"),
    (lambda r: r.update(applies_to=["gaming"]), "unknown workload class"),
    (lambda r: r.update(when={"fact": "x", "op": "matches", "value": 1}), "unknown op"),
    (lambda r: r.update(when={"fact": "x", "op": "gt", "value": "lots"}), "needs a number"),
    (lambda r: r.update(when={"all": []}), "non-empty list"),
    (lambda r: r.update(knobs={"swappiness": "10"}), "family:key"),
])
def test_schema_errors_name_the_rule(mutate, message: str) -> None:
    data = yaml.safe_load(DEFAULT_PRIORS.read_text())
    mutate(data["rules"][0])
    with pytest.raises(ConfigError, match=message) as err:
        parse_priors(data, "p.yaml")
    assert "thp-always-torch" in str(err.value) and "p.yaml" in str(err.value)


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nrules: [\n  - id: x\n")
    with pytest.raises(ConfigError, match="line"):
        load_priors(path)


def test_thp_always_fires_for_torch_without_huge_pages() -> None:
    state = HostState(workload="training", knobs=base_knobs(), processes=(torch_proc(),))
    assert "thp-always-torch" in fired(state)


def test_thp_always_does_not_fire_when_torch_already_has_huge_pages() -> None:
    state = HostState(workload="training", knobs=base_knobs(),
                      processes=(torch_proc(huge=GIB),))
    assert "thp-always-torch" not in fired(state)


def test_thp_always_does_not_fire_when_already_always() -> None:
    state = HostState(workload="training", knobs=base_knobs(thp__enabled="always"),
                      processes=(torch_proc(),))
    assert "thp-always-torch" not in fired(state)


def test_numpy_only_keeps_madvise() -> None:
    state = HostState(workload="training", knobs=base_knobs(),
                      processes=(numpy_proc(huge=GIB),))
    ids = fired(state)
    assert "thp-keep-madvise-numpy" in ids
    assert "thp-always-torch" not in ids and "thp-always-training-prior" not in ids


def test_numa_balancing_needs_several_nodes_and_accelerators_or_pinning() -> None:
    one_node = HostState(workload="training", knobs=base_knobs(), nodes={0: (0, 1)})
    assert "numa-balancing-off" not in fired(one_node)
    pinned = HostState(workload="training", knobs=base_knobs(),
                       nodes={0: (0, 1), 1: (2, 3)},
                       processes=(ProcessState(pid=5, comm="t", cpus=(0, 1)),))
    assert "numa-balancing-off" in fired(pinned)
    knobs = base_knobs(**{"sysctl__kernel_DOT_numa_balancing": "0"})
    off = HostState(workload="training", knobs=knobs,
                    nodes={0: (0, 1), 1: (2, 3)},
                    processes=(ProcessState(pid=5, comm="t", cpus=(0, 1)),))
    assert "numa-balancing-off" not in fired(off)


def test_dirty_ratio_only_for_checkpoint_classes_and_not_with_dirty_bytes() -> None:
    assert "dirty-ratio-checkpoint" in fired(HostState(workload="checkpoint_io",
                                                       knobs=base_knobs()))
    assert "dirty-ratio-checkpoint" not in fired(HostState(workload="inference_serving",
                                                           knobs=base_knobs()))
    with_bytes = base_knobs(**{"sysctl__vm_DOT_dirty_bytes": "1073741824"})
    assert "dirty-ratio-checkpoint" not in fired(HostState(workload="checkpoint_io",
                                                           knobs=with_bytes))


def test_checkpoint_writes_take_thp_back_to_madvise_only_from_always() -> None:
    rule = "thp-madvise-checkpoint-writes"
    assert rule in fired(HostState(workload="checkpoint_io",
                                   knobs=base_knobs(thp__enabled="always")))
    assert rule not in fired(HostState(workload="checkpoint_io", knobs=base_knobs()))
    assert rule not in fired(HostState(workload="training", processes=(torch_proc(),),
                                       knobs=base_knobs(thp__enabled="always")))


def test_governor_rule_needs_the_knob() -> None:
    assert "governor-performance" not in fired(HostState(workload="training",
                                                         knobs=base_knobs()))
    knobs = base_knobs(cpu__governor="powersave")
    assert "governor-performance" in fired(HostState(workload="training", knobs=knobs))


def test_readahead_fills_the_disk_name_from_facts() -> None:
    from hosttune.models.state import DiskState

    state = HostState(workload="data_preparation", knobs=base_knobs(),
                      disks=(DiskState("vda", read_bytes_rate=200e6, read_ahead_kb=128),
                             DiskState("vdb", read_bytes_rate=1e3, read_ahead_kb=128)))
    firing = [f for f in evaluate(load_priors().rules, facts(state), state.workload)
              if f.rule.id == "readahead-dataset-disk"]
    assert firing and firing[0].knobs == {"block:vda:read_ahead_kb": "4096"}
    assert "vda" in firing[0].reason and "disk.busiest_read_ahead_kb=128" in firing[0].evidence
    idle = HostState(workload="data_preparation", knobs=base_knobs(),
                     disks=(DiskState("vda", read_bytes_rate=0.0, read_ahead_kb=128),))
    assert "readahead-dataset-disk" not in fired(idle)


def test_hugetlb_advice_uses_fact_comparison() -> None:
    unused = HostState(workload="training", knobs=base_knobs(),
                       telemetry={"mem.hugepages_total": 512, "mem.hugepages_free": 512})
    used = HostState(workload="training", knobs=base_knobs(),
                     telemetry={"mem.hugepages_total": 512, "mem.hugepages_free": 10})
    assert "hugetlb-unused-advice" in fired(unused)
    assert "hugetlb-unused-advice" not in fired(used)


def test_missing_facts_never_fire_and_templates_show_question_marks() -> None:
    assert fired(HostState(workload="training", knobs={})) == set()
    assert fill("x {nope} y", {}) == "x ? y"


# -- the workload classes: one list (models/workload_classes.py) ---------------

def test_every_class_has_priors_or_an_explicit_fallback() -> None:
    priors = load_priors()
    assert priors.classes == workload_classes.recommendable()
    named = {c for r in priors.rules for c in r.applies_to}
    for cls in priors.classes:
        assert cls in named or cls in priors.fallback, cls
    assert priors.rules_class("training") == "training"
    assert priors.rules_class("background") == "unknown"
    assert priors.rules_class("idle") == "any"


def test_a_class_not_in_the_list_names_file_and_line(tmp_path: Path) -> None:
    text = DEFAULT_PRIORS.read_text()
    bad = text.replace("applies_to: [checkpoint_io]", "applies_to: [checkpoint_io, gaming]", 1)
    assert bad != text
    path = tmp_path / "priors.yaml"
    path.write_text(bad)
    line = 1 + bad.splitlines().index("    applies_to: [checkpoint_io, gaming]")
    with pytest.raises(ConfigError, match="unknown workload class 'gaming'") as err:
        load_priors(path)
    assert err.value.path == str(path) and err.value.line == line
    assert f"{path}: line {line}" in str(err.value)


def test_a_class_without_rules_or_fallback_is_an_error(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_PRIORS.read_text())
    del data["fallback"]["background"]
    with pytest.raises(ConfigError, match=r"no priors for workload class.*background"):
        parse_priors(data, "p.yaml")


@pytest.mark.parametrize(("fallback", "message"), [
    ({"gaming": "unknown"}, "unknown workload class 'gaming'"),
    ({"training": "unknown"}, "has rules of its own"),
    ({"background": "idle"}, "which no rule names"),
])
def test_fallback_errors(fallback: dict[str, str], message: str) -> None:
    data = yaml.safe_load(DEFAULT_PRIORS.read_text())
    data["fallback"].update(fallback)
    with pytest.raises(ConfigError, match=message):
        parse_priors(data, "p.yaml")


def test_a_second_list_of_classes_in_the_priors_is_refused() -> None:
    data = yaml.safe_load(DEFAULT_PRIORS.read_text())
    data["classes"] = ["training"]
    with pytest.raises(ConfigError, match="workload_classes"):
        parse_priors(data, "p.yaml")


def test_an_unknown_class_name_is_an_error_not_unknown() -> None:
    with pytest.raises(ConfigError,
                       match=r"--workload: unknown workload class 'gaming' \(one of idle, "):
        load_priors().rules_class("gaming")
