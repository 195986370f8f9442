"""Per-process accelerator use in the role evidence: a process a vendor
backend lists counts as using an accelerator though none of its device
files is visible (a container's own /dev, a device opened through another
path), and `hosttune status` shows what the vendor reported of it.

Fixture /proc trees are built here (tests/test_proc_evidence.py's Tree);
the vendor side is the fake pynvml module of tests/test_accel_processes.py
behind the real NvidiaBackend and AccelCollector."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from hosttune.agent.sense.accel import select
from hosttune.agent.sense.accel.base import AccelProcess, ProcessListing
from hosttune.agent.sense.accel.nvidia import NvidiaBackend
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.proc_evidence import ProcessScanner, evidence_row
from hosttune.agent.service.daemon.host_access import HostTools
from hosttune.agent.service.render.roles import verdict_dict, verdict_lines
from hosttune.agent.service.render.status import status_lines
from hosttune.models import roles as R
from tests.test_accel_processes import Gpu, make_pynvml
from tests.test_proc_evidence import HZ, IO, TORCH_MAPS, Tree, torch_job
from tests.test_roles_display import TELEMETRY

GB = 1 << 30


class Listings:
    """A per-process listing source that counts how often it is asked."""

    def __init__(self, *procs: AccelProcess, problems: dict[str, str] | None = None) -> None:
        self.procs = list(procs)
        self.problems = problems or {}
        self.calls = 0

    def __call__(self) -> ProcessListing:
        self.calls += 1
        return ProcessListing(tuple(self.procs), dict(self.problems))


def test_a_listed_process_without_device_files_uses_an_accelerator(tmp_path: Path) -> None:
    # models: a host running a containerised job (pid 700: idle between
    # steps, no framework visible in its maps, its /dev/nvidia* opened in
    # the container's own /dev so no fd reads as a device here), a process
    # the backend listed that exited before the scan (pid 701), and a local
    # CUDA program whose device fd is visible but that NVML did not list
    # (pid 702, e.g. another container's pid namespace)
    t = Tree(tmp_path)
    t.proc(700, "python", io=IO, fds={"0": "/null", "3": "/ctr/dev/nvidia0"})
    t.proc(702, "cuda_app", io=IO, maps=TORCH_MAPS, fds={"3": "/dev/nvidia0"})
    t.proc(900, "sshd", io=IO)  # an idle process nobody lists
    source = Listings(
        AccelProcess(700, 0, 12 * GB, pci_address="0000:18:00.0", util=0.6, mem_util=0.2,
                     backend="nvidia"),
        AccelProcess(700, 1, 12 * GB, pci_address="0000:2a:00.0", util=0.5, backend="nvidia"),
        AccelProcess(701, 0, GB, backend="nvidia"))
    clock = [0.0]
    scanner = ProcessScanner(Host(tmp_path), accel=source, clock=lambda: clock[0])
    found = {ev.stat.pid: ev for ev in scanner.scan()}
    assert 900 not in found  # idle and unlisted: not a candidate
    assert 701 not in found  # exited: the listing's pid is dropped, nothing raises
    ev = found[700]
    assert ev.fds.get("accel", 0) == 0 and ev.uses_accel
    row = evidence_row(0.0, ev, HZ)
    assert row["fd_accel"] == 1  # max(device fds 0, listed 1)
    assert (row["accel_listed"], row["accel_mem"], row["accel_util"], row["accel_devs"]) == (
        1, 24 * GB, pytest.approx(1.1), "0;1")
    local = evidence_row(0.0, found[702], HZ)
    assert (local["fd_accel"], local["accel_listed"], local["accel_util"]) == (1, 0, "")

    # the listing is asked at a full scan at most every 10 s
    clock[0] = 5.0
    scanner.scan()
    assert source.calls == 1
    clock[0] = 10.5
    scanner.scan()
    assert source.calls == 2

    # pid 700 exits and its number is reused before the next listing: the
    # newcomer is not taken for the listed process
    clock[0] = 12.0
    t.proc(700, "bash", io=IO, start=5000)
    again = {ev.stat.pid: ev for ev in scanner.scan()}
    assert source.calls == 2
    assert 700 not in again or not again[700].accel


def test_a_listing_that_cannot_be_had_is_said(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.proc(700, "python", io=IO)
    scanner = ProcessScanner(Host(tmp_path), accel=Listings(
        problems={"nvidia accel1": "compute processes: no permission"}))
    assert all(not ev.accel for ev in scanner.scan())
    assert scanner.accel_problem == "nvidia accel1: compute processes: no permission"
    none = ProcessScanner(Host(tmp_path), accel=lambda: None)
    none.scan()
    assert none.accel_problem == "no accelerator view"


def test_job_window_and_roles_render_carry_the_device_use(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    source = Listings(AccelProcess(100, 3, 8 * GB, util=0.9, backend="nvidia"))
    scanner = ProcessScanner(Host(tmp_path), accel=source, accel_every=0.0)
    scans = []
    for step in range(4):
        t.proc(100, "python", maps=TORCH_MAPS, utime=50 * step, io=IO)
        t.proc(101, "python", pgrp=100, maps=TORCH_MAPS, utime=20 * step, io=IO)
        scan = R.Scan(t=float(step), host_busy=step, host_total=2.0 * step, ncpu=2,
                      uptime=100.0 + step)
        t.uptime(100.0 + step)
        for ev in scanner.scan():
            scan.procs[ev.key] = evidence_row(float(step), ev, HZ)
        scans.append(scan)
    job = R.job_window(scans, 100, HZ)
    assert job is not None
    assert job.accel_listed and job.accel_devices == (3,)
    assert job.accel_mem_bytes == 8 * GB and job.accel_util == pytest.approx(0.9)
    assert job.named()["fd_accel"] == 1.0  # the leader listed, its worker not
    role = R.JobRole(job, "training", "training", 0.9, ())
    verdict = R.HostVerdict("training", 0.9, "python (pgrp 100) is training", (role,))
    d = verdict_dict(verdict, accel_problem="amd accel0: device lost")
    assert d["roles"][0]["accelerator"] == {
        "listed": True, "devices": [3], "memory_bytes": 8 * GB, "util": 0.9, "fd_accel": 1.0}
    assert d["accel_problem"] == "amd accel0: device lost"
    text = "\n".join(verdict_lines(d))
    assert "accelerator: listed on accel 3, 8.00 GiB, 90% busy" in text
    assert "accelerator processes not fully listed: amd accel0: device lost" in text


def _job(root: Path, step: int) -> None:
    # in a container: its device files are not visible, NVML's list is all there is
    torch_job(root, step, write_mib=1, to_disk=False)


def test_status_shows_the_accelerator_use_nvml_lists(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # the daemon's path end to end: fake NVML -> NvidiaBackend ->
    # AccelCollector -> Sampler.accel_processes -> role scanner -> verdict ->
    # the status handler's roles -> `hosttune status` text
    root = tmp_path / "host"
    shutil.copytree(TELEMETRY, root)
    _job(root, 0)
    gpu0 = Gpu(":18:00.0", compute={4242: 20 * GB}, util=[(4242, 1_000, 97, 55)])
    gpu1 = Gpu(":2a:00.0", compute={4242: 20 * GB, 99999: GB},  # 99999: exited
               fail={"nvmlDeviceGetGraphicsRunningProcesses": 4})  # NO_PERMISSION
    monkeypatch.setattr(select, "DEFAULT_FACTORIES",
                        {**select.DEFAULT_FACTORIES,
                         "nvidia": lambda host: NvidiaBackend(make_pynvml([gpu0, gpu1]))})
    tools = HostTools(Host(root), tmp_path / "state", backends=["nvidia"], process_every=5)
    try:
        samples = [tools.sample()]
        rates = []
        for step in range(1, 8):
            time.sleep(0.05)
            _job(root, step)
            samples.append(tools.sample())
            rates.append(tools.rates(samples[-2], samples[-1]))
        tools.classify(samples[-7:], rates[-6:])
        roles = tools.roles()
        # what auto mode's watch of a collapse pass reads of the job (4243: its worker)
        signals = tools.job_signals([4242, 4243])
    finally:
        tools.close()
    assert signals[4242]["accel_busy"] == pytest.approx(0.97)
    assert signals[4243]["accel_busy"] == pytest.approx(0.97)  # the job's, not the process's
    assert roles is not None and roles["verdict"] is not None
    json.dumps(roles)
    job = next(r for r in roles["verdict"]["roles"] if r["pgrp"] == 4242)
    # only the trainer is listed; its worker holds no device
    assert job["accelerator"] == {"listed": True, "devices": [0, 1], "memory_bytes": 40 * GB,
                                  "util": 0.97, "fd_accel": 1.0}
    assert roles["verdict"]["accel_problem"] == (
        "nvidia accel1: graphics processes: no permission")
    text = "\n".join(status_lines({
        "pid": 1, "uptime_s": 60, "version": "test", "mode": "observe", "config": "defaults",
        "workload": {"label": "training", "confidence": 0.9},
        "sampling": {}, "last_sample": None, "recommendation": None, "roles": roles}))
    assert "pgrp 4242" in text
    assert "accelerator: listed on accel 0,1, 40.00 GiB, 97% busy" in text
    assert "not fully listed: nvidia accel1: graphics processes: no permission" in text


def test_the_watch_of_a_pass_reports_the_jobs_accelerators() -> None:
    from hosttune.agent.service.daemon.collapsing import _job_change

    before = {7: {"cpu_seconds": 10.0, "at": 0.0, "stall": None, "accel_busy": 0.55},
              8: {"cpu_seconds": 1.0, "at": 0.0, "stall": None, "accel_busy": None}}
    after = {7: {"cpu_seconds": 40.0, "at": 30.0, "stall": None, "accel_busy": 0.8},
             8: {"cpu_seconds": 2.0, "at": 30.0, "stall": None, "accel_busy": None}}
    text = _job_change(before, after)
    assert "pid 7 used 1.00 CPUs since; its accelerators busy 55% -> 80%" in text
    assert text.count("accelerators") == 1  # pid 8: no backend lists it, nothing said
