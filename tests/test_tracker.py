from __future__ import annotations

import random

from hosttune.agent.service.tracker import Verdict, WorkloadTracker


def _feed(tracker: WorkloadTracker, labels: list[str]) -> list[str | None]:
    out = []
    for i, label in enumerate(labels):
        tracker.update(Verdict(label, 0.9), float(i))
        out.append(tracker.stable)
    return out


def test_reacts_within_hysteresis_windows() -> None:
    t = WorkloadTracker(hysteresis=2)
    seen = _feed(t, ["idle", "idle", "idle", "training", "training", "training"])
    assert seen == [None, "idle", "idle", "idle", "training", "training"]
    assert t.changes == 2 and t.since == 4.0


def test_no_flapping_on_alternating_noise() -> None:
    t = WorkloadTracker(hysteresis=2)
    _feed(t, ["training"] * 3)
    rng = random.Random(0)
    # One stray window at a time, never two of the same in a row.
    noise = []
    for _ in range(200):
        noise += [rng.choice(["idle", "inference", "checkpoint"]), "training"]
    _feed(t, noise)
    assert t.stable == "training" and t.changes == 1


def test_unknown_breaks_streak_never_replaces_belief() -> None:
    t = WorkloadTracker(hysteresis=2)
    _feed(t, ["idle", "idle", "training", "unknown", "training", "unknown", "unknown"])
    assert t.stable == "idle"
    _feed(t, ["training", "training"])
    assert t.stable == "training"
