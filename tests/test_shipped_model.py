"""The shipped dataset and model: intact, trained on that dataset, and the
exported arrays give scikit-learn's probabilities on every window of it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hosttune.models import classifier, train, workload_classes
from hosttune.models.trace import read_trace
from hosttune.models.workloads import LABELS

DATA = Path(train.__file__).parent / "data"


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "manifest.json").read_text())
    return data


@pytest.fixture(scope="module")
def dataset() -> train.Dataset:
    return train.load_dataset([DATA])


def test_dataset_is_intact_and_balanced(manifest: dict[str, Any]) -> None:
    runs = manifest["runs"]
    per_class: dict[str, int] = {}
    total = 0
    for r in runs:
        path = DATA / r["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == r["sha256"], r["file"]
        assert read_trace(path).label == r["label"] == LABELS[r["workload"]]
        per_class[r["label"]] = per_class.get(r["label"], 0) + 1
        total += path.stat().st_size
    assert set(per_class) == set(LABELS.values())
    assert min(per_class.values()) >= 5, per_class
    assert total < 5 * 2**20  # small enough to ship in the package
    # every run has its own parameters
    assert len({json.dumps(r["params"], sort_keys=True) + r["workload"] for r in runs}) == len(runs)


def test_shipped_model_was_trained_on_the_shipped_data(dataset: train.Dataset) -> None:
    model = classifier.load()
    card = model.card
    assert card["data"]["sha256"] == dataset.data_hash
    assert model.classes == dataset.classes
    assert set(model.classes) == set(workload_classes.names())
    assert set(card["scores"]) == set(train.CANDIDATES)
    assert card["chosen"] in train.CANDIDATES
    assert model.schema["estimator"]
    assert Path(classifier.shipped_model()).with_suffix(".md").exists()


def test_exported_equals_sklearn_on_the_dataset(dataset: train.Dataset, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    import sklearn

    shipped = classifier.load()
    chosen = shipped.card["chosen"]
    est, imp = train.fit(dataset, chosen)
    schema, arrays = train.export(est, imp, dataset.features)
    train.save(tmp_path / "m", schema, arrays)
    exported = classifier.load(tmp_path / "m")
    want = est.predict_proba(train.apply_impute(dataset.X, imp))
    np.testing.assert_allclose(exported.predict_proba(dataset.X), want, rtol=0, atol=1e-9)
    if sklearn.__version__ == shipped.card["sklearn_version"]:
        # the same data, estimator and seed give the shipped arrays' answers
        np.testing.assert_allclose(shipped.predict_proba(dataset.X), want, rtol=0, atol=1e-9)


def test_wheel_ships_model_data_and_workloads(manifest: dict[str, Any], tmp_path: Path) -> None:
    """package-data really puts the artifacts, the dataset and the workload
    suite into the built wheel (built from a copy: the tree stays clean)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root = Path(train.__file__).resolve().parent.parent
    src = tmp_path / "src"
    src.mkdir()
    for name in ("agent", "models", "tuners"):
        shutil.copytree(root / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "whl"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "whl").glob("hosttune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {f"hosttune/models/data/{r['file']}" for r in manifest["runs"]}
    want |= {"hosttune/models/data/manifest.json",
             "hosttune/models/workloads/train.py", "hosttune/models/classifier.py"}
    want |= {f"hosttune/models/artifacts/{classifier.SHIPPED_NAME}{s}"
             for s in (".npz", ".json", ".md")}
    assert want <= names, sorted(want - names)
