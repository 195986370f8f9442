"""Per-process huge pages through the daemon's own loop, on the real kernel:
hosttuned in auto mode, told nothing, finds a running process that looks
like PyTorch work (a `torchrun` argument) holding memory it touched page by
page, and collapses it while THP stays at the host's mode; a SIGKILL of the
daemon in the middle of a pass leaves a journal that recovery closes.

The daemon's allowlist is emptied in its config, so it changes no knob; the
test checks the THP mode and the vm.* knobs auto mode would otherwise touch
are what they were."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosttune.agent.sense import procmem
from hosttune.agent.sense.host import Host
from hosttune.tuners.allowlist import DEFAULT_ALLOWLIST

sys.path.insert(0, str(Path(__file__).parent))
from daemon_run import RunningDaemon

pytestmark = [pytest.mark.kernel, pytest.mark.daemon, pytest.mark.slow,
              pytest.mark.skipif(procmem.collapse_unsupported(Host()) is not None,
                                 reason=str(procmem.collapse_unsupported(Host())))]

WATCHED = ("/sys/kernel/mm/transparent_hugepage/enabled", "/proc/sys/vm/swappiness",
           "/proc/sys/vm/dirty_ratio", "/proc/sys/vm/dirty_background_ratio",
           "/sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan")
HOLDER = ["-m", "hosttune.models.workloads.hold_anon"]


def config(*, allow: tuple[str, ...] = (), **collapse: object) -> str:
    lines = ["mode: auto", "interval: 0.5", "window: 4", "collapse:"]
    lines += [f"  {k}: {v}" for k, v in collapse.items()] or ["  enabled: true"]
    lines += ["allowlist:"] + [f'  "{knob}": false' for knob in sorted(DEFAULT_ALLOWLIST)
                               if knob not in allow]
    return "\n".join(lines) + "\n"


@pytest.fixture
def unchanged(kernel_lock: None) -> Iterator[None]:
    before = {p: Path(p).read_text() for p in WATCHED}
    yield
    assert {p: Path(p).read_text() for p in WATCHED} == before


@pytest.fixture
def holder(request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str]]:
    mib = getattr(request, "param", 512)
    # "torchrun" among its arguments: the sampler counts it as AI work
    proc = subprocess.Popen([sys.executable, *HOLDER, str(mib), "torchrun"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    yield proc
    proc.kill()
    proc.wait()


def _huge_fraction(pid: int) -> float:
    roll = procmem.rollup(Host(), pid)
    assert roll is not None
    return roll.huge_kb / roll.anon_kb


def test_auto_mode_collapses_a_running_job(tmp_path: Path, unchanged: None,
                                           holder: subprocess.Popen[str]) -> None:
    assert _huge_fraction(holder.pid) < 0.05 or "[always]" in Path(WATCHED[0]).read_text()
    d = RunningDaemon(tmp_path, config(max_mib_per_pass=128))
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _huge_fraction(holder.pid) < 0.9:
            time.sleep(0.5)
            assert d.proc.poll() is None, d.log()
        assert _huge_fraction(holder.pid) >= 0.9, d.log()
        # the pass that crossed 90 % may still be finishing its last range:
        # the runner counts a pass when it returns
        deadline = time.monotonic() + 10
        while True:
            runner = d.status()["collapse"]["runner"]
            if runner["collapsed_mib"] >= 0.9 * 512 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert runner["collapsed_mib"] >= 0.9 * 512 and runner["passes"] >= 4  # 128 MiB each
        history = json.loads(d.cli("history", "--json").stdout)
        passes = [t for t in history if t["kind"] == "collapse"]
        assert passes and all(t["state"] == "committed" for t in passes)
        assert any(s["knob"] == f"procthp:pid:{holder.pid}" and s["state"] == "collapsed"
                   for t in passes for s in t["changes"])
        assert not [t for t in history if t["kind"] == "apply" and t["state"] == "committed"]
    finally:
        d.stop()
        d.close()


def test_a_job_started_after_the_daemon_is_found_within_seconds(tmp_path: Path,
                                                                unchanged: None) -> None:
    """The regular process scan is a minute apart (interval 0.5 s here: 120
    samples); a job that starts later is found once it holds its memory,
    looked at twice (its write rate) and collapsed within seconds."""
    d = RunningDaemon(tmp_path, config())
    job = None
    try:
        d.wait_for("READY=1", 30)
        time.sleep(2.0)  # past the daemon's first scan
        job = subprocess.Popen([sys.executable, *HOLDER, "512", "torchrun"],
                               stdout=subprocess.PIPE, text=True)
        assert job.stdout is not None and job.stdout.readline().strip() == "ready"
        ready = time.monotonic()
        while time.monotonic() - ready < 45 and _huge_fraction(job.pid) < 0.9:
            time.sleep(0.25)
            assert d.proc.poll() is None, d.log()
        took = time.monotonic() - ready
        assert _huge_fraction(job.pid) >= 0.9, d.log()
        assert took < 30, f"collapsed {took:.1f} s after the job was ready: {d.log()}"
    finally:
        if job is not None:
            job.kill()
            job.wait()
        d.stop()
        d.close()


@pytest.mark.parametrize("holder", [3072], indirect=True)
def test_sigkill_of_the_daemon_mid_pass(tmp_path: Path, unchanged: None,
                                        holder: subprocess.Popen[str]) -> None:
    d = RunningDaemon(tmp_path, config(max_mib_per_pass=8192, max_seconds_per_pass=30))
    journal = d.state / "journal.db"
    killed = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if journal.exists():
                with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1) as db:
                    try:
                        row = db.execute("SELECT COUNT(*) FROM step WHERE state='collapsing'"
                                         ).fetchone()
                    except sqlite3.OperationalError:
                        row = (0,)
                if row[0]:
                    d.proc.send_signal(signal.SIGKILL)
                    d.proc.wait()
                    killed = True
                    break
            time.sleep(0.01)
        assert killed, f"no pass seen in flight: {d.log()}"
    finally:
        d.close()
    assert holder.poll() is None  # the job runs on
    # The next hosttune that may write recovers first: nothing to undo, the
    # unfinished step says so, and no knob has a baseline to go back to.
    out = d.cli("rollback", "--baseline")
    assert out.returncode == 0, out.stderr
    history = json.loads(d.cli("history", "--json").stdout)
    (cut,) = [t for t in history if t["kind"] == "collapse" and t["state"] == "recovered"]
    assert [s["state"] for s in cut["changes"]] == ["interrupted"]
    assert "nothing to undo" in cut["changes"][0]["error"]
    assert not [t for t in history if t["state"] == "open"]


@pytest.mark.skipif("[madvise]" not in Path(WATCHED[0]).read_text(),
                    reason="the host's THP mode is not madvise: auto mode leaves it")
def test_thp_always_lasts_as_long_as_the_job_that_keeps_allocating(
        tmp_path: Path, unchanged: None) -> None:
    """A job that keeps touching fresh memory after its pass (the holder's
    `churn`): auto mode, told nothing and with only thp:enabled allowed, sets
    THP `always` for it within seconds, and puts `madvise` back when the job
    ends, each a journalled transaction with its reason."""
    d = RunningDaemon(tmp_path, config(allow=("thp:enabled",)))
    job = None
    try:
        d.wait_for("READY=1", 30)
        job = subprocess.Popen([sys.executable, *HOLDER, "512", "churn", "torchrun"],
                               stdout=subprocess.PIPE, text=True)
        assert job.stdout is not None and job.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and "[always]" not in Path(WATCHED[0]).read_text():
            time.sleep(0.25)
            assert d.proc.poll() is None, d.log()
        assert "[always]" in Path(WATCHED[0]).read_text(), d.log()
        shown = d.cli("status").stdout
        assert f"THP always for the new memory of pid {job.pid}" in shown, shown
        assert "back to thp:enabled=madvise when it ends" in shown
        job.kill()
        job.wait()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and "[madvise]" not in Path(WATCHED[0]).read_text():
            time.sleep(0.25)
        assert "[madvise]" in Path(WATCHED[0]).read_text(), d.log()
        history = json.loads(d.cli("history", "--json").stdout)
        applies = [t for t in history if t["kind"] == "apply" and t["state"] == "committed"]
        made, back = [[s for t in applies for s in t["changes"]
                       if s["knob"] == "thp:enabled" and s["after"] == v]
                      for v in ("always", "madvise")]
        assert made and back, history
        assert any("minor faults/s" in t["reason"] for t in applies), applies
        assert any("the job it was made for has ended" in t["reason"] for t in applies)
    finally:
        if job is not None and job.poll() is None:
            job.kill()
            job.wait()
        d.stop()
        d.close()
