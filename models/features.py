"""Features of a window of telemetry rows, the classifier's input.

Host-independent by construction: counts are divided by the CPU count and
memory by its size (both are columns of every trace), byte and event rates
enter as log1p so a host twice as fast is a small shift rather than another
scale, and nothing depends on how many CPUs, disks or interfaces a host has
(their per-instance metrics reach us only as the aggregates the trace keeps).

Load averages and the 60/300 s PSI averages are left out on purpose: they
carry the previous minute's work into this window. PSI enters as the stall
fraction of each interval (`psi.<res>.<scope>.total.rate`).

What a host lacks is NaN here (no PSI, no accelerator, no AI process seen);
`psi_present` and `accel_present` flag the two groups, and the model imputes
NaN with values stored in its schema, so a host without an accelerator gets
the same answer as the training hosts, which had none.

`FEATURE_NAMES` is the feature set; a model records it and refuses to load
against a different one.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

FEATURE_VERSION = 1

# window length and step used for training; `classify --window` defaults to it
WINDOW_SECONDS = 10.0
STRIDE_SECONDS = 5.0
# fewer rows than this and a window says too little
MIN_ROWS = 4

_MIB = float(1 << 20)


@dataclass(frozen=True)
class Feature:
    name: str
    help: str


class Window:
    """Columns of a window of trace rows, by metric name; a column the window
    lacks reads as all-NaN."""

    def __init__(self, columns: Sequence[str], matrix: Array) -> None:
        import numpy as np  # numpy: 60 ms, 17 MB; the daemon computes features without it

        self._np = np
        self.index = {name: i for i, name in enumerate(columns)}
        self.matrix = matrix
        self.rows = int(matrix.shape[0])

    def col(self, name: str) -> Array:
        i = self.index.get(name)
        if i is None:
            return self._np.full(self.rows, math.nan)
        return self.matrix[:, i]

    def has(self, name: str) -> bool:
        i = self.index.get(name)
        return i is not None and bool(self._np.isfinite(self.matrix[:, i]).any())


class Vec(list[float]):
    """One column of a window as plain floats, for the numpy-free path of
    the daemon (hosttune.models.forest). Supports what `_compute` does with a
    column: element-wise + and -, `.size`, indexing; the statistics below
    compute on it in numpy's own order of additions, so the features equal
    the numpy ones bit for bit (tests/test_lite.py)."""

    @property
    def size(self) -> int:
        return len(self)

    def __add__(self, other: object) -> Vec:  # type: ignore[override]
        assert isinstance(other, Vec)
        return Vec(a + b for a, b in zip(self, other, strict=True))

    def __sub__(self, other: object) -> Vec:
        assert isinstance(other, Vec)
        return Vec(a - b for a, b in zip(self, other, strict=True))


class LiteWindow:
    """`Window` over plain lists: `matrix` is a list of rows."""

    def __init__(self, columns: Sequence[str], matrix: Sequence[Sequence[float]]) -> None:
        self.index = {name: i for i, name in enumerate(columns)}
        self.matrix = matrix
        self.rows = len(matrix)

    def col(self, name: str) -> Vec:
        i = self.index.get(name)
        if i is None:
            return Vec([math.nan] * self.rows)
        return Vec(float(row[i]) for row in self.matrix)

    def has(self, name: str) -> bool:
        i = self.index.get(name)
        return i is not None and any(math.isfinite(row[i]) for row in self.matrix)


def pairwise_sum(a: Sequence[float]) -> float:
    """numpy's float64 add.reduce of a 1-D array, in its order: fewer than 8
    items one after the other; up to 128 in 8 interleaved partial sums; more
    split in halves (numpy's pairwise_sum, loops_utils.h.src)."""
    n = len(a)
    if n < 8:
        total = -0.0
        for x in a:
            total += x
        return total
    if n <= 128:
        r = list(a[:8])
        i = 8
        end = n - n % 8
        while i < end:
            for j in range(8):
                r[j] += a[i + j]
            i += 8
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            total += a[i]
            i += 1
        return total
    half = n // 2
    half -= half % 8
    return pairwise_sum(a[:half]) + pairwise_sum(a[half:])


def _nan_zeroed(a: Sequence[float]) -> tuple[list[float], int]:
    out = [0.0 if math.isnan(x) else x for x in a]
    return out, sum(1 for x in a if not math.isnan(x))


def _vec_mean(a: Vec) -> float:
    """np.nanmean: NaNs as 0 in the sum, divided by the count of the rest."""
    zeroed, count = _nan_zeroed(a)
    return pairwise_sum(zeroed) / count if count else math.nan


def _vec_std(a: Vec) -> float:
    """np.nanstd (ddof 0), step by step as numpy's _nanvar does it."""
    zeroed, count = _nan_zeroed(a)
    if not count:
        return math.nan
    avg = pairwise_sum(zeroed) / count
    dev = [0.0 if math.isnan(x) else (x - avg) for x in a]
    var = pairwise_sum([d * d for d in dev]) / count
    return math.nan if math.isnan(var) else math.sqrt(var)


def _mean(a: Array | Vec) -> float:
    if isinstance(a, Vec):
        return _vec_mean(a) if a.size else math.nan
    import numpy as np  # numpy: 60 ms, 17 MB; the daemon computes features without it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(a)) if a.size else math.nan


def _std(a: Array | Vec) -> float:
    if isinstance(a, Vec):
        return _vec_std(a) if a.size else math.nan
    import numpy as np  # numpy: 60 ms, 17 MB; the daemon computes features without it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanstd(a)) if a.size else math.nan


def _max(a: Array | Vec) -> float:
    if isinstance(a, Vec):
        found = [x for x in a if not math.isnan(x)]
        return max(found) if found else math.nan
    import numpy as np  # numpy: 60 ms, 17 MB; the daemon computes features without it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmax(a)) if a.size else math.nan


def _log(x: float) -> float:
    return math.log1p(max(0.0, x)) if math.isfinite(x) else math.nan


def _cv(a: Array | Vec) -> float:
    """Coefficient of variation, 0 for a flat zero series."""
    m = _mean(a)
    if not math.isfinite(m):
        return math.nan
    return _std(a) / m if m > 1e-12 else 0.0


def _ratio(num: float, den: float) -> float:
    if not (math.isfinite(num) and math.isfinite(den)) or den <= 0:
        return math.nan
    return num / den


def _frac_above(a: Array | Vec, threshold: float) -> float:
    if isinstance(a, Vec):
        kept = [x for x in a if math.isfinite(x)]
        return sum(1 for x in kept if x > threshold) / len(kept) if kept else math.nan
    import numpy as np  # numpy: 60 ms, 17 MB; the daemon computes features without it

    ok = np.isfinite(a)
    return float((a[ok] > threshold).mean()) if ok.any() else math.nan


def _finite(a: Array | Vec) -> Array | Vec:
    if isinstance(a, Vec):
        return Vec(x for x in a if math.isfinite(x))
    import numpy as np  # numpy: 60 ms, 17 MB; the daemon computes features without it

    finite: Array = a[np.isfinite(a)]
    return finite


def _compute(w: Window | LiteWindow) -> dict[str, float]:
    ncpu = _mean(w.col("cpu.count"))
    if not math.isfinite(ncpu) or ncpu <= 0:
        ncpu = math.nan
    memtot = _mean(w.col("mem.total_bytes"))
    f: dict[str, float] = {}

    util = w.col("cpu.util")
    f["cpu_util_mean"] = _mean(util)
    f["cpu_util_std"] = _std(util)
    f["cpu_util_max"] = _max(util)
    for part in ("user", "system", "iowait", "softirq", "steal"):
        f[f"cpu_{part}_ratio"] = _mean(w.col(f"cpu.{part}_ratio"))
    busiest = w.col("cpu.<cpu>.util:max")
    f["cpu_busiest_mean"] = _mean(busiest)
    f["cpu_imbalance_mean"] = _mean(busiest - w.col("cpu.<cpu>.util:min"))
    f["running_per_cpu"] = _ratio(_mean(w.col("proc.running")), ncpu)
    f["blocked_per_cpu"] = _ratio(_mean(w.col("proc.blocked")), ncpu)
    ctx = w.col("cpu.context_switches.rate")
    f["log_ctxsw_per_cpu"] = _log(_ratio(_mean(ctx), ncpu))
    f["ctxsw_cv"] = _cv(ctx)
    f["log_irq_per_cpu"] = _log(_ratio(_mean(w.col("cpu.interrupts.rate")), ncpu))
    f["log_forks"] = _log(_mean(w.col("proc.forks.rate")))
    f["threads_per_cpu"] = _ratio(_mean(w.col("proc.threads")), ncpu)

    used = w.col("mem.used_ratio")
    f["mem_used_ratio"] = _mean(used)
    span = max(1, w.rows - 1)
    finite = _finite(used)
    # change per row (interval) of the used fraction, x1000 to keep it O(1)
    f["mem_used_slope"] = (
        1000.0 * float(finite[-1] - finite[0]) / span if finite.size >= 2 else math.nan
    )
    f["mem_used_std"] = 1000.0 * _std(used)
    f["mem_cached_ratio"] = _ratio(_mean(w.col("mem.cached_bytes")), memtot)
    f["mem_anon_ratio"] = _ratio(_mean(w.col("mem.anon_bytes")), memtot)
    dirty = w.col("mem.dirty_bytes")
    f["mem_dirty_per_gib"] = _ratio(_mean(dirty) * (1 << 30), memtot) / _MIB
    f["mem_dirty_max_per_gib"] = _ratio(_max(dirty) * (1 << 30), memtot) / _MIB
    f["mem_writeback_max_per_gib"] = (
        _ratio(_max(w.col("mem.writeback_bytes")) * (1 << 30), memtot) / _MIB
    )
    f["anon_huge_ratio"] = _mean(w.col("mem.anon_huge_ratio"))

    f["log_pgfault_per_cpu"] = _log(_ratio(_mean(w.col("vmstat.pgfault.rate")), ncpu))
    f["pgfault_cv"] = _cv(w.col("vmstat.pgfault.rate"))
    f["log_majfault"] = _log(_mean(w.col("vmstat.pgmajfault.rate")))
    f["log_pgpgin"] = _log(_mean(w.col("vmstat.pgpgin.rate")))
    f["log_pgpgout"] = _log(_mean(w.col("vmstat.pgpgout.rate")))
    f["log_thp_fault_alloc"] = _log(_mean(w.col("vmstat.thp_fault_alloc.rate")))

    psi_present = any(w.has(f"psi.{r}.some.total.rate") for r in ("cpu", "memory", "io"))
    f["psi_present"] = 1.0 if psi_present else 0.0
    for res, scope in (("cpu", "some"), ("memory", "some"), ("memory", "full"),
                       ("io", "some"), ("io", "full")):
        f[f"psi_{res}_{scope}"] = _mean(w.col(f"psi.{res}.{scope}.total.rate"))

    rd = w.col("disk.read_bytes.rate")
    wr = w.col("disk.write_bytes.rate")
    writes = w.col("disk.writes.rate")
    f["log_disk_read_bps"] = _log(_mean(rd))
    f["log_disk_write_bps"] = _log(_mean(wr))
    f["log_disk_write_iops"] = _log(_mean(writes))
    f["log_disk_read_iops"] = _log(_mean(w.col("disk.reads.rate")))
    f["log_disk_flushes"] = _log(_mean(w.col("disk.flushes.rate")))
    f["log_write_kib_per_io"] = _log(_ratio(_mean(wr), _mean(writes)) / 1024.0)
    f["write_ms_per_io"] = _ratio(1000.0 * _mean(w.col("disk.write_seconds.rate")),
                                  _mean(writes))
    f["disk_util_max"] = _mean(w.col("disk.<dev>.util:max"))
    f["disk_queue_max"] = _mean(w.col("disk.<dev>.weighted_seconds.rate:max"))
    f["disk_write_cv"] = _cv(wr)
    f["disk_write_active_frac"] = _frac_above(wr, _MIB)

    pk = w.col("net.<if>.rx_packets.rate:sum") + w.col("net.<if>.tx_packets.rate:sum")
    by = w.col("net.<if>.rx_bytes.rate:sum") + w.col("net.<if>.tx_bytes.rate:sum")
    f["log_net_packets"] = _log(_mean(pk))
    f["log_net_bytes"] = _log(_mean(by))
    f["net_packets_cv"] = _cv(pk)
    f["log_net_bytes_per_packet"] = _log(_ratio(_mean(by), _mean(pk)))

    aiproc = w.col("ai.processes")
    f["ai_processes"] = _mean(aiproc)
    f["ai_cpu_share"] = _ratio(_mean(w.col("ai.cpu_util")), ncpu)
    f["ai_rss_ratio"] = _ratio(_mean(w.col("ai.rss_bytes")), memtot)
    f["ai_anon_huge_ratio"] = _mean(w.col("ai.anon_huge_ratio"))

    accel_present = w.has("accel.count") and _mean(w.col("accel.count")) > 0
    f["accel_present"] = 1.0 if accel_present else 0.0
    nan = math.nan
    f["accel_util_mean"] = _mean(w.col("accel.<i>.util:mean")) if accel_present else nan
    f["accel_util_max"] = _mean(w.col("accel.<i>.util:max")) if accel_present else nan
    f["accel_mem_util"] = _mean(w.col("accel.<i>.mem_util:mean")) if accel_present else nan
    f["accel_mem_used_ratio"] = (
        _ratio(_mean(w.col("accel.<i>.mem_used_bytes:sum")),
               _mean(w.col("accel.<i>.mem_total_bytes:sum")))
        if accel_present else nan
    )
    f["accel_power_ratio"] = (
        _ratio(_mean(w.col("accel.<i>.power_watts:sum")),
               _mean(w.col("accel.<i>.power_limit_watts:sum")))
        if accel_present else nan
    )
    f["log_accel_pcie_bps"] = (
        _log(_mean(w.col("accel.<i>.pcie_rx_bytes:sum"))
             + _mean(w.col("accel.<i>.pcie_tx_bytes:sum")))
        if accel_present else nan
    )
    return f


def _names() -> tuple[str, ...]:
    import numpy as np  # numpy: 60 ms, 17 MB; the daemon computes features without it

    probe = Window(["cpu.count"], np.ones((MIN_ROWS, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return tuple(_compute(probe))


def feature_names() -> tuple[str, ...]:
    """The feature set, in model input order."""
    return _names()


def lite_feature_names() -> tuple[str, ...]:
    """`feature_names()` without numpy."""
    probe = LiteWindow(["cpu.count"], [[1.0]] * MIN_ROWS)
    return tuple(_compute(probe))


def lite_window_features(columns: Sequence[str], matrix: Sequence[Sequence[float]]
                         ) -> list[float]:
    """`window_features` without numpy: the same numbers, as a list."""
    return list(_compute(LiteWindow(columns, matrix)).values())


def feature_set_id(names: Sequence[str] | None = None) -> str:
    """A short hash naming a feature set (version and names, in order)."""
    # Here, not at the top: hashlib loads OpenSSL (~3.5 MB resident), and the
    # daemon computes features every window but never this id.
    import hashlib

    names = feature_names() if names is None else names
    text = f"v{FEATURE_VERSION}:" + ",".join(names)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def window_features(columns: Sequence[str], matrix: Array) -> Array:
    """One feature vector (in `feature_names()` order) for a window: `matrix`
    has one row per sample, one column per name in `columns`."""
    import numpy as np  # numpy: 60 ms, 17 MB; the daemon computes features without it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = _compute(Window(columns, np.asarray(matrix, dtype=np.float64)))
    return np.array(list(values.values()), dtype=np.float64)


def window_bounds(
    elapsed: Sequence[float], seconds: float = WINDOW_SECONDS, stride: float = STRIDE_SECONDS
) -> list[tuple[int, int]]:
    """(start, stop) row ranges of windows of `seconds`, one every `stride`
    seconds, over rows stamped `elapsed` (each row covers the interval that
    ends at its stamp). A trace shorter than one window gives one window of
    all its rows; windows of fewer than MIN_ROWS rows are skipped."""
    n = len(elapsed)
    if n < MIN_ROWS:
        return []
    steps = sorted(b - a for a, b in itertools.pairwise(elapsed))
    interval = steps[len(steps) // 2] if steps else 1.0
    first = elapsed[0] - interval  # the first row's interval starts here
    last = elapsed[-1]
    if last - first < seconds:
        return [(0, n)]
    out: list[tuple[int, int]] = []
    k = 0
    lo = 0
    while True:
        start = first + k * stride
        end = start + seconds
        if end > last + 1e-6:
            break
        while lo < n and elapsed[lo] <= start + 1e-6:
            lo += 1
        hi = lo
        while hi < n and elapsed[hi] <= end + 1e-6:
            hi += 1
        if hi - lo >= MIN_ROWS:
            out.append((lo, hi))
        k += 1
    return out
