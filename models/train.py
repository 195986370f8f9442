"""Training, evaluation and export of the workload classifier (scikit-learn).

Only this module imports scikit-learn, and only inside the functions that
train or score (0.9 s, 120 MB; `require_sklearn` names the package when it is
missing): the CLI's `model train` / `model evaluate` and the tests call it;
the classifier (`hosttune.models.classifier`) needs numpy alone.

- `load_dataset(dirs)`: every trace of the given directories (a
  `manifest.json` there, if present, must match each file's sha256), cut
  into windows (`features.WINDOW_SECONDS` every `features.STRIDE_SECONDS`),
  one feature vector per window, grouped by run.
- `cross_validate(ds, name)`: leave-one-run-out, so no window of a run is
  both trained on and tested; NaN imputation is learned on the training
  folds only.
- `fit(ds, name)` then `export(...)`: the fitted model as numpy arrays and a
  JSON schema, with its model card.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hosttune.agent.sense.errors import HosttuneError, ModelError
from hosttune.models import features, workload_classes
from hosttune.models.classifier import SCHEMA, SCHEMA_VERSION, TASK, model_files
from hosttune.models.features import FEATURE_VERSION, WINDOW_SECONDS, feature_set_id
from hosttune.models.resample import (
    TRAIN_GEOMETRIES,
    VALIDATE_GEOMETRIES,
    Geometry,
    geometry_range,
    resample,
    row_interval,
)
from hosttune.models.trace import read_trace

Array = npt.NDArray[np.float64]

CANDIDATES = ("logistic", "random_forest", "gradient_boosting")
DEFAULT_UNKNOWN_BELOW = 0.5


class TrainingUnavailable(HosttuneError):
    """scikit-learn is not installed."""


def require_sklearn() -> str:
    try:
        import sklearn  # 0.9 s, 120 MB: imported only to check it is there
    except ImportError:
        raise TrainingUnavailable(
            "training and evaluation need scikit-learn: pip install 'hosttune[train]'",
            subject="scikit-learn",
        ) from None
    return str(sklearn.__version__)


@dataclass
class Dataset:
    X: Array
    y: list[str]
    groups: list[str]  # run name of each window
    features: list[str]
    runs: dict[str, str]  # run -> label
    files: dict[str, str]  # run -> sha256 of its trace
    sources: list[str] = field(default_factory=list)
    # the geometry tag (`Geometry.tag`) of each window, the geometries loaded
    # and those of them a model is fitted on
    geometry: list[str] = field(default_factory=list)
    geometries: list[Geometry] = field(default_factory=list)
    train_geometries: list[Geometry] = field(default_factory=list)

    @property
    def train_tags(self) -> list[str]:
        """Tags of the geometries to fit on that have windows (all when unset)."""
        present = list(dict.fromkeys(self.geometry))
        if not self.train_geometries:
            return present
        return [g.tag for g in self.train_geometries if g.tag in present]

    def tag_mask(self, tags: Sequence[str]) -> Any:

        if not self.geometry:
            return np.ones(len(self.y), dtype=bool)
        return np.isin(np.array(self.geometry), list(tags))

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.y))

    @property
    def data_hash(self) -> str:
        """sha256 over the runs' names and file hashes: names the training data."""
        h = hashlib.sha256()
        for run in sorted(self.files):
            h.update(f"{run}\0{self.files[run]}\n".encode())
        return h.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trace_windows(path: Path, seconds: float | None = None) -> tuple[str, Array]:
    """(label, feature matrix with one row per window) of one trace, at its
    own row interval."""
    trace = read_trace(path)
    return trace.label, _windows(trace, seconds if seconds is not None
                                 else features.WINDOW_SECONDS, full_only=False)


def _windows(trace: Any, seconds: float, *, full_only: bool) -> Array:


    matrix = trace.matrix()
    width = len(features.feature_names())
    if full_only and trace.elapsed:
        # a trace shorter than the window would give one short window: that
        # is not this geometry, so it gives none
        interval = row_interval(trace.elapsed, trace.header.get("interval"))
        if trace.elapsed[-1] - trace.elapsed[0] + interval < seconds - 1e-6:
            return np.zeros((0, width))
    bounds = features.window_bounds(trace.elapsed, seconds)
    rows = [features.window_features(trace.columns, matrix[a:b]) for a, b in bounds]
    return np.array(rows, dtype=np.float64).reshape(len(rows), width)


def geometry_windows(path: Path, geometries: Sequence[Geometry]) -> tuple[str, list[Array]]:
    """(label, one feature matrix per geometry) of one trace: its rows merged
    to each geometry's interval (`resample`, every phase, so a long-interval
    sampler starting at any second is seen) and cut into full windows every
    `features.STRIDE_SECONDS`. A geometry the trace cannot give (rows longer
    than its interval, or not a divisor of it) gets no windows."""
    trace = read_trace(path)
    own = row_interval(trace.elapsed, trace.header.get("interval"))
    width = len(features.feature_names())
    out: list[Array] = []
    for g in geometries:
        k = round(g.interval / own)
        if k < 1 or abs(k * own - g.interval) > 0.05 * own:
            out.append(np.zeros((0, width)))
            continue
        parts = [_windows(resample(trace, g.interval, phase=p), g.window, full_only=True)
                 for p in range(k)]
        out.append(np.vstack(parts))
    return trace.label, out


def load_dataset(
    dirs: Sequence[str | Path], progress: Callable[[int, int], None] | None = None,
    geometries: Sequence[Geometry] = VALIDATE_GEOMETRIES,
    train_geometries: Sequence[Geometry] = TRAIN_GEOMETRIES,
) -> Dataset:
    """Every trace of `dirs`, as windows of each of `geometries` and
    `train_geometries` (rows merged to the geometry's interval, see
    `geometry_windows`); `fit` and `cross_validate` train on the windows of
    `train_geometries`."""
    geometries = list(dict.fromkeys([*train_geometries, *geometries]))


    entries: list[tuple[str, Path, str | None]] = []  # run, file, expected sha
    sources: list[str] = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise HosttuneError("not a directory of traces", subject=str(root))
        sources.append(str(root))
        manifest = root / "manifest.json"
        if manifest.exists():
            try:
                listed = [(str(r["run"]), root / str(r["file"]), str(r["sha256"]))
                          for r in json.loads(manifest.read_text())["runs"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise HosttuneError(f"bad manifest: {exc}", subject=str(manifest)) from None
            entries.extend(listed)
            known = {p.name for _, p, _ in listed}
            extra = sorted(p for p in root.glob("*.csv.gz") if p.name not in known)
        else:
            extra = sorted(root.glob("*.csv.gz"))
        entries.extend((f"{root.name}/{p.name.removesuffix('.csv.gz')}", p, None) for p in extra)
    if not entries:
        raise HosttuneError("no traces (*.csv.gz) found", subject=", ".join(sources))
    X_parts: list[Array] = []
    y: list[str] = []
    groups: list[str] = []
    tags: list[str] = []
    runs: dict[str, str] = {}
    files: dict[str, str] = {}
    for i, (run, path, expected) in enumerate(entries):
        if run in runs:
            raise HosttuneError(f"run {run!r} appears twice", subject=str(path))
        digest = _sha256(path) if path.exists() else ""
        if expected is not None and digest != expected:
            raise HosttuneError("file does not match the sha256 in manifest.json",
                                subject=str(path))
        label, per_geometry = geometry_windows(path, geometries)
        if not label:
            raise HosttuneError("trace has no label in its header", subject=str(path))
        if label == workload_classes.UNKNOWN:
            raise HosttuneError(f"label {label!r} is the classifier's answer when unsure, "
                                "not a class to learn", subject=str(path))
        for g, X in zip(geometries, per_geometry, strict=True):
            if X.shape[0]:
                X_parts.append(X)
                y.extend([label] * X.shape[0])
                groups.extend([run] * X.shape[0])
                tags.extend([g.tag] * X.shape[0])
                runs[run] = label
                files[run] = digest
        if progress is not None:
            progress(i + 1, len(entries))
    width = len(features.feature_names())
    X_all = np.vstack(X_parts) if X_parts else np.zeros((0, width))
    return Dataset(X=X_all, y=y, groups=groups, features=list(features.feature_names()),
                   runs=runs, files=files, sources=sources, geometry=tags,
                   geometries=list(geometries), train_geometries=list(train_geometries))


def impute_values(X: Array) -> Array:
    """Per-feature median of the finite values; 0 where a feature was never
    seen (e.g. accelerator features on CPU-only training hosts)."""
    out = np.zeros(X.shape[1])
    for j in range(X.shape[1]):
        col = X[:, j]
        ok = col[np.isfinite(col)]
        out[j] = float(np.median(ok)) if ok.size else 0.0
    return out


def apply_impute(X: Array, values: Array) -> Array:
    X = np.array(X, dtype=np.float64, copy=True)
    bad = ~np.isfinite(X)
    X[bad] = np.broadcast_to(values, X.shape)[bad]
    return X


def make_estimator(name: str, seed: int = 0) -> Any:
    require_sklearn()
    # scikit-learn: 0.9 s, 120 MB; only training and scoring need it
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logistic":
        return Pipeline([
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(C=1.0, max_iter=5000)),
        ])
    if name == "random_forest":
        return RandomForestClassifier(
            n_estimators=100, min_samples_leaf=2, max_features="sqrt", random_state=seed,
            n_jobs=1,
        )
    if name == "gradient_boosting":
        return HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=10,
            l2_regularization=1.0, early_stopping=False, random_state=seed,
        )
    raise HosttuneError(f"unknown model {name!r}; choose one of {', '.join(CANDIDATES)}",
                        subject="model")


@dataclass
class Scores:
    model: str
    classes: list[str]
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]  # class -> precision, recall, f1, support
    confusion: list[list[int]]  # rows: true class, columns: predicted
    run_accuracy: float  # majority vote of a run's windows
    folds: int
    unknown_below: float = DEFAULT_UNKNOWN_BELOW
    coverage: float = math.nan  # share of windows answered (confidence >= threshold)
    answered_accuracy: float = math.nan  # accuracy on those
    windows: int = 0
    trained_on: list[str] = field(default_factory=list)  # geometry tags of training windows
    # the same scores on the windows of each tested geometry alone
    geometries: dict[str, Scores] = field(default_factory=dict)

    @property
    def geometry_macro_f1(self) -> float:
        """Mean macro-F1 over the tested geometries (each counts once, however
        many windows it has)."""
        if not self.geometries:
            return self.macro_f1
        return sum(g.macro_f1 for g in self.geometries.values()) / len(self.geometries)

    def as_dict(self) -> dict[str, Any]:
        def r(x: float) -> float:
            return round(x, 4)

        out: dict[str, Any] = {
            "model": self.model, "classes": self.classes, "accuracy": r(self.accuracy),
            "macro_f1": r(self.macro_f1), "run_accuracy": r(self.run_accuracy),
            "folds": self.folds, "unknown_below": self.unknown_below,
            "coverage": r(self.coverage), "answered_accuracy": r(self.answered_accuracy),
            "windows": self.windows,
            "per_class": {c: {k: (r(v) if k != "support" else int(v)) for k, v in d.items()}
                          for c, d in self.per_class.items()},
            "confusion": self.confusion,
        }
        if self.trained_on:
            out["trained_on"] = list(self.trained_on)
        if self.geometries:
            # per geometry the summary and per-class scores; the model's schema
            # is in memory wherever it serves, so no confusion matrix each
            out["geometries"] = {
                tag: {k: v for k, v in g.as_dict().items()
                      if k not in ("confusion", "classes", "model")}
                for tag, g in self.geometries.items()
            }
        return out


def cross_validate(
    ds: Dataset, name: str, *, unknown_below: float = DEFAULT_UNKNOWN_BELOW,
    progress: Callable[[int, int], None] | None = None,
    train_on: Sequence[str] | None = None, test_on: Sequence[str] | None = None,
) -> Scores:
    """Leave-one-run-out: every run is tested by a model that never saw any
    of its windows. Each fold trains on the other runs' windows of the
    geometries `train_on` (tags; default: the dataset's training ones) and tests the
    held-out run's windows of `test_on` (default: all); the result pools the
    tested windows and holds each geometry's own scores in `geometries`."""
    require_sklearn()

    classes = ds.classes
    if len(classes) < 2:
        raise HosttuneError("need at least two classes to evaluate", subject="dataset")
    thin = sorted(c for c in classes if sum(1 for lab in ds.runs.values() if lab == c) < 2)
    if thin:
        raise HosttuneError(
            f"leave-one-run-out needs at least two runs of every class; only one of "
            f"{', '.join(thin)}: record more", subject="dataset",
        )
    tags = np.array(ds.geometry if ds.geometry else [""] * len(ds.y))
    present = list(dict.fromkeys(tags.tolist()))
    train_tags = list(train_on) if train_on is not None else ds.train_tags
    test_tags = list(test_on) if test_on is not None else present
    for tag in (*train_tags, *test_tags):
        if tag not in present:
            raise HosttuneError(f"no windows of geometry {tag} in the dataset (has "
                                f"{', '.join(present)})", subject="geometry")
    y = np.array(ds.y)
    groups = np.array(ds.groups)
    train_mask = np.isin(tags, train_tags)
    test_mask = np.isin(tags, test_tags)
    pred = np.empty(len(y), dtype=object)
    conf = np.zeros(len(y))
    run_names = sorted(set(groups[test_mask].tolist()))
    for i, run in enumerate(run_names):
        tr = np.flatnonzero(train_mask & (groups != run))
        te = np.flatnonzero(test_mask & (groups == run))
        imp = impute_values(ds.X[tr])
        est = make_estimator(name)
        est.fit(apply_impute(ds.X[tr], imp), y[tr])
        proba = est.predict_proba(apply_impute(ds.X[te], imp))
        est_classes = list(est.classes_)
        pred[te] = [est_classes[k] for k in np.argmax(proba, axis=1)]
        conf[te] = proba.max(axis=1)
        if progress is not None:
            progress(i + 1, len(run_names))
    def score(mask: Any) -> Scores:
        return _scores(y[mask], pred[mask], conf[mask], groups[mask], model=name,
                       classes=classes, runs=ds.runs, unknown_below=unknown_below)

    pooled = score(test_mask)
    pooled.trained_on = train_tags
    if any(test_tags):
        pooled.geometries = {tag: score(tags == tag) for tag in test_tags}
    return pooled


def _scores(y: Any, pred: Any, conf: Any, groups: Any, *, model: str, classes: list[str],
            runs: dict[str, str], unknown_below: float) -> Scores:
    # scikit-learn: 0.9 s, 120 MB; only training and scoring need it
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    labels = pred.astype(str)
    p, r, f, s = precision_recall_fscore_support(y, labels, labels=classes, zero_division=0)
    per_class = {c: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                     "support": float(s[k])} for k, c in enumerate(classes)}
    votes_right = 0
    run_names = sorted(set(groups.tolist()))
    for run in run_names:
        values, counts = np.unique(labels[groups == run], return_counts=True)
        votes_right += int(values[np.argmax(counts)] == runs[run])
    answered = conf >= unknown_below
    return Scores(
        model=model, classes=classes,
        accuracy=float((labels == y).mean()),
        macro_f1=float(f1_score(y, labels, labels=classes, average="macro", zero_division=0)),
        per_class=per_class,
        confusion=confusion_matrix(y, labels, labels=classes).tolist(),
        run_accuracy=votes_right / len(run_names), folds=len(run_names),
        unknown_below=unknown_below,
        coverage=float(answered.mean()),
        answered_accuracy=float((labels[answered] == y[answered]).mean()) if answered.any()
        else math.nan,
        windows=len(y),
    )


def fit(ds: Dataset, name: str) -> tuple[Any, Array]:
    """(fitted estimator, impute values) on every window of the dataset's
    training geometries."""
    mask = ds.tag_mask(ds.train_tags)
    X = ds.X[mask]
    imp = impute_values(X)
    est = make_estimator(name)
    est.fit(apply_impute(X, imp), np.array(ds.y)[mask])
    return est, imp


# -- export ----------------------------------------------------------------


def export(
    est: Any, impute: Array, features: Sequence[str], *,
    unknown_below: float = DEFAULT_UNKNOWN_BELOW, card: dict[str, Any] | None = None,
    geometries: Sequence[Geometry] = VALIDATE_GEOMETRIES,
    trained_on: Sequence[Geometry] = TRAIN_GEOMETRIES,
) -> tuple[dict[str, Any], dict[str, Array]]:
    """(schema, arrays) of a fitted estimator, in the format
    `hosttune.models.classifier` reads. `geometries` are those it was
    cross-validated on (its folds fitted on `trained_on`); the schema records
    both and the range of the validated ones, and the daemon warns when it
    classifies outside that range."""
    classes = [str(c) for c in est.classes_]
    arrays: dict[str, Array] = {"impute": np.asarray(impute, dtype=np.float64)}
    schema: dict[str, Any] = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "task": TASK, "classes": classes, "features": list(features),
        "feature_set": feature_set_id(features),
        "feature_version": FEATURE_VERSION,
        "window_seconds": WINDOW_SECONDS, "unknown_below": unknown_below,
        "geometries": {"validated": [g.tag for g in geometries],
                       "trained": [g.tag for g in trained_on],
                       **geometry_range(geometries)},
    }
    kind = type(est).__name__
    if kind == "Pipeline":
        schema["kind"] = "linear"
        schema["estimator"] = "StandardScaler+LogisticRegression"
        arrays.update(_export_linear(est, len(classes)))
    elif kind == "RandomForestClassifier":
        schema.update(kind="trees", aggregation="mean_proba", float32_inputs=True,
                      estimator=kind)
        arrays_t, depth = _export_forest(est, len(classes))
        arrays.update(arrays_t)
        schema["max_depth"] = depth
    elif kind == "HistGradientBoostingClassifier":
        schema.update(kind="trees", aggregation="softmax_sum", float32_inputs=False,
                      estimator=kind)
        arrays_t, depth = _export_hgb(est, len(classes))
        arrays.update(arrays_t)
        schema["max_depth"] = depth
    else:
        raise ModelError(f"cannot export a {kind}", subject="export")
    schema["arrays"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                        for k, v in sorted(arrays.items())}
    schema["card"] = card or {}
    return schema, arrays


def _export_linear(pipe: Any, K: int) -> dict[str, Array]:
    scaler, lr = pipe.named_steps["scale"], pipe.named_steps["clf"]
    coef = np.asarray(lr.coef_, dtype=np.float64)
    intercept = np.asarray(lr.intercept_, dtype=np.float64)
    if K == 2 and coef.shape[0] == 1:
        # logistic(z) == softmax([0, z])[1]
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    scale = np.asarray(scaler.scale_, dtype=np.float64)
    return {"mean": np.asarray(scaler.mean_, dtype=np.float64), "scale": scale,
            "coef": coef, "intercept": intercept}


def _depth(left: Any, right: Any, root: int) -> int:
    best = 0
    stack = [(root, 0)]
    while stack:
        node, d = stack.pop()
        if left[node] < 0:
            best = max(best, d)
        else:
            stack.append((int(left[node]), d + 1))
            stack.append((int(right[node]), d + 1))
    return best


def _export_forest(forest: Any, K: int) -> tuple[dict[str, Array], int]:
    feats, thr, lefts, rights, values, roots = [], [], [], [], [], []
    offset = 0
    depth = 0
    for tree in forest.estimators_:
        t = tree.tree_
        left = np.asarray(t.children_left, dtype=np.int64)
        right = np.asarray(t.children_right, dtype=np.int64)
        leaf = left < 0
        value = np.asarray(t.value[:, 0, :], dtype=np.float64)
        sums = value.sum(axis=1, keepdims=True)
        sums[sums == 0] = 1.0
        value = value / sums
        if value.shape[1] != K:
            raise ModelError("a tree saw fewer classes than the forest", subject="export")
        feats.append(np.where(leaf, -1, t.feature).astype(np.int64))
        thr.append(np.where(leaf, 0.0, t.threshold).astype(np.float64))
        lefts.append(np.where(leaf, -1, left + offset))
        rights.append(np.where(leaf, -1, right + offset))
        values.append(value)
        roots.append(offset)
        depth = max(depth, _depth(left, right, 0))
        offset += left.shape[0]
    return {
        "node_feature": np.concatenate(feats), "node_threshold": np.concatenate(thr),
        "node_left": np.concatenate(lefts), "node_right": np.concatenate(rights),
        "node_value": np.vstack(values), "tree_root": np.asarray(roots, dtype=np.int64),
        "base": np.zeros(K),
    }, depth


def _export_hgb(hgb: Any, K: int) -> tuple[dict[str, Array], int]:
    feats, thr, lefts, rights, values, roots = [], [], [], [], [], []
    offset = 0
    depth = 0
    baseline = np.asarray(hgb._baseline_prediction, dtype=np.float64).ravel()
    binary = baseline.shape[0] == 1
    # binary: sigmoid(z) == softmax([0, z])[1], so the one tree scores class 1
    base = np.array([0.0, baseline[0]]) if binary else baseline
    for iteration in hgb._predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if bool(np.any(nodes["is_categorical"])):
                raise ModelError("categorical splits are not exported", subject="export")
            leaf = nodes["is_leaf"].astype(bool)
            left = np.where(leaf, -1, nodes["left"].astype(np.int64))
            right = np.where(leaf, -1, nodes["right"].astype(np.int64))
            node_value = _mean_values(left, right, nodes["value"].astype(np.float64),
                                      nodes["count"].astype(np.float64))
            value = np.zeros((left.shape[0], K))
            value[:, 1 if binary else k] = node_value
            feats.append(np.where(leaf, -1, nodes["feature_idx"].astype(np.int64)))
            thr.append(np.where(leaf, 0.0, nodes["num_threshold"].astype(np.float64)))
            lefts.append(np.where(leaf, -1, left + offset))
            rights.append(np.where(leaf, -1, right + offset))
            values.append(value)
            roots.append(offset)
            depth = max(depth, _depth(left, right, 0))
            offset += left.shape[0]
    return {
        "node_feature": np.concatenate(feats), "node_threshold": np.concatenate(thr),
        "node_left": np.concatenate(lefts), "node_right": np.concatenate(rights),
        "node_value": np.vstack(values), "tree_root": np.asarray(roots, dtype=np.int64),
        "base": base,
    }, depth


def _mean_values(left: Any, right: Any, value: Array, count: Array) -> Array:
    """Leaves keep their (shrunk) value; an inner node gets the count-weighted
    mean of the leaves below it, so that a path's value changes say how much
    each split moved the score."""
    out = np.array(value, dtype=np.float64)
    weight = np.array(count, dtype=np.float64)

    def visit(node: int) -> None:
        if left[node] < 0:
            return
        a, b = int(left[node]), int(right[node])
        visit(a)
        visit(b)
        total = weight[a] + weight[b]
        out[node] = (out[a] * weight[a] + out[b] * weight[b]) / total if total else 0.0
        weight[node] = total

    visit(0)
    return out


def save(path: str | Path, schema: dict[str, Any], arrays: dict[str, Array]) -> tuple[Path, Path]:
    """Writes NAME.npz and NAME.json (each atomically)."""



    npz, js = model_files(path)
    npz.parent.mkdir(parents=True, exist_ok=True)
    tmp = npz.with_name(npz.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, npz)
    tmpj = js.with_name(js.name + ".tmp")
    tmpj.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    os.replace(tmpj, js)
    return npz, js


def model_card(
    ds: Dataset, chosen: str, scores: dict[str, Scores], *, sklearn_version: str,
    hosttune_version: str, unknown_below: float,
) -> dict[str, Any]:


    fitted = ds.tag_mask(ds.train_tags)
    counts = {c: int(np.sum((np.array(ds.y) == c) & fitted)) for c in ds.classes}
    per_geometry = {g.tag: sum(1 for t in ds.geometry if t == g.tag) for g in ds.geometries}
    run_counts = {c: sum(1 for lab in ds.runs.values() if lab == c) for c in ds.classes}
    return {
        "name": "workload classifier",
        "chosen": chosen,
        "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hosttune_version": hosttune_version,
        "sklearn_version": sklearn_version,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "data": {
            "sha256": ds.data_hash, "sources": ds.sources, "runs": len(ds.runs),
            "windows": int(ds.tag_mask(ds.train_tags).sum()), "windows_per_class": counts,
            "runs_per_class": run_counts, "windows_per_geometry": per_geometry,
            "trained_on": ds.train_tags,
        },
        "evaluation": "leave-one-run-out cross-validation (no window of a run in both "
                      "train and test); imputation learned on training folds only; each "
                      "fold is fitted on the training geometries and scored on every "
                      "validated geometry (rows every INTERVAL s in WINDOW s windows; 5 s "
                      "rows merged from the recorded 1 s ones as a 5 s sampler would have "
                      "recorded them, at every phase)",
        "scores": {name: s.as_dict() for name, s in scores.items()},
        "unknown_below": unknown_below,
        "limitations": LIMITATIONS,
    }


LIMITATIONS = [
    "Trained on traces recorded on one 2-vCPU, 24 GiB virtual machine without accelerators; "
    "other helpers' test suites ran on the same machine during recording, so every class "
    "carries that real background noise.",
    "Accelerator features were absent (NaN, imputed) in all training data: on GPU hosts the "
    "model ignores GPU signals until a site retrains with its own traces.",
    "Workloads were synthetic stand-ins (PyTorch CPU training/inference of small MLP, CNN "
    "and transformer models, numpy data preparation, fsync'd checkpoint writes, gcc builds, "
    "tar/cp backups); real jobs mixing phases (training with periodic checkpoints) get the "
    "dominant phase of each window or 'unknown'.",
    "Serving traffic came over loopback; network features therefore count every "
    "interface including lo.",
    "Trained on 10 s windows of 1 s rows; validated also on 30 s of 1 s rows and on 30 s "
    "and 60 s windows of 5 s rows (the daemon's default is 30 s of 5 s). The 5 s rows are "
    "merged from 1 s recordings, not recorded at 5 s: the busiest-CPU aggregate is the mean "
    "of per-second maxima, and the AI-process summaries are refreshed every 5 s where the "
    "daemon rescans once a minute. The classifier says nothing about what happened before "
    "the window.",
]
