"""`hosttune tune` and `hosttune recommend` end to end on fixture-root hosts:
the real tuners and transactions write files under a temporary tree, so the
machine's own knobs are never at risk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BASELINE = {"vm/swappiness": "60", "vm/dirty_ratio": "20", "vm/dirty_background_ratio": "10",
            "vm/dirty_bytes": "0", "kernel/numa_balancing": "0"}


def fake_host(root: Path) -> Path:
    for key, value in BASELINE.items():
        path = root / "proc/sys" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    thp = root / "sys/kernel/mm/transparent_hugepage"
    thp.mkdir(parents=True)
    (thp / "enabled").write_text("always [madvise] never\n")
    (thp / "defrag").write_text("always defer defer+madvise [madvise] never\n")
    return root


def knob_files(root: Path) -> dict[str, str]:
    out = {k: (root / "proc/sys" / k).read_text().strip() for k in BASELINE}
    out["thp"] = (root / "sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    return out


def hosttune(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hosttune.agent.service.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def env_for(tmp: Path) -> dict[str, str]:
    return {**os.environ, "HOSTTUNE_STATE_DIR": str(tmp / "state"),
            "HOSTTUNE_RUN_DIR": str(tmp / "run"), "HOSTTUNE_CONFIG": str(tmp / "none.yaml")}


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="tune applies only as root")


@needs_root
def test_tune_on_a_fixture_host_keeps_the_best_and_records_outcomes(tmp_path: Path) -> None:
    root = fake_host(tmp_path / "host")
    sw = root / "proc/sys/vm/swappiness"
    dr = root / "proc/sys/vm/dirty_ratio"
    # Throughput peaks at swappiness 30 and dirty_ratio 50: the optimiser has
    # to move both from the baseline (60, 20). (THP is left out: a plain file
    # does not keep the kernel's "[mode]" format once written.)
    objective = (f"s=$(cat {sw}); d=$(cat {dr}); "
                 "echo throughput: $((10000 - (s-30)*(s-30) - (d-50)*(d-50)))")
    proc = hosttune("tune", "--root", str(root), "--objective", objective,
                    "--metric", r"throughput: (\d+)", "--budget", "8", "--workload", "training",
                    "--knobs", "sysctl:vm.swappiness", "--knobs", "sysctl:vm.dirty_ratio",
                    "--json", env=env_for(tmp_path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    report = json.loads(out)
    # the baseline, 8 trials, then the best again and one trial without each
    # knob it changed (pruning); both knobs matter here, so both are kept
    searched = [t for t in report["trials"] if t["origin"] not in ("baseline", "prune")]
    prunes = [t for t in report["trials"] if t["origin"] == "prune"]
    assert len(searched) == 8 and report["trials"][0]["origin"] == "baseline"
    changed = report["trials"][report["trials"].index(prunes[0])]["changed"]
    assert len(prunes) == 1 + len(changed)
    assert report["kept"] and report["best"]["effect"] > 1.0
    assert not report["dropped"] and set(report["needed"]) == set(changed)
    final = knob_files(root)
    assert final["vm/swappiness"] == report["best"]["values"]["sysctl:vm.swappiness"]
    assert not list((tmp_path / "state").glob("tune-session*.json"))
    from hosttune.agent.service.outcome_store import OutcomeStore

    outcomes = OutcomeStore(tmp_path / "state" / "outcomes.db").outcomes("training")
    assert len(outcomes) == len(report["trials"]) - 1


@needs_root
def test_tune_interrupted_by_sigterm_mid_trial_leaves_the_baseline(tmp_path: Path) -> None:
    root = fake_host(tmp_path / "host")
    before = knob_files(root)
    marks = tmp_path / "marks"
    marks.mkdir()
    # Each measurement leaves a mark and then takes a while: the second mark
    # means trial 1 is running with its knobs applied.
    objective = f"mktemp -p {marks} >/dev/null; sleep 20; echo throughput: 1"
    proc = hosttune("tune", "--root", str(root), "--objective", objective,
                    "--metric", r"throughput: (\d+)", "--budget", "5",
                    "--knobs", "sysctl:vm.swappiness", "--knobs", "sysctl:vm.dirty_ratio",
                    env=env_for(tmp_path))
    deadline = time.monotonic() + 60
    while len(list(marks.iterdir())) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "trial 1 never started"
        time.sleep(0.05)
    during = knob_files(root)
    assert during != before  # the trial's values are in place
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "back at its baseline" in err
    assert knob_files(root) == before
    assert not list((tmp_path / "state").glob("tune-session*.json"))


@needs_root
def test_killed_run_is_restored_by_the_next_run(tmp_path: Path) -> None:
    root = fake_host(tmp_path / "host")
    before = knob_files(root)
    marks = tmp_path / "marks"
    marks.mkdir()
    objective = f"mktemp -p {marks} >/dev/null; sleep 20; echo throughput: 1"
    args = ("tune", "--root", str(root), "--objective", objective, "--metric",
            r"throughput: (\d+)", "--budget", "3", "--knobs", "sysctl:vm.dirty_ratio")
    proc = hosttune(*args, env=env_for(tmp_path))
    while len(list(marks.iterdir())) < 2:
        assert proc.poll() is None
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate()
    assert knob_files(root) != before
    dry = hosttune("tune", "--root", str(root), "--objective", "echo throughput: 1",
                   "--metric", r"throughput: (\d+)", "--budget", "1", "--keep", "revert",
                   "--knobs", "sysctl:vm.dirty_ratio", env=env_for(tmp_path))
    out, err = dry.communicate(timeout=60)
    assert dry.returncode == 0, err
    assert "did not finish" in out
    assert knob_files(root) == before


def test_tune_argument_errors_are_one_line(tmp_path: Path) -> None:
    proc = hosttune("tune", "--budget", "3", env=env_for(tmp_path))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.strip() == ("hosttune: error: give exactly one of --objective, --metric-file, "
                           "--prometheus")
    proc = hosttune("tune", "--objective", "true", "--knobs", "sysctl:kernel.panic",
                    "--dry-run", env=env_for(tmp_path))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "sysctl:kernel.panic" in err and "allowlist" in err
    assert "Traceback" not in err


def test_tune_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = fake_host(tmp_path / "host")
    before = knob_files(root)
    proc = hosttune("tune", "--root", str(root), "--objective", "echo throughput: 1",
                    "--metric", r"throughput: (\d+)", "--dry-run", "--workload", "training",
                    env=env_for(tmp_path))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "dry run" in out and "thp:enabled" in out
    assert "first trial (priors)" in out  # training prior: THP always
    assert knob_files(root) == before


def test_recommend_plan_round_trips_and_apply_dry_run_accepts_it(tmp_path: Path) -> None:
    from hosttune.tuners.knobs import Plan

    root = fake_host(tmp_path / "host")
    plan_path = tmp_path / "plan.yaml"
    proc = hosttune("recommend", "--root", str(root), "--workload", "training",
                    "--output", str(plan_path), "--explain", env=env_for(tmp_path))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "thp:enabled: madvise -> always" in out and "source:" in out
    plan = Plan.from_yaml(plan_path.read_text(), str(plan_path))
    assert plan.workload == "training"
    knobs = {c.knob: c for c in plan.changes}
    assert knobs["thp:enabled"].after == "always"
    assert knobs["thp:enabled"].evidence["rule"] == "thp-always-training-prior"
    assert Plan.from_yaml(plan.to_yaml()).to_dict() == plan.to_dict()
    before = knob_files(root)
    apply = hosttune("apply", "--dry-run", "--root", str(root), str(plan_path),
                     env=env_for(tmp_path))
    out, err = apply.communicate(timeout=60)
    assert apply.returncode == 0, err
    assert "always" in out
    assert knob_files(root) == before


def test_recommend_on_this_machine_exits_zero(tmp_path: Path) -> None:
    proc = hosttune("recommend", "--json", "--window", "0.2", env=env_for(tmp_path))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["workload"] in ("unknown", "idle", "training", "inference_serving",
                                "batch_inference", "data_preparation", "checkpoint_io")
    assert "changes" in data and "advice" in data


def test_tune_refuses_a_workload_class_not_in_the_list_before_any_work(tmp_path: Path) -> None:
    root = fake_host(tmp_path / "host")
    before = knob_files(root)
    proc = hosttune("tune", "--root", str(root), "--objective", "exit 3", "--workload", "gaming",
                    "--budget", "1", env=env_for(tmp_path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "unknown workload class 'gaming'" in err + out and "Traceback" not in err
    assert knob_files(root) == before and not (tmp_path / "state").exists()
