"""The DEB builds from this checkout, passes lintian, installs, runs, purges
clean. The install happens on a throwaway overlay of this machine
(packaging/check-deb-install), so the host is never changed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
pytestmark = pytest.mark.packaging


def _version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": DEBIAN_PATH, "LC_ALL": "C.UTF-8"}, check=False)


@pytest.fixture(scope="module")
def deb() -> Iterator[Path]:
    for tool in ("dpkg-buildpackage", "dh", "lintian"):
        assert shutil.which(tool, path=DEBIAN_PATH), f"{tool} missing: run scripts/setup test"
    result = _run(["packaging/build-deb"])
    assert result.returncode == 0, result.stdout + result.stderr
    path = ROOT / "dist" / f"hosttune_{_version()}_all.deb"
    assert path.is_file()
    yield path


def test_deb_contents_and_metadata(deb: Path) -> None:
    listing = _run(["dpkg-deb", "-c", str(deb)]).stdout
    for wanted in ("./usr/bin/hosttune", "./usr/bin/hosttuned",
                   "./lib/systemd/system/hosttuned.service",
                   "./usr/lib/sysusers.d/hosttune.conf", "./usr/lib/tmpfiles.d/hosttune.conf",
                   "./etc/hosttune/hosttune.yaml", "./usr/share/man/man1/hosttune.1.gz",
                   "./usr/share/man/man8/hosttuned.8.gz",
                   "./usr/share/bash-completion/completions/hosttune",
                   "./usr/lib/python3/dist-packages/hosttune/models/artifacts/workload-v1.npz",
                   "./usr/lib/python3/dist-packages/hosttune/agent/cli.py"):
        assert wanted in listing, wanted
    info = _run(["dpkg-deb", "-I", str(deb)]).stdout
    depends = re.search(r"^ Depends: (.*)$", info, re.M)
    assert depends is not None
    for pkg in ("python3-numpy", "python3-psutil", "python3-pyroute2", "python3-systemd",
                "python3-typer", "python3-yaml"):
        assert pkg in depends.group(1)
    assert "python3-sklearn" not in depends.group(1)  # only to train: Suggests
    conffiles = _run(["dpkg-deb", "-I", str(deb), "conffiles"]).stdout
    assert "/etc/hosttune/hosttune.yaml" in conffiles
    scripts = _run(["dpkg-deb", "-I", str(deb), "prerm"]).stdout
    assert "hosttune rollback --baseline" in scripts
    assert "deb-systemd-invoke stop 'hosttuned.service'" in scripts


def test_lintian_has_no_error_or_warning(deb: Path) -> None:
    changes = deb.parent / f"hosttune_{_version()}_amd64.changes"
    result = _run(["lintian", "--fail-on", "error,warning", str(changes)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_deb_installs_runs_and_purges_clean(deb: Path) -> None:
    result = _run(["packaging/check-deb-install", str(deb)])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"hosttune {_version()}" in out  # --version from the installed files
    assert "config ok" in out
    assert "nothing left after purge" in out
    # The host itself was never changed.
    assert not Path("/usr/lib/python3/dist-packages/hosttune").exists()


def test_hosttuned_manual_names_every_option() -> None:
    page = (ROOT / "packaging/man/hosttuned.8").read_text()
    help_text = subprocess.run([sys.executable, "-c", "import sys; from hosttune.agent.daemon "
                                "import main; sys.exit(main(['--help']))"],
                               capture_output=True, text=True, check=True).stdout
    for option in set(re.findall(r"--[a-z][a-z-]+", help_text)):
        assert option.replace("-", r"\-") in page, f"hosttuned.8 lacks {option}"
