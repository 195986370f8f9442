"""`hosttune accel` on the fixture hosts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hosttune.agent.service.cli import main

HOSTS = Path(__file__).parent / "fixtures" / "hosts"


@pytest.fixture(autouse=True)
def no_installed_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOSTTUNE_CONFIG", str(tmp_path / "absent.yaml"))


def test_text_on_the_ascend_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["accel", "--root", str(HOSTS / "ascend-8npu")]) == 0
    out = capsys.readouterr().out
    assert "Accelerators (8; backend: ascend)" in out
    assert "accel6  huawei 910B1  pci 0000:c1:00.0  [huawei #0]" in out
    assert "numa node 6  cpus 144-167" in out
    assert "links: hccs 0-5,7" in out
    assert "nics on node: enp125s0f0" in out
    assert "pid 641248   accel6      113 MiB" in out


def test_text_on_the_nvidia_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["accel", "--root", str(HOSTS / "nvidia-8gpu"), "-b", "sysfs"]) == 0
    out = capsys.readouterr().out
    assert "pcie switch 0000:16:00.0  nics on switch: ibp25s0  nics on node: ibp25s0, ibp59s0" \
        in out
    # no vendor library: what sysfs cannot know prints as "-"
    assert "  accel0       -        -               -/- GiB             -/-      -" in out


def test_json_on_the_mixed_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["accel", "--root", str(HOSTS / "mixed"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backends"] == ["sysfs"]
    assert [d["vendor"] for d in data["devices"]] == [
        "nvidia", "huawei", "cambricon", "amd", "nvidia"]
    assert data["devices"][2]["nics_on_node"] == ["ens4f0np0"]
    assert data["metrics"]["accel.3.power_watts"] == pytest.approx(143.0)
    assert data["metrics"]["accel.count"] == 5
    assert "accel.0.power_watts" not in data["metrics"]
    # sysfs alone cannot say which process holds a device: said, not hidden
    assert data["processes"] == []
    assert data["process_problems"] == {"sysfs": "sysfs has no per-process view"}


def test_json_processes_on_the_ascend_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["accel", "--root", str(HOSTS / "ascend-8npu"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["processes"] == [{
        "pid": 641248, "device": 6, "pci_address": "0000:c1:00.0", "memory_bytes": 113 << 20,
        "util": None, "mem_util": None, "name": None, "backend": "ascend"}]
    assert data["process_problems"] == {}


def test_unknown_backend_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["accel", "--root", str(HOSTS / "mixed"), "-b", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "hosttune: error: backends: unknown accelerator backend 'cuda' "
        "(known: nvidia, amd, ascend, sysfs)"]


def test_topology_shows_accelerators(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topology", "--root", str(HOSTS / "ascend-8npu")]) == 0
    out = capsys.readouterr().out
    assert "Accelerators (8; backend: ascend)" in out
    assert "links: hccs 0-5,7" in out
    assert main(["topology", "--root", str(HOSTS / "ascend-8npu"), "--no-accel"]) == 0
    assert "Accelerators (" not in capsys.readouterr().out


def test_topology_json_has_accelerators(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topology", "--root", str(HOSTS / "nvidia-8gpu"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    accels = data["accelerators"]
    assert len(accels) == 8
    assert accels[0]["nics_on_switch"] == ["ibp25s0"]
    assert accels[7]["facts"]["pcie_switch"] == "0000:b8:00.0"


def test_telemetry_shows_each_accelerator(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["telemetry", "--root", str(HOSTS / "mixed")]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  accel")]
    assert len(lines) == 5
    assert lines[3].split() == ["accel3", "37%", "12%", "5.0/64.0", "GiB", "143/300", "48C",
                                "-/-", "gen4", "x16"]
    # sysfs cannot know an NVIDIA GPU's load: shown as unknown, not as 0
    assert lines[0].split() == ["accel0", "-", "-", "-/-", "GiB", "-/-", "-", "-/-",
                                "gen5", "x16"]
