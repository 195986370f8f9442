"""Exported models give scikit-learn's own predictions and probabilities
(within 1e-9) with numpy alone, on synthetic features and on the shipped
dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")

from hosttune.agent.sense.errors import HosttuneError, ModelError
from hosttune.models import classifier, features, train
from tests.traces import write_trace

SHIPPED_DATA = Path(train.__file__).parent / "data"


def synthetic(n_classes: int, n: int = 240, seed: int = 0) -> train.Dataset:
    rng = np.random.default_rng(seed)
    names = list(features.feature_names())
    F = len(names)
    labels = [f"class{k}" for k in range(n_classes)]
    y = [labels[i % n_classes] for i in range(n)]
    centers = rng.normal(size=(n_classes, F)) * 2
    X = np.array([centers[i % n_classes] for i in range(n)]) + rng.normal(size=(n, F))
    X[rng.random(X.shape) < 0.05] = np.nan
    X[:, names.index("accel_util_mean")] = np.nan  # a feature never seen
    groups = [f"run{i % (n_classes * 4)}" for i in range(n)]
    runs = {g: y[i] for i, g in enumerate(groups)}
    return train.Dataset(X=X, y=y, groups=groups, features=names, runs=runs,
                         files={g: "0" * 64 for g in runs})


def roundtrip(tmp_path: Path, ds: train.Dataset, name: str) -> tuple[Any, np.ndarray,
                                                                      classifier.WorkloadModel]:
    est, imp = train.fit(ds, name)
    schema, arrays = train.export(est, imp, ds.features, card={"note": "test"})
    train.save(tmp_path / f"m-{name}", schema, arrays)
    model = classifier.load(tmp_path / f"m-{name}.npz")
    return est, imp, model


@pytest.mark.parametrize("name", train.CANDIDATES)
@pytest.mark.parametrize("n_classes", [2, 4])
def test_exported_equals_sklearn(tmp_path: Path, name: str, n_classes: int) -> None:
    ds = synthetic(n_classes)
    est, imp, model = roundtrip(tmp_path, ds, name)
    X_test = synthetic(n_classes, n=97, seed=1).X
    want = est.predict_proba(train.apply_impute(X_test, imp))
    got = model.predict_proba(X_test)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert model.predict(X_test) == [str(c) for c in est.predict(train.apply_impute(X_test, imp))]
    assert model.classes == [str(c) for c in est.classes_]


@pytest.mark.parametrize("name", train.CANDIDATES)
def test_explanations_point_at_the_informative_feature(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(3)
    names = list(features.feature_names())
    n = 300
    X = rng.normal(size=(n, len(names)))
    y = ["busy" if v > 0 else "quiet" for v in X[:, names.index("cpu_util_mean")]]
    groups = [f"r{i % 10}" for i in range(n)]
    ds = train.Dataset(X=X, y=y, groups=groups, features=names,
                       runs={g: "x" for g in groups}, files={})
    _, _, model = roundtrip(tmp_path, ds, name)
    x = np.zeros(len(names))
    x[names.index("cpu_util_mean")] = 3.0
    pred = model.classify(x)
    assert pred.best == "busy"
    assert pred.evidence and pred.evidence[0].feature == "cpu_util_mean"
    # contributions are relative to the mean over classes: they sum to zero
    _, contrib = model.explain(x.reshape(1, -1))
    np.testing.assert_allclose(contrib.sum(axis=2), 0.0, atol=1e-9)


def test_low_confidence_is_unknown(tmp_path: Path) -> None:
    ds = synthetic(4)
    _, imp, model = roundtrip(tmp_path, ds, "logistic")
    x = train.apply_impute(ds.X, imp).mean(axis=0)  # between every class centre
    model.unknown_below = 1.01
    pred = model.classify(x)
    assert pred.label == classifier.UNKNOWN and pred.best in model.classes
    model.unknown_below = 0.0
    assert model.classify(x).label == pred.best


def test_missing_features_are_imputed_and_reported(tmp_path: Path) -> None:
    ds = synthetic(3)
    _, imp, model = roundtrip(tmp_path, ds, "random_forest")
    x = ds.X[0].copy()
    x[:] = np.nan
    pred = model.classify(x)
    assert set(pred.imputed) == set(model.features)
    full = model.classify(imp)
    assert pred.probabilities == full.probabilities


def test_other_feature_set_is_refused(tmp_path: Path) -> None:
    ds = synthetic(2)
    est, imp = train.fit(ds, "logistic")
    schema, arrays = train.export(est, imp, ds.features)
    train.save(tmp_path / "m", schema, arrays)
    other = [*ds.features[:-1], "something_else"]
    with pytest.raises(ModelError, match="another feature set"):
        classifier.load(tmp_path / "m", features=other)


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    ds = synthetic(2)
    est, imp = train.fit(ds, "gradient_boosting")
    schema, arrays = train.export(est, imp, ds.features)
    npz, js = train.save(tmp_path / "m", schema, arrays)
    data = json.loads(js.read_text())
    data["schema_version"] = classifier.SCHEMA_VERSION + 1
    js.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="schema version"):
        classifier.load(npz)


def test_corrupt_arrays_are_refused(tmp_path: Path) -> None:
    ds = synthetic(2)
    est, imp = train.fit(ds, "random_forest")
    schema, arrays = train.export(est, imp, ds.features)
    arrays["node_left"] = arrays["node_left"].copy()
    arrays["node_left"][0] = 10**9  # points outside the node table
    train.save(tmp_path / "m", schema, arrays)
    with pytest.raises(ModelError, match="inconsistent"):
        classifier.load(tmp_path / "m")
    del arrays["node_value"]
    train.save(tmp_path / "m2", schema, arrays)
    with pytest.raises(ModelError, match="node_value"):
        classifier.load(tmp_path / "m2")


def test_pickled_arrays_never_load(tmp_path: Path) -> None:
    ds = synthetic(2)
    est, imp = train.fit(ds, "logistic")
    schema, arrays = train.export(est, imp, ds.features)
    npz, _ = train.save(tmp_path / "m", schema, arrays)
    obj = {k: v for k, v in arrays.items()}
    obj["coef"] = np.array([{"evil": 1}, {"evil": 2}], dtype=object)
    np.savez(npz, **obj)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"cannot read|not numeric|shape"):
        classifier.load(npz)


def test_missing_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model schema"):
        classifier.load(tmp_path / "absent")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError, match="not JSON"):
        classifier.load(tmp_path / "bad")
    (tmp_path / "other.json").write_text(json.dumps({"schema": "something"}))
    with pytest.raises(ModelError, match="not a hosttune model"):
        classifier.load(tmp_path / "other")


def test_unknown_is_not_a_class_a_model_may_learn(tmp_path: Path) -> None:
    ds = synthetic(2)
    est, imp = train.fit(ds, "logistic")
    schema, arrays = train.export(est, imp, ds.features)
    schema["classes"] = ["class0", classifier.UNKNOWN]
    train.save(tmp_path / "m", schema, arrays)
    with pytest.raises(ModelError, match="'unknown' is the answer below the threshold"):
        classifier.load(tmp_path / "m")


def test_a_trace_labelled_unknown_is_refused(tmp_path: Path) -> None:
    write_trace(tmp_path / "a.csv.gz", classifier.UNKNOWN, "busy")
    with pytest.raises(HosttuneError, match="not a class to learn"):
        train.load_dataset([tmp_path])
