"""The workload model evaluated without numpy, for the daemon.

Importing numpy costs a process 15-18 MB of resident memory (its core
extension, OpenBLAS, ~100 modules), about half of what hosttuned needs in
all, and the daemon uses it only to classify one window every 30 s. This
module reads the same model files (`NAME.npz` is a zip of `.npy` arrays; their
headers are parsed here, never unpickled) and evaluates a random forest
("trees" with "mean_proba") with its explanation, adding in numpy's order so
that probabilities and contributions equal `classifier.WorkloadModel.classify`
bit for bit (tests/test_lite.py checks it on the shipped model). Any other
model (linear, gradient-boosted: their matrix products and exponentials are
numpy's own) is left to `classifier.load`; `load_forest` says so with
`NeedsNumpy`.
"""

from __future__ import annotations

import ast
import math
import struct
import sys
import zipfile
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hosttune.agent.sense.errors import ModelError
from hosttune.models.classifier import (
    _TREE_ARRAYS,
    UNKNOWN,
    Evidence,
    Prediction,
    model_files,
    read_schema,
    shipped_model,
    validated_geometry,
)
from hosttune.models.features import lite_feature_names, pairwise_sum

_DTYPES = {"<f8": "d", "<i8": "q", "<f4": "f", "<i4": "i"}


class NeedsNumpy(Exception):
    """This model needs numpy (classifier.load); not an error in the model."""


def read_npz(path: Path) -> dict[str, tuple[array[Any], tuple[int, ...]]]:
    """name -> (flat values, shape) of the arrays of an .npz, for the plain
    little-endian C-order numeric arrays hosttune writes."""
    out: dict[str, tuple[array[Any], tuple[int, ...]]] = {}
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            if not member.endswith(".npy"):
                continue
            data = z.read(member)
            if data[:6] != b"\x93NUMPY":
                raise ModelError(f"{member} is not a .npy array", subject=str(path))
            major = data[6]
            if major == 1:
                (size,) = struct.unpack("<H", data[8:10])
                start = 10
            else:
                (size,) = struct.unpack("<I", data[8:12])
                start = 12
            header = ast.literal_eval(data[start:start + size].decode("latin1"))
            descr, shape = header.get("descr"), tuple(header.get("shape", ()))
            if descr not in _DTYPES or header.get("fortran_order"):
                raise NeedsNumpy(f"{member}: dtype {descr!r}")
            values = array(_DTYPES[descr])
            values.frombytes(data[start + size:])
            if sys.byteorder != "little":
                values.byteswap()
            if len(values) != math.prod(shape):
                raise ModelError(f"{member} holds {len(values)} values for shape {shape}",
                                 subject=str(path))
            out[member[:-4]] = (values, shape)
    return out


class Forest:
    """A random forest loaded by `load_forest`: the same interface the daemon
    uses of `classifier.WorkloadModel` (source, kind, classes, features,
    schema, classify)."""

    def __init__(self, schema: dict[str, Any], arrays: dict[str, tuple[array[Any],
                 tuple[int, ...]]], source: str) -> None:
        self.schema = schema
        self.source = source
        self.kind: str = schema["kind"]
        self.classes: list[str] = list(schema["classes"])
        self.features: list[str] = list(schema["features"])
        self.unknown_below = float(schema["unknown_below"])
        self.max_depth = int(schema["max_depth"])
        self.float32 = bool(schema.get("float32_inputs", False))
        k = len(self.classes)
        self.impute = [float(v) for v in arrays["impute"][0]]
        self.feature = [int(v) for v in arrays["node_feature"][0]]
        self.threshold = [float(v) for v in arrays["node_threshold"][0]]
        self.left = [int(v) for v in arrays["node_left"][0]]
        self.right = [int(v) for v in arrays["node_right"][0]]
        flat = arrays["node_value"][0]
        self.value = [[float(flat[i * k + j]) for j in range(k)] for i in range(len(self.left))]
        self.roots = [int(v) for v in arrays["tree_root"][0]]

    @property
    def geometry(self) -> dict[str, Any]:
        """The row intervals and window lengths the model was validated on."""
        return validated_geometry(self.schema)

    def classify(self, x: Sequence[float], top: int = 5) -> Prediction:
        """`classifier.WorkloadModel.classify` for one window's features."""
        n_features = len(self.features)
        if len(x) != n_features:
            raise ModelError(f"expected {n_features} features, got {len(x)}", subject=self.source)
        raw = [float(v) for v in x]
        imputed = [self.features[i] for i, v in enumerate(raw) if not math.isfinite(v)]
        prepared = [v if math.isfinite(v) else self.impute[i] for i, v in enumerate(raw)]
        probe = [_as_float32(v) for v in prepared] if self.float32 else prepared
        proba, contrib = self._evaluate(probe)
        best_k = max(range(len(proba)), key=lambda k: (proba[k], -k))
        confidence = proba[best_k]
        push = [contrib[i][best_k] for i in range(n_features)]
        order = sorted(range(n_features), key=lambda i: -push[i])
        evidence = [Evidence(self.features[i], prepared[i], push[i])
                    for i in order[:top] if push[i] > 0]
        best = self.classes[best_k]
        return Prediction(
            label=best if confidence >= self.unknown_below else UNKNOWN,
            best=best, confidence=confidence,
            probabilities=dict(zip(self.classes, proba, strict=True)),
            evidence=evidence, imputed=imputed,
        )

    def _evaluate(self, x: list[float]) -> tuple[list[float], list[list[float]]]:
        k_count = len(self.classes)
        feature, threshold, left, right, value = (self.feature, self.threshold, self.left,
                                                  self.right, self.value)
        idx = list(self.roots)
        n_trees = len(idx)
        contrib = [[0.0] * k_count for _ in self.features]
        # Depth by depth, tree by tree, as the classifier's vectorised walk adds
        # (np.add.at in tree order within each depth).
        for _ in range(self.max_depth + 1):
            moved = False
            for t in range(n_trees):
                node = idx[t]
                if left[node] < 0:
                    continue  # a leaf: numpy adds a zero delta here
                moved = True
                f = feature[node]
                nxt = left[node] if x[f] <= threshold[node] else right[node]
                row, before, after = contrib[f], value[node], value[nxt]
                for k in range(k_count):
                    row[k] += after[k] - before[k]
                idx[t] = nxt
            if not moved:
                break
        proba = [0.0] * k_count
        for t in range(n_trees):
            leaf = value[idx[t]]
            total = pairwise_sum(leaf)
            if total == 0.0:
                total = 1.0
            for k in range(k_count):
                proba[k] += leaf[k] / total
        proba = [p / n_trees for p in proba]
        for row in contrib:
            for k in range(k_count):
                row[k] /= n_trees
            mean = pairwise_sum(row) / k_count
            for k in range(k_count):
                row[k] -= mean
        return proba, contrib


def _as_float32(v: float) -> float:
    """numpy's astype(float32).astype(float64): rounded to the nearest
    float32, beyond its range infinite."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", v))[0])
    except OverflowError:
        return math.copysign(math.inf, v)


def load_forest(path: str | Path | None = None, *,
                features: Sequence[str] | None = None) -> Forest:
    """A random forest from its model files without numpy; ModelError for a
    broken model (as classifier.load), NeedsNumpy for one that needs numpy.
    `features`: the feature set the caller feeds (default: the workload
    model's)."""
    npz_path, json_path = model_files(path if path is not None else shipped_model())
    where = str(npz_path.with_suffix(""))
    schema = read_schema(json_path, where)
    if schema["kind"] != "trees" or schema.get("aggregation") != "mean_proba":
        raise NeedsNumpy(f"{schema['kind']} / {schema.get('aggregation')}")
    if list(schema["features"]) != list(features if features is not None
                                        else lite_feature_names()):
        raise NeedsNumpy("another feature set: classifier.load says why")
    try:
        arrays = read_npz(npz_path)
    except FileNotFoundError:
        raise ModelError(f"no model arrays at {npz_path}", subject=where) from None
    except (OSError, ValueError, SyntaxError, zipfile.BadZipFile, struct.error) as exc:
        raise ModelError(f"cannot read {npz_path}: {exc}", subject=where) from None
    _check(schema, arrays, where)
    return Forest(schema, arrays, where)


def _check(schema: dict[str, Any], arrays: dict[str, tuple[array[Any], tuple[int, ...]]],
           where: str) -> None:
    """classifier._check_arrays' checks, on plain arrays."""
    declared: dict[str, Any] = schema["arrays"]
    for name in _TREE_ARRAYS:
        if name not in arrays:
            raise ModelError(f"array {name!r} missing from the .npz", subject=where)
        spec = declared.get(name)
        shape = list(arrays[name][1])
        if not isinstance(spec, dict) or shape != list(spec.get("shape", [])):
            raise ModelError(f"array {name!r} has shape {shape}, schema says "
                             f"{spec.get('shape') if isinstance(spec, dict) else None}",
                             subject=where)
    f_count, k_count = len(schema["features"]), len(schema["classes"])
    n = arrays["node_feature"][1][0] if arrays["node_feature"][1] else -1
    ok = arrays["impute"][1] == (f_count,)
    ok = ok and all(arrays[a][1] == (n,) for a in ("node_threshold", "node_left", "node_right"))
    ok = ok and arrays["node_value"][1] == (n, k_count) and arrays["base"][1] == (k_count,)
    if ok and n:
        left, right = arrays["node_left"][0], arrays["node_right"][0]
        feats = arrays["node_feature"][0]
        inner = [i for i in range(n) if left[i] >= 0]
        refs = [left[i] for i in inner] + [right[i] for i in inner] + list(
            arrays["tree_root"][0])
        ok = all(0 <= r < n for r in refs) and all(0 <= feats[i] < f_count for i in inner)
    if not ok:
        raise ModelError("arrays are inconsistent with each other or with the schema",
                         subject=where)
    if not math.isfinite(float(schema["unknown_below"])):
        raise ModelError("unknown_below is not a number", subject=where)
