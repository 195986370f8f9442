"""Merging 1 s trace rows into what a sampler at a longer interval records,
window geometries, and the check that the daemon classifies windows the
shipped model was validated on."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hosttune.agent.sense.paths import Paths
from hosttune.agent.service import config as cfg
from hosttune.agent.service.daemon.loop import Daemon
from hosttune.agent.service.log import Log
from hosttune.agent.service.notify import Notifier
from hosttune.models import classifier as serving
from hosttune.models.resample import (
    VALIDATE_GEOMETRIES,
    Geometry,
    column_kind,
    geometry_range,
    resample,
)
from hosttune.models.trace import Trace, TraceWriter, read_trace, trace_columns


def _trace(elapsed: list[float], columns: dict[str, list[float]], interval: str = "1") -> Trace:
    names = list(columns)
    rows = [[columns[c][i] for c in names] for i in range(len(elapsed))]
    return Trace(path="mem", header={"label": "x", "interval": interval}, columns=names,
                 elapsed=list(elapsed), rows=rows)


@pytest.mark.parametrize(("name", "kind"), [
    ("disk.write_bytes.rate", "interval"),
    ("psi.io.some.total.rate", "interval"),
    ("net.<if>.rx_bytes.rate:sum", "interval"),
    ("disk.<dev>.weighted_seconds.rate:max", "interval"),
    ("cpu.util", "interval"),  # derived from the CPU time counters' rates
    ("cpu.user_ratio", "interval"),
    ("cpu.<cpu>.util:max", "interval"),
    ("disk.<dev>.util:max", "interval"),
    ("mem.used_ratio", "gauge"),
    ("mem.dirty_bytes", "gauge"),
    ("proc.running", "gauge"),
    ("load.1", "gauge"),
    ("ai.cpu_util", "gauge"),  # measured over the process scan, read at the sample
    ("accel.<i>.util:mean", "gauge"),
    ("cpu.count", "gauge"),
])
def test_column_kinds(name: str, kind: str) -> None:
    assert column_kind(name) == kind


def test_every_trace_rate_column_is_an_interval_column() -> None:
    for name in trace_columns():
        if ".rate" in name:
            assert column_kind(name) == "interval", name


def test_rates_average_and_gauges_take_the_later_sample() -> None:
    t = _trace([float(i) for i in range(1, 11)], {
        "disk.write_bytes.rate": [float(i) for i in range(1, 11)],
        "mem.used_ratio": [0.1 * i for i in range(1, 11)],
    })
    r = resample(t, 5.0)
    assert r.elapsed == [5.0, 10.0]
    assert r.header["interval"] == "5" and r.header["resampled_from"] == "1"
    np.testing.assert_allclose(r.matrix(), [[3.0, 0.5], [8.0, 1.0]])
    shifted = resample(t, 5.0, phase=2)  # the long sampler's ticks fall 2 s later
    assert shifted.elapsed == [7.0]
    np.testing.assert_allclose(shifted.matrix(), [[5.0, 0.7]])
    same = resample(t, 1.0)
    assert same.rows == t.rows and same.elapsed == t.elapsed


def test_a_counter_rate_is_exact_over_uneven_rows() -> None:
    """The merged rate equals (counter at the end - at the start) / time, as a
    sampler at the long interval would compute it, even when the short rows
    were a little late (the recorder's ticks drift by milliseconds)."""
    rng = np.random.default_rng(7)
    stamps = np.cumsum(rng.uniform(0.97, 1.03, 31))  # stamps[0]: the first sample
    counter = np.cumsum(rng.uniform(0, 1e6, 31))
    rates = np.diff(counter) / np.diff(stamps)
    elapsed = list(stamps[1:] - stamps[0])
    t = _trace(elapsed, {"disk.read_bytes.rate": list(rates)})
    # phase 1: the first row, whose start the trace does not record, is left out
    r = resample(t, 5.0, phase=1)
    assert len(r.rows) == 5  # rows 1..25; 26..29 do not fill a sixth
    for j, got in enumerate(r.matrix()[:, 0]):
        a, b = 1 + 5 * j, 1 + 5 * (j + 1)  # samples bounding rows a..b-1 (1-based)
        want = (counter[b] - counter[a]) / (stamps[b] - stamps[a])
        assert math.isclose(got, want, rel_tol=1e-12), (j, got, want)


def test_missing_values() -> None:
    nan = math.nan
    t = _trace([1.0, 2.0, 3.0, 4.0], {
        "cpu.util": [0.2, nan, 0.4, nan],
        "mem.used_ratio": [0.1, 0.2, 0.3, nan],
        "psi.cpu.some.total.rate": [nan, nan, 0.1, 0.3],
    })
    r = resample(t, 2.0).matrix()
    np.testing.assert_allclose(r[:, 0], [0.2, 0.4])  # the measured part of the interval
    assert r[0, 1] == pytest.approx(0.2) and math.isnan(r[1, 1])  # no value at the sample
    assert math.isnan(r[0, 2]) and r[1, 2] == pytest.approx(0.2)


def test_bad_intervals_are_refused() -> None:
    t = _trace([1.0, 2.0, 3.0, 4.0], {"cpu.util": [0.1] * 4})
    with pytest.raises(ValueError, match="whole multiple"):
        resample(t, 2.5)
    with pytest.raises(ValueError, match="whole multiple"):
        resample(t, 0.5)
    with pytest.raises(ValueError, match="phase"):
        resample(t, 2.0, phase=2)
    assert resample(t, 5.0).rows == []  # too short for one merged row


def test_resampled_trace_round_trips_and_windows(tmp_path: Path) -> None:
    from hosttune.models import features

    path = tmp_path / "t.csv.gz"
    with TraceWriter(path, {"label": "busy", "interval": "1"}) as w:
        for i in range(60):
            w.write(float(i + 1), {"cpu.util": 0.5 + 0.4 * (i % 2), "cpu.count": 2.0,
                                   "mem.total_bytes": 1e9, "mem.used_ratio": 0.3})
    r = resample(read_trace(path), 5.0)
    assert len(r.rows) == 12
    # alternating 0.9/0.5 seconds: 1 s rows vary, 5 s rows barely do
    bounds = features.window_bounds(r.elapsed, 30.0, 5.0)
    assert bounds and all(b - a == 6 for a, b in bounds)
    names = features.feature_names()
    fine = features.window_features(read_trace(path).columns, read_trace(path).matrix()[:30])
    coarse = features.window_features(r.columns, r.matrix()[:6])
    std = names.index("cpu_util_std")
    assert fine[std] == pytest.approx(0.2)
    assert coarse[std] < 0.05
    assert coarse[names.index("cpu_util_mean")] == pytest.approx(0.7, abs=0.05)


def test_geometry_parse_and_range() -> None:
    assert Geometry.parse("5/30") == Geometry(5.0, 30.0)
    assert Geometry.parse("1s/10s").tag == "1s/10s"
    assert Geometry(5.0, 30.0).rows == 6
    for bad in ("5", "x/30", "0/30", "30/5", "5/30/60"):
        with pytest.raises(ValueError):
            Geometry.parse(bad)
    assert geometry_range(VALIDATE_GEOMETRIES) == {"interval_seconds": [1.0, 5.0],
                                                "window_seconds": [10.0, 60.0]}


def test_geometry_problem() -> None:
    g = {"validated": ["1s/10s", "5s/60s"], "interval_seconds": [1.0, 5.0],
         "window_seconds": [10.0, 60.0]}
    assert serving.geometry_problem(g, 5.0, 30.0) is None
    assert serving.geometry_problem(g, 1.0, 10.0) is None
    too_long = serving.geometry_problem(g, 10.0, 60.0)
    assert too_long is not None and "rows every 1-5 s" in too_long and "10 s rows" in too_long
    assert serving.geometry_problem(g, 5.0, 120.0) is not None
    assert serving.geometry_problem(g, 5.0, 10.0) is not None  # two rows: too few
    # a model from before geometries were recorded: 10 s windows of 1 s rows only
    legacy = serving.validated_geometry({"schema": serving.SCHEMA})
    assert serving.geometry_problem(legacy, 1.0, 10.0) is None
    assert serving.geometry_problem(legacy, 5.0, 30.0) is not None


def test_shipped_model_covers_the_daemon_default_geometry() -> None:
    """The daemon's default interval and window lie inside what the shipped
    model records it was validated on (fails if either moves out)."""
    defaults = cfg.Config()
    geometry = serving.schema_geometry()
    problem = serving.geometry_problem(geometry, defaults.interval,
                                       defaults.interval * defaults.window)
    assert problem is None, problem
    tag = Geometry(defaults.interval, defaults.interval * defaults.window).tag
    assert tag in geometry["validated"]
    card = serving.load().card
    for scores in card["scores"].values():
        assert tag in scores["geometries"]  # and the card says how well it does there


class _Engine:
    """The daemon reads the model's geometry from what `prepare` said."""

    def __init__(self) -> None:
        self.notes: list[str] = []


def test_daemon_warns_once_outside_the_model_geometry(tmp_path: Path) -> None:
    paths = Paths(state_dir=tmp_path / "state", run_dir=tmp_path / "run",
                  config=tmp_path / "hosttune.yaml")
    stream = io.StringIO()
    config = cfg.parse("interval: 10\nwindow: 6\n")
    engine: Any = _Engine()
    daemon = Daemon(paths, config, engine, Log("debug", use_journal=False, stream=stream),
                    Notifier(env={}))
    daemon.info.host = {"model": {"geometry": serving.validated_geometry(
        {"geometries": {"validated": ["5s/30s"], "interval_seconds": [1, 5],
                        "window_seconds": [10, 60]}})}}
    daemon.check_geometry()
    daemon.check_geometry()
    lines = [line for line in stream.getvalue().splitlines() if "validated" in line]
    assert len(lines) == 1, stream.getvalue()
    assert "60 s windows of 10 s rows" in lines[0] and "hosttune model train" in lines[0]
    assert daemon.info.geometry_warning is not None
    daemon.services.config = cfg.parse("interval: 5\nwindow: 6\n")
    daemon.check_geometry()
    assert daemon.info.geometry_warning is None
