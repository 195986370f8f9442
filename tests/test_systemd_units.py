"""The unit, sysusers and tmpfiles files, checked offline with systemd's own
tools (systemd is not PID 1 here). `systemd-analyze verify` exits 0 even on
errors, so any output at all fails the test; it also does not know capability
names, so those are checked against the running kernel's list."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICE = UNITS / "hosttuned.service"
# Exposure score systemd-analyze security may not exceed (0 best, 10 worst;
# its --threshold counts tenths).
# The unit scores 3.2 ("OK"): what remains are the capabilities it needs and
# the writable /proc/sys and /sys it exists for.
SECURITY_THRESHOLD = 3.5

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed")


def _unit_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with its /usr/bin/hosttuned pointed at the one installed in
    this environment: verify insists that the ExecStart binary exists."""
    exe = Path(sys.executable).parent / "hosttuned"
    assert exe.exists(), exe
    text = SERVICE.read_text() if text is None else text
    unit = tmp_path / "hosttuned.service"
    unit.write_text(text.replace("/usr/bin/hosttuned", str(exe)))
    return unit


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", unit.name],
                          cwd=unit.parent, capture_output=True, text=True, timeout=60,
                          check=False)


@needs_analyze
def test_verify_is_silent(tmp_path: Path) -> None:
    res = _verify(_unit_copy(tmp_path))
    assert res.returncode == 0
    assert res.stdout + res.stderr == ""


@needs_analyze
def test_verify_check_catches_errors(tmp_path: Path) -> None:
    # The gate above is only worth something if a broken unit makes noise.
    broken = SERVICE.read_text().replace("WatchdogSec=30", "WatchdogSec=30\nWatchdogSecs=3")
    res = _verify(_unit_copy(tmp_path, broken))
    assert "WatchdogSecs" in res.stdout + res.stderr


def _kernel_capabilities() -> set[str]:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    capsh = shutil.which("capsh") or "/sbin/capsh"
    out = subprocess.run([capsh, f"--decode={(1 << (last + 1)) - 1:#x}"], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    names = out.strip().split("=", 1)[1].split(",")
    assert len(names) == last + 1
    return {n.upper() for n in names}


def _directives(name: str) -> list[str]:
    return [line.split("=", 1)[1] for line in SERVICE.read_text().splitlines()
            if line.startswith(f"{name}=")]


@pytest.mark.skipif(shutil.which("capsh") is None and not Path("/sbin/capsh").exists(),
                    reason="capsh (libcap2-bin) not installed")
def test_capability_names_exist_in_this_kernel() -> None:
    known = _kernel_capabilities()
    caps = " ".join(_directives("CapabilityBoundingSet")).split()
    assert caps == ["CAP_SYS_ADMIN", "CAP_SYS_NICE", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]
    assert set(caps) <= known
    # Each kept capability is explained in the comment above it.
    text = SERVICE.read_text()
    for cap in caps:
        assert re.search(rf"^#\s+{cap}\s+\S", text, re.M), cap


def test_unit_has_what_the_daemon_relies_on() -> None:
    def one(name: str) -> str:
        values = _directives(name)
        assert len(values) == 1, (name, values)
        return values[0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert int(one("WatchdogSec")) >= 10
    assert one("Restart") == "on-failure"
    assert one("ProtectSystem") == "strict"
    assert set(one("ReadWritePaths").split()) == {"/proc/sys", "/sys", "/var/lib/hosttune"}
    assert one("RuntimeDirectory") == one("StateDirectory") == "hosttune"
    # it would make /etc/hosttune writable to the daemon under ProtectSystem=strict
    assert not _directives("ConfigurationDirectory")
    assert one("NoNewPrivileges") == "yes" and one("PrivateTmp") == "yes"
    assert one("ProtectHome") == "yes"
    # These would make the knobs hosttune exists to change read-only.
    assert not _directives("ProtectKernelTunables") and not _directives("ProtectControlGroups")


@needs_analyze
def test_security_score_under_threshold(tmp_path: Path) -> None:
    unit = _unit_copy(tmp_path)
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=true",
         f"--threshold={round(SECURITY_THRESHOLD * 10)}", unit.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for hosttuned.service: ([\d.]+)", res.stdout)
    assert match, res.stdout[-2000:] + res.stderr
    assert float(match.group(1)) <= SECURITY_THRESHOLD
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_and_tmpfiles_create_group_and_dirs(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(UNITS / "hosttune.sysusers")],
                   check=True, capture_output=True, timeout=30)
    groups = {line.split(":")[0]: int(line.split(":")[2])
              for line in (tmp_path / "etc" / "group").read_text().splitlines()}
    assert "hosttune" in groups
    subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create",
                    str(UNITS / "hosttune.tmpfiles")], check=True, capture_output=True, timeout=30)
    for sub in ("run/hosttune", "var/lib/hosttune"):
        st = (tmp_path / sub).stat()
        assert st.st_mode & 0o777 == 0o750 and st.st_gid == groups["hosttune"], sub
