"""The model lifecycle through the CLI, on synthetic traces: train, info,
evaluate, classify (a trace and the live host), and serving without
scikit-learn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hosttune.agent.service.cli import main
from tests.traces import write_dataset, write_trace

sklearn = pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("model")
    data = write_dataset(root / "data")
    stem = root / "site" / "workload"
    rc = main(["model", "train", "--data", str(data), "--no-shipped", "-o", str(stem), "--json"])
    assert rc == 0
    return data, stem


def test_train_writes_arrays_schema_and_card(trained: tuple[Path, Path]) -> None:
    _, stem = trained
    npz, js, md = (stem.with_suffix(s) for s in (".npz", ".json", ".md"))
    assert npz.exists() and js.exists() and md.exists()
    schema = json.loads(js.read_text())
    card = schema["card"]
    # 30 s traces: no full 60 s window, so 5/60 is neither trained nor claimed
    assert schema["geometries"] == {"validated": ["1s/10s", "1s/30s", "5s/30s"],
                                    "trained": ["1s/10s"],
                                    "interval_seconds": [1.0, 5.0],
                                    "window_seconds": [10.0, 30.0]}
    assert card["data"]["windows"] == card["data"]["windows_per_geometry"]["1s/10s"]
    assert set(card["scores"]["logistic"]["geometries"]) == {"1s/10s", "1s/30s", "5s/30s"}
    assert card["sklearn_version"] == sklearn.__version__
    assert set(card["scores"]) == {"logistic", "random_forest", "gradient_boosting"}
    assert card["data"]["runs"] == 9 and len(card["data"]["sha256"]) == 64
    assert schema["classes"] == ["busy", "io", "quiet"]
    text = md.read_text()
    assert "Confusion matrix" in text and card["chosen"] in text and "Limitations" in text


def test_info(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, stem = trained
    assert main(["model", "info", "-m", str(stem), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == ["busy", "io", "quiet"] and info["data"]["windows"] > 0
    assert main(["model", "info", "-m", str(stem)]) == 0
    assert "leave-one-run-out" in capsys.readouterr().out


def test_evaluate_cross_validates(trained: tuple[Path, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = trained
    assert main(["model", "evaluate", "--data", str(data), "-c", "logistic", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    s = out["scores"]["logistic"]
    assert s["folds"] == 9 and s["macro_f1"] > 0.9
    assert sum(map(sum, s["confusion"])) == out["windows"]


def test_evaluate_at_the_daemon_geometry(trained: tuple[Path, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Train each fold on 10 s windows of 1 s rows, score 30 s windows of 5 s
    rows (merged from the 1 s traces): one per run fits in 30 rows."""
    data, _ = trained
    assert main(["model", "evaluate", "--data", str(data), "-c", "logistic",
                 "--train-geometry", "1/10", "--interval", "5", "--window", "30",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train_geometries"] == ["1s/10s"] and out["geometries"] == ["5s/30s"]
    s = out["scores"]["logistic"]
    assert out["windows"] == 9 and sum(map(sum, s["confusion"])) == 9
    assert s["trained_on"] == ["1s/10s"] and set(s["geometries"]) == {"5s/30s"}
    assert 0 <= s["geometries"]["5s/30s"]["coverage"] <= 1
    assert main(["model", "evaluate", "--data", str(data), "--interval", "5"]) == 2
    assert "together" in capsys.readouterr().err
    assert main(["model", "evaluate", "--data", str(data), "-g", "5/x"]) == 2
    assert "bad geometry" in capsys.readouterr().err


def test_holdout_and_classify_a_trace(trained: tuple[Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, stem = trained
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    write_trace(fresh / "io-new.csv.gz", "io", "io", rows=25, seed=999, cpus=16, mem=256e9)
    write_trace(fresh / "busy-new.csv.gz", "busy", "busy", rows=25, seed=998, cpus=64)
    assert main(["model", "evaluate", "--holdout", "--data", str(fresh), "-m", str(stem),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["right"] == 2, out
    assert main(["classify", "-m", str(stem), "--trace", str(fresh / "io-new.csv.gz"),
                 "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["label"] == "io" and pred["confidence"] >= 0.5
    assert pred["evidence"] and len(pred["windows"]) == 2
    assert main(["classify", "-m", str(stem), "--trace", str(fresh / "io-new.csv.gz")]) == 0
    assert "evidence:" in capsys.readouterr().out
    # as the daemon would see it: 5 s rows, 20 s windows (25 rows: one window)
    assert main(["classify", "-m", str(stem), "--trace", str(fresh / "io-new.csv.gz"),
                 "-i", "5", "-w", "20", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["label"] == "io" and len(pred["windows"]) == 1
    assert main(["classify", "-m", str(stem), "--trace", str(fresh / "io-new.csv.gz"),
                 "-i", "2.5"]) == 2
    assert "whole multiple" in capsys.readouterr().err
    assert main(["model", "evaluate", "--holdout", "--data", str(fresh), "-m", str(stem),
                 "--interval", "5", "--window", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["right"] == 2


def test_classify_the_live_host_without_sklearn(trained: tuple[Path, Path]) -> None:
    """The serving path (load, features, predict, the classify command) never
    imports scikit-learn: run in a fresh interpreter and look."""
    _, stem = trained
    code = (
        "import sys, json\n"
        "from hosttune.models import classifier as serving, features\n"
        "import numpy as np\n"
        f"m = serving.load({str(stem)!r})\n"
        "p = m.classify(np.full(len(m.features), np.nan))\n"
        "from hosttune.agent.service.cli import main\n"
        f"rc = main(['classify', '-m', {str(stem)!r}, '-w', '1.5', '-i', '0.25', '--json'])\n"
        "assert rc == 0, rc\n"
        "assert 'sklearn' not in sys.modules, 'sklearn imported'\n"
        "assert 'scipy' not in sys.modules, 'scipy imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    pred = json.loads(out.stdout)
    assert pred["label"] in ("busy", "io", "quiet", "unknown")
    assert set(pred["probabilities"]) == {"busy", "io", "quiet"}


def test_missing_sklearn_is_one_clear_line(trained: tuple[Path, Path]) -> None:
    data, _ = trained
    # a module named sklearn that fails to import stands for an absent package
    code = (
        "import sys\n"
        "sys.modules['sklearn'] = None\n"
        "from hosttune.agent.service.cli import main\n"
        f"sys.exit(main(['model', 'train', '--data', {str(data)!r}, '--no-shipped']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "pip install 'hosttune[train]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_model_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "info", "-m", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hosttune: error:") and "no model schema" in err
    assert main(["model", "train", "--data", str(tmp_path / "nodir"), "--no-shipped"]) == 1
    assert "not a directory" in capsys.readouterr().err
