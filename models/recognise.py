"""Recognising the workload of a live host or of a recorded trace with a
loaded model (numpy only; no scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from hosttune.models import features
from hosttune.models.classifier import UNKNOWN, Prediction, WorkloadModel
from hosttune.models.resample import resample
from hosttune.models.trace import read_trace

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class WindowResult:
    start: float  # elapsed seconds of the window's first row
    end: float
    prediction: Prediction


def classify_rows(model: WorkloadModel, columns: list[str], matrix: Array) -> Prediction:
    return model.classify(features.window_features(columns, matrix))


def classify_trace(
    model: WorkloadModel, path: str | Path, window: float = features.WINDOW_SECONDS,
    *, interval: float | None = None,
) -> tuple[Prediction | None, list[WindowResult]]:
    """Every window of a trace, and the verdict over the whole trace: the
    mean of the windows' probabilities (unknown below the model's
    threshold; None for a trace too short for one window). With `interval`
    (a whole multiple of the trace's row interval), the rows are first
    merged to what a sampler at that interval would have recorded; a
    ValueError says when it is not such a multiple."""
    trace = read_trace(path)
    if interval is not None:
        trace = resample(trace, interval)
    matrix = trace.matrix()
    results: list[WindowResult] = []
    for a, b in features.window_bounds(trace.elapsed, window, stride=window):
        pred = classify_rows(model, trace.columns, matrix[a:b])
        results.append(WindowResult(trace.elapsed[a], trace.elapsed[b - 1], pred))
    if not results:
        return None, results
    mean = np.mean([[r.prediction.probabilities[c] for c in model.classes] for r in results],
                   axis=0)
    k = int(np.argmax(mean))
    best = model.classes[k]
    votes: dict[str, int] = {}
    for r in results:
        votes[r.prediction.label] = votes.get(r.prediction.label, 0) + 1
    evidence = next((r.prediction.evidence for r in results if r.prediction.best == best), [])
    overall = Prediction(
        label=best if mean[k] >= model.unknown_below else UNKNOWN, best=best,
        confidence=float(mean[k]),
        probabilities={c: float(p) for c, p in zip(model.classes, mean, strict=True)},
        evidence=evidence,
        imputed=sorted({f for r in results for f in r.prediction.imputed}),
    )
    return overall, results
