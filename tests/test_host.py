from __future__ import annotations

from pathlib import Path

import pytest

from hosttune.agent.sense.errors import HostReadError, HostWriteError, ParseError
from hosttune.agent.sense.host import _KEPT_BUFFER, Host


def test_reads_under_root(tmp_path: Path) -> None:
    (tmp_path / "proc/sys/vm").mkdir(parents=True)
    (tmp_path / "proc/sys/vm/swappiness").write_text("60\n")
    host = Host(tmp_path)
    assert host.read_int("/proc/sys/vm/swappiness") == 60
    assert host.read_str(Host.sysctl_path("vm.swappiness")) == "60"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    host = Host(tmp_path)
    with pytest.raises(HostReadError) as err:
        host.read_text("/proc/meminfo")
    assert "/proc/meminfo" in str(err.value)
    assert str(tmp_path) in str(err.value)
    assert host.read_optional("/proc/meminfo") is None


def test_bad_integer_is_a_parse_error(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys/x").write_text("abc\n")
    with pytest.raises(ParseError, match="/sys/x"):
        Host(tmp_path).read_int("/sys/x")


def test_write_never_creates_a_knob(tmp_path: Path) -> None:
    host = Host(tmp_path)
    with pytest.raises(HostWriteError, match="/proc/sys/vm/nope"):
        host.write_text("/proc/sys/vm/nope", "1")
    assert not (tmp_path / "proc/sys/vm/nope").exists()


def test_sysctl_path_slash_means_dot() -> None:
    assert Host.sysctl_path("net.ipv4.conf.eth0/100.rp_filter") == (
        "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    )
    with pytest.raises(ValueError):
        Host.sysctl_path("vm..x")


def test_resolve_stays_inside_fixture(tmp_path: Path) -> None:
    (tmp_path / "sys/devices/pci0000:00/0000:00:03.0").mkdir(parents=True)
    (tmp_path / "sys/class/net/eth0").mkdir(parents=True)
    (tmp_path / "sys/class/net/eth0/device").symlink_to("../../../devices/pci0000:00/0000:00:03.0")
    host = Host(tmp_path)
    assert host.resolve("/sys/class/net/eth0/device") == "/sys/devices/pci0000:00/0000:00:03.0"
    assert host.readlink_name("/sys/class/net/eth0/device") == "0000:00:03.0"


def test_kept_file_grows_its_buffer_and_rereads(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir(exist_ok=True)
    big = "".join(f"line {i}\n" for i in range(_KEPT_BUFFER // 3))
    (tmp_path / "proc/big").write_text(big)
    kept = Host(tmp_path).kept("/proc/big")
    assert len(big) > 2 * _KEPT_BUFFER
    assert kept.read() == big
    (tmp_path / "proc/big").write_text("short\n")
    assert kept.read() == "short\n"  # same inode, rewritten in place
    exact = "x" * _KEPT_BUFFER
    (tmp_path / "proc/big").write_text(exact)
    assert kept.read() == exact  # a read that fills the buffer exactly
    kept.close()
    with pytest.raises(HostReadError, match="/proc/gone"):
        Host(tmp_path).kept("/proc/gone").read()
