"""The sampler on fixture trees and on this host: every name it emits is in
the catalogue, failures are recorded, rates come out right."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hosttune.agent.sense.accel.base import METRICS
from hosttune.agent.sense.errors import HostReadError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.sample import AIProcess
from hosttune.agent.sense.telemetry.catalogue import CATALOGUE, lookup
from hosttune.agent.sense.telemetry.collector import Collector
from hosttune.agent.sense.telemetry.sampler import (
    Sampler,
    open_sampler,
    rates,
    sample_window,
    system_collectors,
    window_rates,
)

FIX = Path(__file__).parent / "fixtures" / "telemetry"
HOSTS = Path(__file__).parent / "fixtures" / "hosts"
# The telemetry trees, and every host tree other parts keep (topology's
# this-vm, dgx-like-2s8g and odd; the accelerator trees).
TREES = sorted(p for p in FIX.iterdir() if p.is_dir()) + sorted(
    p for p in HOSTS.iterdir() if p.is_dir())


def _uncatalogued(names: object) -> list[str]:
    return [n for n in names if lookup(n) is None]  # type: ignore[attr-defined]


@pytest.mark.parametrize("tree", TREES, ids=[f"{t.parent.name}/{t.name}" for t in TREES])
def test_fixture_names_are_catalogued(tree: Path) -> None:
    with Sampler(Host(tree), process_every=1) as sampler:
        first = sampler.sample()
        second = sampler.sample()
    assert first.values and not _uncatalogued(first.values)
    assert not _uncatalogued(rates(first, second))


def test_live_names_are_catalogued() -> None:
    with Sampler(Host(), process_every=1) as sampler:
        first = sampler.sample()
        time.sleep(0.05)
        second = sampler.sample()
    assert first.errors == {}
    r = rates(first, second)
    assert not _uncatalogued(first.values)
    assert not _uncatalogued(r)
    assert 0.0 <= r["cpu.util"] <= 1.0
    for name in ("cpu.user", "mem.total_bytes", "vmstat.pgfault", "load.1", "net.rx_bytes",
                 "cpu.0.irqs", "ai.processes", "sampler.seconds"):
        assert name in first.values, name


def test_accel_backend_names_are_catalogued() -> None:
    for suffix in METRICS:
        assert lookup(f"accel.0.{suffix}") is not None, suffix


def test_catalogue_entries_are_well_formed() -> None:
    for m in CATALOGUE:
        assert m.kind in ("counter", "gauge") and m.unit and m.source and m.help


class Failing:
    name = "failing"

    def collect(self, values: dict[str, float]) -> None:
        raise HostReadError("/proc/nothing", "cannot read: gone")


class Fixed:
    name = "fixed"

    def __init__(self) -> None:
        self.calls = 0

    def collect(self, values: dict[str, float]) -> None:
        self.calls += 1
        values["vmstat.pgfault"] = 100.0 * self.calls


def test_failed_collector_is_recorded_and_others_run() -> None:
    fixed = Fixed()
    collectors: list[Collector] = [Failing(), fixed]
    sampler = Sampler(Host(FIX / "two-node"), collectors, process_every=0)
    sample = sampler.sample()
    assert sample.errors == {"failing": "/proc/nothing: cannot read: gone"}
    assert sample.values["vmstat.pgfault"] == 100.0
    assert isinstance(fixed, Collector)


def test_process_scan_every_nth_sample_carries_forward() -> None:
    scans: list[float] = []

    def finder(host: Host) -> list[AIProcess]:
        scans.append(time.monotonic())
        return [AIProcess(pid=7, comm="x", cmdline="torchrun", reasons=("cmdline:torchrun",),
                          rss_bytes=1000, anon_huge_bytes=500, cpu_seconds=len(scans) * 1.0)]

    sampler = Sampler(Host(FIX / "two-node"), [Fixed()], process_every=3, find_processes=finder)
    samples = [sampler.sample() for _ in range(7)]
    assert len(scans) == 3  # samples 0, 3, 6
    assert all(s.processes and s.values["ai.processes"] == 1 for s in samples)
    assert samples[0].values["ai.anon_huge_ratio"] == 0.5
    assert "ai.cpu_util" not in samples[0].values
    assert samples[3].values["ai.cpu_util"] > 0
    never = Sampler(Host(FIX / "two-node"), [Fixed()], process_every=0, find_processes=finder)
    assert never.sample().processes == [] and len(scans) == 3


def test_window() -> None:
    sleeps: list[float] = []
    with Sampler(Host(FIX / "two-node"), [Fixed()], process_every=0) as sampler:
        window = sample_window(sampler, 0.01, 3, sleep=sleeps.append)
    assert len(window) == 3
    r = window_rates(window)
    dt = window[-1].monotonic - window[0].monotonic
    assert r["vmstat.pgfault.rate"] == pytest.approx(200.0 / dt)
    with pytest.raises(ValueError):
        sample_window(sampler, 1.0, 0)


def test_default_collectors_on_a_tree_with_nothing(tmp_path: Path) -> None:
    sample = Sampler(Host(tmp_path), process_every=1).sample()
    assert {"cpu", "load", "memory", "vmstat", "disks", "network", "interrupts"} <= set(
        sample.errors)
    assert "pressure" not in sample.errors and "numa" not in sample.errors
    assert sample.processes == []
    assert len(system_collectors(Host(tmp_path))) == 9


def test_open_sampler_adds_the_accelerators() -> None:
    with open_sampler(Host(HOSTS / "nvidia-8gpu"), process_every=0) as sampler:
        assert sampler.accel is not None
        assert sampler.collectors[-1] is sampler.accel
        assert [c.name for c in sampler.collectors[:-1]] == [
            c.name for c in system_collectors(Host(HOSTS / "nvidia-8gpu"))]
        assert sampler.process_every == 0
        assert sampler.notes == []
        sample = sampler.sample()
    assert sample.values["accel.count"] == 8.0
    assert "accel.0.lost" in sample.values


def test_open_sampler_without_accelerators() -> None:
    with open_sampler(Host(HOSTS / "nvidia-8gpu"), accelerators=False,
                      process_every=3) as sampler:
        assert sampler.accel is None
        assert "accel" not in [c.name for c in sampler.collectors]
        assert sampler.process_every == 3
        assert "accel.count" not in sampler.sample().values


def test_open_sampler_says_why_accelerators_are_off() -> None:
    with open_sampler(Host(HOSTS / "nvidia-8gpu"), backends=["cuda"]) as sampler:
        assert sampler.accel is None
        assert len(sampler.notes) == 1
        assert sampler.notes[0].startswith("accelerator telemetry off: ")
        assert "'cuda'" in sampler.notes[0]
        assert "sampler.seconds" in sampler.sample().values


def _stat(root: Path, pid: int, rss_pages: int) -> None:
    (root / "proc" / str(pid)).mkdir(parents=True, exist_ok=True)
    fields = ["S"] + ["0"] * 20 + [str(rss_pages)] + ["0"] * 10
    (root / "proc" / str(pid) / "stat").write_text(f"{pid} (a job) " + " ".join(fields) + "\n")


def test_a_big_newcomer_pulls_the_process_scan_forward(tmp_path: Path) -> None:
    """A job started after the daemon is found when it has loaded, not at the
    next regular scan a minute later; small newcomers and the processes
    already judged cost no scan."""
    import os

    page = os.sysconf("SC_PAGE_SIZE")
    big = (128 << 20) // page
    scans: list[int] = []

    def finder(host: Host) -> list[AIProcess]:
        scans.append(len(scans))
        return []

    _stat(tmp_path, 1, big * 4)  # there before the first scan: judged by it
    sampler = Sampler(Host(tmp_path), [Fixed()], process_every=12, find_processes=finder)
    sampler.sample()
    assert scans == [0]
    _stat(tmp_path, 200, 10)  # a newcomer, small so far: no scan
    sampler.sample()
    assert len(scans) == 1
    _stat(tmp_path, 200, big)  # it has loaded its tensors: the scan comes now
    sampler.sample()
    assert len(scans) == 2 and sampler.early_scans == 1
    sampler.sample()  # judged: not again while it stays
    assert len(scans) == 2
    _stat(tmp_path, 300, big)  # born big (a forked worker): at once
    (tmp_path / "proc" / "200" / "stat").unlink()  # one gone between list and read
    sampler.sample()
    assert len(scans) == 3
    # the regular scan keeps its place: sample 12
    for _ in range(7):
        sampler.sample()
    assert len(scans) == 3
    sampler.sample()
    assert len(scans) == 4 and sampler.early_scans == 2
