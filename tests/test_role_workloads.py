"""The programs added to the role dataset run, briefly, and report what they
did (their tools: jq, zstd, xz, bzip2, from scripts/setup). The JAX and
TensorFlow programs run only where those frameworks are installed: CI does
not install them (as it does not install PyTorch), and they skip there."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.test_workloads import run


def _needs(module: str, install: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} is not installed (pip install '{install}'); "
                                     "scripts/setup leaves it out on purpose")


_JAX = _needs("jax", "jax==0.10.2")
_TF = _needs("tensorflow", "tensorflow-cpu==2.21.0")


@pytest.mark.parametrize(("module", "args", "figure"), [
    ("prep_tokens", ["--files", "1", "--lines", "2000"], "tokens"),
    ("prep_features", ["--files", "2", "--seconds-audio", "2"], "clips"),
    ("prep_jsonl", ["--files", "1", "--lines", "3000"], "passes"),
    ("bg_sqlite", ["--batch", "200", "--queries", "5"], "rows"),
    ("bg_logrotate", ["--rotate-mb", "1"], "rotated"),
    ("bg_scan", ["--files", "40", "--size-kb", "16"], "passes"),
    pytest.param("train_jax", ["--dim", "32", "--seq", "16", "--layers", "1"], "steps",
                 marks=_JAX),
    pytest.param("batch_keras", ["--shards", "2", "--records", "256", "--batch", "128"],
                 "scored", marks=_TF),
    pytest.param("serve_tf", ["--rate", "50"], "served", marks=_TF),
])
def test_role_workload_runs(module: str, args: list[str], figure: str) -> None:
    done = run(module, "--seconds", "2", *args)[figure]
    assert isinstance(done, int) and done >= 1


@_JAX
def test_jax_trainer_learns() -> None:
    # the loss must fall over the run: a jit step that computed but applied
    # no gradient (or the wrong sign) would leave it flat or rising
    rep = run("train_jax", "--seconds", "6", "--dim", "32", "--seq", "16", "--layers", "1",
              "--lr", "0.5")
    first, last = rep["first_loss"], rep["last_loss"]
    assert isinstance(rep["steps"], int) and rep["steps"] >= 20
    assert isinstance(first, float) and isinstance(last, float)
    assert last < first - 0.05


def test_a_missing_framework_is_named_with_its_pip_line() -> None:
    # with jax and tensorflow unimportable the programs stop with code 2 and
    # say what to install, whether or not this host has them
    for module, name in (("train_jax", "jax"), ("serve_tf", "tensorflow")):
        out = subprocess.run(
            [sys.executable, "-c",
             f"import sys; sys.modules[{name!r}] = None; "
             f"from hosttune.models.workloads import {module}; "
             f"sys.exit({module}.main(['--seconds', '1']))"],
            capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 2, out.stderr
        assert f"this workload needs {name}: pip install" in out.stderr
