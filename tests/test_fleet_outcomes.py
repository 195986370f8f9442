"""Fleet learning: outcomes exported by one host (format hosttune-outcomes/1)
and imported by another are kept apart with the facts of the host that
measured them, malformed files are refused whole with file:line errors, and
the recommender weighs them by how alike the hosts are: a new host whose
siblings measured a gain starts from it; outcomes of unlike hosts barely
count against this host's own."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from daemon_run import hosttune_exe

from hosttune.agent.sense.host import Host
from hosttune.agent.service.outcome_store import OutcomeStore, host_facts
from hosttune.agent.service.recommend import run_recommend
from hosttune.models.optimizer import Dimension, Space
from hosttune.models.outcomes import (
    FORMAT,
    HostFacts,
    LearnedModel,
    Outcome,
    OutcomeError,
    best_seen,
    from_record,
    similarity,
    to_record,
    warm_start,
)
from hosttune.models.tuning import run_tuning

FIXTURE = Path(__file__).parent / "fixtures" / "hosts" / "this-vm"
KNOB = "sysctl:vm.dirty_ratio"

# The fixture's own facts (a 2-vCPU Xeon VM, no accelerator) with another id:
# its siblings in a fleet of identical VMs.
HERE = host_facts(Host(FIXTURE))


def sibling(n: int) -> HostFacts:
    return HostFacts(**{**HERE.to_dict(), "host_id": f"sibling{n:08d}"})


def unlike(n: int) -> HostFacts:
    """A GPU server: another accelerator, CPU family and size."""
    return HostFacts(host_id=f"gpu{n:012d}", cpu_model="AMD EPYC 9654 96-Core Processor",
                     cores=192, kernel="6.8.0-40-generic", mem_bytes=2 << 40,
                     accel_vendor="nvidia", accel_model="10de:2330", accel_count=8)


def measured(curve: dict[int, float], host: HostFacts | None, seed: int,
             n: int = 6) -> list[Outcome]:
    """`n` trials of dirty_ratio on one host: effect = curve + 1% noise."""
    rng = random.Random(seed)
    values = rng.sample(sorted(curve), k=min(n, len(curve)))
    return [Outcome("training", "trial", {KNOB: str(v)}, curve[v] * (1 + rng.gauss(0, 0.01)),
                    "samples/s", ts=1000.0 + i, before={KNOB: "20"}, host=host)
            for i, v in enumerate(values)]


# Low dirty_ratio wins on these hosts (the priors say 40 for training).
LOW_WINS = {5: 1.16, 10: 1.20, 15: 1.18, 20: 1.10, 30: 1.03, 40: 1.0, 60: 0.95}
# This host's own measurements disagree: 40 is its best.
HIGH_WINS = {5: 0.92, 10: 0.95, 20: 1.0, 30: 1.05, 40: 1.10, 60: 1.04}


def _recommend(state: Path) -> dict[str, Any]:
    report = run_recommend(Host(FIXTURE), workload="training", window=0.3,
                           state_dir=str(state))
    data = report.to_dict()
    return {"change": next((c for c in data["changes"] if c["knob"] == KNOB), None),
            "notes": data["notes"]}


def test_similarity() -> None:
    assert similarity(HERE, sibling(1)) == 1.0
    assert similarity(HERE, unlike(1)) < 0.01
    gpu = unlike(1)
    other_gpu = HostFacts(**{**gpu.to_dict(), "accel_vendor": "amd",
                             "accel_model": "1002:74a1"})
    other_model = HostFacts(**{**gpu.to_dict(), "accel_model": "10de:20b0"})
    other_cpu = HostFacts(**{**gpu.to_dict(), "cpu_model": "Intel(R) Xeon(R) Platinum 8480+"})
    same_family = HostFacts(**{**gpu.to_dict(), "cpu_model": "AMD EPYC 7763 64-Core Processor"})
    newer_patch = HostFacts(**{**gpu.to_dict(), "kernel": "6.8.0-45-generic"})
    half = HostFacts(**{**gpu.to_dict(), "accel_count": 4})
    assert similarity(gpu, other_gpu) <= 0.1
    assert 0.1 < similarity(gpu, other_model) <= 0.5
    assert similarity(gpu, other_cpu) <= 0.25 < similarity(gpu, same_family) <= 0.6
    assert similarity(gpu, newer_patch) == 0.9
    assert 0.6 < similarity(gpu, half) < 0.8
    for a, b in [(gpu, other_gpu), (gpu, half), (HERE, gpu)]:
        assert similarity(a, b) == similarity(b, a)


def test_record_round_trip() -> None:
    outcome = measured(LOW_WINS, sibling(1), seed=1, n=1)[0]
    line = json.dumps(to_record(outcome, sibling(1)))
    assert json.loads(line)["format"] == FORMAT
    assert from_record(json.loads(line), "f:1") == outcome


GOOD = to_record(Outcome("training", "trial", {KNOB: "10"}, 1.2, "x", ts=5.0,
                         before={KNOB: "20"}, noise=0.01), sibling(1))


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "hosttune-outcomes/2"}, "format 'hosttune-outcomes/2' is not"),
    ({"class": "gaming"}, "unknown workload class 'gaming'"),
    ({"knobs": {}}, '"knobs" must be a non-empty object'),
    ({"knobs": {"swappiness": "10"}}, "a knob is named family:key"),
    ({"knobs": {KNOB: [1]}}, f"knobs.{KNOB}: a value is text or a number"),
    ({"effect": -1}, '"effect" must be a finite number > 0'),
    ({"effect": "fast"}, '"effect" must be a finite number > 0'),
    ({"noise": float("nan")}, '"noise" must be a finite number >= 0'),
    ({"source": "guess"}, '"source" is one of plan, trial'),
    ({"host": {**GOOD["host"], "cores": "many"}}, "host.cores must be a whole number"),
    ({"host": {k: v for k, v in GOOD["host"].items() if k != "kernel"}},
     "host.kernel is missing"),
    ({"colour": "blue"}, "unknown field(s): colour"),
])
def test_malformed_records_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(OutcomeError) as info:
        from_record({**GOOD, **change}, "fleet.jsonl:7")
    assert str(info.value).startswith("fleet.jsonl:7: ") and message in str(info.value)


def _cli(state: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOSTTUNE_STATE_DIR=str(state))
    return subprocess.run([hosttune_exe(), "outcomes", *args], env=env, capture_output=True,
                          text=True, timeout=60, input=stdin, check=False)


def _write(path: Path, outcomes: list[Outcome]) -> Path:
    assert all(o.host for o in outcomes)
    path.write_text("".join(json.dumps(to_record(o, o.host)) + "\n"
                            for o in outcomes if o.host))
    return path


def test_import_then_recommend_uses_similar_hosts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = _recommend(state)
    assert before["change"] and before["change"]["rule"] != "learned:training"
    fleet = [o for n in range(3) for o in measured(LOW_WINS, sibling(n), seed=n)]
    path = _write(tmp_path / "fleet.jsonl", fleet)
    res = _cli(state, "import", "--root", str(FIXTURE), "--json", str(path))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["added"] == 18
    # The same file again adds nothing; the store keeps them apart from local ones.
    res = _cli(state, "import", "--root", str(FIXTURE), "--json", str(path))
    assert json.loads(res.stdout)["added"] == 0
    store = OutcomeStore(state / "outcomes.db")
    assert store.outcomes() == [] and len(store.imported()) == 18
    assert {o.host.host_id for o in store.imported() if o.host} == {
        sibling(n).host_id for n in range(3)}
    after = _recommend(state)
    change = after["change"]
    assert change is not None and change["rule"] == "learned:training"
    assert int(change["after"]) <= 15  # the siblings' best region, not the prior's 40
    assert any("18 imported from 3 other host(s)" in n for n in after["notes"])


def test_unlike_hosts_carry_little_weight(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = OutcomeStore(state / "outcomes.db")
    # As many outcomes from GPU servers as from the siblings above: not enough.
    store.add_imported([o for n in range(3) for o in measured(LOW_WINS, unlike(n), seed=n)],
                       "gpu.jsonl")
    model = store.learned("training", HERE)
    assert model.imported_count == 18 and model.evidence < 1.0 and not model.fitted
    rec = _recommend(state)["change"]
    assert rec is not None and rec["rule"] != "learned:training"
    # This host's own 8 outcomes (40 best) outweigh 36 from unlike hosts (10 best) ...
    for o in measured(HIGH_WINS, None, seed=9, n=6) + measured(HIGH_WINS, None, seed=10, n=2):
        store.record(o)
    store.add_imported([o for n in range(3, 9) for o in measured(LOW_WINS, unlike(n), seed=n)],
                       "gpu2.jsonl")
    local_wins = store.learned("training", HERE)
    assert local_wins.fitted and local_wins.evidence < 9
    assert local_wins.predict({KNOB: "40"}) > local_wins.predict({KNOB: "10"})
    # ... whereas the same outcomes counted as a sibling's would have won.
    siblings = [Outcome(**{**o.__dict__, "host": sibling(1)})
                for o in store.imported("training")]
    flipped = LearnedModel.fit("training", store.outcomes("training") + siblings, HERE)
    assert flipped.predict({KNOB: "10"}) > flipped.predict({KNOB: "40"})


def test_import_refuses_a_malformed_file_whole(tmp_path: Path) -> None:
    state = tmp_path / "state"
    good = json.dumps(GOOD)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(f"{good}\n\n{json.dumps({**GOOD, 'effect': 0})}\nnot json\n")
    res = _cli(state, "import", "--root", str(FIXTURE), str(bad))
    assert res.returncode == 1
    assert f'{bad}:3: "effect" must be a finite number > 0' in res.stderr
    assert f"{bad}:4: not JSON" in res.stderr
    assert "nothing imported: 2 error(s)" in res.stderr
    assert OutcomeStore(state / "outcomes.db").imported() == []


def test_export_then_import_on_another_host(tmp_path: Path) -> None:
    """Host A (the fixture, given a machine-id) exports its own outcomes,
    not the ones it imported; host B imports them with A's facts; A
    refuses its own file back."""
    root_a = tmp_path / "a"
    shutil.copytree(FIXTURE, root_a, symlinks=True)
    (root_a / "etc").mkdir(exist_ok=True)
    (root_a / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    state_a, state_b = tmp_path / "sa", tmp_path / "sb"
    store_a = OutcomeStore(state_a / "outcomes.db")
    for o in measured(LOW_WINS, None, seed=3, n=4):
        store_a.record(o)
    store_a.add_imported(measured(LOW_WINS, sibling(7), seed=4, n=3), "x")
    res = _cli(state_a, "export", "--root", str(root_a))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 4
    records = [json.loads(ln) for ln in lines]
    facts_a = host_facts(Host(root_a))
    assert all(r["host"] == facts_a.to_dict() and r["before"] == {KNOB: "20"} for r in records)
    res = _cli(state_b, "import", "--root", str(FIXTURE), "-", stdin=res.stdout)
    assert res.returncode == 0, res.stderr
    got = OutcomeStore(state_b / "outcomes.db").imported()
    assert [o.host for o in got] == [facts_a] * 4
    res = _cli(state_a, "import", "--root", str(root_a), "-", stdin="\n".join(lines))
    assert res.returncode == 1 and "measured on this very host" in res.stderr


def test_warm_start_takes_alike_hosts_and_the_tuned_knobs_only() -> None:
    knobs = [KNOB, "sysctl:vm.swappiness"]
    baseline = {KNOB: "20", "sysctl:vm.swappiness": "60"}
    mine = Outcome("training", "trial", {KNOB: "10"}, 1.1, before={KNOB: "25"})
    theirs = Outcome("training", "trial", {KNOB: "12", "sysctl:vm.swappiness": "5"}, 1.3,
                     host=sibling(1))
    far = Outcome("training", "trial", {KNOB: "60"}, 1.5, host=unlike(1))
    other_knob = Outcome("training", "trial", {"thp:enabled": "always"}, 1.4,
                         host=sibling(2))
    loss = Outcome("training", "trial", {KNOB: "80"}, 0.9, host=sibling(3))
    outcomes = [mine, theirs, far, other_knob, loss]
    seen = warm_start(outcomes, HERE, knobs, baseline)
    # the knob an outcome did not set: at its value before, else the baseline
    assert seen == [({KNOB: "10", "sysctl:vm.swappiness": "60"}, 1.1),
                    ({KNOB: "12", "sysctl:vm.swappiness": "5"}, 1.3),
                    ({KNOB: "80", "sysctl:vm.swappiness": "60"}, 0.9)]
    assert best_seen(outcomes, HERE, knobs, baseline) == [seen[1][0], seen[0][0]]
    assert best_seen(outcomes, HERE, knobs, baseline, count=1) == [seen[1][0]]
    # one host's best alone is not tried first: of few noisy trials it overstates itself
    assert best_seen([theirs, loss], HERE, knobs, baseline) != []
    assert best_seen([theirs, far], HERE, knobs, baseline) == []


def test_tuning_knows_what_was_seen() -> None:
    """The optimiser is told the settings measured elsewhere (it does not
    spend trials on them again), except the ones given as starts, which are
    measured here first."""
    space = Space((Dimension(KNOB, "int", low=5, high=80),))
    tried: list[dict[str, str]] = []

    class Host:
        lower_is_better = False
        value = "20"

        def describe(self) -> str:
            return "x"

        def measure(self) -> float:
            return 100.0 + (10.0 if self.value == "12" else 0.0)

        def apply(self, values: dict[str, str]) -> None:
            tried.append(dict(values))
            self.value = values[KNOB]

        def revert(self) -> None:
            self.value = "20"

    host = Host()
    seen = [({KNOB: str(v)}, 1.0) for v in range(30, 81)] + [({KNOB: "12"}, 1.1)]
    result = run_tuning(space=space, baseline_values={KNOB: "20"}, objective=host,
                        actuator=host, budget=3, start=[{KNOB: "12"}], seed=0,
                        keep="revert", prune=False, seen=seen)
    assert tried[0] == {KNOB: "12"} and result.best is not None
    assert result.best.values == {KNOB: "12"}
    # told values 30..80 are never proposed again: only 5..29 remain
    assert all(int(t[KNOB]) < 30 for t in tried)


@pytest.mark.skipif(os.geteuid() != 0, reason="tune applies only as root")
def test_tune_starts_where_the_siblings_found_their_gain(tmp_path: Path) -> None:
    """`hosttune tune` on a fixture-root host (the real tuners and
    transactions, files under a temporary tree): with outcomes imported from
    two alike hosts, their best setting is among its first trials."""
    root = tmp_path / "host"
    for key, value in {"vm/swappiness": "60", "vm/dirty_ratio": "20"}.items():
        (root / "proc/sys" / key).parent.mkdir(parents=True, exist_ok=True)
        (root / "proc/sys" / key).write_text(value + "\n")
    sw, dr = root / "proc/sys/vm/swappiness", root / "proc/sys/vm/dirty_ratio"
    objective = (f"s=$(cat {sw}); d=$(cat {dr}); "
                 "echo throughput: $((10000 - (s-37)*(s-37) - (d-53)*(d-53)))")
    here = host_facts(Host(root))
    best = {"sysctl:vm.swappiness": "37", "sysctl:vm.dirty_ratio": "53"}
    fleet = []
    for n, (swap, dirty, effect) in enumerate([("37", "53", 1.31), ("50", "30", 1.12),
                                               ("37", "53", 1.29), ("10", "70", 1.02)]):
        facts = HostFacts(**{**here.to_dict(), "host_id": f"sibling{n % 2:08d}"})
        fleet.append(Outcome("training", "trial", {"sysctl:vm.swappiness": swap,
                                                   "sysctl:vm.dirty_ratio": dirty},
                             effect, ts=float(n), host=facts))
    state = tmp_path / "state"
    OutcomeStore(state / "outcomes.db").add_imported(fleet, "fleet.jsonl")
    env = dict(os.environ, HOSTTUNE_STATE_DIR=str(state), HOSTTUNE_RUN_DIR=str(tmp_path / "run"),
               HOSTTUNE_CONFIG=str(tmp_path / "none.yaml"))
    res = subprocess.run([hosttune_exe(), "tune", "--root", str(root), "--objective", objective,
                          "--metric", r"throughput: (\d+)", "--budget", "3", "--workload",
                          "training", "--knobs", "sysctl:vm.swappiness", "--knobs",
                          "sysctl:vm.dirty_ratio", "--keep", "revert", "--no-prune", "--json"],
                         env=env, capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["measured_before"] == 4
    first = [t["values"] for t in report["trials"][1:3]]
    assert best in first
    assert report["best"]["values"] == best
    assert (sw.read_text().strip(), dr.read_text().strip()) == ("60", "20")  # --keep revert
