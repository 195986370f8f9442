"""The tuners on the real kernel.

net.* inside a network namespace the test creates; global knobs (vm.*, THP,
hugepages, IRQ affinity, block queues) under the kernel lock with a snapshot,
a rollback through the journal, and a final check that nothing differs (any
difference is restored and fails the test); process placement on a child the
test starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosttune.agent.sense.cpulist import parse_cpulist
from hosttune.agent.sense.errors import HostWriteError, KnobError
from hosttune.agent.sense.host import Host
from hosttune.tuners.journal import Journal
from hosttune.tuners.knobs import Change, Plan
from hosttune.tuners.registry import bind_tuners, tuner_and_key
from hosttune.tuners.transaction import apply_plan, recover, rollback

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not Path("/proc/sys/vm/swappiness").exists(), reason="no /proc/sys"),
]

GLOBAL_KNOBS = ["sysctl:vm.swappiness", "sysctl:vm.dirty_ratio",
                "sysctl:vm.dirty_background_ratio", "sysctl:kernel.numa_balancing",
                "thp:enabled", "thp:defrag", "hugepages:2048kB"]


def _block_knobs(host: Host) -> list[str]:
    tuners = bind_tuners(host)
    for dev in ("loop7", "loop6", "loop0"):
        knobs = [f"block:{dev}:read_ahead_kb", f"block:{dev}:scheduler"]
        if all(tuner_and_key(tuners, k)[0].available(tuner_and_key(tuners, k)[1]) for k in knobs):
            return knobs
    return []


def _irq_knobs(host: Host) -> tuple[str | None, str | None]:
    """(a movable IRQ, a managed one), found by rewriting each IRQ's own mask."""
    tuners = bind_tuners(host)
    movable = managed = None
    for name in host.listdir_optional("/proc/irq"):
        if movable and managed:
            break
        if not name.isdigit():
            continue
        tuner, key = tuner_and_key(tuners, f"irq:{name}")
        if not tuner.available(key):
            continue
        current = tuner.read(key)
        if movable is not None:
            if not managed and name in _managed_candidates(host):
                try:
                    tuner.apply(key, current)
                except KnobError:
                    managed = f"irq:{name}"
            continue
        try:
            tuner.apply(key, current)  # the same mask again: a no-op for a movable IRQ
        except KnobError:
            managed = managed or f"irq:{name}"
            continue
        movable = f"irq:{name}"
    return movable, managed


def _managed_candidates(host: Host) -> set[str]:
    """IRQs of multi-queue block/net queues: the ones the kernel manages."""
    names = set()
    for line in (host.read_optional("/proc/interrupts") or "").splitlines():
        irq, _, rest = line.strip().partition(":")
        if irq.isdigit() and ("-req." in rest or "-queue" in rest or "nvme" in rest):
            names.add(irq)
    return names


def snapshot(host: Host, knobs: list[str]) -> dict[str, str]:
    tuners = bind_tuners(host)
    values = {}
    for knob in knobs:
        tuner, key = tuner_and_key(tuners, knob)
        values[knob] = tuner.read(key)
    return values


@pytest.fixture
def guarded(kernel_lock: None) -> Iterator[tuple[Host, list[str], dict[str, str]]]:
    """The global knobs this module touches, snapshotted; afterwards anything
    that differs is put back and the test fails."""
    host = Host()
    movable, _ = _irq_knobs(host)
    knobs = GLOBAL_KNOBS + _block_knobs(host) + ([movable] if movable else [])
    before = snapshot(host, knobs)
    yield host, knobs, before
    after = snapshot(host, knobs)
    tuners = bind_tuners(host)
    differ = {k: (before[k], after[k]) for k in knobs
              if not tuner_and_key(tuners, k)[0].equal(before[k], after[k])}
    for knob, (value, _) in differ.items():
        tuner, key = tuner_and_key(tuners, knob)
        tuner.apply(key, value)
    assert not differ, f"left changed (now restored): {differ}"


def test_global_knobs_apply_verify_and_roll_back(
        guarded: tuple[Host, list[str], dict[str, str]], tmp_path: Path) -> None:
    host, knobs, before = guarded
    wanted = {"sysctl:vm.swappiness": "33", "sysctl:vm.dirty_ratio": "31",
              "sysctl:vm.dirty_background_ratio": "7", "sysctl:kernel.numa_balancing": "1",
              "thp:enabled": "always", "thp:defrag": "defer", "hugepages:2048kB": "2"}
    for knob in knobs:
        if knob.endswith(":read_ahead_kb"):
            wanted[knob] = "256"
        elif knob.endswith(":scheduler"):
            wanted[knob] = "mq-deadline" if before[knob] != "mq-deadline" else "none"
        elif knob.startswith("irq:"):
            wanted[knob] = "0"
    plan = Plan([Change(k, v, reason="kernel test") for k, v in wanted.items()])
    with Journal(tmp_path / "journal.db") as journal:
        result = apply_plan(host, plan, journal, force=True)
        assert result.ok, result.message
        now = snapshot(host, list(wanted))
        tuners = bind_tuners(host)
        for knob, value in wanted.items():
            assert tuner_and_key(tuners, knob)[0].equal(now[knob], value), (knob, now[knob])
        # The pool really holds the pages.
        assert host.read_int("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages") >= 2
        back = rollback(host, journal, baseline=True)
        assert back.ok, back.message
    assert snapshot(host, knobs) == before


def test_kernel_refusal_mid_plan_restores_the_earlier_knobs(
        guarded: tuple[Host, list[str], dict[str, str]], tmp_path: Path) -> None:
    host, knobs, before = guarded
    # kernel.numa_balancing takes 0-3: 7 passes validation (an integer) and the
    # kernel answers EINVAL.
    plan = Plan([Change("sysctl:vm.swappiness", "11"), Change("thp:enabled", "never"),
                 Change("sysctl:kernel.numa_balancing", "7"),
                 Change("sysctl:vm.dirty_ratio", "33")])
    with Journal(tmp_path / "journal.db") as journal:
        result = apply_plan(host, plan, journal, force=True)
    assert not result.ok and result.failed_step == 3
    assert "Invalid argument" in (result.error or "")
    assert [s.status for s in result.steps] == ["restored", "restored", "restored",
                                                "not reached"]
    assert snapshot(host, knobs) == before


def test_managed_irq_cannot_be_moved(guarded: tuple[Host, list[str], dict[str, str]],
                                     tmp_path: Path) -> None:
    host, knobs, before = guarded
    _, managed = _irq_knobs(host)
    if managed is None:
        pytest.skip("no managed IRQ on this host")
    plan = Plan([Change("sysctl:vm.swappiness", "12"), Change(managed, "0")])
    with Journal(tmp_path / "journal.db") as journal:
        result = apply_plan(host, plan, journal, force=True)
    assert not result.ok
    assert f"IRQ {managed[4:]} cannot be moved (managed or per-CPU)" in (result.error or "")
    assert snapshot(host, knobs) == before


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare")
def test_read_only_file_in_a_mount_namespace(
        guarded: tuple[Host, list[str], dict[str, str]], tmp_path: Path) -> None:
    """dirty_ratio is bind-mounted read-only in a private mount namespace; the
    plan's first knob (the real, global swappiness) must come back."""
    host, knobs, before = guarded
    code = textwrap.dedent(f"""
        import json
        from hosttune.agent.sense.host import Host
        from hosttune.tuners.knobs import Change, Plan
        from hosttune.tuners.journal import Journal
        from hosttune.tuners.transaction import apply_plan
        plan = Plan([Change("sysctl:vm.swappiness", "13"), Change("sysctl:vm.dirty_ratio", "32")])
        result = apply_plan(Host(), plan, Journal({str(tmp_path / 'journal.db')!r}), force=True)
        print(json.dumps(result.to_dict()))
    """)
    (tmp_path / "child.py").write_text(code)
    f = "/proc/sys/vm/dirty_ratio"
    script = (f"mount --bind {f} {f} && mount -o remount,ro,bind {f} && "
              f"{sys.executable} {tmp_path / 'child.py'}")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert not result["ok"] and result["failed_step"] == 2
    assert "Read-only file system" in result["error"]
    assert [c["status"] for c in result["changes"]] == ["restored", "restored"]
    assert snapshot(host, knobs) == before


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare")
def test_net_sysctls_in_a_network_namespace(tmp_path: Path) -> None:
    host_values = snapshot(Host(), ["sysctl:net.ipv4.tcp_rmem", "sysctl:net.core.somaxconn"])
    code = textwrap.dedent(f"""
        import json
        from hosttune.agent.sense.host import Host
        from hosttune.tuners.knobs import Change, Plan
        from hosttune.tuners.journal import Journal
        from hosttune.tuners.transaction import apply_plan, rollback
        host = Host()
        tuners_read = lambda: (open("/proc/sys/net/ipv4/tcp_rmem").read().split(),
                               open("/proc/sys/net/core/somaxconn").read().strip())
        start = tuners_read()
        j = Journal({str(tmp_path / 'journal.db')!r})
        plan = Plan([Change("sysctl:net.ipv4.tcp_rmem", "8192 65536 2097152", source="expert"),
                     Change("sysctl:net.core.somaxconn", "1024", source="expert")])
        applied = apply_plan(host, plan, j)
        during = tuners_read()
        back = rollback(host, j, baseline=True)
        print(json.dumps({{"start": start, "during": during, "end": tuners_read(),
                          "applied": applied.ok, "back": back.ok, "msg": applied.message}}))
    """)
    (tmp_path / "child.py").write_text(code)
    proc = subprocess.run(["unshare", "-n", sys.executable, str(tmp_path / "child.py")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["applied"] and out["back"], out["msg"]
    assert out["during"] == [["8192", "65536", "2097152"], "1024"]
    assert out["end"] == out["start"]
    assert snapshot(Host(), ["sysctl:net.ipv4.tcp_rmem", "sysctl:net.core.somaxconn"]) == (
        host_values)


CHILD = """
import threading, time
block = bytearray(32 << 20)  # anonymous memory, touched
for i in range(0, len(block), 4096):
    block[i] = 1
threads = [threading.Thread(target=time.sleep, args=(60,), daemon=True) for _ in range(3)]
for t in threads:
    t.start()
print("ready", flush=True)
time.sleep(60)
"""


def _task_cpus(pid: int) -> dict[int, str]:
    cpus = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                cpus[int(tid)] = line.split(":", 1)[1].strip()
    return cpus


def test_numa_placement_of_a_child(tmp_path: Path) -> None:
    online = parse_cpulist(Path("/sys/devices/system/cpu/online").read_text())
    if len(online) < 2:
        pytest.skip("needs two CPUs to pin to a subset")
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        host = Host()
        knob = f"numa:pid:{child.pid}"
        first, last = online[0], online[-1]
        with Journal(tmp_path / "journal.db") as journal:
            result = apply_plan(host, Plan([Change(knob, f"cpus={last}")]), journal)
            assert result.ok, result.message
            tasks = _task_cpus(child.pid)
            assert len(tasks) == 4 and set(tasks.values()) == {str(last)}
            # node=0: the node's CPUs and its memory (the only node here).
            result = apply_plan(host, Plan([Change(knob, "node=0")]), journal)
            assert result.ok, result.message
            node0 = Path("/sys/devices/system/node/node0/cpulist").read_text().strip()
            assert set(_task_cpus(child.pid).values()) == {node0}
            maps = Path(f"/proc/{child.pid}/numa_maps").read_text()
            anon = [line for line in maps.splitlines() if "anon=" in line]
            assert anon and all(" N0=" in line for line in anon)
            assert not any(f" N{n}=" in line for line in anon for n in range(1, 8))
            back = rollback(host, journal, baseline=True)
            assert back.ok, back.message
            assert set(_task_cpus(child.pid).values()) == {f"{first}-{last}"}
        # The kernel's own answer for a node that does not exist.
        nodes = parse_cpulist(Path("/sys/devices/system/node/online").read_text())
        with pytest.raises(HostWriteError, match="migrate_pages refused"):
            host.migrate_pages(child.pid, nodes, [max(nodes) + 1])
        assert host.migrate_pages(child.pid, nodes, nodes) == 0
    finally:
        child.kill()
        child.wait()


def test_numa_rollback_refuses_a_reused_pid(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    host = Host()
    knob = f"numa:pid:{child.pid}"
    with Journal(tmp_path / "journal.db") as journal:
        assert apply_plan(host, Plan([Change(knob, "cpus=0")]), journal).ok
        child.kill()
        child.wait()
        time.sleep(0.05)
        back = rollback(host, journal, baseline=True)
    assert back.ok and [s.status for s in back.steps] == ["gone"]


@pytest.mark.skipif(not Path("/sys/fs/cgroup/cpuset/cpuset.cpus").exists()
                    and not Path("/sys/fs/cgroup/cgroup.controllers").exists(),
                    reason="no cpuset cgroup")
def test_cpuset_of_a_cgroup_the_test_creates(tmp_path: Path) -> None:
    host = Host()
    tuners = bind_tuners(host)
    tuner, _ = tuner_and_key(tuners, "cpuset:/")
    found = tuner.hierarchy()  # type: ignore[attr-defined]
    if found is None:
        pytest.skip("no cpuset controller")
    base, _version = found
    name = f"hosttune-test-{os.getpid()}"
    group = Path(base) / name
    group.mkdir()
    child = None
    try:
        if _version == 1:  # v1 needs cpus and mems before a task may join
            (group / "cpuset.cpus").write_text(Path(base, "cpuset.cpus").read_text())
            (group / "cpuset.mems").write_text(Path(base, "cpuset.mems").read_text())
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        (group / "cgroup.procs").write_text(str(child.pid))
        knob = f"cpuset:/{name}"
        start = tuner.read(f"/{name}")
        with Journal(tmp_path / "journal.db") as journal:
            result = apply_plan(host, Plan([Change(knob, "cpus=0 mems=0")]), journal)
            assert result.ok, result.message
            assert _task_cpus(child.pid) == {child.pid: "0"}
            assert rollback(host, journal, baseline=True).ok
        assert tuner.read(f"/{name}") == start
        assert _task_cpus(child.pid) == {child.pid: (group / "cpuset.cpus").read_text().strip()}
    finally:
        if child is not None:
            child.kill()
            child.wait()
        for _ in range(50):  # the killed task leaves the cgroup asynchronously
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.05)
    assert not group.exists()


@pytest.mark.parametrize(("kill_at", "seq"), [("journalled", 2), ("written", 2)])
def test_sigkill_on_the_real_kernel_then_recover(
        guarded: tuple[Host, list[str], dict[str, str]], tmp_path: Path,
        kill_at: str, seq: int) -> None:
    host, knobs, before = guarded
    code = textwrap.dedent(f"""
        import os, signal
        from hosttune.agent.sense.host import Host
        from hosttune.tuners.knobs import Change, Plan
        from hosttune.tuners.journal import Journal
        from hosttune.tuners.transaction import apply_plan

        def hook(step, seq, change):
            if step == {kill_at!r} and seq == {seq}:
                os.kill(os.getpid(), signal.SIGKILL)

        plan = Plan([Change("thp:enabled", "always"), Change("sysctl:vm.swappiness", "14")])
        apply_plan(Host(), plan, Journal({str(tmp_path / 'journal.db')!r}), hook=hook, force=True)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == -9, proc.stderr
    tuners = bind_tuners(host)
    assert tuner_and_key(tuners, "thp:enabled")[0].read("enabled") == "always"
    swappiness = tuner_and_key(tuners, "sysctl:vm.swappiness")[0].read("vm.swappiness")
    assert swappiness == ("14" if kill_at == "written" else before["sysctl:vm.swappiness"])
    with Journal(tmp_path / "journal.db") as journal:
        (result,) = recover(host, journal)
    assert result.ok, result.message
    assert snapshot(host, knobs) == before
