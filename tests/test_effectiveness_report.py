"""The end-to-end report of benchmarks/effectiveness.py: each row against the
defaults and against every tuned profile of the same round, and what the
daemon made of the job."""

from __future__ import annotations

import pytest

from benchmarks.effectiveness import JobRun, Measured, Timings, e2e_report, recognised

A = "hosttuned auto (a): started while the job runs"


def _row(*values: float) -> list[Measured]:
    return [Measured(v, "", JobRun(rates=[(float(t), v) for t in range(45)])) for v in values]


def test_rows_are_set_against_each_profile_round_by_round(capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    # Round 2 is a slow draw for every row: per round, auto is 1.5x and 1.2x
    # hpc-compute; across rounds (1.5 / 1.0 unpaired) it would read otherwise.
    results = {"gather": {"defaults": _row(10.0, 5.0),
                          "tuned hpc-compute": _row(12.0, 5.0),
                          A: _row(18.0, 6.0)}}
    e2e_report(results, {"gather": "M/s"}, Timings())
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| configuration"))
    assert "vs hpc-compute" in header
    auto = next(line for line in out.splitlines() if line.startswith(f"| {A}"))
    cells = [c.strip() for c in auto.split("|")[1:-1]]
    assert cells[1] == "1.50"          # vs the defaults: 1.8 and 1.2
    assert cells[3] == "1.35"          # vs hpc-compute: 1.5 and 1.2
    hpc = next(line for line in out.splitlines() if line.startswith("| tuned hpc-compute"))
    assert hpc.split("|")[4].strip() == "-"


def test_the_job_is_named_as_the_daemon_read_it() -> None:
    status = {"workload": {"label": "unknown",
                           "last_window": {"label": "training", "confidence": 0.8}},
              "roles": {"verdict": {"roles": [
                  {"pids": [7], "role": "data_preparation", "confidence": 0.6},
                  {"pids": [41, 42], "role": "training", "confidence": 0.93}]}}}
    assert recognised(status, 42) == ("job read as training 0.93; host class not yet "
                                      "believed (last window training 0.80)")
    status["workload"]["label"] = "training"  # type: ignore[index]
    assert recognised(status, 99).startswith("job read as not assigned; host class training")
    assert recognised({}, 1) == "job read as not assigned; host class: no window yet"
