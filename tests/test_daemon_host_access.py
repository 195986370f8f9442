"""What the daemon does to its host (`HostTools`) on fixture trees: a plan is
made from the loop's own latest sample (no second sampler, no waiting); the
auto-mode preflight keeps exactly what the transaction would change (the
allowlist is checked in the transaction only); MemTotal has one parser."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from hosttune.agent.sense.errors import ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.memory import mem_total_kb
from hosttune.agent.service import recommend, snapshot
from hosttune.agent.service.daemon.host_access import HostTools
from hosttune.tuners.knobs import Change, Plan

TELEMETRY = Path(__file__).parent / "fixtures" / "telemetry" / "vm-2cpu"


def _no_sampler(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the daemon took a second sampler")


def test_recommend_is_a_function_of_the_held_sample(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "host"
    shutil.copytree(TELEMETRY, root)
    (root / "proc/sys/vm").mkdir(parents=True)
    (root / "proc/sys/vm/swappiness").write_text("60\n")
    tools = HostTools(Host(root), tmp_path / "state", process_every=0)
    try:
        first = tools.sample()
        second = tools.sample()
        rates = tools.rates(first, second)
        monkeypatch.setattr(snapshot, "open_sampler", _no_sampler)
        monkeypatch.setattr(snapshot, "sample_window", _no_sampler)
        monkeypatch.setattr(recommend, "sample_window", _no_sampler)
        started = time.monotonic()
        proposal = tools.recommend("training", second, rates)
        assert time.monotonic() - started < 5
        assert proposal is not None and proposal.workload == "training"
        assert [(c.knob, c.before, c.after) for c in proposal.plan.changes] == [
            ("sysctl:vm.swappiness", "60", "10")]
    finally:
        tools.close()


def test_host_state_takes_the_given_telemetry(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(TELEMETRY, root)
    host = Host(root)
    held = snapshot.sample_window(host, 0.01)
    assert isinstance(held, snapshot.Telemetry)
    state = snapshot.host_state(host, workload="training", telemetry=held)
    assert state.workload == "training" and "telemetry" not in state.gaps
    assert set(held.rates) <= set(state.telemetry)
    assert state.telemetry["mem.total_bytes"] == held.sample.values["mem.total_bytes"]
    none = snapshot.host_state(host, workload="idle", telemetry=None)
    assert none.gaps["telemetry"] == "no sample taken yet" and not none.telemetry


def _knob_host(root: Path) -> Host:
    for name, value in {"vm/swappiness": "60", "vm/dirty_ratio": "20",
                        "vm/dirty_background_ratio": "10", "kernel/numa_balancing": "0"}.items():
        path = root / "proc/sys" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    (root / "proc/meminfo").write_text("MemTotal:       24000000 kB\n")
    return Host(root)


def test_preflight_keeps_what_the_transaction_would_change(tmp_path: Path) -> None:
    root = tmp_path / "host"
    tools = HostTools(_knob_host(root), tmp_path / "state", process_every=0)
    try:
        plan = Plan([Change("sysctl:vm.swappiness", "10", source="expert"),
                     Change("sysctl:vm.dirty_ratio", "90", source="expert"),  # above max 80
                     Change("sysctl:vm.dirty_background_ratio", "10", source="expert"),  # as is
                     Change("sysctl:kernel.numa_balancing", "1", source="expert"),  # admin's
                     Change("sysctl:vm.vfs_cache_pressure", "50", source="expert")],  # no file
                    workload="training", note="n")
        allowlist: dict[str, dict[str, Any]] = {
            "sysctl:vm.swappiness": {"min": 0, "max": 100},
            "sysctl:vm.dirty_ratio": {"min": 5, "max": 80},
            "sysctl:vm.dirty_background_ratio": {"min": 1, "max": 50},
            "sysctl:kernel.numa_balancing": {"min": 0, "max": 1},
            "sysctl:vm.vfs_cache_pressure": {"min": 10, "max": 200}}
        kept = tools.preflight(plan, allowlist,
                               {"sysctl:kernel.numa_balancing": "overrides in test"})
        assert kept.knobs() == ["sysctl:vm.swappiness"]
        assert (kept.workload, kept.note) == ("training", "n")
        # a dry run: nothing written
        assert (root / "proc/sys/vm/swappiness").read_text() == "60\n"
        off_list = tools.preflight(plan, {}, {})
        assert off_list.changes == []
    finally:
        tools.close()


def test_mem_total_has_one_parser(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    host = Host(tmp_path)
    assert mem_total_kb(host) is None  # no file
    (tmp_path / "proc/meminfo").write_text("MemFree: 5 kB\n")
    assert mem_total_kb(host) is None  # no line
    (tmp_path / "proc/meminfo").write_text("MemTotal: lots kB\n")
    with pytest.raises(ParseError, match="MemTotal"):  # odd: said, not a silent None
        mem_total_kb(host)
    (tmp_path / "proc/meminfo").write_text("MemTotal:       24000000 kB\nMemFree: 5 kB\n")
    assert mem_total_kb(host) == 24000000


def test_drift_names_the_knobs_someone_else_changed(tmp_path: Path) -> None:
    root = tmp_path / "host"
    state = tmp_path / "state"
    tools = HostTools(_knob_host(root), state, process_every=0)
    try:
        # Never changed the host: no journal is opened (or created) to say so.
        assert tools.drift() == [] and not (state / "journal.db").exists()
        plan = Plan([Change("sysctl:vm.swappiness", "10"), Change("sysctl:vm.dirty_ratio", "30")],
                    workload="training")
        assert tools.apply(plan, "test").ok
        assert tools.drift() == []
        (root / "proc/sys/vm/swappiness").write_text("35\n")  # an administrator's echo
        assert tools.drift() == ["sysctl:vm.swappiness"]
        (root / "proc/sys/vm/swappiness").write_text("10\n")
        assert tools.drift() == []
    finally:
        tools.close()
