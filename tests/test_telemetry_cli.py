from __future__ import annotations

import json
from pathlib import Path

import pytest

from hosttune.agent.service.cli import main

TWO = Path(__file__).parent / "fixtures" / "telemetry" / "two-node"


def test_telemetry_fixture_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["telemetry", "--root", str(TWO), "--json", "--no-accel"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "sample"
    assert data["values"]["node.1.numa_miss"] == 100
    assert data["processes"][0]["cpus"] == "0-3"
    assert data["processes"][0]["numa_pages"] == {"0": 700100, "1": 305120}


def test_telemetry_fixture_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["telemetry", "--root", str(TWO), "--no-accel"]) == 0
    out = capsys.readouterr().out
    assert "pid 4242" in out and "cpus 0-3" in out and "node1" in out
    assert "Pressure not available" in out


def test_telemetry_live_watch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["telemetry", "--watch", "0.1", "--count", "2", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        data = json.loads(line)
        assert data["kind"] == "rates" and 0 <= data["values"]["cpu.util"] <= 1


def test_telemetry_live_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["telemetry", "--interval", "0.2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rates over 0.20 s") and "CPU      util" in out


def test_telemetry_bad_root(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["telemetry", "--root", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a directory" in err


def test_telemetry_shows_accelerators_through_the_seam(
        capsys: pytest.CaptureFixture[str]) -> None:
    gpu_host = Path(__file__).parent / "fixtures" / "hosts" / "nvidia-8gpu"
    assert main(["telemetry", "--root", str(gpu_host)]) == 0
    out = capsys.readouterr().out
    assert "accel7" in out  # the accel collector ran as one more Collector
    assert "collector cpu failed" in out  # that tree has no /proc: reported, not fatal
