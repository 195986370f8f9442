"""The recommender on a described two-socket, 8-accelerator host."""

from __future__ import annotations

from pathlib import Path

import pytest

from hosttune.agent.sense.errors import ConfigError
from hosttune.agent.sense.host import Host
from hosttune.agent.service import recommend as service_recommend
from hosttune.agent.service.recommend import run_recommend
from hosttune.models.outcomes import LearnedModel, Outcome
from hosttune.models.placement import plan_placement
from hosttune.models.recommender import recommend
from hosttune.models.state import DeviceState, HostState, ProcessState

GIB = 1 << 30
NODE0 = tuple(range(0, 16))
NODE1 = tuple(range(16, 32))


def dgx_state(**over: object) -> HostState:
    devices = []
    irq = 100
    for i in range(8):
        node = 0 if i < 4 else 1
        devices.append(DeviceState(address=f"0000:{0x10 + i:02x}:00.0", role="accelerator",
                                   numa_node=node, irqs=(irq, irq + 1),
                                   names=(f"/dev/nvidia{i}",)))
        irq += 2
    for j in range(4):
        node = 0 if j < 2 else 1
        devices.append(DeviceState(address=f"0000:{0x40 + j:02x}:00.0", role="nic",
                                   numa_node=node, irqs=(200 + 2 * j, 201 + 2 * j),
                                   names=(f"ib{j}",)))
    # A trainer driving GPU 5 (node 1) that runs anywhere with memory on node 0.
    proc = ProcessState(pid=4242, comm="python", cpus=NODE0 + NODE1, rss_bytes=8 * GIB,
                        numa_pages={0: 1000, 1: 50}, accel_devices=("/dev/nvidia5",),
                        reasons=("device:/dev/nvidia5", "lib:libtorch_cuda.so"))
    knobs = {"thp:enabled": "madvise", "sysctl:kernel.numa_balancing": "1",
             "sysctl:vm.swappiness": "60", "sysctl:vm.dirty_ratio": "20",
             "sysctl:vm.dirty_background_ratio": "10", "sysctl:vm.dirty_bytes": "0"}
    state = HostState(workload="training", knobs=knobs, nodes={0: NODE0, 1: NODE1},
                      devices=tuple(devices), processes=(proc,),
                      irq_affinity={n: NODE0 + NODE1 for n in range(100, 220)})
    for key, value in over.items():
        setattr(state, key, value)
    return state


def test_process_is_placed_on_its_accelerators_node() -> None:
    plans = plan_placement(dgx_state())
    assert [p.node for p in plans] == [1]
    (placement,) = plans[0].processes
    assert placement.pid == 4242
    assert set(placement.cpus) <= set(NODE1)
    assert placement.memory_off_node_pages == 1000


def test_irqs_go_to_the_same_node_off_the_feeder_cores() -> None:
    state = dgx_state()
    (node_plan,) = plan_placement(state)
    feeders = set(node_plan.processes[0].cpus)
    irqs = {p.irq: p for p in node_plan.irqs}
    # GPU 5's two IRQs and the two node-1 NICs' IRQs, nothing from node 0
    assert set(irqs) == {110, 111, 204, 205, 206, 207}
    for p in irqs.values():
        assert set(p.cpus) <= set(NODE1)
        assert not set(p.cpus) & feeders
        assert p.cpus


def test_already_pinned_process_keeps_its_cores_and_irqs_avoid_them() -> None:
    pinned = ProcessState(pid=7, comm="python", cpus=(16, 17, 18, 19), rss_bytes=GIB,
                          numa_pages={1: 10}, accel_devices=("/dev/nvidia6",))
    (node_plan,) = plan_placement(dgx_state(processes=(pinned,)))
    assert node_plan.processes[0].cpus == (16, 17, 18, 19)
    assert not node_plan.processes[0].needs_change
    for p in node_plan.irqs:
        assert not set(p.cpus) & {16, 17, 18, 19}


def test_plan_has_placement_irq_and_numa_changes_with_reasons() -> None:
    recs = recommend(dgx_state())
    by_knob = {c.knob: c for c in recs.changes}
    assert by_knob["sysctl:kernel.numa_balancing"].after == "0"
    place = by_knob["numa:pid:4242"]
    assert "mems=1" in place.after and "node 1" in place.reason
    assert "irq:110" in by_knob and "irq:200" not in by_knob
    assert all(c.source and c.reason and c.evidence for c in recs.changes)
    assert any(e.startswith("rule ") for e in place.evidence)


def test_admin_owned_knob_is_advice_not_change() -> None:
    state = dgx_state(owned={"sysctl:vm.swappiness": "/etc/sysctl.d/90-admin.conf:3"})
    recs = recommend(state)
    assert "sysctl:vm.swappiness" not in {c.knob for c in recs.changes}
    (advice,) = [a for a in recs.advice if a.knob == "sysctl:vm.swappiness"]
    assert advice.kind == "advice" and "90-admin.conf" in advice.why_advice


def test_knob_the_host_lacks_becomes_advice() -> None:
    # dirty-ratio-checkpoint sets two knobs; this host does not expose the second
    state = HostState(workload="checkpoint_io",
                      knobs={"sysctl:vm.dirty_ratio": "20", "sysctl:vm.dirty_bytes": "0"})
    recs = recommend(state)
    assert [c.knob for c in recs.changes] == ["sysctl:vm.dirty_ratio"]
    (advice,) = recs.advice
    assert advice.knob == "sysctl:vm.dirty_background_ratio"
    assert "does not expose" in advice.why_advice
    assert any("no AI process" in n for n in recs.notes)


def _outcomes(n: int) -> list[Outcome]:
    # swappiness does nothing; dirty_ratio 60 measured best for this class
    out = []
    for i in range(n):
        ratio = [20, 40, 60, 80][i % 4]
        effect = {20: 1.0, 40: 1.1, 60: 1.3, 80: 1.15}[ratio] + 0.005 * (i % 3)
        out.append(Outcome(workload="checkpoint_io", source="trial",
                           knobs={"sysctl:vm.dirty_ratio": str(ratio),
                                  "sysctl:vm.swappiness": str(10 + i % 2 * 50)},
                           effect=effect))
    return out


def test_learned_model_overrides_priors_with_enough_evidence() -> None:
    state = HostState(workload="checkpoint_io",
                      knobs={"sysctl:vm.dirty_ratio": "20",
                             "sysctl:vm.dirty_background_ratio": "10",
                             "sysctl:vm.dirty_bytes": "0", "sysctl:vm.swappiness": "60"})
    learned = LearnedModel.fit("checkpoint_io", _outcomes(12))
    assert learned.fitted
    recs = recommend(state, learned=learned)
    rec = {c.knob: c for c in recs.changes}["sysctl:vm.dirty_ratio"]
    assert rec.rule == "learned:checkpoint_io"
    assert 50 <= int(rec.after) <= 70  # the prior said 40
    assert "instead of the prior's 40" in rec.reason
    assert any("measured outcomes" in n for n in recs.notes)


def test_too_few_outcomes_leave_the_priors() -> None:
    state = HostState(workload="checkpoint_io",
                      knobs={"sysctl:vm.dirty_ratio": "20", "sysctl:vm.dirty_bytes": "0"})
    learned = LearnedModel.fit("checkpoint_io", _outcomes(5))
    assert not learned.fitted
    recs = recommend(state, learned=learned)
    rec = {c.knob: c for c in recs.changes}["sysctl:vm.dirty_ratio"]
    assert rec.rule == "dirty-ratio-checkpoint" and rec.after == "40"
    assert any("fewer than" in n for n in recs.notes)


ISOLATED = {c: "by isolcpus=managed_irq,28-31 on the kernel command line" for c in range(28, 32)}


def test_isolated_cpus_are_neither_housekeeping_nor_feeder_cores() -> None:
    state = dgx_state(isolated=ISOLATED)
    (node_plan,) = plan_placement(state)
    assert node_plan.isolated == (28, 29, 30, 31)
    feeders = set(node_plan.processes[0].cpus)
    assert feeders and not feeders & set(ISOLATED)
    # one in eight of the 12 usable cores, from the top: 27, not 31
    for p in node_plan.irqs:
        assert p.cpus and not set(p.cpus) & set(ISOLATED) and not set(p.cpus) & feeders
    assert set(node_plan.irq_cpus) == {27}
    recs = recommend(state)
    place = next(c for c in recs.changes if c.knob == "numa:pid:4242")
    assert ("Left alone: CPUs 28-31 are isolated by isolcpus=managed_irq,28-31 on the kernel "
            "command line.") in place.reason
    assert any(n.startswith("CPUs 28-31 are isolated by isolcpus=managed_irq,28-31")
               for n in recs.notes)


def test_a_process_pinned_to_isolated_cpus_keeps_them() -> None:
    # pinned inside its node, isolated cores included: left as it is
    inside = ProcessState(pid=7, comm="python", cpus=(28, 29), accel_devices=("/dev/nvidia6",))
    (node_plan,) = plan_placement(dgx_state(processes=(inside,), isolated=ISOLATED))
    assert node_plan.processes[0].cpus == (28, 29)
    assert not node_plan.processes[0].needs_change
    assert all(not set(p.cpus) & set(ISOLATED) for p in node_plan.irqs)
    # pinned across both nodes: it moves to node 1 and keeps the isolated CPU
    # there it was pinned to, and nothing else isolated is added
    across = ProcessState(pid=8, comm="python", cpus=(0, 1, 30),
                          accel_devices=("/dev/nvidia6",))
    (node_plan,) = plan_placement(dgx_state(processes=(across,), isolated=ISOLATED))
    cpus = set(node_plan.processes[0].cpus)
    assert 30 in cpus and not cpus & {28, 29, 31} and cpus <= set(NODE1)


def test_a_fully_isolated_node_gets_no_placement_and_says_so() -> None:
    every = {c: "by nohz_full=16-31 on the kernel command line" for c in NODE1}
    state = dgx_state(isolated=every)
    (node_plan,) = plan_placement(state)
    assert node_plan.processes == () and node_plan.irqs == ()
    assert any("every CPU of node 1 is isolated" in n for n in node_plan.notes)
    recs = recommend(state)
    assert not any(c.knob.startswith(("numa:", "irq:")) for c in recs.changes)
    assert any("every CPU of node 1 is isolated" in n for n in recs.notes)


def test_peer_owned_knob_is_advice_with_the_peers_words() -> None:
    why = ("owned by a peer tuning daemon: tuned profile throughput-performance sets "
           "vm.swappiness=10 (/usr/lib/tuned/throughput-performance/tuned.conf:42)")
    recs = recommend(dgx_state(owned={"sysctl:vm.swappiness": why}))
    (advice,) = [a for a in recs.advice if a.knob == "sysctl:vm.swappiness"]
    assert advice.why_advice == why


def test_a_class_without_rules_of_its_own_takes_its_fallback_and_says_so() -> None:
    as_unknown = recommend(dgx_state(workload="unknown"))
    background = recommend(dgx_state(workload="background"))
    assert [c.to_dict() for c in background.changes] == [c.to_dict() for c in as_unknown.changes]
    assert background.workload == "background"
    assert "no priors of its own for 'background': the rules for 'unknown' apply" in (
        background.notes)
    idle = recommend(dgx_state(workload="idle"))
    assert "no priors of its own for 'idle': only the rules for any workload apply" in idle.notes


def test_a_workload_not_in_the_list_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown workload class 'gaming'"):
        recommend(dgx_state(workload="gaming"))


def test_recommend_workload_option_refuses_a_class_not_in_the_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--workload: unknown workload class 'gaming' \(one of"):
        run_recommend(Host(tmp_path), workload="gaming", state_dir=str(tmp_path))


def test_a_classified_label_not_in_the_list_is_said_not_silently_unknown(
        fixture_hosts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a site-trained model may know labels hosttune has no priors for
    monkeypatch.setattr(service_recommend, "classify_with_roles",
                        lambda host, window: ("busy", "classified by a site model", None))
    report = run_recommend(Host(fixture_hosts / "this-vm"), workload=None, window=0.1,
                           state_dir=str(tmp_path))
    assert report.workload == "unknown"
    assert any("'busy' is not one of hosttune's workload classes" in n for n in report.notes)


def test_recommend_for_background_uses_its_fallback(fixture_hosts: Path, tmp_path: Path) -> None:
    # what hosttuned asks for once it has settled on 'background' (the shipped
    # model knows the class; the priors once did not, and the answer was an error)
    report = run_recommend(Host(fixture_hosts / "this-vm"), workload="background", window=0.1,
                           state_dir=str(tmp_path))
    assert report.workload == "background"
    assert "no priors of its own for 'background': the rules for 'unknown' apply" in (
        report.recommendations.notes)
