"""Bayesian optimisation over knob values: a Gaussian process (scikit-learn,
imported only here and only when a tuning run starts) fitted to the trials so
far, and expected improvement to choose the next setting.

Knob values are encoded into [0, 1]: integer knobs linearly (or
logarithmically, for ranges over three decades) within their allowlist
bounds, categorical knobs (THP enabled) one-hot. The optimiser maximises;
callers negate a lower-is-better objective."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hosttune.agent.sense.errors import KnobError


@dataclass(frozen=True)
class Dimension:
    knob: str
    kind: str  # "int" | "cat"
    low: int = 0
    high: int = 0
    choices: tuple[str, ...] = ()
    log: bool = False
    # values the kernel keeps as they are (read_ahead_kb is kept in 4 KiB pages)
    step: int = 1

    def __post_init__(self) -> None:
        if self.kind == "int" and self.high <= self.low:
            raise KnobError(self.knob, f"empty range {self.low}..{self.high}")
        if self.kind == "cat" and len(self.choices) < 2:
            raise KnobError(self.knob, "a categorical knob needs at least two values")
        if self.kind not in ("int", "cat"):
            raise KnobError(self.knob, f"unknown dimension kind {self.kind!r}")

    @property
    def width(self) -> int:
        return len(self.choices) if self.kind == "cat" else 1

    def encode(self, value: str) -> list[float]:
        if self.kind == "cat":
            if value not in self.choices:
                raise KnobError(self.knob, f"value {value!r} not one of {self.choices}")
            return [1.0 if c == value else 0.0 for c in self.choices]
        v = min(max(int(float(value)), self.low), self.high)
        if self.log:
            lo = math.log(max(self.low, 1))
            return [(math.log(max(v, 1)) - lo) / (math.log(self.high) - lo)]
        return [(v - self.low) / (self.high - self.low)]

    def decode(self, coords: Sequence[float]) -> str:
        if self.kind == "cat":
            best = max(range(len(self.choices)), key=lambda i: coords[i])
            return self.choices[best]
        x = min(max(float(coords[0]), 0.0), 1.0)
        if self.log:
            lo = math.log(max(self.low, 1))
            value = math.exp(lo + x * (math.log(self.high) - lo))
        else:
            value = self.low + x * (self.high - self.low)
        stepped = round(value / self.step) * self.step
        return str(min(max(stepped, self.low), self.high))


@dataclass(frozen=True)
class Space:
    dims: tuple[Dimension, ...]

    @property
    def width(self) -> int:
        return sum(d.width for d in self.dims)

    @property
    def knobs(self) -> tuple[str, ...]:
        return tuple(d.knob for d in self.dims)

    def encode(self, values: Mapping[str, str]) -> list[float]:
        out: list[float] = []
        for d in self.dims:
            if d.knob not in values:
                raise KnobError(d.knob, "no value given for this knob")
            out.extend(d.encode(values[d.knob]))
        return out

    def decode(self, x: Sequence[float]) -> dict[str, str]:
        out: dict[str, str] = {}
        i = 0
        for d in self.dims:
            out[d.knob] = d.decode(x[i:i + d.width])
            i += d.width
        return out

    def random(self, rng: Any) -> dict[str, str]:
        values: dict[str, str] = {}
        for d in self.dims:
            if d.kind == "cat":
                values[d.knob] = d.choices[int(rng.integers(len(d.choices)))]
            else:
                values[d.knob] = d.decode([float(rng.random())])
        return values


def _expected_improvement(mu: Any, sigma: Any, best: float, xi: float) -> Any:
    sigma = np.maximum(sigma, 1e-9)
    z = (mu - best - xi) / sigma
    # Standard normal pdf/cdf without scipy.stats (0.37 s to import).
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2)))
    return (mu - best - xi) * cdf + sigma * pdf


def _erf(x: Any) -> Any:
    # Abramowitz-Stegun 7.1.26, |error| < 1.5e-7: plenty for ranking candidates.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


@dataclass
class BayesOpt:
    """ask() proposes knob values; tell() records what they scored (higher is
    better). The first proposals are the given starting points (baseline,
    priors), then random points until `n_initial` are known, then GP + EI."""

    space: Space
    seed: int = 0
    n_initial: int = 3
    n_candidates: int = 1000
    xi: float = 0.01
    start: list[dict[str, str]] = field(default_factory=list)
    X_: list[list[float]] = field(default_factory=list)
    y_: list[float] = field(default_factory=list)
    tried_: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._queue = [dict(p) for p in self.start]

    def ask(self) -> dict[str, str]:
        while self._queue:
            point = self._queue.pop(0)
            if point not in self.tried_:
                return point
        if len(self.y_) < self.n_initial:
            return self._fresh_random()
        return self._ask_gp()

    def tell(self, values: Mapping[str, str], score: float) -> None:
        values = dict(values)
        self.X_.append(self.space.encode(values))
        self.y_.append(float(score))
        self.tried_.append(values)

    def best(self) -> tuple[dict[str, str], float] | None:
        if not self.y_:
            return None
        i = max(range(len(self.y_)), key=lambda k: self.y_[k])
        return self.tried_[i], self.y_[i]

    def _fresh_random(self) -> dict[str, str]:
        for _ in range(50):
            point = self.space.random(self._rng)
            if point not in self.tried_:
                return point
        return self.space.random(self._rng)

    def _ask_gp(self) -> dict[str, str]:
        # scikit-learn (0.9 s, 120 MB) and its threadpoolctl: only the GP
        # steps of a tuning run need them
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
        from threadpoolctl import threadpool_limits

        X = np.asarray(self.X_, dtype=float)
        y = np.asarray(self.y_, dtype=float)
        scale = float(np.std(y)) or 1.0
        yn = (y - float(np.mean(y))) / scale
        kernel = (ConstantKernel(1.0, (1e-2, 1e2))
                  * Matern(length_scale=np.full(X.shape[1], 0.3),
                           length_scale_bounds=(5e-2, 1e1), nu=2.5)
                  + WhiteKernel(0.1, (1e-4, 1.0)))
        gp = GaussianProcessRegressor(kernel=kernel, normalize_y=False,
                                      random_state=self.seed, n_restarts_optimizer=1)
        # A few dozen points: one BLAS thread is faster than a pool, and the
        # workload being tuned keeps the other cores.
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            # A length scale at its bound just means "this knob barely matters"
            # with few points: expected, not worth a warning per trial.
            warnings.simplefilter("ignore")
            gp.fit(X, yn)
        candidates = [self.space.random(self._rng) for _ in range(self.n_candidates)]
        # Local moves around the best point so far: EI often peaks next to it.
        best_point, _ = self.best() or (candidates[0], 0.0)
        best_x = np.asarray(self.space.encode(best_point))
        for _ in range(self.n_candidates // 4):
            jitter = best_x + self._rng.normal(0, 0.1, size=best_x.shape)
            candidates.append(self.space.decode(list(np.clip(jitter, 0, 1))))
        fresh = [c for c in candidates if c not in self.tried_]
        if not fresh:
            return self._fresh_random()
        C = np.asarray([self.space.encode(c) for c in fresh])
        with threadpool_limits(limits=1):
            mu, sigma = gp.predict(C, return_std=True)
        ei = _expected_improvement(mu, sigma, float(np.max(yn)), self.xi)
        return fresh[int(np.argmax(ei))]


def random_search(space: Space, budget: int, seed: int = 0,
                  start: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    """The baseline to beat: `budget` points drawn uniformly (after `start`)."""
    rng = np.random.default_rng(seed)
    points = [dict(p) for p in (start or [])][:budget]
    while len(points) < budget:
        points.append(space.random(rng))
    return points
