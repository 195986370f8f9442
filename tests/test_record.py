"""`hosttune record` on the live host: it only reads /proc and /sys."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hosttune.agent.service.cli import main
from hosttune.agent.service.recording import record
from hosttune.models.trace import read_trace


def test_record_a_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.csv.gz"
    rc = main(["record", "-l", "idle", "-i", "0.25", "-o", str(out), "--meta", "run=r1",
               "--json", "--", sys.executable, "-c", "import time; time.sleep(1.6)"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stopped"] == "exited" and summary["exit_code"] == 0
    t = read_trace(out)
    assert t.label == "idle" and t.header["run"] == "r1"
    assert {"host", "kernel", "hosttune", "command", "interval", "started"} <= set(t.header)
    assert "time.sleep(1.6)" in t.header["command"]
    assert 4 <= len(t.rows) == summary["samples"] <= 8
    assert "cpu.util" in t.columns and "cpu.count" in t.columns
    # a metric that appears only after two process scans still has its column
    assert "ai.cpu_util" in t.columns and "cpu.<cpu>.util:max" in t.columns
    # only host-independent names: no per-CPU or per-device column
    assert not [c for c in t.columns if any(p in c for p in (".0.", ".vda.", ".lo."))]
    assert all(b > a for a, b in zip(t.elapsed, t.elapsed[1:], strict=False))


def test_a_failing_command_gives_its_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "t.csv.gz"
    rc = main(["record", "-l", "x", "-i", "0.2", "-o", str(out), "--",
               sys.executable, "-c", "import time, sys; time.sleep(0.5); sys.exit(3)"])
    assert rc == 3
    assert read_trace(out).label == "x"


def test_duration_stops_the_command_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild-pid"
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '30']); "
              f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(30)")
    t0 = time.monotonic()
    result = record(tmp_path / "t.csv.gz", "x", command=[sys.executable, "-c", script],
                    duration=1.0, interval=0.25)
    assert time.monotonic() - t0 < 8
    assert result.stopped == "duration" and result.exit_code == -15
    # the grandchild went with its group (it may linger a moment as a zombie
    # until init reaps it, so look at its state, not just its existence)
    pid = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"grandchild {pid} still running after the recording stopped")


def test_watch_a_pid_until_it_exits(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "1.2"])
    try:
        result = record(tmp_path / "t.csv.gz", "x", pid=proc.pid, interval=0.25, duration=10)
    finally:
        proc.wait()
    assert result.stopped == "pid-gone"
    assert result.rows >= 3


def test_bad_arguments_are_one_line_errors(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "t.csv.gz")
    assert main(["record", "-l", "x", "-o", out]) == 1
    assert "give a command, --pid, or --duration" in capsys.readouterr().err
    assert main(["record", "-l", "x", "-o", out, "--", "/nonexistent/cmd"]) == 1
    assert "/nonexistent/cmd: cannot run" in capsys.readouterr().err
    assert main(["record", "-l", "two words", "-o", out, "-d", "1"]) == 2
    assert main(["record", "-l", "x", "-o", out, "--pid", "999999999"]) == 1
    assert "no such process" in capsys.readouterr().err
    assert main(["record", "-l", "x", "-o", str(tmp_path / "no" / "dir" / "t.gz"),
                 "-d", "1"]) == 1
    assert "cannot write trace" in capsys.readouterr().err
