"""The workload classifier at run time, with numpy alone.

A model is two files side by side: `NAME.npz` (plain numpy arrays, loaded with
`allow_pickle=False`, so loading runs no code from the file) and `NAME.json`
(the schema: kind, classes, feature set, the arrays expected and their
shapes, the "unknown" threshold, and the model card). scikit-learn trains
and exports (`hosttune.models.train`); nothing here imports it, so the daemon
and `hosttune classify` stay small (numpy: ~17 MB, scikit-learn: ~120 MB).

Kinds:
- "linear": standardise (`mean`, `scale`), then `coef @ x + intercept` and a
  softmax (a binary model stores a zero row for its first class, which makes
  the softmax the logistic function scikit-learn uses).
- "trees": every tree's nodes concatenated (`node_feature`, `node_threshold`,
  `node_left`, `node_right` (-1 at leaves), `node_value`, one row of class
  values per node, and `tree_root`). A sample goes left when
  `x[feature] <= threshold`. "mean_proba" averages leaf class fractions (a
  random forest, which compares inputs cast to float32 as scikit-learn does);
  "softmax_sum" adds leaf scores to `base` and applies a softmax (gradient
  boosting). Internal nodes hold the mean of the leaves below them, which is
  what the explanation (per-feature contributions along the path) uses.

Missing features (NaN) are replaced by `impute` first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hosttune.agent.sense.errors import ModelError
from hosttune.models import workload_classes
from hosttune.models.features import MIN_ROWS, feature_names

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

SCHEMA = "hosttune-model"
# Bump the major version when the meaning of an array or field changes; a
# loader refuses any other major version.
SCHEMA_VERSION = 1
TASK = "workload"
# the per-process role model (hosttune.models.roles) shares the format
TASKS = (TASK, "role")
UNKNOWN = workload_classes.UNKNOWN

SHIPPED_DIR = Path(__file__).parent / "artifacts"
SHIPPED_NAME = "workload-v1"

_LINEAR_ARRAYS = ("impute", "mean", "scale", "coef", "intercept")
_TREE_ARRAYS = (
    "impute", "node_feature", "node_threshold", "node_left", "node_right", "node_value",
    "tree_root", "base",
)


def shipped_model() -> Path:
    return SHIPPED_DIR / f"{SHIPPED_NAME}.npz"


def model_files(path: str | Path) -> tuple[Path, Path]:
    """(arrays, schema) of a model named by either file or by its stem."""
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


@dataclass(frozen=True)
class Evidence:
    feature: str
    value: float  # the feature's value in this window (after imputation)
    contribution: float  # its push towards the predicted class


@dataclass(frozen=True)
class Prediction:
    label: str  # a class, or "unknown" below the threshold
    best: str  # the most probable class, even when label is "unknown"
    confidence: float  # probability of `best`
    probabilities: dict[str, float]
    evidence: list[Evidence] = field(default_factory=list)
    imputed: list[str] = field(default_factory=list)  # features the window lacked

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "best": self.best,
            "confidence": round(self.confidence, 4),
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
            "evidence": [
                {"feature": e.feature, "value": round(e.value, 4),
                 "contribution": round(e.contribution, 4)}
                for e in self.evidence
            ],
            "imputed": self.imputed,
        }


class WorkloadModel:
    """A loaded model. Build with `load`."""

    def __init__(self, schema: dict[str, Any], arrays: dict[str, Array], source: str) -> None:
        self.schema = schema
        self.arrays = arrays
        self.source = source
        self.kind: str = schema["kind"]
        self.classes: list[str] = list(schema["classes"])
        self.features: list[str] = list(schema["features"])
        self.unknown_below: float = float(schema["unknown_below"])
        self.aggregation: str = schema.get("aggregation", "")

    @property
    def card(self) -> dict[str, Any]:
        card = self.schema.get("card", {})
        return card if isinstance(card, dict) else {}

    @property
    def geometry(self) -> dict[str, Any]:
        """The row intervals and window lengths the model was validated on."""
        return validated_geometry(self.schema)

    def geometry_problem(self, interval: float, window_seconds: float) -> str | None:
        return geometry_problem(self.geometry, interval, window_seconds)

    # -- evaluation -----------------------------------------------------------

    def prepare(self, X: Array) -> Array:
        """Imputes NaN with the stored values."""
        import numpy as np  # numpy: 60 ms, 17 MB; forest.py reads this module without it

        X = np.array(X, dtype=np.float64, ndmin=2)
        if X.shape[1] != len(self.features):
            raise ModelError(
                f"expected {len(self.features)} features, got {X.shape[1]}", subject=self.source
            )
        missing = ~np.isfinite(X)
        if missing.any():
            X[missing] = np.broadcast_to(self.arrays["impute"], X.shape)[missing]
        return X

    def predict_proba(self, X: Array) -> Array:
        proba, _ = self._evaluate(self.prepare(X), explain=False)
        return proba

    def predict(self, X: Array) -> list[str]:
        import numpy as np  # numpy: 60 ms, 17 MB; forest.py reads this module without it

        return [self.classes[i] for i in np.argmax(self.predict_proba(X), axis=1)]

    def explain(self, X: Array) -> tuple[Array, Array]:
        """(probabilities n x K, contributions n x F x K): how much each
        feature pushed each class, relative to the mean over classes."""
        proba, contrib = self._evaluate(self.prepare(X), explain=True)
        assert contrib is not None
        return proba, contrib

    def classify(self, x: Array, top: int = 5) -> Prediction:
        """One window's features to a Prediction with its evidence."""
        import numpy as np  # numpy: 60 ms, 17 MB; forest.py reads this module without it

        raw = np.array(x, dtype=np.float64).reshape(1, -1)
        imputed = [self.features[i] for i in np.flatnonzero(~np.isfinite(raw[0]))]
        X = self.prepare(raw)
        proba, contrib = self._evaluate(X, explain=True)
        assert contrib is not None
        k = int(np.argmax(proba[0]))
        confidence = float(proba[0, k])
        push = contrib[0, :, k]
        order = np.argsort(-push)
        evidence = [
            Evidence(self.features[i], float(X[0, i]), float(push[i]))
            for i in order[:top] if push[i] > 0
        ]
        best = self.classes[k]
        return Prediction(
            label=best if confidence >= self.unknown_below else UNKNOWN,
            best=best, confidence=confidence,
            probabilities={c: float(p) for c, p in zip(self.classes, proba[0], strict=True)},
            evidence=evidence, imputed=imputed,
        )

    def _evaluate(self, X: Array, explain: bool) -> tuple[Array, Array | None]:
        if self.kind == "linear":
            return self._linear(X, explain)
        return self._trees(X, explain)

    def _linear(self, X: Array, explain: bool) -> tuple[Array, Array | None]:
        import numpy as np  # numpy: 60 ms, 17 MB; forest.py reads this module without it

        a = self.arrays
        Z = (X - a["mean"]) / a["scale"]
        logits = Z @ a["coef"].T + a["intercept"]
        proba = _softmax(logits)
        if not explain:
            return proba, None
        coef = a["coef"] - a["coef"].mean(axis=0, keepdims=True)
        contrib = Z[:, :, None] * coef.T[None, :, :]
        return proba, np.asarray(contrib, dtype=np.float64)

    def _trees(self, X: Array, explain: bool) -> tuple[Array, Array | None]:
        import numpy as np  # numpy: 60 ms, 17 MB; forest.py reads this module without it

        a = self.arrays
        feature, threshold = a["node_feature"], a["node_threshold"]
        left, right, value = a["node_left"], a["node_right"], a["node_value"]
        roots = a["tree_root"]
        if self.schema.get("float32_inputs", False):
            # scikit-learn's forests compare float32 inputs with float64 thresholds
            X = X.astype(np.float32).astype(np.float64)
        n, n_features = X.shape
        n_trees = roots.shape[0]
        K = len(self.classes)
        idx = np.broadcast_to(roots, (n, n_trees)).copy()
        rows = np.arange(n)[:, None]
        contrib = np.zeros((n, n_features, K)) if explain else None
        for _ in range(int(self.schema["max_depth"]) + 1):
            inner = left[idx] >= 0
            if not inner.any():
                break
            f = np.where(inner, feature[idx], 0)
            go_left = X[rows, f] <= threshold[idx]
            nxt = np.where(inner, np.where(go_left, left[idx], right[idx]), idx)
            if contrib is not None:
                delta = value[nxt] - value[idx]  # n x T x K, zero where a leaf was reached
                for j in range(n):
                    np.add.at(contrib[j], f[j], delta[j])
            idx = nxt
        leaves = value[idx]  # n x T x K
        if self.aggregation == "mean_proba":
            sums = leaves.sum(axis=2, keepdims=True)
            sums[sums == 0.0] = 1.0
            proba = (leaves / sums).sum(axis=1) / n_trees
            if contrib is not None:
                contrib /= n_trees
        elif self.aggregation == "softmax_sum":
            raw = a["base"] + leaves.sum(axis=1)
            proba = _softmax(raw)
        else:
            raise ModelError(f"unknown tree aggregation {self.aggregation!r}",
                             subject=self.source)
        if contrib is not None:
            contrib -= contrib.mean(axis=2, keepdims=True)
        return proba, contrib


# A schema without "geometries" predates them: such models were trained and
# cross-validated on 10 s windows of 1 s rows only.
_LEGACY_GEOMETRY: dict[str, Any] = {
    "validated": ["1s/10s"], "interval_seconds": [1.0, 1.0], "window_seconds": [10.0, 10.0],
}


def validated_geometry(schema: dict[str, Any]) -> dict[str, Any]:
    """`{"validated": [tags], "interval_seconds": [lo, hi], "window_seconds":
    [lo, hi]}` of a model schema."""
    found = schema.get("geometries")
    if not isinstance(found, dict):
        return dict(_LEGACY_GEOMETRY)
    try:
        out: dict[str, Any] = {key: [float(found[key][0]), float(found[key][1])]
                               for key in ("interval_seconds", "window_seconds")}
    except (KeyError, IndexError, TypeError, ValueError):
        return dict(_LEGACY_GEOMETRY)
    out["validated"] = [str(t) for t in found.get("validated", [])]
    return out


def geometry_problem(geometry: dict[str, Any], interval: float,
                     window_seconds: float) -> str | None:
    """None when windows of `window_seconds` of rows every `interval` seconds
    lie within what the model was validated on, else a sentence saying how
    they differ (its accuracy there is unmeasured)."""
    lo_i, hi_i = geometry["interval_seconds"]
    lo_w, hi_w = geometry["window_seconds"]
    eps = 1e-6
    inside = (lo_i - eps <= interval <= hi_i + eps and lo_w - eps <= window_seconds <= hi_w + eps
              and window_seconds / interval >= MIN_ROWS - eps)
    if inside:
        return None

    def span(lo: float, hi: float) -> str:
        return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"

    return (f"the workload model was validated on rows every {span(lo_i, hi_i)} s in windows "
            f"of {span(lo_w, hi_w)} s (at least {MIN_ROWS} rows); this classifies "
            f"{window_seconds:g} s windows of {interval:g} s rows, where its accuracy is "
            "unmeasured")


def schema_geometry(path: str | Path | None = None) -> dict[str, Any]:
    """The validated geometry of a model from its JSON schema alone (no
    arrays, no numpy): for checks that must stay cheap."""
    _, json_path = model_files(path if path is not None else shipped_model())
    where = str(json_path.with_suffix(""))
    schema = read_schema(json_path, where)
    return validated_geometry(schema)


def _softmax(logits: Array) -> Array:
    import numpy as np  # numpy: 60 ms, 17 MB; forest.py reads this module without it

    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Array = e / e.sum(axis=1, keepdims=True)
    return out


def load(path: str | Path | None = None, *, features: Sequence[str] | None = None) -> WorkloadModel:
    """Loads and checks a model (the shipped one by default). `features` is
    the feature set the caller will feed (default: this hosttune's); a model
    made for another one is refused with a ModelError saying why."""
    import numpy as np  # numpy: 60 ms, 17 MB; forest.py reads this module without it

    npz_path, json_path = model_files(path if path is not None else shipped_model())
    where = str(npz_path.with_suffix(""))
    schema = read_schema(json_path, where)
    if features is None:
        features = feature_names()
    if list(schema["features"]) != list(features):
        ours, theirs = set(features), set(schema["features"])
        detail = ", ".join(
            [f"missing here: {sorted(theirs - ours)[:5]}"] * bool(theirs - ours)
            + [f"not in the model: {sorted(ours - theirs)[:5]}"] * bool(ours - theirs)
        ) or "same names in another order"
        raise ModelError(
            f"model was trained on another feature set ({schema.get('feature_set')}; {detail}); "
            "retrain it with `hosttune model train`", subject=where,
        )
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name]) for name in data.files}
    except FileNotFoundError:
        raise ModelError(f"no model arrays at {npz_path}", subject=where) from None
    except (OSError, ValueError) as exc:
        # allow_pickle=False makes an object array a ValueError, never code
        raise ModelError(f"cannot read {npz_path}: {exc}", subject=where) from None
    _check_arrays(schema, arrays, where)
    return WorkloadModel(schema, arrays, where)


def read_schema(json_path: Path, where: str) -> dict[str, Any]:
    """A model's JSON schema, checked; ModelError naming the file otherwise."""
    try:
        schema = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"no model schema at {json_path}", subject=where) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {json_path}: {exc}", subject=where) from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{json_path} is not JSON: {exc}", subject=where) from None
    _check_schema(schema, where)
    return dict(schema)


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict) or schema.get("schema") != SCHEMA:
        raise ModelError(f"not a hosttune model schema (want \"schema\": \"{SCHEMA}\")",
                         subject=where)
    version = schema.get("schema_version")
    if not isinstance(version, int) or version != SCHEMA_VERSION:
        raise ModelError(
            f"model schema version {version!r} is not the one this hosttune reads "
            f"({SCHEMA_VERSION}); use a model made for this version or retrain",
            subject=where,
        )
    if schema.get("task") not in TASKS:
        raise ModelError(f"model task {schema.get('task')!r} is not one of {TASKS}",
                         subject=where)
    for key, kind in (("kind", str), ("classes", list), ("features", list),
                      ("unknown_below", (int, float)), ("arrays", dict)):
        if not isinstance(schema.get(key), kind):
            raise ModelError(f"schema key {key!r} missing or of the wrong type", subject=where)
    if schema["kind"] not in ("linear", "trees"):
        raise ModelError(f"unknown model kind {schema['kind']!r}", subject=where)
    if schema["kind"] == "trees":
        if schema.get("aggregation") not in ("mean_proba", "softmax_sum"):
            raise ModelError(f"unknown tree aggregation {schema.get('aggregation')!r}",
                             subject=where)
        if not isinstance(schema.get("max_depth"), int):
            raise ModelError("schema key 'max_depth' missing", subject=where)
    if len(schema["classes"]) < 2:
        raise ModelError("a model needs at least two classes", subject=where)
    if UNKNOWN in schema["classes"]:
        raise ModelError(f"{UNKNOWN!r} is the answer below the threshold, not a class a model "
                         "may learn", subject=where)


def _check_arrays(schema: dict[str, Any], arrays: dict[str, Any], where: str) -> None:
    import numpy as np  # numpy: 60 ms, 17 MB; forest.py reads this module without it

    need = _LINEAR_ARRAYS if schema["kind"] == "linear" else _TREE_ARRAYS
    declared: dict[str, Any] = schema["arrays"]
    for name in need:
        if name not in arrays:
            raise ModelError(f"array {name!r} missing from the .npz", subject=where)
        arr = arrays[name]
        spec = declared.get(name)
        if not isinstance(spec, dict) or list(arr.shape) != list(spec.get("shape", [])):
            raise ModelError(
                f"array {name!r} has shape {list(arr.shape)}, schema says "
                f"{spec.get('shape') if isinstance(spec, dict) else None}", subject=where,
            )
        if arr.dtype.kind not in "fiu":
            raise ModelError(f"array {name!r} is not numeric ({arr.dtype})", subject=where)
    F, K = len(schema["features"]), len(schema["classes"])
    if arrays["impute"].shape != (F,):
        raise ModelError("impute does not match the feature count", subject=where)
    if schema["kind"] == "linear":
        ok = arrays["coef"].shape == (K, F) and arrays["intercept"].shape == (K,)
        ok = ok and arrays["mean"].shape == (F,) and arrays["scale"].shape == (F,)
    else:
        n = arrays["node_feature"].shape[0]
        ok = all(arrays[k].shape == (n,) for k in ("node_threshold", "node_left", "node_right"))
        ok = ok and arrays["node_value"].shape == (n, K) and arrays["base"].shape == (K,)
        if ok and n:
            # every index must point inside the node table: a corrupt file fails
            # here instead of reading out of bounds later
            inner = arrays["node_left"] >= 0
            refs = np.concatenate([arrays["node_left"][inner], arrays["node_right"][inner],
                                   arrays["tree_root"]])
            ok = bool((refs >= 0).all() and (refs < n).all())
            ok = ok and bool((arrays["node_feature"][inner] < F).all())
            ok = ok and bool((arrays["node_feature"][inner] >= 0).all())
    if not ok:
        raise ModelError("arrays are inconsistent with each other or with the schema",
                         subject=where)
    for name in need:
        arrays[name] = arrays[name].astype(
            np.int64 if name in ("node_feature", "node_left", "node_right", "tree_root")
            else np.float64
        )
    if not math.isfinite(float(schema["unknown_below"])):
        raise ModelError("unknown_below is not a number", subject=where)
