"""The knob commands on a fixture host tree (--root) with a state dir in tmp."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hosttune.agent.service.cli import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "host"
    for name, value in {"vm/swappiness": "60", "vm/dirty_ratio": "20"}.items():
        (root / "proc/sys" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "proc/sys" / name).write_text(value + "\n")
    (root / "sys/kernel/mm/transparent_hugepage").mkdir(parents=True)
    (root / "sys/kernel/mm/transparent_hugepage/enabled").write_text("always [madvise] never\n")
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "etc/sysctl.d/80-site.conf").write_text("vm.dirty_ratio = 20\n")
    monkeypatch.setenv("HOSTTUNE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HOSTTUNE_CONFIG", str(tmp_path / "hosttune.yaml"))
    return root


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_set_show_history_rollback(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = ["--root", str(env)]
    code, out, _ = run(capsys, "set", "sysctl:vm.swappiness", "10", "--dry-run", *root)
    assert code == 0 and "sysctl:vm.swappiness: 60 -> 10 [would change]" in out
    assert (env / "proc/sys/vm/swappiness").read_text() == "60\n"
    code, out, _ = run(capsys, "set", "sysctl:vm.swappiness", "10", "--reason", "dataset", *root)
    assert code == 0 and "transaction 1: 1 knob(s) changed" in out
    assert (env / "proc/sys/vm/swappiness").read_text().strip() == "10"
    code, out, _ = run(capsys, "show", "sysctl:vm.swappiness", "sysctl:vm.dirty_ratio",
                       "thp:enabled", "--json", *root)
    rows = {r["knob"]: r for r in json.loads(out)}
    assert rows["sysctl:vm.swappiness"]["owner"] == "hosttune"
    assert rows["sysctl:vm.swappiness"]["last_change"]["reason"] == "dataset"
    assert rows["sysctl:vm.dirty_ratio"]["owner"] == (
        "admin: /etc/sysctl.d/80-site.conf:1 (vm.dirty_ratio = 20)")
    assert rows["thp:enabled"] == {"knob": "thp:enabled", "value": "madvise",
                                   "owner": "default", "last_change": None}
    code, out, _err = run(capsys, "set", "sysctl:vm.dirty_ratio", "30", *root)
    assert code == 1 and "owned by the administrator" in out
    code, out, _ = run(capsys, "history", "--json")
    txns = json.loads(out)
    assert [(t["txn"], t["state"]) for t in txns] == [(1, "committed"), (2, "refused")]
    assert txns[0]["changes"][0]["before"] == "60" and txns[0]["uid"] == os.getuid()
    code, out, _ = run(capsys, "history")
    assert "sysctl:vm.swappiness: 60 -> 10 [verified]  (dataset)" in out
    code, out, _ = run(capsys, "rollback", "--baseline", "--dry-run", *root)
    assert code == 0 and "sysctl:vm.swappiness: 10 -> 60 [would change]" in out
    assert (env / "proc/sys/vm/swappiness").read_text().strip() == "10"
    code, out, _ = run(capsys, "rollback", "--baseline", "--json", *root)
    assert code == 0 and json.loads(out)["ok"]
    assert (env / "proc/sys/vm/swappiness").read_text().strip() == "60"


def test_apply_plan_file(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("workload: training\nchanges:\n  - knob: thp:enabled\n    value: always\n"
                    "    reason: torch tensors\n  - knob: sysctl:vm.swappiness\n    value: 5\n")
    code, out, _ = run(capsys, "apply", str(plan), "--root", str(env))
    assert code == 0, out
    assert "thp:enabled: madvise -> always [applied]  (torch tensors)" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("changes:\n  - knob: thp:enabled\n    value: never\n  - value: 3\n")
    code, out, err = run(capsys, "apply", str(bad), "--root", str(env))
    assert code == 1 and "Traceback" not in err
    assert f"{bad}: line 4" in err and "no `knob:`" in err


def test_errors_are_one_line(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rollback", "--root", str(env))
    assert code == 1 and err.strip() == "hosttune: error: give a transaction id or --baseline"
    code, _out, err = run(capsys, "set", "nope", "1", "--root", str(env))
    assert code == 1 and "family:key" in err and "Traceback" not in err


def _as_nobody(tmp_path: Path, args: list[str]) -> tuple[int, str]:
    """Run the CLI in a forked child that has dropped to nobody (the venv and
    the interpreter need not be readable by nobody: nothing is exec'd)."""
    nobody = pwd.getpwnam("nobody")
    log = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.txt"
    log.touch(mode=0o666)
    log.chmod(0o666)
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 99
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = sys.stderr = open(fd, "w", closefd=False)  # noqa: SIM115
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            code = main(args)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), log.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_non_root_is_refused_before_anything(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest's tmp dirs are root-only: nobody needs a directory it can enter.
    base = Path(tempfile.mkdtemp(prefix="hosttune-nobody-"))
    try:
        base.chmod(0o755)
        root = base / "host"
        shutil.copytree(env, root)
        state = base / "state"
        monkeypatch.setenv("HOSTTUNE_STATE_DIR", str(state))
        monkeypatch.setenv("HOSTTUNE_CONFIG", str(base / "hosttune.yaml"))
        code, out = _as_nobody(base, ["set", "sysctl:vm.swappiness", "10", "--root", str(root)])
        assert code == 1, out
        assert out.startswith("hosttune: error: only root changes the host (this is uid 65534)")
        # Nothing touched: no journal, no state directory, the knob as it was.
        assert not state.exists()
        assert (root / "proc/sys/vm/swappiness").read_text() == "60\n"
        code, out = _as_nobody(base, ["set", "sysctl:vm.swappiness", "10", "--dry-run",
                                      "--root", str(root)])
        assert code == 0, out
        assert "sysctl:vm.swappiness: 60 -> 10 [would change]" in out
        assert not state.exists()
    finally:
        shutil.rmtree(base)


def test_a_plan_that_is_not_text_is_one_line(env: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Random bytes as a plan: one line naming the file, rc 1, nothing changed;
    the same for `outcomes record --plan` and for a plan that is a directory."""
    junk = tmp_path / "junk.plan"
    junk.write_bytes(bytes(range(128, 256)) * 4 + b"\x00\xff\xfe")
    for dry in ([], ["--dry-run"]):
        code, out, err = run(capsys, "apply", str(junk), "--root", str(env), *dry)
        assert code == 1 and out == ""
        assert err.count("\n") == 1 and err.startswith(f"hosttune: error: {junk}: ")
        assert "not UTF-8 text (byte 0x80 at offset 0)" in err
    assert (env / "proc/sys/vm/swappiness").read_text() == "60\n"
    code, _, err = run(capsys, "outcomes", "record", "-w", "training", "--effect", "1.1",
                       "--plan", str(junk))
    assert code == 1 and err.count("\n") == 1 and f"{junk}: not UTF-8 text" in err
    code, _, err = run(capsys, "apply", str(tmp_path), "--root", str(env))
    assert code == 1 and err.strip() == f"hosttune: error: {tmp_path}: is a directory, not a file"
    code, _, err = run(capsys, "apply", str(tmp_path / "absent.yaml"), "--root", str(env))
    assert code == 1 and err.strip() == f"hosttune: error: {tmp_path / 'absent.yaml'}: no such file"
    # and as an admin runs it: no traceback from the installed entry point
    exe = Path(sys.executable).parent / "hosttune"
    res = subprocess.run([str(exe), "apply", str(junk), "--dry-run", "--root", str(env)],
                         check=False, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [err_line(junk)]


def err_line(path: Path) -> str:
    return (f"hosttune: error: {path}: not UTF-8 text (byte 0x80 at offset 0); "
            "expected a YAML file")
