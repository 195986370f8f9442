"""What a sampler at a longer interval would have recorded, from a trace of
short rows, and the window geometries a model is trained and checked on.

A trace row covers the interval that ends at its `elapsed` stamp. A sampler
that ran every `k` rows' worth of seconds would have seen, per row:

- for a column measured over the interval (a counter's `.rate`, the
  aggregates of rates such as `net.<if>.rx_bytes.rate:sum`, and the gauges
  the sampler derives from counter rates: `cpu.util`, `cpu.<cpu>.util`,
  `cpu.<field>_ratio`, `disk.<dev>.util`), the mean of the `k` short values
  weighted by each row's duration, which is exactly the long interval's rate
  for a counter;
- for a gauge read at the sample (memory, run queue, load, AI-process
  summaries, accelerator readings), the value at the later sample, i.e. the
  last short row's.

Two columns are approximations, not exact: `cpu.<cpu>.util:max/min` and
`disk.<dev>.util:max` / `...weighted_seconds.rate:max` keep the busiest
instance per row, and the mean of per-row maxima is at least the maximum of
the per-instance means (work that moves between CPUs looks a little busier
than the long-interval sampler would see it). With one disk the disk ones
are exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from hosttune.agent.sense.telemetry.catalogue import CATALOGUE, RATE_SUFFIX
from hosttune.models.trace import Trace

Array = npt.NDArray[np.float64]

ColumnKind = Literal["interval", "gauge"]

# the catalogue marks gauges the sampler computes from counter rates so
_DERIVED_FROM_RATES = "derived from"


@cache
def _catalogue_by_pattern() -> dict[str, str]:
    return {m.pattern: m.source for m in CATALOGUE}


def column_kind(name: str) -> ColumnKind:
    """"interval" for a column measured over the interval since the previous
    sample (averaged when rows are merged), "gauge" for one read at the
    sample (the later sample's value is kept)."""
    base = name.partition(":")[0]  # `<pattern>:<how>` aggregates
    if base.endswith(RATE_SUFFIX):
        return "interval"
    source = _catalogue_by_pattern().get(base, "")
    return "interval" if source.startswith(_DERIVED_FROM_RATES) else "gauge"


def row_interval(elapsed: Sequence[float], header_interval: str | None = None) -> float:
    """The seconds between rows: the median step, or the header's `interval`
    for a trace of one row."""
    steps = sorted(b - a for a, b in itertools.pairwise(elapsed))
    if steps:
        return steps[len(steps) // 2]
    try:
        return float(header_interval or 1.0)
    except ValueError:
        return 1.0


def resample(trace: Trace, seconds: float, *, phase: int = 0) -> Trace:
    """The trace a sampler every `seconds` would have written, from a trace
    of shorter rows. `seconds` must be a whole multiple `k` of the trace's
    row interval; output row `j` merges input rows `phase + j*k` to
    `phase + (j+1)*k - 1` (`phase` shifts where the long sampler's ticks
    fall, 0 <= phase < k). Incomplete groups at the end are dropped."""
    interval = row_interval(trace.elapsed, trace.header.get("interval"))
    k = round(seconds / interval)
    if k < 1 or abs(k * interval - seconds) > 0.05 * interval:
        raise ValueError(f"{seconds:g} s is not a whole multiple of the trace's "
                         f"{interval:g} s rows")
    if not 0 <= phase < k:
        raise ValueError(f"phase {phase} is not in 0..{k - 1}")
    header = {**trace.header, "interval": f"{seconds:g}"}
    if k == 1 and phase == 0:
        return Trace(path=trace.path, header=header, columns=list(trace.columns),
                     elapsed=list(trace.elapsed), rows=[list(r) for r in trace.rows])
    header["resampled_from"] = f"{interval:g}"
    elapsed = np.asarray(trace.elapsed, dtype=np.float64)
    matrix = trace.matrix()
    n = (len(trace.rows) - phase) // k
    out = Trace(path=trace.path, header=header, columns=list(trace.columns))
    if n <= 0:
        return out
    # each row's own duration; the first row's interval began one step before it
    dt = np.diff(elapsed, prepend=elapsed[0] - interval)
    dt = np.where(dt > 0, dt, interval)
    stop = phase + n * k
    groups = matrix[phase:stop].reshape(n, k, len(trace.columns))
    weights = dt[phase:stop].reshape(n, k, 1)
    finite = np.isfinite(groups)
    wsum = np.where(finite, weights, 0.0).sum(axis=1)
    vsum = np.where(finite, groups * weights, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(wsum > 0, vsum / np.where(wsum > 0, wsum, 1.0), math.nan)
    last = groups[:, -1, :]
    is_interval = np.array([column_kind(c) == "interval" for c in trace.columns], dtype=bool)
    merged = np.where(is_interval[None, :], means, last)
    out.elapsed = [float(elapsed[phase + (j + 1) * k - 1]) for j in range(n)]
    out.rows = merged.tolist()
    return out


@dataclass(frozen=True, order=True)
class Geometry:
    """Rows every `interval` seconds, classified `window` seconds at a time."""

    interval: float
    window: float

    @property
    def tag(self) -> str:
        return f"{self.interval:g}s/{self.window:g}s"

    @property
    def rows(self) -> int:
        return round(self.window / self.interval)

    @classmethod
    def parse(cls, text: str) -> Geometry:
        """`5/30` or `5s/30s`: 5 s rows, 30 s windows."""
        parts = [p.strip().removesuffix("s") for p in text.split("/")]
        try:
            if len(parts) != 2:
                raise ValueError
            interval, window = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"bad geometry {text!r}; write INTERVAL/WINDOW in seconds, "
                             "e.g. 5/30") from None
        if not (interval > 0 and window >= interval) or not all(
                math.isfinite(x) for x in (interval, window)):
            raise ValueError(f"bad geometry {text!r}: need 0 < interval <= window")
        return cls(interval, window)


# What the shipped model is trained on: `hosttune classify`'s default. Training
# on every geometry below as well was measured (leave-one-run-out, see the
# model card and `hosttune model evaluate --train-geometry ...`) and scored no
# better at 5 s/30 s and worse at 1 s/10 s, so 10 s windows of 1 s rows stay.
TRAIN_GEOMETRIES: tuple[Geometry, ...] = (Geometry(1.0, 10.0),)
# What every model is cross-validated on and then claims in its schema: the
# training geometry, 30 s of 1 s rows, and the daemon's 5 s rows in its default
# 30 s window (config interval 5, window 6) and in a 60 s one.
VALIDATE_GEOMETRIES: tuple[Geometry, ...] = (
    Geometry(1.0, 10.0), Geometry(1.0, 30.0),
    Geometry(5.0, 30.0), Geometry(5.0, 60.0),
)


def geometry_range(geometries: Iterable[Geometry]) -> dict[str, list[float]]:
    """The row intervals and window lengths (min, max) covered."""
    gs = list(geometries)
    return {
        "interval_seconds": [min(g.interval for g in gs), max(g.interval for g in gs)],
        "window_seconds": [min(g.window for g in gs), max(g.window for g in gs)],
    }
