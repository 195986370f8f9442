"""The per-process roles where an administrator looks: `hosttune status`
(the daemon's last window, kept by HostTools and returned by the status
handler) and `hosttune recommend` (its live classification scans the
processes as `hosttune classify` does)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hosttune.agent.sense.host import Host
from hosttune.agent.service import recommend
from hosttune.agent.service.daemon.host_access import HostTools
from hosttune.agent.service.render.status import roles_lines, status_lines
from hosttune.models.roles import ROLES
from tests.test_proc_evidence import torch_job

TELEMETRY = Path(__file__).parent / "fixtures" / "telemetry" / "vm-2cpu"


def _job(root: Path, step: int) -> None:
    torch_job(root, step, write_mib=8, to_disk=True)


def test_status_shows_the_roles_of_the_last_window(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(TELEMETRY, root)
    _job(root, 0)
    tools = HostTools(Host(root), tmp_path / "state", process_every=5, roles=True)
    try:
        assert tools.roles() == {"problem": None, "at": None, "verdict": None}
        samples = [tools.sample()]
        rates = []
        for step in range(1, 8):
            time.sleep(0.05)
            _job(root, step)
            samples.append(tools.sample())
            rates.append(tools.rates(samples[-2], samples[-1]))
        verdict = tools.classify(samples[-7:], rates[-6:])
        roles = tools.roles()
    finally:
        tools.close()
    assert roles is not None and roles["verdict"] is not None
    judged = roles["verdict"]
    # the roles decide the daemon's verdict; the aggregates are in its reason
    assert verdict.label == judged["label"] and "host aggregates:" in verdict.reason
    job = next(r for r in judged["roles"] if r["pgrp"] == 4242)
    assert job["active"] and job["pids"] == [4242, 4243] and job["frameworks"] == ["torch",
                                                                                    "numpy"]
    assert job["role"] in (*ROLES, "unknown") and job["evidence"]
    assert all(r["active"] for r in judged["roles"])  # status lists the jobs at work
    json.dumps(roles)  # it crosses the control socket as JSON
    text = "\n".join(status_lines({
        "pid": 1, "uptime_s": 60, "version": "test", "mode": "observe", "config": "defaults",
        "workload": {"label": verdict.label, "confidence": verdict.confidence},
        "sampling": {}, "last_sample": None, "recommendation": None, "roles": roles}))
    assert "from its processes:" in text and "pgrp 4242" in text and "evidence:" in text
    assert roles_lines(None) == []  # roles off: nothing said
    assert roles_lines({"problem": None, "at": None, "verdict": None}) == [
        "  per-process roles: none (no window judged yet)"]
    off = HostTools(Host(root), tmp_path / "state2", process_every=5, roles=False)
    try:
        assert off.roles() is None
    finally:
        off.close()


def _classified_beside_a_burner(monkeypatch: pytest.MonkeyPatch, *, own_session: bool
                                ) -> tuple[str | None, str, dict[str, Any] | None, int]:
    """`recommend`'s live classification (no daemon) while a CPU-bound
    pure-Python program runs; with the burner's pid."""
    monkeypatch.setattr(recommend, "_daemon_answer", lambda: (None, "", None))
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                              start_new_session=own_session)
    try:
        time.sleep(0.3)
        label, how, roles = recommend.classify_with_roles(Host(), 1.0)
    finally:
        burner.kill()
        burner.wait()
    return label, how, roles, burner.pid


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs a live /proc")
def test_recommend_classifies_from_the_processes_roles(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    # models: no daemon, and a CPU-bound pure-Python program in its own
    # session: the live classification names its job and its role
    label, how, roles, pid = _classified_beside_a_burner(monkeypatch, own_session=True)
    assert roles is not None, how
    job = next((r for r in roles["roles"] if r["pgrp"] == pid), None)
    assert job is not None, roles
    # no numeric library: it cannot be training, serving or batch inference
    assert job["role"] in ("background", "data_preparation", "checkpoint_io", "unknown")
    assert job["cpu_cores"] > 0.5 and job["frameworks"] == []
    if label is not None:  # the roles named the host's class
        assert label == roles["label"] and "from its processes' roles" in how
    report = recommend.RecommendReport(workload=label or "unknown", how_classified=how,
                                       recommendations=_empty(), plan_yaml="", roles=roles)
    assert report.to_dict()["roles"] == roles
    assert f"pgrp {pid}" in "\n".join(report.render(explain=False))
    # not hosttune itself (its process group may hold the shell that ran it)
    assert os.getpid() not in {pid for r in roles["roles"] for pid in r["pids"]}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs a live /proc")
def test_a_job_sharing_hosttunes_process_group_is_still_judged(monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    # hosttune started from a job's launch script shares the job's process
    # group (the burner inherits ours): the job is judged, hosttune itself is not
    _label, how, roles, burner = _classified_beside_a_burner(monkeypatch, own_session=False)
    assert roles is not None, how
    pids = {pid for r in roles["roles"] for pid in r["pids"]}
    assert burner in pids and os.getpid() not in pids, roles


def _empty() -> Any:
    from hosttune.models.recommender import Recommendations

    return Recommendations(workload="unknown")


def test_metrics_count_ai_processes_by_their_jobs_role() -> None:
    from hosttune.agent.sense.sample import AIProcess
    from hosttune.agent.service.daemon.handlers import _roles_by_process

    def proc(pid: int) -> AIProcess:
        return AIProcess(pid=pid, comm="python", cmdline="python", reasons=(), cpus=(),
                         rss_bytes=0, numa_pages={}, accel_devices=(), cpu_seconds=0.0)

    roles = {"verdict": {"roles": [
        {"pids": [10, 11], "role": "training"},
        {"pids": [20], "role": "unknown"},  # not a series of its own
    ]}}
    procs = [proc(10), proc(11), proc(20), proc(30)]
    assert _roles_by_process(procs, roles, "unassigned") == {"training": 2, "unassigned": 2}
    assert _roles_by_process(procs, None, "unassigned") == {"unassigned": 4}
    assert _roles_by_process([], roles, "unassigned") == {}
