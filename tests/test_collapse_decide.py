"""Which running processes get per-process huge pages, what the recommender
says about the global THP switch beside it, and the fallback on kernels
without MADV_COLLAPSE (fixture trees and hand-written states)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hosttune.agent.sense import procmem
from hosttune.agent.sense.host import Host
from hosttune.models.collapse import FAULT_RATE, choose_collapse, new_memory_thp, why_not
from hosttune.models.recommender import recommend
from hosttune.models.state import HostState, ProcessState
from hosttune.tuners.knobs import reach_of

MIB = 1 << 20
KNOBS = {"thp:enabled": "madvise", "thp:khugepaged.scan_sleep_millisecs": "10000",
         "thp:khugepaged.pages_to_scan": "4096", "sysctl:vm.swappiness": "60"}


def torch_job(pid: int = 4242, *, huge: int = 0, anon: int = 2048 * MIB,
              write_rate: float | None = None, fault_rate: float | None = None
              ) -> ProcessState:
    return ProcessState(pid=pid, comm="python3", rss_bytes=anon + 300 * MIB,
                        anon_huge_bytes=huge, anon_bytes=anon, start_time="12345",
                        reasons=("lib:libtorch_cpu.so", "lib:libc10.so"),
                        write_bytes_rate=write_rate, fault_rate=fault_rate)


def numpy_job(pid: int = 777) -> ProcessState:
    return ProcessState(pid=pid, comm="python3", rss_bytes=1100 * MIB,
                        anon_huge_bytes=900 * MIB, anon_bytes=1024 * MIB, start_time="99",
                        reasons=("lib:libopenblas64_p-r0.3.so", "numpy"))


def state(*procs: ProcessState, workload: str = "training", collapse: str = "yes"
          ) -> HostState:
    return HostState(workload=workload, knobs=dict(KNOBS), processes=procs,
                     nodes={0: (0, 1)}, collapse=collapse)


def test_a_pytorch_job_without_huge_pages_gets_a_collapse_not_always() -> None:
    recs = recommend(state(torch_job()))
    (action,) = recs.actions
    assert (action.action, action.pid, action.start_time) == ("collapse", 4242, "12345")
    assert action.reaches == "running"
    assert "2048 MiB" in action.reason and "PyTorch" in action.reason
    # the global switch is advice for later jobs, with the reason why
    assert "thp:enabled" not in {c.knob for c in recs.changes}
    (always,) = [a for a in recs.advice if a.knob == "thp:enabled"]
    assert always.after == "always" and always.rule == "thp-always-for-new-jobs"
    assert "started later" in always.reason and "0.48x" in always.reason
    assert always.reaches == "new"
    # khugepaged is left alone where collapse works
    assert not any(c.knob.startswith("thp:khugepaged") for c in recs.changes)


def test_numpy_style_madvisers_and_small_processes_are_left_alone() -> None:
    small = torch_job(pid=5, anon=100 * MIB)
    decision = choose_collapse(state(numpy_job(), small))
    assert decision.actions == []
    why = {pid: text for pid, _comm, text in decision.skipped}
    assert "madvises" in why[777]
    assert 5 not in why  # too small to mention
    assert "under 256 MiB" in str(why_not(small))


def test_a_checkpoint_writer_is_left_alone() -> None:
    writer = torch_job(write_rate=400 * MIB)
    assert choose_collapse(state(writer)).actions == []
    assert "checkpoint writer" in choose_collapse(state(writer)).skipped[0][2]
    # and every process while the host's class is checkpoint writing
    decision = choose_collapse(state(torch_job(), workload="checkpoint_io"))
    assert decision.actions == [] and "torch.save" in decision.skipped[0][2]


def test_a_process_already_in_huge_pages_is_not_collapsed_again() -> None:
    done = torch_job(huge=1900 * MIB)
    decision = choose_collapse(state(done))
    assert decision.actions == [] and "already in huge pages" in decision.skipped[0][2]
    # a pass its bounds cut short leaves the rest for the next one
    half = torch_job(huge=1024 * MIB)
    assert [a.pid for a in choose_collapse(state(half)).actions] == [4242]


def test_without_collapse_the_fallback_is_global_always_and_a_faster_khugepaged() -> None:
    why = "kernel 5.15 has no MADV_COLLAPSE (Linux 6.1 added it)"
    recs = recommend(state(torch_job(), collapse=why))
    assert recs.actions == []
    changes = {c.knob: c for c in recs.changes}
    assert changes["thp:enabled"].after == "always"
    assert "5.15" in changes["thp:enabled"].reason
    assert "restarting the job" in changes["thp:enabled"].reason
    assert changes["thp:khugepaged.scan_sleep_millisecs"].after == "1000"
    assert changes["thp:khugepaged.pages_to_scan"].after == "16384"
    assert "10 minutes" in changes["thp:khugepaged.pages_to_scan"].reason
    assert any("per-process huge pages unavailable" in n and "5.15" in n for n in recs.notes)


def _tree(tmp_path: Path, release: str, thp: bool = True) -> Host:
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text(release + "\n")
    if thp:
        base = tmp_path / "sys/kernel/mm/transparent_hugepage"
        base.mkdir(parents=True)
        (base / "enabled").write_text("always [madvise] never\n")
    return Host(root=tmp_path)


@pytest.mark.parametrize(("release", "thp", "supported"), [
    ("6.1.0-27-amd64", True, True),
    ("6.18.44-fc-v1272", True, True),
    ("5.15.0-105-generic", True, False),
    ("4.18.0-553.el8_10.x86_64", True, False),
    ("6.8.0-45-generic", False, False),
])
def test_kernel_support_is_read_from_the_host(tmp_path: Path, release: str, thp: bool,
                                              supported: bool) -> None:
    why = procmem.collapse_unsupported(_tree(tmp_path, release, thp))
    assert (why is None) is supported
    if not supported:
        assert "MADV_COLLAPSE" in str(why) or "transparent huge pages" in str(why)


def test_a_fixture_host_refuses_the_syscalls(tmp_path: Path) -> None:
    host = _tree(tmp_path, "6.1.0")
    with pytest.raises(Exception, match="fixture host"):
        host.open_pidfd(1)


def test_smaps_parsing_keeps_private_anonymous_mappings_only() -> None:
    text = (Path(__file__).parent / "fixtures" / "smaps" / "torch_gather.smaps").read_text()
    maps = procmem.parse_smaps(text)
    sizes = sorted(m.size // MIB for m in maps)
    assert sizes[-1] >= 2048  # the tensor (merged with a neighbouring anonymous mapping)
    big = max(maps, key=lambda m: m.size)
    assert big.anon_kb >= 2097152 and big.huge_kb == 0 and "nh" not in big.flags
    # the shared 16 MiB mapping is shmem, not private: never offered
    assert 16 not in sizes
    # file-backed libraries, the stack, shared memory and vdso are not there
    assert all(m.name in ("", "[heap]") or m.name.startswith("[anon") for m in maps)
    assert any("nh" in m.flags for m in maps)


@pytest.mark.parametrize(("knob", "reach"), [
    ("numa:pid:42", "running"), ("irq:31", "running"), ("thp:enabled", "new"),
    ("hugepages:node0:2048kB", "next job"), ("sysctl:vm.swappiness", "running"),
    ("sysctl:net.core.rmem_max", "new"), ("block:sda:read_ahead_kb", "running"),
    ("thp:khugepaged.pages_to_scan", "running"),
])
def test_each_family_says_whether_a_running_job_feels_it(knob: str, reach: str) -> None:
    assert reach_of(knob)[0] == reach


def test_a_job_on_a_host_still_called_idle_gets_its_pass() -> None:
    # The daemon's class follows windows with hysteresis: a job started on an
    # idle host is seen before the class moves; its own memory decides.
    decision = choose_collapse(state(torch_job(), workload="idle"))
    assert [a.pid for a in decision.actions] == [4242]


def test_a_collapsed_job_that_keeps_faulting_gets_thp_always_for_its_new_memory() -> None:
    job = torch_job(huge=2000 * MIB, write_rate=0.0, fault_rate=16_000.0)
    advice = new_memory_thp(state(job, workload="unknown"))
    assert advice.change is not None and advice.blocked is None
    assert (advice.change.knob, advice.change.before, advice.change.after) == (
        "thp:enabled", "madvise", "always")
    assert advice.change.evidence["rule"] == "thp-for-allocating-job"
    assert "16,000 minor faults/s" in advice.change.reason and "pid 4242" in advice.change.reason
    assert advice.pids == [(4242, "12345")] and advice.live == [(4242, "12345")]


@pytest.mark.parametrize("fault_rate", [None, 0.0, FAULT_RATE - 1])
def test_a_job_that_holds_still_or_was_not_measured_since_its_pass_gets_nothing(
        fault_rate: float | None) -> None:
    advice = new_memory_thp(state(torch_job(huge=2000 * MIB, write_rate=0.0,
                                            fault_rate=fault_rate)))
    assert advice.change is None and advice.pids == [] and advice.blocked is None


def test_thp_always_is_not_made_beside_a_checkpoint_writer_and_says_so() -> None:
    job = torch_job(huge=2000 * MIB, write_rate=0.0, fault_rate=16_000.0)
    writer = torch_job(pid=5151, write_rate=900.0 * MIB)
    advice = new_memory_thp(state(job, writer))
    assert advice.change is None and advice.pids == [(4242, "12345")]
    assert advice.blocked is not None and "pid 5151" in advice.blocked
    assert advice.blocked.startswith("python3 (pid 5151) writes 900 MiB/s")
    by_class = new_memory_thp(state(job, workload="checkpoint_io"))
    assert by_class.change is None and by_class.blocked is not None


@pytest.mark.parametrize("mode", ["always", "never"])
def test_an_administrators_thp_mode_other_than_madvise_is_left_alone(mode: str) -> None:
    host = state(torch_job(huge=2000 * MIB, write_rate=0.0, fault_rate=16_000.0))
    host.knobs["thp:enabled"] = mode
    advice = new_memory_thp(host)
    assert advice.change is None and advice.pids == [(4242, "12345")]
