"""Objectives: how a change is judged, measured on the host. The one home
for them: auto mode's score per window and its harm test, and the objectives
`hosttune tune` measures (a command, a metric file, a Prometheus endpoint),
which the tuning loop (`models.tuning.run_tuning`) only calls through its
`Objective` protocol.

How auto mode judges a change: a score per window, and whether the score
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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hosttune.agent.sense.errors import ObjectiveError
from hosttune.agent.service.config import Objective

PSI_RESOURCES = ("cpu", "memory", "io")
# Stall fractions are noisy near zero: a change has to add at least this much
# stall (2 % of a second per second) before it counts as harm.
PRESSURE_FLOOR = 0.02
_NUMBER_TEXT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(_NUMBER_TEXT)


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


# -- objectives of a tuning run (`hosttune tune`) ------------------------------

def parse_metric(text: str, pattern: str | None, where: str) -> float:
    """The metric in `text`: the first group of the last match of `pattern`
    (or the whole match), or with no pattern the last number printed."""
    if pattern is None:
        value = last_number(text)
        if value is None:
            raise ObjectiveError("printed no number to use as the metric", subject=where)
        return value
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ObjectiveError(f"bad --metric regex {pattern!r}: {exc}", subject=where) from None
    matches = list(regex.finditer(text))
    if not matches:
        raise ObjectiveError(f"no match for metric regex {pattern!r} in the output",
                             subject=where)
    last = matches[-1]
    raw = last.group(1) if regex.groups else last.group(0)
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ObjectiveError(f"metric {raw!r} is not a number", subject=where) from None


@dataclass
class CommandObjective:
    """Run a shell command per measurement. With a metric regex, its output
    gives the number (higher is better unless lower_is_better); without one,
    the command's wall time is the objective (lower is better)."""

    command: str
    metric: str | None = None
    lower_is_better: bool = False
    timeout: float = 3600.0
    before_each: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.metric is None:
            self.lower_is_better = True

    def describe(self) -> str:
        what = f"metric /{self.metric}/" if self.metric else "wall time"
        better = "lower" if self.lower_is_better else "higher"
        return f"{what} of `{self.command}` ({better} is better)"

    def measure(self) -> float:
        if self.before_each is not None:
            self.before_each()
        start = time.perf_counter()
        try:
            proc = subprocess.run(["/bin/sh", "-c", self.command], capture_output=True,
                                  text=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ObjectiveError(f"timed out after {self.timeout:g} s",
                                 subject=shlex.quote(self.command)) from None
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise ObjectiveError(f"exited with {proc.returncode}: {tail[0][:200]}",
                                 subject=shlex.quote(self.command))
        if self.metric is None:
            return elapsed
        return parse_metric(proc.stdout + proc.stderr, self.metric, self.command)


@dataclass
class MetricFileObjective:
    """A running workload writes its metric to a file: wait `window` seconds
    after the change, then read the last match."""

    path: Path
    metric: str | None = None
    lower_is_better: bool = False
    window: float = 10.0

    def describe(self) -> str:
        return f"metric in {self.path} after {self.window:g} s"

    def measure(self) -> float:
        time.sleep(self.window)
        try:
            text = self.path.read_text(errors="replace")
        except OSError as exc:
            raise ObjectiveError(f"cannot read: {exc.strerror}", subject=str(self.path)) from None
        return parse_metric(text, self.metric, str(self.path))


@dataclass
class PrometheusObjective:
    """A running workload exports Prometheus metrics: wait `window` seconds,
    scrape `url` and read the sample named `name` (labels may be given as a
    regex suffix, e.g. 'throughput{job="train"}')."""

    url: str
    name: str
    lower_is_better: bool = False
    window: float = 10.0
    timeout: float = 10.0

    def describe(self) -> str:
        return f"{self.name} from {self.url} after {self.window:g} s"

    def measure(self) -> float:
        # urllib.request: 50 ms at import, and the daemon loads this module at
        # start; only a Prometheus objective needs it
        import urllib.error
        import urllib.request

        time.sleep(self.window)
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:
                text = resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise ObjectiveError(f"cannot scrape: {exc}", subject=self.url) from None
        return scrape_value(text, self.name, self.url)


def scrape_value(text: str, name: str, where: str) -> float:
    """The value of the first sample of `name` in Prometheus text format."""
    base = name.split("{", 1)[0]
    label_re = re.escape(name[len(base):]) if "{" in name else r"(?:\{[^}]*\})?"
    regex = re.compile(
        rf"^{re.escape(base)}{label_re}\s+({_NUMBER_TEXT}|NaN|[+-]Inf)(?:\s+\d+)?$",
        re.MULTILINE)
    match = regex.search(text)
    if match is None:
        raise ObjectiveError(f"no sample named {name!r}", subject=where)
    return float(match.group(1))
