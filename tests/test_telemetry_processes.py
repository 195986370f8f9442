"""AI-process detection, on a fixture tree and on real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.processes import (
    cmdline_reasons,
    find_ai_processes,
    own_rss_bytes,
)

TWO = Path(__file__).parent / "fixtures" / "telemetry" / "two-node"


def test_fixture_training_job_found_with_affinity_and_numa() -> None:
    found = find_ai_processes(Host(TWO))
    assert [p.pid for p in found] == [4242]  # not bash, not kthreadd, not the vanished one
    p = found[0]
    assert p.comm == "pt_main_thread"
    assert p.cpus == (0, 1, 2, 3)
    assert p.rss_bytes == 8388608 * 1024
    assert p.anon_huge_bytes == 4194304 * 1024
    assert p.numa_pages == {0: 700100, 1: 305120}
    assert p.accel_devices == ("/dev/nvidia0", "/dev/nvidiactl")
    assert p.cpu_seconds == pytest.approx(1750.0)
    assert "cmdline:torchrun" in p.reasons
    assert "lib:libtorch_cuda.so" in p.reasons and "lib:libnccl.so.2" in p.reasons
    assert "device:/dev/nvidia0" in p.reasons


def test_fd_scan_can_be_turned_off() -> None:
    p = find_ai_processes(Host(TWO), scan_fds=False)[0]
    # /dev/nvidiactl is also mapped, so it is still seen; /dev/nvidia0 only as an fd
    assert p.accel_devices == ("/dev/nvidiactl",)


def test_cmdline_reasons() -> None:
    assert cmdline_reasons(["python", "-m", "torch.distributed.run", "x.py"]) == [
        "cmdline:-m torch.distributed.run"]
    assert cmdline_reasons(["/opt/bin/vllm", "serve"]) == ["cmdline:vllm"]
    assert cmdline_reasons(["python", "-m", "http.server"]) == []
    assert cmdline_reasons(["python", "-m"]) == []


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("child did not start")
        time.sleep(0.02)


@pytest.fixture
def children(tmp_path: Path) -> Iterator[dict[str, int]]:
    lib = tmp_path / "libtorch_cpu.so"
    lib.write_bytes(b"\0" * 8192)
    ready = {name: tmp_path / f"{name}.ready" for name in ("launcher", "lib", "plain")}
    code = {
        # argv carries 'torchrun'; pinned to CPU 0 and has used some CPU time
        # (more than one clock tick) before it says it is ready
        "launcher": "import os,sys,time; os.sched_setaffinity(0,{0}); "
                    "t=time.process_time()\nwhile time.process_time()-t<0.05: pass\n"
                    "open(sys.argv[1],'w').close(); time.sleep(60)",
        # maps a file named like PyTorch's CPU library
        "lib": "import mmap,sys,time; f=open(sys.argv[2],'rb'); "
               "m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); "
               "open(sys.argv[1],'w').close(); time.sleep(60)",
        "plain": "import sys,time; open(sys.argv[1],'w').close(); time.sleep(60)",
    }
    argv = {
        "launcher": [str(ready["launcher"]), "torchrun", "--nproc-per-node=1"],
        "lib": [str(ready["lib"]), str(lib)],
        "plain": [str(ready["plain"])],
    }
    procs = {name: subprocess.Popen([sys.executable, "-c", code[name], *argv[name]])
             for name in code}
    try:
        for name, proc in procs.items():
            _wait_for(ready[name], proc)
        yield {name: proc.pid for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


def test_live_children(children: dict[str, int]) -> None:
    found = {p.pid: p for p in find_ai_processes(Host())}
    launcher = found[children["launcher"]]
    assert "cmdline:torchrun" in launcher.reasons
    assert launcher.cpus == (0,)
    assert launcher.rss_bytes > 0
    assert launcher.cpu_seconds > 0
    if os.path.exists(f"/proc/{children['launcher']}/numa_maps"):
        assert sum(launcher.numa_pages.values()) > 0
    lib = found[children["lib"]]
    assert "lib:libtorch_cpu.so" in lib.reasons
    assert lib.cpus == tuple(sorted(os.sched_getaffinity(0)))
    assert children["plain"] not in found


_TEXT = st.text(alphabet=st.sampled_from(list("0123456789 \t\n:=./-_()NkBVmRSlibtorch\x00é")),
                max_size=300)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.fixed_dictionaries({
    name: _TEXT for name in ("cmdline", "maps", "status", "stat", "smaps_rollup", "numa_maps")
}))
def test_odd_process_files_never_raise(tmp_path: Path, files: dict[str, str]) -> None:
    proc = tmp_path / "proc" / "77"
    proc.mkdir(parents=True, exist_ok=True)
    # a process that always qualifies, so every later file is read
    (proc / "cmdline").write_text("torchrun\0" + files.pop("cmdline"))
    for name, content in files.items():
        (proc / name).write_text(content)
    found = find_ai_processes(Host(tmp_path))
    assert [p.pid for p in found] == [77]
    p = found[0]
    assert p.rss_bytes >= 0 and p.anon_huge_bytes >= 0 and p.cpu_seconds >= 0
    assert all(isinstance(n, int) and n >= 0 for n in p.numa_pages)


def test_own_rss_bytes(tmp_path: Path) -> None:
    rss = own_rss_bytes(Host())
    assert rss is not None
    assert 1 << 20 < rss < 1 << 32
    assert own_rss_bytes(Host(tmp_path)) is None
