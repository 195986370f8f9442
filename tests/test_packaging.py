"""Build the .deb and .rpm, lint them, and install/remove them for real.

The .deb is installed with dpkg and purged again (root only); the test then
checks the system is back as it was: the package's files, /etc/hosttune,
/var/lib/hosttune, the enablement symlink and (unless it existed before) the
hosttune group are gone. The .rpm is unpacked into a scratch root with
--noscripts, since this Debian host has no RPM database to satisfy.
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

TOP = Path(__file__).resolve().parents[1]
SYSTEM_PATH = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def _version() -> str:
    match = re.search(r'^version = "(.+)"', (TOP / "pyproject.toml").read_text(), re.M)
    assert match
    return match.group(1)


def _run(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in cmd], check=False, capture_output=True, text=True,
        env=SYSTEM_PATH, cwd=TOP, timeout=300,
    )
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t, path=SYSTEM_PATH["PATH"]) is None]
    if missing:
        pytest.skip(f"packaging tools not installed (scripts/setup test installs them): {missing}")


@pytest.fixture(scope="module")
def deb(built_deb: Path) -> Path:
    return built_deb  # conftest's: one build for this module and test_nspawn


@pytest.fixture(scope="module")
def rpm() -> Path:
    _need("rpmbuild", "rpmlint")
    _run(TOP / "packaging" / "build-rpm")
    path = TOP / "dist" / f"hosttune-{_version()}-1.noarch.rpm"
    assert path.is_file()
    return path


def test_deb_lintian_clean(deb: Path) -> None:
    result = _run("lintian", "--fail-on", "error,warning", deb, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.search(r"^[EW]: ", result.stdout, re.M), result.stdout


def test_deb_layout_and_metadata(deb: Path) -> None:
    files = set(re.findall(r"\s\./(\S+)$", _run("dpkg-deb", "-c", deb).stdout, re.M))
    for path in (
        "usr/bin/hosttune",
        "usr/bin/hosttuned",
        "usr/lib/python3/dist-packages/hosttune/agent/service/cli.py",
        "usr/lib/python3/dist-packages/hosttune/models/artifacts/workload-v1.npz",
        "lib/systemd/system/hosttuned.service",
        "usr/lib/sysusers.d/hosttune.conf",
        "usr/lib/tmpfiles.d/hosttune.conf",
        "etc/hosttune/hosttune.yaml",
        "usr/share/man/man1/hosttune.1.gz",
        "usr/share/man/man8/hosttuned.8.gz",
        "usr/share/bash-completion/completions/hosttune",
        "usr/share/hosttune/slurm/prolog",
        "usr/share/hosttune/slurm/epilog",
    ):
        assert path in files, path
    assert _run("dpkg-deb", "-f", deb, "Package").stdout.strip() == "hosttune"
    depends = _run("dpkg-deb", "-f", deb, "Depends").stdout
    # procps: /bin/kill, the unit's ExecReload (not in a minimal Debian)
    for dep in ("python3-psutil", "python3-numpy", "python3-pyroute2", "python3-systemd",
                "python3-yaml", "python3-typer", "procps"):
        assert dep in depends
    conffiles = _run("dpkg-deb", "-I", deb, "conffiles").stdout.split()
    assert conffiles == ["/etc/hosttune/hosttune.yaml"]
    prerm = _run("dpkg-deb", "-I", deb, "prerm").stdout
    assert "hosttune rollback --baseline" in prerm
    postinst = _run("dpkg-deb", "-I", deb, "postinst").stdout
    # the group must exist before tmpfiles creates directories owned by it
    assert postinst.index("systemd-sysusers") < postinst.index("systemd-tmpfiles")
    assert "deb-systemd-helper" in postinst


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_deb_installs_runs_and_purges_clean(deb: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("installing the .deb needs root (CI runs as root)")
    if _run("dpkg-query", "-W", "hosttune", check=False).returncode == 0:
        pytest.skip("hosttune is already installed here; not touching it")
    group_before = _group_exists("hosttune")
    enabled_link = Path("/etc/systemd/system/multi-user.target.wants/hosttuned.service")
    try:
        # deb-systemd-helper/invoke run with no systemd as PID 1: must not fail
        _run("dpkg", "-i", deb)
        status = _run("dpkg-query", "-W", "-f=${Status}", "hosttune").stdout
        assert status == "install ok installed"
        listed = [Path(p) for p in _run("dpkg-query", "-L", "hosttune").stdout.split()]
        # directories (and /lib, a link to one) are shared with other packages
        files = [p for p in listed if not p.is_dir()]
        assert Path("/usr/bin/hosttune") in files
        assert _group_exists("hosttune")
        python = "/usr/bin/python3"
        out = _run(python, "/usr/bin/hosttune", "--version").stdout
        assert out.strip() == f"hosttune {_version()}"
        out = _run(python, "/usr/bin/hosttune", "topology").stdout
        assert "CPUs:" in out
        _run(python, "/usr/bin/hosttuned", "--check-config")
        # the installed code is the package's, not a checkout's or a venv's
        where = _run(python, "-c",
                     "import hosttune.agent.service.cli as m; print(m.__file__)").stdout
        assert where.startswith("/usr/lib/python3/dist-packages/hosttune/")
    finally:
        _run("dpkg", "--purge", "hosttune")
    assert _run("dpkg-query", "-W", "hosttune", check=False).returncode != 0
    left = [p for p in files if p.exists() or p.is_symlink()]
    assert not left, left
    for path in (Path("/etc/hosttune"), Path("/var/lib/hosttune"), Path("/run/hosttune"),
                 Path("/usr/lib/python3/dist-packages/hosttune"), enabled_link):
        assert not path.exists() and not path.is_symlink(), path
    assert _group_exists("hosttune") == group_before


def test_rpm_lint_clean(rpm: Path) -> None:
    result = _run("rpmlint", "-c", "packaging/rpm/rpmlint.toml",
                  "-r", "packaging/rpm/hosttune.rpmlintrc", rpm, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors, 0 warnings" in result.stdout, result.stdout


def test_rpm_metadata_and_scripts(rpm: Path) -> None:
    files = set(_run("rpm", "-qpl", rpm).stdout.split())
    for path in ("/usr/bin/hosttune", "/usr/bin/hosttuned",
                 "/usr/lib/systemd/system/hosttuned.service",
                 "/usr/lib/sysusers.d/hosttune.conf", "/usr/lib/tmpfiles.d/hosttune.conf",
                 "/etc/hosttune/hosttune.yaml", "/usr/share/man/man1/hosttune.1.gz",
                 "/usr/share/man/man8/hosttuned.8.gz"):
        assert path in files, path
    assert not [f for f in files if f.startswith("/usr/local")]
    config = _run("rpm", "-qpc", rpm).stdout.split()
    assert config == ["/etc/hosttune/hosttune.yaml"]
    requires = _run("rpm", "-qpR", rpm).stdout
    for dep in ("python3-psutil", "python3-numpy", "python3-pyroute2", "python3-systemd",
                "python3-pyyaml", "python3-typer", "/usr/bin/kill"):
        assert dep in requires
    scripts = _run("rpm", "-qp", "--scripts", rpm).stdout
    preun = scripts.split("preuninstall scriptlet")[1].split("scriptlet")[0]
    assert "$1 -eq 0" in preun and "hosttune rollback --baseline" in preun
    assert "groupadd -r hosttune" in scripts or "sysusers" in scripts


def test_rpm_payload_installs_and_imports(rpm: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _run("rpm", "--root", root, "--initdb")
    _run("rpm", "--root", root, "-i", "--nodeps", "--noscripts", "--nosignature", rpm)
    assert (root / "etc/hosttune/hosttune.yaml").is_file()
    assert os.access(root / "usr/bin/hosttune", os.X_OK)
    sites = list(root.glob("usr/lib/python3*/site-packages"))
    assert len(sites) == 1
    # the payload's code runs on this Debian's python3 and python3-* libraries
    result = subprocess.run(
        ["/usr/bin/python3", str(root / "usr/bin/hosttune"), "--version"],
        check=False, capture_output=True, text=True, timeout=60,
        env={**SYSTEM_PATH, "PYTHONPATH": str(sites[0])},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"hosttune {_version()}"
