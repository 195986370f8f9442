"""Topology-aware recommendations on captured/modelled host trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from hosttune.agent.cpulist import parse_cpulist
from hosttune.agent.host import Host
from hosttune.models.observe import observe_topology
from hosttune.models.recommender import recommend, to_plan
from hosttune.models.state import HostState, ProcessState

GIB = 1 << 30


# Both model a DGX H100: 2 x 56 CPUs, GPUs 0-3 and two NICs on node 0, GPUs
# 4-7 and two NICs on node 1 (dgx-like-2s8g adds CPU/NUMA detail).
DGX_TREES = ["dgx-like-2s8g", "nvidia-8gpu"]


@pytest.fixture(params=DGX_TREES)
def tree(request: pytest.FixtureRequest, fixture_hosts: Path) -> Path:
    return fixture_hosts / str(request.param)


def dgx(tree: Path) -> HostState:
    state = HostState(workload="training", knobs={
        "thp:enabled": "madvise", "sysctl:kernel.numa_balancing": "1",
        "sysctl:vm.swappiness": "60"})
    observe_topology(Host(tree), state)
    return state


def test_topology_of_the_dgx_like_tree(tree: Path) -> None:
    state = dgx(tree)
    assert set(state.nodes) == {0, 1}
    assert state.nodes[1] == tuple(range(56, 112))
    accels = state.accelerators()
    assert len(accels) == 8  # the BMC's VGA is not one
    by_file = {d.names[0]: d for d in accels}
    assert by_file["/dev/nvidia0"].numa_node == 0
    assert by_file["/dev/nvidia5"].numa_node == 1
    assert by_file["/dev/nvidia5"].address == "0000:ab:00.0"
    nics = [d for d in state.devices if d.role == "nic"]
    assert {d.numa_node for d in nics} == {0, 1}
    assert all(d.irqs for d in accels)


def test_trainer_on_gpu5_is_placed_on_node1_with_irqs_off_its_cores(tree: Path) -> None:
    state = dgx(tree)
    all_cpus = tuple(range(112))
    state.processes = (ProcessState(
        pid=4242, comm="python", cpus=all_cpus, rss_bytes=8 * GIB,
        numa_pages={0: 2000, 1: 10}, accel_devices=("/dev/nvidia5", "/dev/nvidiactl"),
        reasons=("device:/dev/nvidia5", "lib:libtorch_cuda.so")),)
    recs = recommend(state)
    changes = {c.knob: c for c in recs.changes}
    place = changes["numa:pid:4242"]
    cpus_text, mems = place.after.split()
    feeders = set(parse_cpulist(cpus_text.removeprefix("cpus=")))
    assert mems == "mems=1"
    assert feeders and feeders <= set(range(56, 112))
    gpu5 = next(d for d in state.devices if d.address == "0000:ab:00.0")
    node1_nics = [d for d in state.devices if d.role == "nic" and d.numa_node == 1]
    expected = {f"irq:{i}" for i in gpu5.irqs} | {
        f"irq:{i}" for d in node1_nics for i in d.irqs}
    irq_changes = {k: c for k, c in changes.items() if k.startswith("irq:")}
    assert set(irq_changes) == expected
    for change in irq_changes.values():
        cpus = set(parse_cpulist(change.after))
        assert cpus and cpus <= set(range(56, 112))
        assert not cpus & feeders
    # nothing for the GPUs the process does not use, nor for node 0's NICs
    gpu0 = next(d for d in state.devices if d.names == ("/dev/nvidia0",))
    assert not any(f"irq:{i}" in changes for i in gpu0.irqs)
    assert changes["sysctl:kernel.numa_balancing"].after == "0"
    plan = to_plan(recs)
    assert {c.knob for c in plan.changes} == set(changes)
    assert all(c.source == "expert" and c.evidence["cited"] for c in plan.changes)


def test_admin_owned_knob_is_advice_on_the_dgx_tree(tree: Path) -> None:
    state = dgx(tree)
    state.processes = (ProcessState(pid=7, comm="python", cpus=tuple(range(112)),
                                    accel_devices=("/dev/nvidia5",)),)
    state.owned = {"sysctl:kernel.numa_balancing": "kernel command line numa_balancing=enable"}
    recs = recommend(state)
    assert "sysctl:kernel.numa_balancing" not in {c.knob for c in recs.changes}
    assert any(a.knob == "sysctl:kernel.numa_balancing" and "command line" in a.why_advice
               for a in recs.advice)


@pytest.mark.parametrize("name", ["nvidia-8gpu", "dgx-like-2s8g", "ascend-8npu", "mixed",
                                  "odd", "this-vm"])
def test_observe_topology_never_fails_on_fixture_trees(fixture_hosts: Path, name: str) -> None:
    state = HostState()
    observe_topology(Host(fixture_hosts / name), state)
    assert state.nodes
    if name != "odd":
        assert state.devices
