"""Learning from outcomes: every applied plan and every tuning trial records
the workload class, the knob values and the measured effect (throughput as a
ratio to the baseline measured in the same run, higher is better); the
service layer keeps them (`hosttune.agent.service.outcome_store`, SQLite
under the state directory). For a class with at least MIN_EVIDENCE outcomes
over at least two distinct settings, a ridge regression on numpy (linear and
quadratic terms of each knob, one-hot for categorical knobs) predicts the
effect of a setting; the recommender then uses its best predicted setting
ahead of the priors and says so. Everything here is a function of the
outcomes it is handed."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hosttune.agent.sense.errors import HosttuneError

# Fewer than this and a regression over a handful of knobs mostly fits noise;
# eight is the smallest budget of a `hosttune tune` run plus its baseline.
MIN_EVIDENCE = 8
# The learned setting must be predicted at least this much better than both the
# baseline and the priors' setting before it overrides them (run-to-run noise
# of the benchmarks here is 1-3%).
MARGIN = 0.03
RIDGE_ALPHA = 0.01

class OutcomeError(HosttuneError):
    pass


@dataclass(frozen=True)
class Outcome:
    workload: str
    source: str  # "plan" | "trial"
    knobs: dict[str, str]
    effect: float
    objective: str = ""
    ts: float = 0.0


def effect_of(score: float, baseline: float, lower_is_better: bool) -> float:
    """An outcome's effect: how many times better than the baseline (> 1 is better)."""
    if lower_is_better:
        return baseline / score if score > 0 else 0.0
    return score / baseline if baseline else 0.0


class OutcomeLog(Protocol):
    """Where measured outcomes are kept (the service layer's OutcomeStore)."""

    def record(self, outcome: Outcome) -> None: ...


@dataclass(frozen=True)
class BestSetting:
    values: dict[str, str]
    predicted: float
    prior_predicted: float


def _num(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


@dataclass
class LearnedModel:
    workload: str
    count: int
    kind: str = "ridge regression (linear + quadratic per knob)"
    min_evidence: int = MIN_EVIDENCE
    knobs_: tuple[str, ...] = ()
    numeric_: dict[str, tuple[float, float]] | None = None  # knob -> (min, max)
    choices_: dict[str, tuple[str, ...]] | None = None
    default_: dict[str, str] | None = None
    coef_: Any = None
    configs_: list[dict[str, str]] | None = None

    @property
    def fitted(self) -> bool:
        return self.coef_ is not None

    @classmethod
    def fit(cls, workload: str, outcomes: list[Outcome]) -> LearnedModel:
        import numpy as np  # numpy: 60 ms, 17 MB; the daemon loads this module without it

        model = cls(workload=workload, count=len(outcomes))
        distinct = {json.dumps(o.knobs, sort_keys=True) for o in outcomes}
        if len(outcomes) < MIN_EVIDENCE or len(distinct) < 2:
            return model
        knobs = sorted({k for o in outcomes for k in o.knobs})
        values: dict[str, list[str]] = {k: [o.knobs[k] for o in outcomes if k in o.knobs]
                                        for k in knobs}
        model.default_ = {k: Counter(v).most_common(1)[0][0] for k, v in values.items()}
        model.numeric_, model.choices_ = {}, {}
        for k, vals in values.items():
            nums = [n for n in (_num(v) for v in vals) if n is not None]
            if len(nums) == len(vals):
                lo, hi = min(nums), max(nums)
                if hi > lo:
                    model.numeric_[k] = (lo, hi)
            else:
                choices = tuple(sorted(set(vals)))
                if len(choices) > 1:
                    model.choices_[k] = choices
        model.knobs_ = tuple(k for k in knobs if k in model.numeric_ or k in model.choices_)
        if not model.knobs_:
            return model
        configs = [model._complete(o.knobs) for o in outcomes]
        X = np.asarray([model._features(c) for c in configs])
        y = np.asarray([o.effect for o in outcomes], dtype=float)
        reg = RIDGE_ALPHA * np.eye(X.shape[1])
        reg[0, 0] = 0.0  # no penalty on the intercept
        model.coef_ = np.linalg.solve(X.T @ X + reg, X.T @ y)
        model.configs_ = configs
        return model

    def _complete(self, knobs: Mapping[str, str]) -> dict[str, str]:
        base = dict(self.default_ or {})
        base.update({k: v for k, v in knobs.items() if k in base})
        return base

    def _features(self, config: Mapping[str, str]) -> list[float]:
        row = [1.0]
        for k in self.knobs_:
            if self.numeric_ and k in self.numeric_:
                lo, hi = self.numeric_[k]
                v = _num(config.get(k, "")) or lo
                x = (min(max(v, lo), hi) - lo) / (hi - lo)
                row += [x, x * x]
            elif self.choices_ and k in self.choices_:
                row += [1.0 if config.get(k) == c else 0.0 for c in self.choices_[k][1:]]
        return row

    def predict(self, config: Mapping[str, str]) -> float:
        import numpy as np  # numpy: 60 ms, 17 MB; the daemon loads this module without it

        if not self.fitted:
            raise OutcomeError(f"no model for '{self.workload}': {self.count} outcomes")
        return float(np.asarray(self._features(self._complete(config))) @ self.coef_)

    def best(self, current: Mapping[str, str],
             prior: Mapping[str, str]) -> BestSetting | None:
        """The best setting within what was measured (never extrapolated), if
        it beats both the current values and the priors' by MARGIN."""
        if not self.fitted or not self.knobs_:
            return None
        candidates = list(self.configs_ or [])
        for k in self.knobs_:  # one-knob moves from the best measured config
            grid: list[str]
            if self.numeric_ and k in self.numeric_:
                lo, hi = self.numeric_[k]
                grid = [str(round(lo + (hi - lo) * i / 10)) for i in range(11)]
            else:
                grid = list((self.choices_ or {}).get(k, ()))
            top = max(candidates, key=self.predict)
            candidates += [{**top, k: g} for g in grid]
        best = max(candidates, key=self.predict)
        predicted = self.predict(best)
        now = self.predict({k: v for k, v in current.items() if k in self.knobs_})
        with_prior = self.predict({**{k: v for k, v in current.items() if k in self.knobs_},
                                   **{k: v for k, v in prior.items() if k in self.knobs_}})
        if predicted < max(now, with_prior) * (1 + MARGIN):
            return None
        changed = {k: v for k, v in best.items() if current.get(k) != v or k in prior}
        return BestSetting(values=changed, predicted=predicted, prior_predicted=with_prior)
