from __future__ import annotations

import pytest

from hosttune.agent.service.config import Objective
from hosttune.agent.service.objective import PRESSURE_FLOOR, Score, harm, last_number, window_score

NONE = Objective()


def test_window_score_from_rates() -> None:
    rows = [{"psi.cpu.some.total.rate": 0.1, "psi.io.some.total.rate": 0.2, "ai.cpu_util": 1.5},
            {"psi.cpu.some.total.rate": 0.3, "psi.io.some.total.rate": 0.0, "ai.cpu_util": 2.5}]
    s = window_score(rows, Objective(metric="ai.cpu_util"))
    assert s.pressure == pytest.approx(0.3) and s.throughput == 2.0 and s.objective == 2.0
    assert window_score([{}], NONE) == Score()


@pytest.mark.parametrize(("before", "after", "hurt"), [
    (Score(pressure=0.0), Score(pressure=PRESSURE_FLOOR / 2), False),  # noise near zero
    (Score(pressure=0.0), Score(pressure=0.1), True),
    (Score(pressure=0.5), Score(pressure=0.54), False),  # within 5 % + floor
    (Score(pressure=0.5), Score(pressure=0.6), True),
    (Score(throughput=2.0), Score(throughput=1.95), False),
    (Score(throughput=2.0), Score(throughput=1.5), True),
    (Score(pressure=0.1, throughput=2.0), Score(pressure=0.05, throughput=2.5), False),
    (Score(), Score(pressure=0.9), False),  # nothing to compare against
])
def test_harm_without_objective(before: Score, after: Score, hurt: bool) -> None:
    assert (harm(before, after, NONE, 0.05) is not None) is hurt


def test_harm_with_objective_direction() -> None:
    up = Objective(metric="throughput")
    down = Objective(metric="latency", higher_is_better=False)
    assert harm(Score(objective=100), Score(objective=90), up, 0.05)
    assert harm(Score(objective=100), Score(objective=110), up, 0.05) is None
    assert harm(Score(objective=100), Score(objective=110), down, 0.05)
    assert harm(Score(objective=100), Score(objective=103), down, 0.05) is None
    # The objective decides alone: pressure does not matter when one is set.
    assert harm(Score(pressure=0, objective=1), Score(pressure=1, objective=1), up, 0.05) is None


def test_last_number() -> None:
    assert last_number("epoch 3: 1234.5 samples/s\n") == 1234.5
    assert last_number("loss 1e-3 then 2.5E2") == 250.0
    assert last_number("no digits") is None
