"""Batch jobs on a fixture host: a job's plan while it runs, the baseline
after; jobs sharing the node merged, a conflicting knob left at baseline;
reconcile of jobs whose epilog never ran; the book written atomically; the
class a job declares to Slurm. The real Slurm cluster is tests/test_slurm.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hosttune.agent.sense.errors import ConfigError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.paths import Paths
from hosttune.agent.service import jobs
from hosttune.tuners.journal import Journal
from hosttune.tuners.knobs import Change, Plan

FIXTURES = Path(__file__).parent / "fixtures" / "hosts"
BASE = {"vm/swappiness": "60", "vm/dirty_ratio": "20", "vm/dirty_background_ratio": "10",
        "vm/vfs_cache_pressure": "100"}


def make(tmp_path: Path) -> tuple[jobs.Context, Path]:
    root = tmp_path / "host"
    for name, value in BASE.items():
        path = root / "proc/sys" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    (root / "proc/meminfo").write_text("MemTotal:       24000000 kB\n")
    paths = Paths(state_dir=tmp_path / "state", run_dir=tmp_path / "run",
                  config=tmp_path / "etc/hosttune.yaml")
    return jobs.Context(host=Host(root), paths=paths, lock_timeout=5.0), root


def knobs(root: Path) -> dict[str, str]:
    return {name: (root / "proc/sys" / name).read_text().strip() for name in BASE}


def plan(**values: str) -> Plan:
    return Plan([Change(f"sysctl:vm.{k}", v, reason="test") for k, v in values.items()])


def test_plan_while_running_baseline_after(tmp_path: Path) -> None:
    ctx, root = make(tmp_path)
    result = jobs.start(ctx, "101", workload="training", declared_by="--class",
                        plan=plan(swappiness="10", dirty_ratio="40"), plan_from="test")
    assert result.ok, result.message
    assert knobs(root) == {**BASE, "vm/swappiness": "10", "vm/dirty_ratio": "40"}
    book = json.loads((tmp_path / "state/jobs.json").read_text())
    assert book["baseline"] == {"sysctl:vm.swappiness": "60", "sysctl:vm.dirty_ratio": "20"}
    assert book["jobs"]["101"]["workload"] == "training"
    ended = jobs.end(ctx, "101")
    assert ended.ok and ended.ended == ["101"], ended.message
    assert knobs(root) == BASE
    assert json.loads((tmp_path / "state/jobs.json").read_text())["held"] == {}
    # every move went through the journal: two transactions, both done
    with Journal(ctx.paths.journal) as journal:
        assert [t.state for t in journal.transactions()] == ["committed", "committed"]


def test_shared_node_agreeing_and_conflicting_knobs(tmp_path: Path) -> None:
    ctx, root = make(tmp_path)
    jobs.start(ctx, "1", workload="a", declared_by="t",
               plan=plan(swappiness="10", dirty_ratio="40"), plan_from="t")
    second = jobs.start(ctx, "2", workload="b", declared_by="t",
                        plan=plan(swappiness="10", dirty_ratio="30", vfs_cache_pressure="50"),
                        plan_from="t")
    # agree on swappiness, disagree on dirty_ratio: that one back at baseline, reported
    assert knobs(root) == {**BASE, "vm/swappiness": "10", "vm/vfs_cache_pressure": "50"}
    assert "sysctl:vm.dirty_ratio (1=40, 2=30)" in second.message
    assert jobs.status(ctx.paths)["conflicts"] == {"sysctl:vm.dirty_ratio": {"1": "40", "2": "30"}}
    # the conflict resolves when one of them ends: the other's plan in full
    jobs.end(ctx, "2")
    assert knobs(root) == {**BASE, "vm/swappiness": "10", "vm/dirty_ratio": "40"}
    jobs.end(ctx, "1")
    assert knobs(root) == BASE
    # the baseline is what the knob had before the first job, not between jobs
    assert jobs.status(ctx.paths)["baseline"] == {}


def test_end_of_unknown_job_changes_nothing(tmp_path: Path) -> None:
    ctx, root = make(tmp_path)
    result = jobs.end(ctx, "77")
    assert result.ok and "not recorded" in result.message
    assert knobs(root) == BASE


def test_knob_changed_by_someone_else_is_left_and_reported(tmp_path: Path) -> None:
    ctx, root = make(tmp_path)
    jobs.start(ctx, "5", workload="a", declared_by="t", plan=plan(swappiness="10"), plan_from="t")
    (root / "proc/sys/vm/swappiness").write_text("33\n")  # the admin, by hand
    result = jobs.end(ctx, "5")
    # reported, left, and not a failure of the epilog (that would drain the node)
    assert result.ok and "not applied: sysctl:vm.swappiness" in result.message
    assert knobs(root)["vm/swappiness"] == "33"
    assert jobs.status(ctx.paths)["held"] == {}


def test_reconcile_ends_jobs_the_scheduler_forgot(tmp_path: Path) -> None:
    ctx, root = make(tmp_path)
    jobs.start(ctx, "8", workload="a", declared_by="t", plan=plan(swappiness="10"), plan_from="t")
    jobs.start(ctx, "9", workload="b", declared_by="t", plan=plan(dirty_ratio="30"),
               plan_from="t")

    def broken() -> set[str]:
        raise jobs.JobError("*", "squeue: cannot reach slurmctld")

    refused = jobs.reconcile(ctx, broken)
    assert not refused.ok and "nothing ended" in refused.message
    assert knobs(root)["vm/swappiness"] == "10"
    done = jobs.reconcile(ctx, lambda: {"9", "12"})
    assert done.ended == ["8"]
    assert knobs(root) == {**BASE, "vm/dirty_ratio": "30"}
    assert jobs.reconcile(ctx, lambda: {"9"}).ended == []


def test_refused_knob_reported_rest_applied(tmp_path: Path) -> None:
    ctx, root = make(tmp_path)
    result = jobs.start(ctx, "3", workload="a", declared_by="t",
                        plan=plan(swappiness="10", vfs_cache_pressure="abc"), plan_from="t")
    assert not result.ok and "not applied: sysctl:vm.vfs_cache_pressure" in result.message
    assert knobs(root) == {**BASE, "vm/swappiness": "10"}
    book = jobs.status(ctx.paths)
    assert set(book["held"]) == {"sysctl:vm.swappiness"} and "3" in book["jobs"]
    assert jobs.end(ctx, "3").ok
    assert knobs(root) == BASE
    assert jobs.status(ctx.paths)["problems"] == {}


def test_book_is_replaced_whole_and_corruption_named(tmp_path: Path) -> None:
    ctx, _ = make(tmp_path)
    jobs.start(ctx, "1", workload=None, declared_by="undeclared")
    state = tmp_path / "state"
    assert sorted(p.name for p in state.iterdir() if p.name.startswith(".jobs.")) == []
    (state / "jobs.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"jobs\.json.*not JSON"):
        jobs.end(ctx, "1")


def test_job_ids_and_classes_checked(tmp_path: Path) -> None:
    ctx, _ = make(tmp_path)
    with pytest.raises(jobs.JobError, match="job id"):
        jobs.start(ctx, "../x", workload=None, declared_by="t")
    with pytest.raises(jobs.JobError, match="workload class"):
        jobs.start(ctx, "1", workload="Bad Class", declared_by="t")


def test_class_plan_from_site_file_then_recommender(tmp_path: Path) -> None:
    ctx, root = make(tmp_path)
    site = tmp_path / "etc/jobs.d"
    site.mkdir(parents=True)
    (site / "training.yaml").write_text(
        "changes:\n  - {knob: sysctl:vm.swappiness, value: 15, reason: site}\n")
    seen: list[str] = []

    def recommend(host: Host, workload: str) -> Plan:
        seen.append(workload)
        return Plan([Change("sysctl:vm.dirty_ratio", "35", source="expert"),
                     Change("numa:pid:1", "node=0", source="expert")], workload=workload)

    jobs.start(ctx, "1", workload="training", declared_by="t", recommend=recommend)
    jobs.start(ctx, "2", workload="inference", declared_by="t", recommend=recommend)
    book = jobs.status(ctx.paths)
    assert seen == ["inference"]
    assert book["jobs"]["1"]["plan"] == {"sysctl:vm.swappiness": "15"}
    assert book["jobs"]["1"]["plan_from"].endswith("jobs.d/training.yaml")
    # per-process knobs are the daemon's, once the job's processes run
    assert book["jobs"]["2"]["plan"] == {"sysctl:vm.dirty_ratio": "35"}
    assert knobs(root) == {**BASE, "vm/swappiness": "15", "vm/dirty_ratio": "35"}


def test_scontrol_fields_and_declared_class() -> None:
    line = ("JobId=42 JobName=train UserId=nobody(65534) Comment=nightly run hosttune:training "
            "x Priority=1 Features=fast&hosttune-inference Reservation=(null)\n")
    fields = jobs.scontrol_fields(line)
    assert fields["Comment"] == "nightly run hosttune:training x"
    assert fields["JobId"] == "42"
    assert jobs.class_from_slurm(fields) == ("training", "slurm comment")
    fields.pop("Comment")
    assert jobs.class_from_slurm(fields) == ("inference", "slurm constraint")
    assert jobs.class_from_slurm({"Comment": "(null)", "Features": "(null)"}) == (
        None, "undeclared")


def test_live_jobs_from_squeue_output() -> None:
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> str:
        calls.append(argv)
        return "12\n 13 \n\n"

    assert jobs.slurm_live_jobs(runner) == {"12", "13"}
    assert calls == [["squeue", "--noheader", "--format=%A"]]


def test_class_without_site_plan_takes_the_recommenders_node_knobs(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "this-vm", root, symlinks=True)
    paths = Paths(state_dir=tmp_path / "state", run_dir=tmp_path / "run",
                  config=tmp_path / "etc/hosttune.yaml")
    ctx = jobs.Context(host=Host(root), paths=paths, lock_timeout=5.0)
    before = (root / "proc/sys/vm/swappiness").read_text().strip()
    result = jobs.start(ctx, "11", workload="training", declared_by="--class")
    job = jobs.status(paths)["jobs"]["11"]
    assert job["plan_from"] == "hosttune recommend"
    # what `hosttune recommend --workload training` gives, node-wide knobs only
    assert job["plan"] and all(k.split(":")[0] in jobs.NODE_WIDE_FAMILIES for k in job["plan"])
    assert {s.knob for s in result.steps if s.status == "applied"} == set(job["plan"])
    jobs.end(ctx, "11")
    assert (root / "proc/sys/vm/swappiness").read_text().strip() == before


@pytest.mark.daemon
def test_daemon_start_ends_jobs_slurm_no_longer_lists(tmp_path: Path) -> None:
    """A node rebooted mid-job: its epilog never ran; hosttuned ends the job
    when it starts, asking squeue (here a stand-in that lists another job)."""
    from daemon_run import RunningDaemon

    ctx, root = make(tmp_path)
    ctx = jobs.Context(host=ctx.host, paths=Paths(state_dir=tmp_path / "d/state",
                                                  run_dir=tmp_path / "d/run",
                                                  config=tmp_path / "d/hosttune.yaml"))
    jobs.start(ctx, "31", workload="a", declared_by="t", plan=plan(swappiness="10"),
               plan_from="t")
    assert knobs(root)["vm/swappiness"] == "10"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\necho 77\n")
    (bin_dir / "squeue").chmod(0o755)
    daemon = RunningDaemon(tmp_path / "d", "mode: observe\n", args=("--root", str(root)),
                           extra_env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    try:
        daemon.wait_for("READY=1", 60)
        assert knobs(root) == BASE
        assert "ended 31 (no longer listed)" in daemon.log()
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert jobs.status(ctx.paths)["jobs"] == {}
