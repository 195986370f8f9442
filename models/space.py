"""The search space of a tuning run: the allowlist's bounds and choices of
each knob, stepped as its family says, as optimiser dimensions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hosttune.agent.sense.errors import KnobError
from hosttune.models.optimizer import Dimension, Space
from hosttune.tuners.knobs import SearchHint, entry_for

# Knobs `hosttune tune` searches when none are named: the ones that moved the
# workloads of benchmarks/effectiveness.py (THP, writeback, reclaim).
DEFAULT_TUNE_KNOBS = ("thp:enabled", "sysctl:vm.swappiness", "sysctl:vm.dirty_ratio",
                      "sysctl:vm.dirty_background_ratio")


def dimension(knob: str, entry: Mapping[str, Any], hint: SearchHint | None = None) -> Dimension:
    """The optimiser dimension of one knob: its allowlist `entry` bounds it,
    its family's `hint` says how to step through it."""
    hint = hint or SearchHint()
    if "choices" in entry:
        return Dimension(knob, "cat", choices=tuple(str(c) for c in entry["choices"]))
    if "min" in entry and "max" in entry:
        low, high = int(entry["min"]), int(entry["max"])
        step = hint.step
        # Unless the family says, ranges over three decades (readahead
        # 0..16384) are searched on a log scale, which starts at one step
        # rather than at zero.
        log = high / max(low, step) >= 1000 if hint.log is None else hint.log
        return Dimension(knob, "int", max(low, step) if log else low, high, log=log, step=step)
    raise KnobError(knob, "the allowlist gives no bounds or choices to search within")


def space_for(knobs: list[str] | tuple[str, ...],
              allowlist: Mapping[str, Mapping[str, Any]], *,
              hints: Mapping[str, SearchHint]) -> Space:
    """The dimensions of `knobs`, bounded by the allowlist the caller holds
    (the defaults merged with the site's config), stepped as the knob
    families' `hints` say (tuners.registry.search_hints)."""
    dims = []
    for knob in knobs:
        entry = entry_for(allowlist, knob)
        if entry is None:
            raise KnobError(knob, "not on the allowlist of knobs hosttune may change on its own")
        dims.append(dimension(knob, entry, entry_for(hints, knob)))
    return Space(tuple(dims))
