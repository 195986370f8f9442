"""Learning from outcomes: every applied plan and every tuning trial records
the workload class, the knob values and the measured effect (throughput as a
ratio to the baseline measured in the same run, higher is better); the
service layer keeps them (`hosttune.agent.service.outcome_store`, SQLite
under the state directory). For a class with at least MIN_EVIDENCE outcomes
over at least two distinct settings, a ridge regression on numpy (linear and
quadratic terms of each knob, one-hot for categorical knobs) predicts the
effect of a setting; the recommender then uses its best predicted setting
ahead of the priors and says so. Everything here is a function of the
outcomes it is handed.

Fleet learning: outcomes measured on other hosts (`hosttune outcomes
import`, format FORMAT below) come with the facts of the host that measured
them. Each is weighted by how alike that host is to this one (`similarity`:
1.0 for the same hardware and kernel, far less for another accelerator or CPU
family); this host's own outcomes weigh 1. The regression is weighted
accordingly, and the evidence a class needs (MIN_EVIDENCE) is counted in
weight, so twenty outcomes from unlike hosts do not count as twenty."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from hosttune.agent.sense.errors import HosttuneError
from hosttune.models import workload_classes
from hosttune.tuners.knobs import parse_knob

# Fewer than this and a regression over a handful of knobs mostly fits noise;
# eight is the smallest budget of a `hosttune tune` run plus its baseline.
MIN_EVIDENCE = 8
# The learned setting must be predicted at least this much better than both the
# baseline and the priors' setting before it overrides them (run-to-run noise
# of the benchmarks here is 1-3%).
MARGIN = 0.03
RIDGE_ALPHA = 0.01

# The export format's name and version: a reader refuses any other.
FORMAT = "hosttune-outcomes/1"
SOURCES = ("plan", "trial")


class OutcomeError(HosttuneError):
    pass


@dataclass(frozen=True)
class HostFacts:
    """What makes one host's measurements apply to another."""

    # sha256 of /etc/machine-id, shortened: tells hosts apart without naming them
    host_id: str = ""
    cpu_model: str = ""
    cores: int = 0
    kernel: str = ""  # release, as uname -r
    mem_bytes: int = 0
    accel_vendor: str = ""  # "" when the host has no accelerator
    accel_model: str = ""  # PCI vendor:device of the first one, e.g. "10de:2330"
    accel_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"host_id": self.host_id, "cpu_model": self.cpu_model, "cores": self.cores,
                "kernel": self.kernel, "mem_bytes": self.mem_bytes,
                "accel_vendor": self.accel_vendor, "accel_model": self.accel_model,
                "accel_count": self.accel_count}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> HostFacts:
        if not isinstance(data, dict):
            raise OutcomeError("\"host\" must be an object of host facts", subject=where)
        values: dict[str, Any] = {}
        for name, kind in (("host_id", str), ("cpu_model", str), ("cores", int),
                           ("kernel", str), ("mem_bytes", int), ("accel_vendor", str),
                           ("accel_model", str), ("accel_count", int)):
            if name not in data:
                raise OutcomeError(f"host.{name} is missing", subject=where)
            value = data[name]
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)
                                or value < 0):
                raise OutcomeError(f"host.{name} must be a whole number >= 0, not {value!r}",
                                   subject=where)
            if kind is str and not isinstance(value, str):
                raise OutcomeError(f"host.{name} must be text, not {value!r}", subject=where)
            values[name] = value
        if not values["host_id"]:
            raise OutcomeError("host.host_id is empty", subject=where)
        extra = sorted(set(data) - set(values))
        if extra:
            raise OutcomeError(f"unknown host fact(s): {', '.join(extra)}", subject=where)
        return cls(**values)


@dataclass(frozen=True)
class Outcome:
    workload: str
    source: str  # "plan" | "trial"
    knobs: dict[str, str]
    effect: float
    objective: str = ""
    ts: float = 0.0
    # the values the knobs had before (the baseline the effect is against), where known
    before: dict[str, str] = field(default_factory=dict)
    # relative spread of the repeated measurements, None when measured once
    noise: float | None = None
    # the host that measured it; None for this host
    host: HostFacts | None = None


def _cpu_family(model: str) -> str:
    """"Intel(R) Xeon(R) Platinum 8480+" -> "intel"; "AMD EPYC 9654" -> "amd"."""
    words = re.sub(r"\((r|tm)\)", " ", model.lower()).split()
    return words[0] if words else ""


def _size_ratio(a: int, b: int) -> float:
    if a == b:
        return 1.0
    if a <= 0 or b <= 0:
        return 0.0
    return min(a, b) / max(a, b)


def similarity(here: HostFacts, there: HostFacts) -> float:
    """How much an outcome measured on `there` says about `here`, in [0, 1]:
    1.0 for the same accelerators, CPU, kernel and memory. The accelerator
    counts most (an AI job's speed is mostly its accelerators'; a knob such as
    THP or IRQ placement helps one driver and not another), then the CPU
    (vendor and model: another family has other caches and memory paths),
    then the kernel (knob semantics change between releases, rarely within
    one) and the size of memory and of the machine."""
    w = 1.0
    if here.accel_vendor != there.accel_vendor:
        w *= 0.1
    elif here.accel_model != there.accel_model:
        w *= 0.5
    w *= math.sqrt(_size_ratio(here.accel_count, there.accel_count))
    if here.cpu_model != there.cpu_model:
        same_family = _cpu_family(here.cpu_model) == _cpu_family(there.cpu_model)
        w *= 0.6 if same_family else 0.25
    w *= math.sqrt(_size_ratio(here.cores, there.cores))
    if here.kernel != there.kernel:
        w *= 0.9 if here.kernel.split(".")[:2] == there.kernel.split(".")[:2] else 0.7
    w *= _size_ratio(here.mem_bytes, there.mem_bytes) ** 0.25
    return float(max(0.0, min(1.0, w)))


def weight_of(outcome: Outcome, here: HostFacts | None) -> float:
    """This host's own outcomes weigh 1; another host's, its similarity."""
    if outcome.host is None:
        return 1.0
    return similarity(here or HostFacts(), outcome.host)


# An outcome from a host less alike than this is left out of a tuning run's
# starting observations: the optimiser cannot weigh a point, only take it.
WARM_START_WEIGHT = 0.5


def _alike(outcomes: list[Outcome], here: HostFacts | None, knobs: list[str],
           baseline: Mapping[str, str]) -> list[tuple[dict[str, str], float, str]]:
    """(complete setting, effect, host id or "" for this host) of each
    outcome a tuning run over `knobs` can use (see warm_start)."""
    out = []
    wanted = set(knobs)
    for o in outcomes:
        if not o.knobs or not set(o.knobs) <= wanted:
            continue
        if weight_of(o, here) < WARM_START_WEIGHT:
            continue
        values = {k: o.knobs.get(k, o.before.get(k, baseline.get(k, ""))) for k in knobs}
        if all(values.values()):
            out.append((values, o.effect, o.host.host_id if o.host else ""))
    return out


def warm_start(outcomes: list[Outcome], here: HostFacts | None, knobs: list[str],
               baseline: Mapping[str, str]) -> list[tuple[dict[str, str], float]]:
    """Observations a tuning run over `knobs` can start from: each outcome
    that set only those knobs, from this host or one alike
    (WARM_START_WEIGHT), as a complete setting (the knobs it did not set at
    the values they had before it, else at this host's baseline) and its
    effect."""
    return [(values, effect) for values, effect, _host in
            _alike(outcomes, here, knobs, baseline)]


def best_seen(outcomes: list[Outcome], here: HostFacts | None, knobs: list[str],
              baseline: Mapping[str, str], count: int = 2) -> list[dict[str, str]]:
    """The settings that measured best (better than their baseline) on this
    host and alike ones: what a tuning run should try here first, since a
    sibling's gain is the likeliest to hold on this host too. Only where
    they come from two hosts or more: the best of one host's few noisy
    trials overstates itself (fleet_learning.py: with one sibling's best
    tried first, a new host needed more trials than with none)."""
    alike = _alike(outcomes, here, knobs, baseline)
    if len({host for _v, _e, host in alike}) < 2:
        return []
    ranked = sorted((a for a in alike if a[1] > 1.0), key=lambda a: -a[1])
    out: list[dict[str, str]] = []
    for values, _effect, _host in ranked:
        if values not in out:
            out.append(values)
        if len(out) == count:
            break
    return out


def to_record(outcome: Outcome, host: HostFacts) -> dict[str, Any]:
    """One line of an export file (FORMAT): self-contained, so files from
    several hosts can simply be concatenated."""
    return {"format": FORMAT, "host": host.to_dict(), "class": outcome.workload,
            "source": outcome.source, "objective": outcome.objective,
            "knobs": dict(outcome.knobs), "before": dict(outcome.before),
            "effect": outcome.effect, "noise": outcome.noise, "ts": outcome.ts}


def _knob_map(value: Any, name: str, where: str, *, empty_ok: bool) -> dict[str, str]:
    if not isinstance(value, dict) or (not value and not empty_ok):
        raise OutcomeError(f"\"{name}\" must be a non-empty object of knob -> value"
                           if not empty_ok else f"\"{name}\" must be an object of knob -> value",
                           subject=where)
    out = {}
    for knob, v in value.items():
        try:
            parse_knob(knob)
        except HosttuneError as exc:
            raise OutcomeError(f"{name}: {exc}", subject=where) from None
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise OutcomeError(f"{name}.{knob}: a value is text or a number, not {v!r}",
                               subject=where)
        out[knob] = str(v)
    return out


def _number(value: Any, name: str, where: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or value < 0 or (positive and value == 0):
        what = "a finite number > 0" if positive else "a finite number >= 0"
        raise OutcomeError(f"\"{name}\" must be {what}, not {value!r}", subject=where)
    return float(value)


def from_record(data: Any, where: str) -> Outcome:
    """One parsed line of an export file, checked; OutcomeError naming
    `where` (file:line) and the field otherwise."""
    if not isinstance(data, dict):
        raise OutcomeError("each line must be a JSON object", subject=where)
    if data.get("format") != FORMAT:
        raise OutcomeError(f"format {data.get('format')!r} is not {FORMAT!r}", subject=where)
    known = {"format", "host", "class", "source", "objective", "knobs", "before", "effect",
             "noise", "ts"}
    extra = sorted(set(data) - known)
    if extra:
        raise OutcomeError(f"unknown field(s): {', '.join(extra)}", subject=where)
    for name in ("host", "class", "knobs", "effect"):
        if name not in data:
            raise OutcomeError(f"\"{name}\" is missing", subject=where)
    host = HostFacts.from_dict(data["host"], where)
    workload = data["class"]
    if not isinstance(workload, str):
        raise OutcomeError(f"\"class\" must be text, not {workload!r}", subject=where)
    try:
        workload_classes.check(workload, key="class")
    except HosttuneError as exc:
        raise OutcomeError(exc.message, subject=where) from None
    source = data.get("source", "trial")
    if source not in SOURCES:
        raise OutcomeError(f"\"source\" is one of {', '.join(SOURCES)}, not {source!r}",
                           subject=where)
    objective = data.get("objective", "")
    if not isinstance(objective, str):
        raise OutcomeError("\"objective\" must be text", subject=where)
    noise = data.get("noise")
    ts = data.get("ts", 0.0)
    return Outcome(
        workload=workload, source=source, objective=objective,
        knobs=_knob_map(data["knobs"], "knobs", where, empty_ok=False),
        before=_knob_map(data.get("before", {}), "before", where, empty_ok=True),
        effect=_number(data["effect"], "effect", where, positive=True),
        noise=None if noise is None else _number(noise, "noise", where, positive=False),
        ts=_number(ts, "ts", where, positive=False), host=host)


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
    # outcomes measured here, and imported from other hosts (weighted by
    # similarity): `evidence` is their summed weight
    local_count: int = 0
    imported_count: int = 0
    imported_hosts: int = 0
    evidence: float = 0.0
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
    def fit(cls, workload: str, outcomes: list[Outcome],
            here: HostFacts | None = None) -> LearnedModel:
        """`here`: this host's facts, against which imported outcomes are
        weighted (without them every imported outcome weighs little)."""
        import numpy as np  # numpy: 60 ms, 17 MB; the daemon loads this module without it

        weights = [weight_of(o, here) for o in outcomes]
        imported = [o for o in outcomes if o.host is not None]
        model = cls(workload=workload, count=len(outcomes),
                    local_count=len(outcomes) - len(imported), imported_count=len(imported),
                    imported_hosts=len({o.host.host_id for o in imported if o.host}),
                    evidence=round(sum(weights), 3))
        distinct = {json.dumps(o.knobs, sort_keys=True) for o in outcomes}
        if model.evidence < MIN_EVIDENCE or len(distinct) < 2:
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
        w = np.asarray(weights, dtype=float)
        reg = RIDGE_ALPHA * np.eye(X.shape[1])
        reg[0, 0] = 0.0  # no penalty on the intercept
        # Weighted least squares: each row counts as much as its host is alike.
        model.coef_ = np.linalg.solve(X.T @ (w[:, None] * X) + reg, X.T @ (w * y))
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
