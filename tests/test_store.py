"""The history store stays bounded by count, by age and on disk."""

from __future__ import annotations

import random
from pathlib import Path

from hosttune.agent.service.store import Store


def _values(rng: random.Random) -> dict[str, float]:
    # About the size of a real sample: a few hundred metrics, noisy values.
    return {f"metric.{i}.value": rng.random() * 1e6 for i in range(300)}


def test_count_bound_and_file_size_plateau(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = Store(tmp_path / "store.db", rows=200, max_age_hours=1000,
                  clock=lambda: now[0])
    rng = random.Random(1)
    sizes = []
    for rnd in range(6):
        for _ in range(400):
            now[0] += 5
            store.add_sample(now[0], _values(rng))
            store.add_event("sample", "x" * 50)
            store.add_workload(now[0], "idle", 0.9, "idle")
        store.trim()
        sizes.append(store.file_bytes())
        for table in ("samples", "events", "workload"):
            assert store.count(table) == 200, (rnd, table)
    # The newest rows are the ones kept.
    kept = store.samples(limit=1000)
    assert len(kept) == 200 and kept[-1][0] == now[0]
    assert kept[0][1]["metric.0.value"] >= 0
    # After the first rounds filled the tables, the file stops growing.
    assert sizes[-1] <= sizes[1] * 1.1, sizes
    store.close()


def test_age_bound(tmp_path: Path) -> None:
    now = [0.0]
    store = Store(tmp_path / "s.db", rows=10_000, max_age_hours=1, clock=lambda: now[0])
    for i in range(100):
        now[0] = i * 60.0  # one a minute for 100 minutes
        store.add_event("tick", str(i), wall=now[0])
    store.trim()
    events = store.events(limit=1000)
    assert events[0].wall >= now[0] - 3600 and events[-1].message == "99"
    assert len(events) == 61
    store.set_retention(rows=10, max_age_hours=1)
    assert store.count("events") == 10


def test_events_by_kind_and_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.add_event("revert", "swappiness hurt", {"knob": "sysctl:vm.swappiness"})
    store.add_event("apply", "applied")
    store.close()
    store = Store(tmp_path / "s.db")
    reverts = store.events(kind="revert")
    assert [e.detail["knob"] for e in reverts] == ["sysctl:vm.swappiness"]
    assert store.count("events") == 2
