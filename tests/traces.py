"""Synthetic labelled traces for tests: the columns a real recording has
(see models/data for real ones), with values shaped like three workloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hosttune.models.trace import TraceWriter

KINDS = ("busy", "quiet", "io")


def row(kind: str, rng: np.random.Generator, cpus: int = 2,
        mem: float = 24e9) -> dict[str, float]:
    util = {"busy": 0.95, "quiet": 0.03, "io": 0.25}[kind] + rng.normal(0, 0.02)
    write = {"busy": 2e4, "quiet": 1e3, "io": 6e8}[kind] * rng.uniform(0.5, 1.5)
    return {
        "cpu.count": float(cpus),
        "mem.total_bytes": mem,
        "cpu.util": float(np.clip(util, 0, 1)),
        "cpu.user_ratio": float(np.clip(util * 0.8, 0, 1)),
        "cpu.system_ratio": float(np.clip(util * 0.2, 0, 1)),
        "cpu.iowait_ratio": 0.2 if kind == "io" else 0.0,
        "cpu.<cpu>.util:max": float(np.clip(util + 0.03, 0, 1)),
        "cpu.<cpu>.util:min": float(np.clip(util - 0.03, 0, 1)),
        "cpu.context_switches.rate": cpus * {"busy": 900, "quiet": 150, "io": 3000}[kind]
        * rng.uniform(0.8, 1.2),
        "cpu.interrupts.rate": cpus * 500 * rng.uniform(0.8, 1.2),
        "proc.running": {"busy": 2.0, "quiet": 1.0, "io": 1.0}[kind] * cpus / 2,
        "proc.blocked": 1.0 if kind == "io" else 0.0,
        "mem.used_ratio": 0.1 + (0.05 if kind == "busy" else 0.0),
        "mem.dirty_bytes": {"busy": 1e6, "quiet": 1e5, "io": 5e8}[kind] * mem / 24e9,
        "disk.write_bytes.rate": write,
        "disk.writes.rate": write / 4096 / (64 if kind == "io" else 1),
        "disk.flushes.rate": 5.0 if kind == "io" else 0.0,
        "vmstat.pgfault.rate": cpus * {"busy": 2e4, "quiet": 50, "io": 500}[kind],
        "psi.cpu.some.total.rate": {"busy": 0.1, "quiet": 0.0, "io": 0.01}[kind],
        "psi.io.some.total.rate": 0.4 if kind == "io" else 0.0,
        "accel.count": 0.0,
    }


def write_trace(path: Path, label: str, kind: str, *, rows: int = 30, seed: int = 0,
                cpus: int = 2, mem: float = 24e9) -> Path:
    rng = np.random.default_rng(seed)
    with TraceWriter(path, {"label": label, "host": "test", "command": f"synthetic {kind}",
                            "interval": "1"}) as w:
        for i in range(rows):
            w.write(float(i + 1), row(kind, rng, cpus, mem))
    return path


def write_dataset(root: Path, runs_per_kind: int = 3, rows: int = 30) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k, kind in enumerate(KINDS):
        for r in range(runs_per_kind):
            write_trace(root / f"{kind}-{r}.csv.gz", kind, kind, rows=rows, seed=100 * k + r)
    return root
