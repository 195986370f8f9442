"""Shared test fixtures."""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FIXTURE_HOSTS = Path(__file__).parent / "fixtures" / "hosts"
# Every test or benchmark that changes a global kernel knob (vm.*, THP,
# hugepages, IRQ affinity, block queues) holds this lock, so two of them never
# snapshot and restore the same knob over each other.
KERNEL_LOCK = "/tmp/hosttune-kernel-tests.lock"


@pytest.fixture
def kernel_lock() -> Iterator[None]:
    with open(KERNEL_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture
def fixture_hosts() -> Path:
    return FIXTURE_HOSTS


TOP = Path(__file__).resolve().parents[1]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def project_version() -> str:
    match = re.search(r'^version = "(.+)"', (TOP / "pyproject.toml").read_text(), re.M)
    assert match
    return match.group(1)


@pytest.fixture(scope="session")
def built_deb() -> Path:
    """dist/hosttune_VERSION_all.deb from packaging/build-deb (the committed
    tree), built once per session for every test that needs it."""
    missing = [t for t in ("dpkg-buildpackage", "dh", "lintian")
               if shutil.which(t, path=SYSTEM_PATH) is None]
    if missing:
        pytest.skip(f"packaging tools not installed (scripts/setup test installs them): "
                    f"{missing}")
    res = subprocess.run([str(TOP / "packaging" / "build-deb")], capture_output=True, text=True,
                         env={"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"}, cwd=TOP, timeout=300,
                         check=False)
    if res.returncode != 0:
        pytest.fail(f"packaging/build-deb exited {res.returncode}:\n{res.stdout[-3000:]}\n"
                    f"{res.stderr[-3000:]}")
    path = TOP / "dist" / f"hosttune_{project_version()}_all.deb"
    assert path.is_file()
    return path
