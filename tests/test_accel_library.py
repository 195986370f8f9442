"""The failure rule the NVML and amdsmi backends share (accel/library.py)."""

from __future__ import annotations

import logging

import pytest

from hosttune.agent.sense.accel.base import BackendUnavailable
from hosttune.agent.sense.accel.library import Fault, LibraryBackend, LibraryDevice
from hosttune.agent.sense.vendors import for_backend


class VendorError(Exception):
    def __init__(self, fault: Fault) -> None:
        super().__init__(f"code {fault.value}")
        self.fault = fault


class Fake(LibraryBackend[LibraryDevice]):
    name = "nvidia"
    vendor = for_backend(name)

    def __init__(self) -> None:
        super().__init__()
        self._devices = [LibraryDevice(0, "h0", "0000:18:00.0", 0),
                         LibraryDevice(1, "h1", "0000:2a:00.0", 1)]
        self.samples = 0

    def fault(self, exc: Exception) -> Fault | None:
        return exc.fault if isinstance(exc, VendorError) else None

    def sample(self, values: dict[str, float]) -> None:
        self.samples += 1


def _raise(fault: Fault) -> None:
    raise VendorError(fault)


def test_unsupported_is_not_asked_again() -> None:
    b = Fake()
    dev = b._devices[0]
    assert b._call(dev, "power", _raise, Fault.UNSUPPORTED) is None
    assert b._call(dev, "power", lambda: 5) is None
    assert b._call(dev, "temp", lambda: 40) == 40


def test_transient_is_absent_this_pass_only() -> None:
    b = Fake()
    dev = b._devices[0]
    assert b._call(dev, "power", _raise, Fault.TRANSIENT) is None
    assert b._call(dev, "power", lambda: 5) == 5


def test_lost_device_is_logged_once_and_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    b = Fake()
    dev, other = b._devices
    with caplog.at_level(logging.WARNING, logger="hosttune.accel"):
        assert b._call(dev, "util", _raise, Fault.LOST) is None
        assert b._call(dev, "temp", lambda: 40) is None
    assert dev.lost and not other.lost
    assert b._call(other, "temp", lambda: 41) == 41
    assert [r.getMessage() for r in caplog.records] == [
        "accel: NVIDIA GPU 0 (0000:18:00.0) stopped answering (NVML: code lost); "
        "reporting it as lost"]


def test_fatal_makes_the_backend_unavailable() -> None:
    b = Fake()
    with pytest.raises(BackendUnavailable, match="NVML stopped working: code fatal"):
        b._call(b._devices[0], "util", _raise, Fault.FATAL)


def test_foreign_exception_propagates() -> None:
    b = Fake()
    with pytest.raises(ZeroDivisionError):
        b._call(b._devices[0], "util", lambda: 1 // 0)


def test_reindex() -> None:
    b = Fake()
    b.reindex({"0000:2a:00.0": 7})
    assert [d.index for d in b._devices] == [0, 7]


def test_a_listing_call_says_why_not_and_never_raises_for_the_library(
        caplog: pytest.LogCaptureFixture) -> None:
    """Process listings take the same fault rule as samples, but answer
    (None, why) instead of raising: a listing that cannot be had is shown."""
    b = Fake()
    d0, d1 = b._devices
    assert b._listing_call(d0, "processes", lambda: [7]) == ([7], None)
    assert b._listing_call(d0, "processes", _raise, Fault.TRANSIENT) == (None, "code transient")
    assert b._listing_call(d0, "processes", _raise, Fault.FATAL) == (
        None, "NVML stopped working: code fatal")
    calls: list[int] = []
    assert b._listing_call(d0, "processes", _raise, Fault.UNSUPPORTED) == (None, "not supported")
    # not asked again
    assert b._listing_call(d0, "processes", lambda: calls.append(1)) == (None, "not supported")
    assert calls == []
    with caplog.at_level(logging.WARNING, logger="hosttune.accel"):
        assert b._listing_call(d1, "processes", _raise, Fault.LOST) == (None, "device lost")
    assert d1.lost and "reporting it as lost" in caplog.text
    assert b._listing_call(d1, "other", lambda: 1) == (None, "device lost")
    with pytest.raises(ZeroDivisionError):
        b._listing_call(d0, "x", lambda: 1 // 0)
