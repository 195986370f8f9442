"""Fleet learning: how many `hosttune tune` trials a new host needs to reach a
given gain, starting from the priors alone or from outcomes imported from
N sibling hosts (and from N unlike hosts, which should change little).

The objective is SIMULATED: a known response surface over `hosttune tune`'s
default knobs (THP, swappiness, dirty_ratio, dirty_background_ratio) with
1.5% multiplicative noise per measurement, because a real benchmark per
trial on a 2-core VM would take hours and its gains sit inside the noise.
Everything else is the real code: `run_tuning` (the Bayesian optimiser with
its GP), the real priors and recommender (`recommend(state, learned=...)`,
the first trial `hosttune tune` starts from, as `_prior_start` builds it),
and `LearnedModel.fit` with the imported outcomes weighted by host
similarity. Each sibling host has its own surface (its optimum moved a
little, its gains scaled) and contributes the outcomes of its own `tune`
run (the same optimiser, priors first, 10 trials, no fleet data); unlike
hosts (GPU servers: other accelerator, CPU family and kernel) have a
different surface (THP never, dirty_ratio 60).

A trial "reaches" a target when the true (noise-free) gain of the setting
it tried is at least that share (SHARES) of the best gain the surface
allows; the baseline measurement is not counted (trial 1 is the first after
it). Runs that never reach it
within the budget count as budget + 1. Medians over seeds.

    python benchmarks/fleet_learning.py [--seeds 10] [--budget 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass

from hosttune.agent.sense.errors import HosttuneError
from hosttune.models.optimizer import Space
from hosttune.models.outcomes import (
    HostFacts,
    LearnedModel,
    Outcome,
    best_seen,
    warm_start,
)
from hosttune.models.recommender import recommend
from hosttune.models.space import DEFAULT_TUNE_KNOBS, space_for
from hosttune.models.state import HostState
from hosttune.models.tuning import run_tuning
from hosttune.tuners.allowlist import DEFAULT_ALLOWLIST
from hosttune.tuners.registry import search_hints

THP, SWAP, DIRTY, BG = DEFAULT_TUNE_KNOBS
BASELINE = {THP: "madvise", SWAP: "60", DIRTY: "20", BG: "10"}
NOISE = 0.015
# Targets: these shares of the best attainable gain over the baseline.
SHARES = (0.5, 0.8, 0.9)
SIBLING_TRIALS = 10

HERE = HostFacts(host_id="newhost", cpu_model="Intel(R) Xeon(R) Platinum 8480+", cores=112,
                 kernel="6.1.0-26-amd64", mem_bytes=2 << 40, accel_vendor="nvidia",
                 accel_model="10de:2330", accel_count=8)


@dataclass(frozen=True)
class Surface:
    thp: tuple[float, float, float]  # gain of always, madvise, never
    swap_at: float
    dirty_at: float
    dirty_width: float
    bg_at: float
    scale: float = 1.0

    def throughput(self, cfg: dict[str, str]) -> float:
        thp = dict(zip(("always", "madvise", "never"), self.thp, strict=True))[cfg[THP]]
        s, d, b = float(cfg[SWAP]), float(cfg[DIRTY]), float(cfg[BG])
        gain = (thp + 0.05 * math.exp(-((s - self.swap_at) / 15) ** 2)
                + 0.08 * math.exp(-((d - self.dirty_at) / self.dirty_width) ** 2)
                + 0.03 * math.exp(-((b - self.bg_at) / 5) ** 2))
        return 1000.0 * (1 + self.scale * gain)

    def effect(self, cfg: dict[str, str]) -> float:
        return self.throughput(cfg) / self.throughput(BASELINE)


# This fleet's training hosts, where the generic priors (THP always,
# swappiness 10, dirty_ratio 40) are partly wrong: THP always costs a little
# (an allocator that fragments), madvise wins; a narrow dirty_ratio optimum.
FLEET = Surface(thp=(0.03, 0.08, 0.0), swap_at=30, dirty_at=12, dirty_width=6, bg_at=4)
# GPU servers of another kind: THP hurts, large dirty_ratio wins.
UNLIKE = Surface(thp=(-0.05, 0.0, 0.04), swap_at=60, dirty_at=60, dirty_width=10, bg_at=30)


def sibling_surface(rng: random.Random) -> Surface:
    return Surface(thp=FLEET.thp, swap_at=FLEET.swap_at + rng.uniform(-3, 3),
                   dirty_at=FLEET.dirty_at + rng.uniform(-2, 2), dirty_width=6,
                   bg_at=FLEET.bg_at + rng.uniform(-1, 1), scale=rng.uniform(0.9, 1.1))


class Simulated:
    """The host under `hosttune tune`: an actuator and an objective."""

    lower_is_better = False

    def __init__(self, surface: Surface, rng: random.Random) -> None:
        self.surface, self.rng = surface, rng
        self.current = dict(BASELINE)
        self.tried: list[dict[str, str]] = []

    def describe(self) -> str:
        return "simulated throughput"

    def measure(self) -> float:
        return self.surface.throughput(self.current) * (1 + self.rng.gauss(0, NOISE))

    def apply(self, values: dict[str, str]) -> None:
        self.current = dict(values)
        self.tried.append(dict(values))

    def revert(self) -> None:
        self.current = dict(BASELINE)


class Kept:
    """An OutcomeLog that keeps what a tune run records."""

    def __init__(self, facts: HostFacts) -> None:
        self.facts = facts
        self.outcomes: list[Outcome] = []

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(Outcome(**{**outcome.__dict__, "host": self.facts}))


def sibling_outcomes(space: Space, facts: HostFacts, surface: Surface,
                     seed: int) -> list[Outcome]:
    """What one host exported: the outcomes of its own `hosttune tune` run
    (priors first, SIBLING_TRIALS trials, no fleet data of its own)."""
    host = Simulated(surface, random.Random(seed))
    kept = Kept(facts)
    start = first_point(space, [])
    run_tuning(space=space, baseline_values=dict(BASELINE), objective=host, actuator=host,
               budget=SIBLING_TRIALS, start=[start] if start else None, seed=seed,
               keep="revert", prune=False, workload="training", outcomes=kept)
    return kept.outcomes


def first_point(space: Space, outcomes: list[Outcome]) -> dict[str, str] | None:
    """The first trial `hosttune tune` makes: the recommendation (priors, or
    what the outcomes teach) restricted to the space, as _prior_start does."""
    learned = LearnedModel.fit("training", outcomes, HERE) if outcomes else None
    state = HostState(workload="training", knobs=dict(BASELINE), nodes={0: (0, 1)})
    recs = recommend(state, learned=learned)
    point = dict(BASELINE)
    for rec in recs.changes:
        dim = next((d for d in space.dims if d.knob == rec.knob), None)
        if dim is None:
            continue
        try:
            dim.encode(rec.after)
        except HosttuneError:
            continue
        point[rec.knob] = rec.after
    return point if point != BASELINE else None


def best_effect(space: Space) -> float:
    """The surface's best effect over the space's grid (noise-free)."""
    dims = {d.knob: d for d in space.dims}
    best = 0.0
    for thp in dims[THP].choices:
        for swap in range(dims[SWAP].low, dims[SWAP].high + 1, 2):
            for dirty in range(dims[DIRTY].low, dims[DIRTY].high + 1):
                for bg in range(dims[BG].low, dims[BG].high + 1, 2):
                    cfg = {THP: thp, SWAP: str(swap), DIRTY: str(dirty), BG: str(bg)}
                    best = max(best, FLEET.effect(cfg))
    return best


def trials_to_targets(space: Space, outcomes: list[Outcome], seed: int, budget: int,
                      targets: list[float]) -> list[int]:
    rng = random.Random(seed)
    host = Simulated(FLEET, rng)
    start = first_point(space, outcomes)
    seen = warm_start(outcomes, HERE, list(DEFAULT_TUNE_KNOBS), BASELINE)
    starts = [start] if start else []
    starts += [p for p in best_seen(outcomes, HERE, list(DEFAULT_TUNE_KNOBS), BASELINE)
               if p not in starts]
    run_tuning(space=space, baseline_values=dict(BASELINE), objective=host, actuator=host,
               budget=budget, start=starts, seed=seed, keep="revert",
               prune=False, workload="training", seen=seen)
    effects = [FLEET.effect(cfg) for cfg in host.tried]
    return [next((i for i, e in enumerate(effects, start=1) if e >= t), budget + 1)
            for t in targets]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    space = space_for(list(DEFAULT_TUNE_KNOBS), DEFAULT_ALLOWLIST, hints=search_hints())
    arms: list[tuple[str, int, bool]] = [("priors only (no imported outcomes)", 0, True),
                                         ("imported from 1 sibling host", 1, True),
                                         ("imported from 3 sibling hosts", 3, True),
                                         ("imported from 5 sibling hosts", 5, True),
                                         ("imported from 5 unlike hosts only", 5, False)]
    top = best_effect(space)
    targets = [1 + share * (top - 1) for share in SHARES]
    counts: dict[str, list[list[int]]] = {label: [] for label, _n, _alike in arms}
    t0 = time.monotonic()
    most = max(n for _label, n, _alike in arms)
    for seed in range(args.seeds):
        # The fleet of this seed: each arm takes its first n hosts.
        rng = random.Random(1000 + seed)
        siblings: list[list[Outcome]] = []
        unlike: list[list[Outcome]] = []
        for h in range(most):
            facts = HostFacts(**{**HERE.to_dict(), "host_id": f"sibling{h}"})
            siblings.append(sibling_outcomes(space, facts, sibling_surface(rng),
                                             seed * 100 + h))
            facts = HostFacts(host_id=f"unlike{h}", cpu_model="AMD EPYC 9654", cores=192,
                              kernel="5.15.0-100-generic", mem_bytes=1 << 40,
                              accel_vendor="amd", accel_model="1002:74a1", accel_count=8)
            unlike.append(sibling_outcomes(space, facts, UNLIKE, seed * 100 + 50 + h))
        for label, n, alike in arms:
            pool = siblings if alike else unlike
            outcomes = [o for host_outcomes in pool[:n] for o in host_outcomes]
            counts[label].append(trials_to_targets(space, outcomes, seed, args.budget,
                                                   targets))
    results = []
    for label, n, _alike in arms:
        per_target = []
        for i, target in enumerate(targets):
            got = [c[i] for c in counts[label]]
            per_target.append({"target": round(target, 4), "share": SHARES[i],
                               "median_trials": statistics.median(got),
                               "reached": sum(c <= args.budget for c in got), "trials": got})
        results.append({"arm": label, "hosts": n, "seeds": args.seeds, "targets": per_target})
    if args.json:
        print(json.dumps({"best_effect": round(top, 4), "budget": args.budget, "noise": NOISE,
                          "results": results}, indent=1))
        return 0
    print(f"trials of `hosttune tune` until a setting reaches a share of the best gain "
          f"(simulated objective, best {top:.3f}x the baseline, {NOISE:.1%} noise; budget "
          f"{args.budget}, never reached = {args.budget + 1}; medians over {args.seeds} seeds; "
          f"{time.monotonic() - t0:.0f} s)")
    print(f"  {'':<38}" + "".join(f"  {s:.0%} ({t:.3f}x)" for s, t in zip(SHARES, targets,
                                                                          strict=True)))
    for r in results:
        print(f"  {r['arm']:<38}" + "".join(
            f"  {t['median_trials']:>5} ({t['reached']}/{args.seeds})  "
            for t in r["targets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
