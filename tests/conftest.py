"""Shared test fixtures."""

from __future__ import annotations

import fcntl
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
