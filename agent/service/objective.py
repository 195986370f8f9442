"""How auto mode judges a change: a score per window, and whether the score
after a change is worse than before it.

With an objective metric in the config, the score is that metric's mean over
the window. With an objective command, the command is run (off the main
loop's thread) before the change and after the watch windows, and the last
number it prints is the score. Without either, the score is built from the
host's own signals: stall time from PSI (`psi.<res>.some.total.rate`, the
fraction of each second some task waited on CPU, memory or I/O; lower is
better) and, when AI processes run, the CPU time they get (`ai.cpu_util`,
higher is better).
"""

from __future__ import annotations

import math
import re
import shlex
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hosttune.agent.service.config import Objective

PSI_RESOURCES = ("cpu", "memory", "io")
# Stall fractions are noisy near zero: a change has to add at least this much
# stall (2 % of a second per second) before it counts as harm.
PRESSURE_FLOOR = 0.02
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Score:
    pressure: float | None = None  # lower is better
    throughput: float | None = None  # higher is better
    objective: float | None = None  # the configured objective, sign as configured

    def to_dict(self) -> dict[str, float | None]:
        return {"pressure": self.pressure, "throughput": self.throughput,
                "objective": self.objective}


def _mean(rows: Sequence[Mapping[str, float]], name: str) -> float | None:
    vals = [row[name] for row in rows if name in row and math.isfinite(row[name])]
    return sum(vals) / len(vals) if vals else None


def window_score(rows: Sequence[Mapping[str, float]], objective: Objective) -> Score:
    """The signals of one window of rate rows."""
    parts = [_mean(rows, f"psi.{res}.some.total.rate") for res in PSI_RESOURCES]
    known = [p for p in parts if p is not None]
    pressure = sum(known) if known else None
    throughput = _mean(rows, "ai.cpu_util")
    metric = _mean(rows, objective.metric) if objective.metric else None
    return Score(pressure=pressure, throughput=throughput, objective=metric)


def harm(before: Score, after: Score, objective: Objective, regression: float) -> str | None:
    """Why `after` is worse than `before` by more than `regression`, or None."""
    if objective.metric or objective.command:
        if before.objective is None or after.objective is None:
            return None
        b, a = before.objective, after.objective
        worse = (a < b) if objective.higher_is_better else (a > b)
        if worse and abs(a - b) > regression * max(abs(b), 1e-12):
            name = objective.metric or "objective command"
            return f"{name} went from {b:.4g} to {a:.4g}"
        return None
    if before.pressure is not None and after.pressure is not None:
        limit = before.pressure * (1 + regression) + PRESSURE_FLOOR
        if after.pressure > limit:
            return (f"stall time (PSI some, cpu+memory+io) rose from {before.pressure:.3f} "
                    f"to {after.pressure:.3f} s/s")
    if (before.throughput is not None and after.throughput is not None
            and before.throughput > 0 and after.throughput < before.throughput * (1 - regression)):
        return (f"CPU time of AI processes fell from {before.throughput:.3f} "
                f"to {after.throughput:.3f} CPUs")
    return None


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    return float(found[-1]) if found else None


class CommandProbe:
    """Runs the objective command once, off the caller's thread."""

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        self.value: float | None = None
        self.error: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hosttune-objective",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            res = subprocess.run(shlex.split(self.command), capture_output=True, text=True,
                                 timeout=self.timeout, check=False)
            if res.returncode != 0:
                self.error = f"objective command exited {res.returncode}"
            else:
                self.value = last_number(res.stdout)
                if self.value is None:
                    self.error = "objective command printed no number"
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            self.error = f"objective command failed: {exc}"
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()
