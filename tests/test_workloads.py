"""The workload suite runs, briefly, and reports what it did. The PyTorch
workloads run only where torch is installed (the `workloads` extra); without
it they say how to install it."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from hosttune.models import workload_classes
from hosttune.models.workloads import LABELS

HAS_TORCH = importlib.util.find_spec("torch") is not None


def run(module: str, *args: str, timeout: float = 120) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", f"hosttune.models.workloads.{module}", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert out.returncode == 0, out.stderr
    report: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["workload"] == module
    return report


def test_every_workload_has_a_label_and_module() -> None:
    for module in LABELS:
        assert importlib.util.find_spec(f"hosttune.models.workloads.{module}") is not None


def test_idle() -> None:
    assert run("idle", "--seconds", "0.3", "--heartbeat", "0.1")["heartbeats"] == 3


def test_checkpoint_writes_and_cleans_up() -> None:
    r = run("checkpoint", "--seconds", "1", "--size-mb", "8", "--chunk-mb", "1")
    assert isinstance(r["checkpoints"], int) and r["checkpoints"] >= 1


def test_dataprep() -> None:
    r = run("dataprep", "--seconds", "1", "--files", "4", "--records", "8", "--workers", "1")
    assert isinstance(r["epochs"], int) and r["epochs"] >= 1


def test_backup() -> None:
    r = run("backup", "--seconds", "0.5", "--files", "10", "--size-kb", "16", "--gzip")
    assert isinstance(r["rounds"], int) and r["rounds"] >= 1


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("make")), reason="no gcc/make")
def test_build() -> None:
    r = run("build", "--seconds", "20", "--files", "2", "--functions", "2", "--jobs", "1")
    assert isinstance(r["builds"], int) and r["builds"] >= 1


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch (the workloads extra) is not installed")
@pytest.mark.parametrize(("module", "args"), [
    ("train", ["--model-size", "small", "--batch", "16", "--workers", "1"]),
    ("serve", ["--model-size", "small", "--rate", "50"]),
    ("batch_infer", ["--model-size", "small", "--batch", "64"]),
])
def test_torch_workloads(module: str, args: list[str]) -> None:
    r = run(module, "--seconds", "1.5", *args)
    assert any(isinstance(v, int | float) and v > 0
               for k, v in r.items() if k in ("steps", "requests", "batches"))


def test_torch_workload_without_torch_says_how_to_install() -> None:
    code = ("import sys; sys.modules['torch'] = None; "
            "from hosttune.models.workloads import train; train.main(['--seconds', '1'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 2
    assert "pip install 'hosttune[workloads]'" in out.stderr and "Traceback" not in out.stderr


def test_the_suite_records_every_class_of_the_one_list_and_no_other() -> None:
    assert set(LABELS.values()) == set(workload_classes.names())
