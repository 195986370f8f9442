"""Topology-aware recommendations on captured/modelled host trees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hosttune.agent.sense.cpulist import parse_cpulist
from hosttune.agent.sense.host import Host
from hosttune.agent.service.snapshot import observe_topology
from hosttune.models.recommender import recommend, to_plan
from hosttune.models.state import HostState, ProcessState
from hosttune.tuners.knobs import Plan

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


# -- what the admin and peer daemons own -------------------------------------------------

ISOLCPUS = "isolcpus=managed_irq,domain,64-71"


def _put(root: Path, path: str, text: str) -> None:
    file = root / path.lstrip("/")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)


def dgx_with_trainer(fixture_hosts: Path, root: Path, cmdline: str, *,
                     kernel_isolated: str | None = None) -> Path:
    """A copy of dgx-like-2s8g booted with `cmdline`, running a torch trainer
    (pid 4242, allowed on every CPU, most of its memory on node 0) that maps
    GPU 5 (/dev/nvidia5, node 1)."""
    shutil.copytree(fixture_hosts / "dgx-like-2s8g", root, symlinks=True)
    _put(root, "/proc/cmdline", f"BOOT_IMAGE=/vmlinuz root=/dev/md0 ro {cmdline}\n")
    if kernel_isolated is not None:
        _put(root, "/sys/devices/system/cpu/isolated", kernel_isolated)
    _put(root, "/proc/4242/comm", "pt_main_thread\n")
    _put(root, "/proc/4242/cmdline", "/usr/bin/python3\0/usr/local/bin/torchrun\0train.py\0")
    _put(root, "/proc/4242/status", "Name:\tpt_main_thread\nTgid:\t4242\nVmRSS:\t 8388608 kB\n"
                                    "Cpus_allowed_list:\t0-111\nMems_allowed_list:\t0-1\n")
    _put(root, "/proc/4242/stat", "4242 (pt_main_thread) S 1 4242 4242 0 -1 4194560 1 0 0 0 "
                                  "150000 25000 0 0 20 0 64 0 100 1 2 18446744073709551615\n")
    _put(root, "/proc/4242/maps",
         "7f0000000000-7f0000100000 r-xp 00000000 08:01 456 /opt/venv/lib/python3.11/"
         "site-packages/torch/lib/libtorch_cuda.so\n"
         "7f0000400000-7f0000500000 rw-s 00000000 00:05 458 /dev/nvidia5\n")
    _put(root, "/proc/4242/numa_maps", "7f1000000000 default anon=1000000 dirty=1000000 "
                                       "N0=700000 N1=300000 kernelpagesize_kB=4\n")
    _put(root, "/proc/4242/smaps_rollup", "Rss:             8388608 kB\nAnonHugePages:   0 kB\n")
    return root


def recommend_json(root: Path, tmp_path: Path) -> dict[str, Any]:
    env = {**os.environ, "HOSTTUNE_STATE_DIR": str(tmp_path / "state"),
           "HOSTTUNE_RUN_DIR": str(tmp_path / "run"), "HOSTTUNE_CONFIG": str(tmp_path / "none")}
    proc = subprocess.run([sys.executable, "-m", "hosttune.agent.service.cli", "recommend",
                           "--root", str(root), "--workload", "training", "--window", "0.1",
                           "--json"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_isolated_cpus_get_no_irqs_and_no_placed_process(fixture_hosts: Path,
                                                          tmp_path: Path) -> None:
    root = dgx_with_trainer(fixture_hosts, tmp_path / "host", f"{ISOLCPUS} nohz_full=64-71",
                            kernel_isolated="64-71\n")
    data = recommend_json(root, tmp_path)
    changes = {c["knob"]: c for c in data["changes"]}
    isolated = set(range(64, 72))
    place = changes["numa:pid:4242"]
    cpus_text, mems = place["after"].split()
    feeders = set(parse_cpulist(cpus_text.removeprefix("cpus=")))
    assert mems == "mems=1" and feeders and feeders <= set(range(56, 112))
    assert not feeders & isolated
    assert f"CPUs 64-71 are isolated by {ISOLCPUS} on the kernel command line" in place["reason"]
    irqs = {k: c for k, c in changes.items() if k.startswith("irq:")}
    assert irqs and not any(a["knob"].startswith("irq:") for a in data["advice"])
    for change in irqs.values():
        cpus = set(parse_cpulist(change["after"]))
        assert cpus and cpus <= set(range(56, 112))
        assert not cpus & isolated and not cpus & feeders
        assert ISOLCPUS in change["reason"]
    assert any(f"isolated by {ISOLCPUS}" in n and "no interrupts" in n for n in data["notes"])


def test_without_isolation_the_same_host_uses_those_cpus(fixture_hosts: Path,
                                                         tmp_path: Path) -> None:
    # the control for the test above: the CPUs are used when nothing reserves them
    root = dgx_with_trainer(fixture_hosts, tmp_path / "host", "intel_iommu=on")
    data = recommend_json(root, tmp_path)
    changes = {c["knob"]: c for c in data["changes"]}
    feeders = set(parse_cpulist(changes["numa:pid:4242"]["after"].split()[0][5:]))
    assert feeders & set(range(64, 72))
    assert not any("isolated" in n for n in data["notes"])


def test_irqaffinity_and_numad_turn_changes_into_advice(fixture_hosts: Path,
                                                        tmp_path: Path) -> None:
    root = dgx_with_trainer(fixture_hosts, tmp_path / "host", f"irqaffinity=0-7 {ISOLCPUS}")
    _put(root, "/proc/515/comm", "numad\n")
    data = recommend_json(root, tmp_path)
    assert not any(c["knob"].startswith(("irq:", "numa:")) for c in data["changes"])
    advice = {a["knob"]: a for a in data["advice"]}
    irq_advice = [a for k, a in advice.items() if k.startswith("irq:")]
    assert irq_advice
    for item in irq_advice:
        assert "irqaffinity=0-7" in item["why_advice"]
        assert not set(parse_cpulist(item["after"])) & set(range(64, 72))
    assert "numad (pid 515)" in advice["numa:pid:4242"]["why_advice"]


def test_recommend_json_advises_on_what_tuned_owns(fixture_hosts: Path, tmp_path: Path) -> None:
    data = recommend_json(fixture_hosts / "tuned-peer", tmp_path)
    advice = {a["knob"]: a for a in data["advice"]}
    swappiness = advice["sysctl:vm.swappiness"]
    assert swappiness["kind"] == "advice" and swappiness["after"] == "10"
    assert swappiness["why_advice"] == (
        "owned by a peer tuning daemon: tuned profile ai-training (through "
        "throughput-performance) sets vm.swappiness=10 "
        "(/usr/lib/tuned/throughput-performance/tuned.conf:42)")
    assert "tuned profile ai-training sets vm.dirty_ratio=30" in (
        advice["sysctl:vm.dirty_ratio"]["why_advice"])
    assert "transparent_hugepages=always" in advice["thp:enabled"]["why_advice"]
    tuned_knobs = {"sysctl:vm.swappiness", "sysctl:vm.dirty_ratio", "thp:enabled"}
    assert not tuned_knobs & {c["knob"] for c in data["changes"]}
    plan = Plan.from_yaml(data["plan"])
    assert not tuned_knobs & {c.knob for c in plan.changes}
