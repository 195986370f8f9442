from __future__ import annotations

import math

import numpy as np
import pytest

from hosttune.models import features
from tests.traces import row


def window(kind: str, cpus: int = 2, mem: float = 24e9, n: int = 10,
           extra: dict[str, float] | None = None) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = [{**row(kind, rng, cpus, mem), **(extra or {})} for _ in range(n)]
    cols = sorted(rows[0])
    return features.window_features(cols, np.array([[r[c] for c in cols] for r in rows]))


def named(vec: np.ndarray) -> dict[str, float]:
    return dict(zip(features.feature_names(), vec.tolist(), strict=True))


def test_feature_set_is_stable_and_named() -> None:
    names = features.feature_names()
    assert len(names) == len(set(names)) > 40
    assert features.feature_set_id() == features.feature_set_id(list(names))
    assert features.feature_set_id([*names[:-1], "x"]) != features.feature_set_id()


def test_rates_are_normalised_by_host_size() -> None:
    # the same work per CPU on a 2-CPU and an 8-CPU host (row() scales its
    # per-host counts by cpus) gives the same per-CPU features
    small, big = named(window("busy", cpus=2)), named(window("busy", cpus=8, mem=96e9))
    for name in ("log_ctxsw_per_cpu", "log_pgfault_per_cpu", "running_per_cpu",
                 "cpu_util_mean", "mem_dirty_per_gib"):
        assert small[name] == pytest.approx(big[name], rel=1e-9), name


def test_classes_differ_where_they_should() -> None:
    busy, quiet, io = named(window("busy")), named(window("quiet")), named(window("io"))
    assert busy["cpu_util_mean"] > 0.9 > quiet["cpu_util_mean"]
    assert io["log_disk_write_bps"] > busy["log_disk_write_bps"] + 5
    assert io["psi_io_some"] == pytest.approx(0.4)
    assert io["disk_write_active_frac"] == 1.0 and quiet["disk_write_active_frac"] == 0.0


def test_absent_groups_are_nan_and_flagged() -> None:
    f = named(window("busy"))
    assert f["accel_present"] == 0.0
    assert all(math.isnan(f[n]) for n in features.feature_names() if n.startswith("accel_")
               and n != "accel_present")
    assert f["psi_present"] == 1.0
    no_psi = np.array([[0.5, 2.0]] * 6)
    g = named(features.window_features(["cpu.util", "cpu.count"], no_psi))
    assert g["psi_present"] == 0.0 and math.isnan(g["psi_io_some"])
    assert g["cpu_util_mean"] == 0.5


def test_accelerator_features_when_present() -> None:
    f = named(window("busy", extra={
        "accel.count": 2.0, "accel.<i>.util:mean": 0.8, "accel.<i>.util:max": 0.9,
        "accel.<i>.mem_used_bytes:sum": 40e9, "accel.<i>.mem_total_bytes:sum": 160e9,
    }))
    assert f["accel_present"] == 1.0
    assert f["accel_util_mean"] == pytest.approx(0.8)
    assert f["accel_mem_used_ratio"] == pytest.approx(0.25)


def test_window_bounds() -> None:
    e = [float(i) for i in range(1, 61)]
    b = features.window_bounds(e, 10, 5)
    assert b[0] == (0, 10) and b[1] == (5, 15) and b[-1] == (50, 60)
    assert all(hi - lo == 10 for lo, hi in b)
    assert features.window_bounds(e[:6], 10, 5) == [(0, 6)]  # shorter: one window
    assert features.window_bounds(e[:3], 10, 5) == []  # too few rows
    half = [0.5 * i for i in range(1, 41)]  # 0.5 s interval
    assert all(hi - lo == 20 for lo, hi in features.window_bounds(half, 10, 5))
