"""The GP/EI optimiser, the outcome store and the tuning loop (host-free parts)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hosttune.agent.sense.errors import HosttuneError, KnobError, ObjectiveError
from hosttune.agent.service.objective import CommandObjective, parse_metric, scrape_value
from hosttune.agent.service.outcome_store import OutcomeStore
from hosttune.models.optimizer import BayesOpt, Dimension, Space, random_search
from hosttune.models.outcomes import MIN_EVIDENCE, Outcome
from hosttune.models.tuning import run_tuning

SPACE = Space((
    Dimension("sysctl:vm.dirty_ratio", "int", 5, 80),
    Dimension("block:vda:read_ahead_kb", "int", 16, 16384, log=True),
    Dimension("thp:enabled", "cat", choices=("always", "madvise", "never")),
))
START = {"sysctl:vm.dirty_ratio": "20", "block:vda:read_ahead_kb": "128", "thp:enabled": "madvise"}


def synthetic(values: dict[str, str], rng: np.random.Generator) -> float:
    """Peak at dirty_ratio 55, readahead 2048, THP always; 2% noise."""
    d = int(values["sysctl:vm.dirty_ratio"])
    ra = int(values["block:vda:read_ahead_kb"])
    thp = {"always": 1.3, "madvise": 1.0, "never": 0.8}[values["thp:enabled"]]
    score = thp * math.exp(-((d - 55) / 30) ** 2) * math.exp(-(math.log2(ra / 2048) / 4) ** 2)
    return score * (1 + rng.normal(0, 0.02))


def test_encode_decode_round_trip_and_errors() -> None:
    x = SPACE.encode(START)
    assert len(x) == SPACE.width == 5
    assert SPACE.decode(x) == START
    with pytest.raises(KnobError, match="thp:enabled"):
        SPACE.encode({**START, "thp:enabled": "sometimes"})
    with pytest.raises(KnobError, match="empty range"):
        Dimension("sysctl:x", "int", 5, 5)


def test_bayesopt_beats_the_start_within_budget_deterministically() -> None:
    def run(seed: int) -> tuple[float, float, list[dict[str, str]]]:
        rng = np.random.default_rng(seed)
        opt = BayesOpt(SPACE, seed=seed, start=[START])
        start_score = synthetic(START, np.random.default_rng(99))
        for _ in range(14):
            p = opt.ask()
            opt.tell(p, synthetic(p, rng))
        best = opt.best()
        assert best is not None
        return start_score, best[1], opt.tried_

    start_score, best_score, tried = run(3)
    assert best_score > 1.5 * start_score
    assert run(3)[2] == tried  # same seed, same trials
    assert len({tuple(sorted(t.items())) for t in tried}) == len(tried)  # no repeats


def test_bayesopt_beats_random_search_on_average() -> None:
    gp_best, rs_best = [], []
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        opt = BayesOpt(SPACE, seed=seed, start=[START])
        for _ in range(12):
            p = opt.ask()
            opt.tell(p, synthetic(p, rng))
        gp_best.append(opt.best()[1])  # type: ignore[index]
        rng = np.random.default_rng(100 + seed)
        rs_best.append(max(synthetic(p, rng) for p in random_search(SPACE, 12, seed, [START])))
    assert np.mean(gp_best) > np.mean(rs_best)


def test_outcome_store_round_trip_and_threshold(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "state" / "outcomes.db")
    assert store.outcomes() == []
    for i in range(MIN_EVIDENCE - 1):
        store.record(Outcome("training", "trial", {"thp:enabled": ["always", "madvise"][i % 2]},
                             1.0 + 0.5 * (i % 2 == 0)))
    assert not store.learned("training").fitted
    store.record(Outcome("training", "plan", {"thp:enabled": "always"}, 1.5))
    store.record(Outcome("inference_serving", "plan", {"thp:enabled": "never"}, 0.9))
    model = store.learned("training")
    assert model.fitted and model.count == MIN_EVIDENCE
    assert model.predict({"thp:enabled": "always"}) > model.predict({"thp:enabled": "madvise"})
    best = model.best({"thp:enabled": "madvise"}, {})
    assert best is not None and best.values == {"thp:enabled": "always"}
    assert len(store.outcomes()) == MIN_EVIDENCE + 1


def test_outcome_store_unwritable_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HosttuneError, match="cannot open outcome store"):
        OutcomeStore(blocker / "sub" / "o.db").record(Outcome("x", "trial", {"a:b": "1"}, 1.0))


def test_parse_metric() -> None:
    assert parse_metric("a 1\nthroughput: 12.5 MiB/s\n", r"throughput: ([0-9.]+)", "c") == 12.5
    assert parse_metric("done in 3.5e2 ms", None, "c") == 350.0
    with pytest.raises(ObjectiveError, match="no match"):
        parse_metric("nothing", r"tp: (\d+)", "cmd")
    with pytest.raises(ObjectiveError, match="bad --metric"):
        parse_metric("x", "(", "cmd")


def test_scrape_value() -> None:
    text = ('# HELP tp x\n# TYPE tp gauge\ntp{job="a"} 3.5\ntp{job="b"} 7\nother 1\n')
    assert scrape_value(text, 'tp{job="b"}', "u") == 7.0
    assert scrape_value(text, "tp", "u") == 3.5
    with pytest.raises(ObjectiveError, match="no sample"):
        scrape_value(text, "missing", "u")


def test_command_objective_failures_are_objective_errors() -> None:
    with pytest.raises(ObjectiveError, match="exited with 3"):
        CommandObjective("echo oops >&2; exit 3", metric="x").measure()
    assert CommandObjective("true").measure() >= 0  # wall time, lower is better
    assert CommandObjective("true").lower_is_better


class DictActuator:
    """Knobs in a dict, the way the tuners would hold them on a fixture host."""

    def __init__(self, baseline: dict[str, str], refuse: str | None = None) -> None:
        self.baseline = dict(baseline)
        self.values = dict(baseline)
        self.refuse = refuse

    def apply(self, values: dict[str, str]) -> None:
        if self.refuse is not None and values.get("thp:enabled") == self.refuse:
            raise KnobError("thp:enabled", "kernel refused write")
        self.values.update(values)

    def revert(self) -> None:
        self.values = dict(self.baseline)


class SyntheticObjective:
    lower_is_better = False

    def __init__(self, actuator: DictActuator) -> None:
        self.actuator = actuator
        self.rng = np.random.default_rng(0)

    def describe(self) -> str:
        return "synthetic"

    def measure(self) -> float:
        return synthetic(self.actuator.values, self.rng)


def test_run_tuning_keeps_best_records_outcomes_and_reverts_failures(tmp_path: Path) -> None:
    act = DictActuator(START, refuse="never")
    store = OutcomeStore(tmp_path / "o.db")
    prior = {**START, "thp:enabled": "always"}
    result = run_tuning(space=SPACE, baseline_values=START, objective=SyntheticObjective(act),
                        actuator=act, budget=10, repeats=2, start=[prior], seed=1,
                        workload="training", outcomes=store)
    assert result.trials[1].values == prior and result.trials[1].origin == "prior"
    assert result.best is not None and result.best.effect is not None
    assert result.best.effect > 1.3
    assert result.kept and act.values == result.best.values
    failed = [t for t in result.trials if t.status == "failed"]
    assert all("refused" in t.error for t in failed)
    measured = [t for t in result.trials[1:] if t.status != "failed"]
    assert len(store.outcomes("training")) == len(measured)
    # every knob of the peak matters here: pruning measured each and kept all
    changed = {k for k, v in result.best.values.items() if START[k] != v}
    assert not result.dropped and set(result.needed) == changed
    assert all(effect < result.best.effect * 0.97 for effect in result.needed.values())


class OnlyThpMatters(SyntheticObjective):
    def measure(self) -> float:
        thp = {"always": 1.5, "madvise": 1.0, "never": 0.9}[self.actuator.values["thp:enabled"]]
        return thp * (1 + self.rng.normal(0, 0.01))


def test_pruning_puts_back_the_knobs_that_do_not_matter() -> None:
    act = DictActuator(START)
    prior = {"sysctl:vm.dirty_ratio": "60", "block:vda:read_ahead_kb": "4096",
             "thp:enabled": "always"}
    result = run_tuning(space=SPACE, baseline_values=START, objective=OnlyThpMatters(act),
                        actuator=act, budget=4, repeats=2, start=[prior], seed=3)
    assert result.kept and result.best is not None
    assert act.values == {**START, "thp:enabled": "always"}
    assert sorted(result.dropped) == ["block:vda:read_ahead_kb", "sysctl:vm.dirty_ratio"]
    assert list(result.needed) == ["thp:enabled"] and result.needed["thp:enabled"] < 1.1
    prunes = [t for t in result.trials if t.origin == "prune"]
    assert [t.without for t in prunes] == ["(none: the best again)", "sysctl:vm.dirty_ratio",
                                           "block:vda:read_ahead_kb", "thp:enabled"]


def test_no_prune_keeps_the_best_as_found() -> None:
    act = DictActuator(START)
    prior = {"sysctl:vm.dirty_ratio": "60", "block:vda:read_ahead_kb": "4096",
             "thp:enabled": "always"}
    result = run_tuning(space=SPACE, baseline_values=START, objective=OnlyThpMatters(act),
                        actuator=act, budget=4, repeats=2, start=[prior], seed=3, prune=False)
    assert result.kept and not result.dropped and not result.needed
    assert all(t.origin != "prune" for t in result.trials)
    assert act.values == result.best.values if result.best else False


def test_run_tuning_revert_mode_and_interrupt_leave_baseline() -> None:
    act = DictActuator(START)
    result = run_tuning(space=SPACE, baseline_values=START, objective=SyntheticObjective(act),
                        actuator=act, budget=4, keep="revert", seed=2)
    assert not result.kept and act.values == START

    class Interrupting(SyntheticObjective):
        calls = 0

        def measure(self) -> float:
            self.calls += 1
            if self.calls == 3:
                assert self.actuator.values != START  # mid-trial, knobs changed
                raise KeyboardInterrupt
            return super().measure()

    act = DictActuator(START)
    with pytest.raises(KeyboardInterrupt):
        run_tuning(space=SPACE, baseline_values=START, objective=Interrupting(act),
                   actuator=act, budget=5, start=[{**START, "thp:enabled": "always"}])
    assert act.values == START


class NothingMatters(SyntheticObjective):
    """Noise only, with one lucky reading: the search 'finds' a gain that is not there."""

    def measure(self) -> float:
        self.calls = getattr(self, "calls", 0) + 1
        return 1.3 if self.calls == 3 else 1.0 + self.rng.normal(0, 0.005)


def test_a_gain_that_pruning_takes_apart_entirely_is_not_kept() -> None:
    act = DictActuator(START)
    prior = {"sysctl:vm.dirty_ratio": "60", "block:vda:read_ahead_kb": "4096",
             "thp:enabled": "always"}
    result = run_tuning(space=SPACE, baseline_values=START, objective=NothingMatters(act),
                        actuator=act, budget=3, repeats=1, start=[prior], seed=3,
                        prune_tolerance=0.5)
    assert result.best is not None and result.best.values == START
    assert sorted(result.dropped) == sorted(prior)
    assert not result.kept and act.values == START


class LuckyThenWorse(SyntheticObjective):
    """One lucky reading, and the same setting measured again is worse than the baseline."""

    def measure(self) -> float:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 3:
            return 1.3
        return 0.8 if self.actuator.values == self.lucky else 1.0

    def __init__(self, actuator: DictActuator) -> None:
        super().__init__(actuator)
        self.lucky: dict[str, str] = {}


def test_a_best_that_regresses_when_measured_again_is_not_kept() -> None:
    act = DictActuator(START)
    objective = LuckyThenWorse(act)
    result = run_tuning(space=SPACE, baseline_values=START, objective=objective,
                        actuator=act, budget=3, repeats=1, seed=3,
                        on_trial=lambda t: (setattr(objective, "lucky", dict(t.values))
                                            if t.index == 2 else None))
    again = result.trials[-1]
    assert again.origin == "prune" and again.status == "regressed"
    assert result.best is again and not result.kept and act.values == START
    assert not result.dropped and not result.needed
