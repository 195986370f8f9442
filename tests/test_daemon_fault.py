"""SIGKILL in the middle of a transaction the daemon is applying, then a
restart: the host is restored before anything else happens.

hosttuned runs in auto mode with `--root` on a copy of a fixture tree (the
real host is never touched). strace holds the write of the plan's second knob
(`-P` that file, `inject=write:delay_enter`), so the daemon is genuinely
stopped inside the transaction, with the first knob already written, when
the test kills it. The plan reaches the daemon over the control socket
(root's `apply`), the same path and the same transaction code as a plan auto
mode applies on its own."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_run import RunningDaemon

from hosttune.agent.service.client import DaemonClient

pytestmark = pytest.mark.daemon
pytest.importorskip("hosttune.tuners.transaction", reason="tuners not in this build")

FIXTURE = Path(__file__).parent / "fixtures" / "telemetry" / "vm-2cpu"
PLAN = """\
workload: training
changes:
  - knob: sysctl:vm.swappiness
    value: 10
    reason: fault test, first knob
  - knob: sysctl:vm.dirty_ratio
    value: 30
    reason: fault test, second knob (held by strace)
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_sigkill_mid_transaction_then_restart_restores(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(FIXTURE, root)
    vm = root / "proc" / "sys" / "vm"
    vm.mkdir(parents=True)
    (vm / "swappiness").write_text("60\n")
    (vm / "dirty_ratio").write_text("20\n")
    config = "mode: auto\ninterval: 0.5\nwindow: 3\nsocket: {group: root}\n"
    run1 = tmp_path / "run1"
    run1.mkdir()
    d = RunningDaemon(run1, config, args=("--root", str(root)),
                      extra_env={"HOSTTUNE_STATE_DIR": str(tmp_path / "state")})
    tracer = None
    try:
        d.wait_for("READY=1", timeout=20)
        tracer = subprocess.Popen(
            ["strace", "-f", "-qq", "-p", str(d.proc.pid), "-P", str(vm / "dirty_ratio"),
             "-e", "trace=write", "-e", "inject=write:delay_enter=20000000", "-o", "/dev/null"])
        time.sleep(1.5)  # attached to every thread
        result: dict[str, Any] = {}

        def apply() -> None:
            try:
                result["reply"] = DaemonClient(d.socket_path, timeout=60).request(
                    "apply", plan=PLAN, root=str(root))
            except Exception as exc:
                result["error"] = exc

        threading.Thread(target=apply, daemon=True).start()
        deadline = time.monotonic() + 20
        while (vm / "swappiness").read_text().strip() != "10":
            assert time.monotonic() < deadline, (result, d.log())
            time.sleep(0.05)
        time.sleep(0.3)  # now blocked in the write of dirty_ratio
        assert (vm / "dirty_ratio").read_text().strip() == "20"
        d.proc.send_signal(signal.SIGKILL)
        # A killed tracee under strace's delay injection is reaped only once
        # strace lets go of it.
        tracer.kill()
        tracer.wait()
        tracer = None
        d.proc.wait(timeout=10)
    finally:
        if tracer is not None:
            tracer.kill()
            tracer.wait()
        d.close()
    # Half applied, as the crash left it.
    assert (vm / "swappiness").read_text().strip() == "10"

    run2 = tmp_path / "run2"
    run2.mkdir()
    d2 = RunningDaemon(run2, config.replace("auto", "observe"), args=("--root", str(root)),
                       extra_env={"HOSTTUNE_STATE_DIR": str(tmp_path / "state")})
    try:
        d2.wait_for("READY=1", timeout=20)
        # Recovery ran before READY: the host is back where it was.
        assert (vm / "swappiness").read_text().strip() == "60"
        assert (vm / "dirty_ratio").read_text().strip() == "20"
        assert "recovered" in d2.log()
        assert d2.stop() == 0
    finally:
        d2.close()


def test_cli_apply_and_rollback_go_through_the_daemon(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(FIXTURE, root)
    vm = root / "proc" / "sys" / "vm"
    vm.mkdir(parents=True)
    (vm / "swappiness").write_text("60\n")
    (vm / "dirty_ratio").write_text("20\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    d = RunningDaemon(tmp_path, "interval: 0.5\nsocket: {group: root}\n",
                      args=("--root", str(root)))
    try:
        d.wait_for("READY=1", timeout=20)
        res = d.cli("apply", str(plan), "--root", str(root), "--json")
        assert res.returncode == 0, res.stderr
        assert (vm / "swappiness").read_text().strip() == "10"
        assert (vm / "dirty_ratio").read_text().strip() == "30"
        status = d.status()
        assert [a["by"] for a in status["applied"]] == ["uid 0"]  # the daemon did it
        txn = status["applied"][0]["txn"]
        res = d.cli("rollback", f"before:{txn}", "--root", str(root))
        assert res.returncode == 0, res.stderr
        assert "rollback to before transaction" in res.stdout
        assert (vm / "swappiness").read_text().strip() == "60"
        assert (vm / "dirty_ratio").read_text().strip() == "20"
        # History comes from the daemon's journal.
        res = d.cli("history", "--json")
        assert res.returncode == 0, res.stderr
        kinds = [(r["kind"], r["state"]) for r in json.loads(res.stdout)]
        assert kinds == [("apply", "committed"), ("rollback", "committed")], kinds
        assert "sysctl:vm.dirty_ratio: 20 -> 30" in d.cli("history").stdout
        # Asked for another tree, the daemon declines and the CLI works directly.
        other = tmp_path / "other"
        shutil.copytree(root, other)
        res = d.cli("set", "sysctl:vm.swappiness", "30", "--root", str(other))
        assert res.returncode == 0, res.stderr
        assert (other / "proc/sys/vm/swappiness").read_text().strip() == "30"
        assert (vm / "swappiness").read_text().strip() == "60"
        assert len(d.status()["applied"]) == 1
        assert d.stop() == 0
    finally:
        d.close()
