"""Backend choice, degradation and the time bound on vendor calls."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from hosttune.agent.sense.accel.base import AccelBackend, AccelDevice, ProcessListing, metric_name
from hosttune.agent.sense.accel.select import AccelCollector
from hosttune.agent.sense.errors import ConfigError, HostCommandError
from hosttune.agent.sense.host import Host, command_record_name

HOSTS = Path(__file__).parent / "fixtures" / "hosts"
NVIDIA = HOSTS / "nvidia-8gpu"


class StallingBackend:
    """A vendor backend for absent hardware whose sample call hangs until
    released, like an NVML call stuck on a wedged driver."""

    name = "nvidia"

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.index = {a: n for n, a in enumerate(addresses)}
        self.release = threading.Event()
        self.stall = True
        self.closed = False

    def devices(self) -> list[AccelDevice]:
        return [AccelDevice(index=self.index[a], vendor="nvidia", backend=self.name,
                            pci_address=a, model="stalling") for a in self.addresses]

    def reindex(self, by_address: Mapping[str, int]) -> None:
        self.index = {a: by_address[a] for a in self.addresses}

    def sample(self, values: dict[str, float]) -> None:
        if self.stall:
            self.release.wait(30)
        for a in self.addresses:
            values[metric_name(self.index[a], "util")] = 0.5

    def processes(self) -> ProcessListing:
        return ProcessListing()

    def close(self) -> None:
        self.closed = True


class BrokenBackend(StallingBackend):
    def sample(self, values: dict[str, float]) -> None:
        raise RuntimeError("vendor library bug")


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hosttune.accel"]


def test_hung_backend_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    stalling = StallingBackend(["0000:18:00.0", "0000:2a:00.0"])
    assert isinstance(stalling, AccelBackend)
    coll = AccelCollector(Host(NVIDIA), ["nvidia"], deadline=0.3,
                          factories={"nvidia": lambda host: stalling})
    with caplog.at_level(logging.WARNING, logger="hosttune.accel"):
        start = time.monotonic()
        first: dict[str, float] = {}
        coll.collect(first)
        took_first = time.monotonic() - start
        start = time.monotonic()
        second: dict[str, float] = {}
        coll.collect(second)
        took_second = time.monotonic() - start
    assert 0.3 <= took_first < 1.0
    assert took_second < 0.1  # the hung call is not waited for again
    for values in (first, second):
        assert "accel.0.util" not in values and "accel.1.util" not in values
        assert values["accel.2.pcie_link_gen"] == 5  # sysfs devices unaffected
        assert values["accel.count"] == 8
    assert log_lines(caplog) == [
        "accel: nvidia backend did not answer within 0.3 s; its metrics are skipped until it does"]

    # the call returns at last; the next pass samples normally again
    stalling.stall = False
    stalling.release.set()
    deadline = time.monotonic() + 5
    third: dict[str, float] = {}
    while "accel.0.util" not in third and time.monotonic() < deadline:
        third = {}
        coll.collect(third)
    assert third["accel.0.util"] == 0.5
    assert log_lines(caplog)[-1] == "accel: nvidia backend answers again"
    assert coll.backend_names == ["nvidia", "sysfs"]


def test_raising_backend_degrades_once(caplog: pytest.LogCaptureFixture) -> None:
    broken = BrokenBackend(["0000:18:00.0"])
    coll = AccelCollector(Host(NVIDIA), factories={"nvidia": lambda host: broken})
    with caplog.at_level(logging.WARNING, logger="hosttune.accel"):
        for _ in range(3):
            values: dict[str, float] = {}
            coll.collect(values)
    assert log_lines(caplog) == [
        "accel: nvidia backend failed (RuntimeError: vendor library bug); "
        "falling back to sysfs for its 1 device"]
    assert broken.closed
    assert values["accel.0.pcie_link_gen"] == 5
    assert [d.backend for d in coll.devices()] == ["sysfs"] * 8


def test_hung_open_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()

    def never_opens(host: Host) -> AccelBackend:
        gate.wait(30)
        raise RuntimeError("unreachable")

    with caplog.at_level(logging.WARNING, logger="hosttune.accel"):
        start = time.monotonic()
        coll = AccelCollector(Host(NVIDIA), open_timeout=0.2,
                              factories={"nvidia": never_opens})
        assert time.monotonic() - start < 1.0
    gate.set()
    assert coll.backend_names == ["sysfs"]
    assert log_lines(caplog) == [
        "accel: nvidia backend unavailable (did not open within 0.2 s); "
        "using sysfs for 8 nvidia devices"]


def test_forced_sysfs_and_unknown_names() -> None:
    def must_not_open(host: Host) -> AccelBackend:
        raise AssertionError("ascend opened although the config says sysfs only")

    coll = AccelCollector(Host(HOSTS / "ascend-8npu"), ["sysfs"],
                          factories={"ascend": must_not_open})
    assert coll.backend_names == ["sysfs"]
    with pytest.raises(ConfigError, match="unknown accelerator backend 'cuda'"):
        AccelCollector(Host(NVIDIA), ["cuda"])


def test_library_backends_are_not_tried_on_fixture_trees() -> None:
    # automatic choice must not ask this machine's NVML about a fixture's GPUs
    coll = AccelCollector(Host(NVIDIA))
    assert coll.backend_names == ["sysfs"]


def test_host_without_accelerators(tmp_path: Path) -> None:
    coll = AccelCollector(Host(tmp_path))
    assert coll.devices() == [] and coll.backend_names == []
    values: dict[str, float] = {}
    coll.collect(values)
    assert values == {"accel.count": 0.0}


def test_host_run_replays_records(tmp_path: Path) -> None:
    assert command_record_name(["npu-smi", "info", "-t", "usages", "-i", "0"]) == \
        "npu-smi_info_-t_usages_-i_0.txt"
    assert command_record_name(["tool", "a b/c"]) == "tool_a%20b%2Fc.txt"
    (tmp_path / "commands").mkdir()
    (tmp_path / "commands" / "tool_x.txt").write_text("out\n")
    host = Host(tmp_path)
    result = host.run(["tool", "x"], timeout=1)
    assert (result.returncode, result.stdout) == (0, "out\n")
    with pytest.raises(HostCommandError, match="command not found") as err:
        host.run(["tool", "y"], timeout=1)
    assert "tool y" in str(err.value)


def test_host_run_live() -> None:
    host = Host()
    result = host.run(["sh", "-c", "echo hi; echo err >&2; exit 3"], timeout=5)
    assert (result.returncode, result.stdout, result.stderr) == (3, "hi\n", "err\n")
    with pytest.raises(HostCommandError, match=r"timed out after 0\.2 s"):
        host.run(["sleep", "5"], timeout=0.2)
    with pytest.raises(HostCommandError, match="command not found"):
        host.run(["hosttune-no-such-command"], timeout=1)


def test_config_list_with_planned_names_and_no_pci_view(tmp_path: Path) -> None:
    # a container without /sys/bus/pci: a listed vendor backend is still tried
    plain = StallingBackend(["0000:65:00.0"])
    plain.stall = False
    coll = AccelCollector(Host(tmp_path), ["intel", "nvidia", "sysfs"],
                          factories={"nvidia": lambda host: plain})
    assert coll.backend_names == ["nvidia"]
    (dev,) = coll.devices()
    assert (dev.index, dev.pci_address, dev.model) == (0, "0000:65:00.0", "stalling")
    values: dict[str, float] = {}
    coll.collect(values)
    assert values == {"accel.0.util": 0.5, "accel.count": 1.0}


def test_unlisted_vendor_backend_is_not_tried() -> None:
    def must_not_open(host: Host) -> AccelBackend:
        raise AssertionError("nvidia opened although the config does not list it")

    coll = AccelCollector(Host(NVIDIA), ["ascend", "sysfs"],
                          factories={"nvidia": must_not_open})
    assert coll.backend_names == ["sysfs"]


def test_this_machine(caplog: pytest.LogCaptureFixture) -> None:
    """The live host (no accelerator on the development and CI machines; on a
    GPU host the same calls must simply find it). Read-only."""
    with caplog.at_level(logging.DEBUG, logger="hosttune.accel"):
        start = time.monotonic()
        coll = AccelCollector(Host())
        values: dict[str, float] = {}
        coll.collect(values)
        coll.close()
        took = time.monotonic() - start
    assert took < 5.0
    assert values["accel.count"] == len(coll.devices())
    if not coll.devices():
        assert coll.backend_names == [] and values == {"accel.count": 0.0}
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
