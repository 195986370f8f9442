"""A tuning run: measure the baseline, then try settings proposed by the
optimiser, each applied as one transaction, measured `repeats` times and
reverted; a trial that fails or regresses is reverted at once. At the end the
best setting is kept (if it beat the baseline by more than the noise) or the
host is left at its baseline.

Before the best setting is kept, each knob it changes is put back to its
baseline value in turn and measured again (one trial per changed knob); a
change whose removal keeps the gain within the noise is dropped. An optimiser
that finds `THP always` also drifts the knobs that do not matter (readahead
4 KiB, dirty_ratio 80 were seen on a lookup workload); keeping those would
change a host for no measured reason and could hurt the next workload.

The host side is behind small interfaces, so this loop never touches the
host itself and the same loop drives the real tuners (the CLI), a
fixture-root Host (tests) or a benchmark: `Actuator.apply(values)` /
`Actuator.revert()`, `Objective.measure()`, and `OutcomeLog.record()` for
keeping what each trial measured."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hosttune.agent.sense.errors import HosttuneError, ObjectiveError
from hosttune.models.optimizer import BayesOpt, Space
from hosttune.models.outcomes import Outcome, OutcomeLog, effect_of


class Objective(Protocol):
    """What a trial is scored by; ObjectiveError when it cannot be measured.
    The objectives themselves (a command, a metric file, a Prometheus
    endpoint) measure the host, so they live in the service layer
    (`hosttune.agent.service.objective`)."""

    lower_is_better: bool

    def describe(self) -> str: ...

    def measure(self) -> float: ...


class Actuator(Protocol):
    def apply(self, values: dict[str, str]) -> None:
        """Set every knob in `values` as one transaction (all or nothing)."""
        ...

    def revert(self) -> None:
        """Return every knob this actuator touched to its baseline value."""
        ...


@dataclass
class Trial:
    index: int
    values: dict[str, str]
    scores: list[float] = field(default_factory=list)
    effect: float | None = None  # ratio to baseline, > 1 is better
    status: str = "pending"  # baseline | ok | regressed | failed | interrupted
    error: str = ""
    origin: str = ""  # baseline | prior | random | gp | prune
    without: str = ""  # prune trials: the knob put back to its baseline value

    @property
    def score(self) -> float | None:
        return statistics.median(self.scores) if self.scores else None


@dataclass
class TuningResult:
    trials: list[Trial]
    baseline: Trial
    best: Trial | None
    kept: bool
    objective: str
    # knob -> effect measured without it (prune trials); a knob in `dropped`
    # was put back because the gain held without it
    needed: dict[str, float] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def run_tuning(
    *, space: Space, baseline_values: dict[str, str], objective: Objective,
    actuator: Actuator, budget: int, repeats: int = 1,
    start: list[dict[str, str]] | None = None,
    start_after_baseline: Callable[[], list[dict[str, str]]] | None = None,
    seed: int = 0, keep: str = "best",
    min_gain: float = 0.02, regress_tolerance: float = 0.05,
    prune: bool = True, prune_tolerance: float = 0.03,
    workload: str = "unknown", outcomes: OutcomeLog | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    seen: list[tuple[dict[str, str], float]] | None = None,
) -> TuningResult:
    """Budget counts the trials after the baseline; pruning adds at most one
    trial per knob the best setting changes. `keep` is "best" or "revert".
    The host is at its baseline on every exit but a kept best.
    `start_after_baseline` gives more starting points once the baseline has
    been measured (the priors, judged on what was seen while it ran).
    `seen`: settings measured before (on this host or on alike hosts of a
    fleet, `outcomes.warm_start`) with their effects, which the optimiser
    knows from the start instead of spending trials to learn them again."""
    if budget < 1 or repeats < 1:
        raise HosttuneError("budget and repeats must be at least 1")
    if keep not in ("best", "revert"):
        raise HosttuneError(f"--keep is best or revert, not {keep!r}")

    def measure(trial: Trial) -> None:
        for _ in range(repeats):
            trial.scores.append(objective.measure())

    baseline = Trial(index=0, values=dict(baseline_values), status="baseline", origin="baseline")
    try:
        measure(baseline)
    except ObjectiveError as exc:
        baseline.status, baseline.error = "failed", str(exc)
        raise ObjectiveError(f"the baseline measurement failed: {exc}") from None
    base = baseline.score
    assert base is not None
    baseline.effect = 1.0
    if on_trial:
        on_trial(baseline)
    starts = [dict(p) for p in (start or [])]
    if start_after_baseline is not None:
        starts += [p for p in start_after_baseline() if p not in starts]
    opt = BayesOpt(space=space, seed=seed, start=[dict(p) for p in starts])
    opt.tell(baseline.values, 1.0)
    for values, effect in seen or []:
        if values in starts:
            continue  # measured here first: told once that result is in
        try:
            opt.tell(values, effect)
        except (HosttuneError, ValueError):
            continue  # a value this run's space cannot hold: nothing it can use
    trials = [baseline]

    def run_trial(values: dict[str, str], origin: str, without: str = "") -> Trial:
        trial = Trial(index=len(trials), values=values, origin=origin, without=without)
        trials.append(trial)
        try:
            actuator.apply(values)
            measure(trial)
        except HosttuneError as exc:
            trial.status, trial.error = "failed", str(exc)
        finally:
            actuator.revert()
        if trial.status != "failed":
            score = trial.score
            assert score is not None
            trial.effect = effect_of(score, base, objective.lower_is_better)
            trial.status = "regressed" if trial.effect < 1 - regress_tolerance else "ok"
            if outcomes is not None:
                outcomes.record(Outcome(workload=workload, source="trial", knobs=values,
                                        effect=trial.effect, objective=objective.describe(),
                                        before=dict(baseline.values),
                                        noise=_noise([baseline, trial]) if repeats > 1
                                        else None))
        if on_trial:
            on_trial(trial)
        return trial

    needed: dict[str, float] = {}
    dropped: list[str] = []
    best: Trial | None = None
    try:
        for _ in range(budget):
            values = opt.ask()
            origin = "prior" if values in starts else ("gp" if len(opt.y_) >= opt.n_initial
                                                       else "random")
            trial = run_trial(values, origin)
            # A failed trial scores as the worst seen so the optimiser steers away.
            opt.tell(values, trial.effect if trial.effect is not None else min(opt.y_) - 0.1)
        best = _best(trials)
        if prune and best is not None and (best.effect or 0.0) > 1 + min_gain:
            best = _prune(best, baseline.values, run_trial, needed, dropped,
                          tolerance=max(prune_tolerance, _noise(trials)))
    except BaseException:
        # Ctrl-C, SIGTERM (raised as an exception by the caller's handler), a
        # crash in the loop: the trial in flight was reverted by `finally`;
        # make sure, then let it propagate.
        actuator.revert()
        for t in trials:
            if t.status == "pending":
                t.status = "interrupted"
        raise
    kept = False
    # Pruning can put back every knob: then the gain was noise, and there is
    # nothing to keep.
    if (keep == "best" and best is not None and (best.effect or 0.0) > 1 + min_gain
            and best.values != baseline.values):
        actuator.apply(best.values)
        kept = True
    return TuningResult(trials=trials, baseline=baseline, best=best, kept=kept,
                        objective=objective.describe(), needed=needed, dropped=dropped)


def _best(trials: list[Trial]) -> Trial | None:
    good = [t for t in trials[1:] if t.effect is not None and t.status == "ok"]
    return max(good, key=lambda t: t.effect or 0.0, default=None)


def _noise(trials: list[Trial]) -> float:
    """Half the median relative spread of repeated measurements: how far one
    trial's median may sit from another's by chance (0 with one repeat)."""
    spreads = [(max(t.scores) - min(t.scores)) / abs(statistics.median(t.scores))
               for t in trials if len(t.scores) > 1 and statistics.median(t.scores)]
    return statistics.median(spreads) / 2 if spreads else 0.0


def _prune(best: Trial, baseline: dict[str, str], run_trial: Callable[..., Trial],
           needed: dict[str, float], dropped: list[str], *, tolerance: float) -> Trial:
    """Put each knob `best` changes back to its baseline value, one at a time;
    a knob whose removal keeps the effect within `tolerance` of the best is
    dropped. The best is measured once more first: the highest of several
    noisy trials sits above its true effect (on the embedding benchmark every
    knob looked needed against it), so the fresh measurement is the
    reference. Compared with that, not with the last accepted trial, so small
    losses cannot add up knob by knob."""
    again = run_trial(dict(best.values), "prune", without="(none: the best again)")
    if again.effect is None or again.status != "ok":
        # Failed or regressed when repeated: its gain was luck or the host
        # changed under it. The repeat is the answer, and it will not be kept.
        return again
    target = again.effect * (1 - tolerance)
    current = again
    for knob in [k for k, v in best.values.items() if baseline.get(k) != v]:
        trial = run_trial({**current.values, knob: baseline[knob]}, "prune", without=knob)
        if trial.effect is not None and trial.status == "ok" and trial.effect >= target:
            dropped.append(knob)
            current = trial
        else:
            needed[knob] = trial.effect if trial.effect is not None else 0.0
    return current
