"""The knobs hosttune may choose on its own (sources expert, model, optimizer),
with bounds. An administrator's own `hosttune set` is not limited by it.

The table is plain data so the daemon's config can merge over it:

    {"sysctl:vm.swappiness": {"min": 0, "max": 100}, ...}

An entry is a knob name or an fnmatch pattern (`block:*:read_ahead_kb`) and a
mapping of any of:
- `min`, `max`: integer bounds; for multi-value knobs (tcp_rmem) every field
  is checked against them;
- `choices`: the allowed values (THP modes, I/O schedulers);
- `max_memory_fraction`: for hugepage pools, the most memory (a fraction of
  MemTotal) the pool may take.
An override entry of `None` (YAML `~`) removes a knob from the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hosttune.agent.sense.errors import ConfigError, KnobError
from hosttune.tuners.knobs import entry_for, parse_knob
from hosttune.tuners.registry import default_allowlist

Allowlist = dict[str, dict[str, Any]]

# Each family declares its own entries (its `allowlist` class attribute).
DEFAULT_ALLOWLIST: Allowlist = default_allowlist()

_ENTRY_KEYS = {"min", "max", "choices", "max_memory_fraction"}


def merge(base: Mapping[str, Mapping[str, Any] | None],
          override: Mapping[str, Mapping[str, Any] | None] | None,
          *, source: str = "config") -> Allowlist:
    """`base` with `override`'s entries replacing whole entries (None removes).
    Entries are checked, so a bad config is a ConfigError naming the knob."""
    merged: Allowlist = {k: dict(v) for k, v in base.items() if v is not None}
    for knob, entry in (override or {}).items():
        if entry is None:
            merged.pop(knob, None)
            continue
        merged[knob] = _checked_entry(knob, entry, source)
    return merged


def _checked_entry(knob: str, entry: Any, source: str) -> dict[str, Any]:
    if not isinstance(knob, str) or ":" not in knob:
        raise ConfigError("allowlist keys are knob names or patterns (family:key)",
                          path=source, key=str(knob))
    if not isinstance(entry, Mapping):
        raise ConfigError("an allowlist entry is a mapping of min/max/choices",
                          path=source, key=knob)
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ConfigError(f"unknown allowlist field {sorted(unknown)[0]!r}", path=source, key=knob)
    for bound in ("min", "max"):
        if bound in entry and (not isinstance(entry[bound], int) or isinstance(entry[bound], bool)):
            raise ConfigError(f"{bound} must be an integer", path=source, key=knob)
    if "choices" in entry and not (
        isinstance(entry["choices"], list) and all(isinstance(c, str) for c in entry["choices"])
    ):
        raise ConfigError("choices must be a list of text values", path=source, key=knob)
    if "max_memory_fraction" in entry:
        frac = entry["max_memory_fraction"]
        if not isinstance(frac, int | float) or not 0 < frac <= 1:
            raise ConfigError("max_memory_fraction must be in (0, 1]", path=source, key=knob)
    return dict(entry)


def check(allowlist: Mapping[str, Mapping[str, Any]], knob: str, value: str,
          *, mem_total_kb: int | None = None) -> None:
    """KnobError unless hosttune may set `knob` to `value` on its own."""
    parse_knob(knob)
    entry = entry_for(allowlist, knob)
    if entry is None:
        raise KnobError(knob, "not on the allowlist of knobs hosttune may change on its own")
    if "choices" in entry and value not in entry["choices"]:
        raise KnobError(knob, f"{value!r} is not an allowed choice ({', '.join(entry['choices'])})")
    if "min" in entry or "max" in entry or "max_memory_fraction" in entry:
        try:
            numbers = [int(v) for v in value.split()]
        except ValueError:
            raise KnobError(knob, f"{value!r} is not a number") from None
        lo, hi = entry.get("min"), entry.get("max")
        for number in numbers:
            if lo is not None and number < lo:
                raise KnobError(knob, f"{number} is below the allowed minimum {lo}")
            if hi is not None and number > hi:
                raise KnobError(knob, f"{number} is above the allowed maximum {hi}")
        frac = entry.get("max_memory_fraction")
        if frac is not None and mem_total_kb is not None and numbers:
            page_kb = _page_kb(knob)
            if page_kb is not None and numbers[0] * page_kb > frac * mem_total_kb:
                raise KnobError(knob, f"{numbers[0]} pages of {page_kb} kB would take more than "
                                      f"{frac:.0%} of memory ({mem_total_kb} kB)")


def _page_kb(knob: str) -> int | None:
    size = knob.rsplit(":", 1)[-1]
    if size.endswith("kB") and size[:-2].isdigit():
        return int(size[:-2])
    return None
