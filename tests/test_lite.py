"""The daemon's numpy-free classification (hosttune.models.forest) gives the
numpy path's answers bit for bit: features, probabilities, label, evidence.

Checked on windows of every real trace in models/data (the 1 s rows the
model was trained on, and every 5th row: the daemon's 5 s rows), on windows
with random gaps, infinities and extreme values, and in a fresh daemon
engine, which must classify without importing numpy at all."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hosttune.agent.sense.errors import ModelError
from hosttune.models import classifier, features, forest
from hosttune.models.trace import read_trace

DATA = Path(__file__).resolve().parent.parent / "models" / "data"


@pytest.fixture(scope="module")
def models() -> tuple[classifier.WorkloadModel, forest.Forest]:
    return classifier.load(), forest.load_forest()


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                   math.copysign(1, b))


def _check_window(pair: tuple[classifier.WorkloadModel, forest.Forest], columns: list[str],
                  rows: list[list[float]]) -> None:
    full, small = pair
    want = features.window_features(columns, np.asarray(rows, dtype=np.float64))
    got = features.lite_window_features(columns, rows)
    assert len(got) == len(want)
    for name, a, b in zip(features.feature_names(), got, want, strict=True):
        assert _same_float(a, float(b)), (name, a, float(b))
    p, q = small.classify(got), full.classify(want)
    assert (p.label, p.best, p.imputed) == (q.label, q.best, q.imputed)
    assert p.confidence == q.confidence
    assert p.probabilities == q.probabilities
    assert [(e.feature, e.value, e.contribution) for e in p.evidence] == \
        [(e.feature, e.value, e.contribution) for e in q.evidence]


def test_shipped_model_loads_without_numpy_the_same(
        models: tuple[classifier.WorkloadModel, forest.Forest]) -> None:
    full, small = models
    assert (small.kind, small.classes, small.features, small.source) == (
        full.kind, full.classes, full.features, full.source)
    assert features.lite_feature_names() == features.feature_names()


def test_real_trace_windows_classify_the_same(
        models: tuple[classifier.WorkloadModel, forest.Forest]) -> None:
    traces = sorted(DATA.glob("*.csv.gz"))
    assert traces
    checked = 0
    for path in traces:
        trace = read_trace(path)
        for step in (1, 5):  # the training rows, and the daemon's 5 s rows
            rows = trace.rows[::step]
            for start in range(0, max(1, len(rows) - 6), 7 * step):
                window = rows[start:start + (10 if step == 1 else 6)]
                if len(window) >= features.MIN_ROWS:
                    _check_window(models, trace.columns, window)
                    checked += 1
    assert checked > 100


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_odd_windows_classify_the_same(
        models: tuple[classifier.WorkloadModel, forest.Forest]) -> None:
    """Gaps (NaN), infinities, huge and tiny values, and long windows (the
    pairwise summation's 8-way and split branches)."""
    trace = read_trace(sorted(DATA.glob("*.csv.gz"))[0])
    rng = random.Random(7)
    for _ in range(60):
        n = rng.choice([4, 5, 6, 9, 17, 40, 150])
        rows = [list(trace.rows[rng.randrange(len(trace.rows))]) for _ in range(n)]
        for row in rows:
            for _ in range(rng.randrange(0, 12)):
                row[rng.randrange(len(row))] = rng.choice(
                    [math.nan, math.inf, -math.inf, 1e300, -1e-300, 0.0, -0.0,
                     rng.uniform(-1e9, 1e9), 3.4e38, 3.5e38])
        _check_window(models, trace.columns, rows)


def test_broken_and_unsupported_models(tmp_path: Path) -> None:
    src = classifier.shipped_model()
    npz, schema_file = classifier.model_files(src)
    shutil.copy(npz, tmp_path / "m.npz")
    schema = json.loads(schema_file.read_text())
    (tmp_path / "m.json").write_text(json.dumps(dict(schema, aggregation="softmax_sum")))
    with pytest.raises(forest.NeedsNumpy):
        forest.load_forest(tmp_path / "m")
    broken = dict(schema, arrays=dict(schema["arrays"], impute={"dtype": "float64",
                                                                 "shape": [3]}))
    (tmp_path / "m.json").write_text(json.dumps(broken))
    with pytest.raises(ModelError, match="impute"):
        forest.load_forest(tmp_path / "m")
    (tmp_path / "m.json").write_text(json.dumps(schema))
    (tmp_path / "m.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot read"):
        forest.load_forest(tmp_path / "m")


def test_daemon_engine_classifies_without_numpy(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from hosttune.agent.service.daemon.host_access import HostTools
        from hosttune.agent.sense.host import Host
        e = HostTools(Host(), Path({str(tmp_path)!r}))
        info = e.prepare()
        samples = [e.sample()]
        rates = []
        for _ in range(5):
            time.sleep(0.05)
            samples.append(e.sample())
            rates.append(e.rates(samples[-2], samples[-1]))
        verdict = e.classify(samples, rates)
        e.close()
        print(type(e._model).__name__, info["model"]["kind"], "numpy" in sys.modules,
              verdict.label != "")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.split() == ["Forest", "trees", "False", "True"], out.stderr
