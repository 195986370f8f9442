"""Every knob family, and the tables assembled from what each one declares.

Adding a family is its module (a `Tuner` subclass) and one line in
`FAMILIES`; the allowlist, `hosttune capture`, the owner table and the
search space of `hosttune tune` then know it.
"""

from __future__ import annotations

import copy
from typing import Any

from hosttune.agent.sense.errors import KnobError
from hosttune.agent.sense.host import Host
from hosttune.tuners.base import Tuner
from hosttune.tuners.block import BlockTuner
from hosttune.tuners.cpu import CpuTuner
from hosttune.tuners.cpuset import CpusetTuner
from hosttune.tuners.hugepages import HugepagesTuner
from hosttune.tuners.irq import IrqTuner
from hosttune.tuners.knobs import SearchHint, parse_knob
from hosttune.tuners.numa import NumaTuner
from hosttune.tuners.sysctl import SysctlTuner
from hosttune.tuners.thp import ThpTuner

# In this order the allowlist lists its entries and owners are looked up.
FAMILIES: tuple[type[Tuner], ...] = (
    SysctlTuner,
    ThpTuner,
    HugepagesTuner,
    IrqTuner,
    NumaTuner,
    BlockTuner,
    CpuTuner,
    CpusetTuner,
)


def bind_tuners(host: Host) -> dict[str, Tuner]:
    """Family name -> its tuner, bound to `host`."""
    return {family.family: family(host) for family in FAMILIES}


def tuner_and_key(tuners: dict[str, Tuner], knob: str) -> tuple[Tuner, str]:
    """The tuner of `knob`'s family among `tuners`, and the key within it:
    "sysctl:vm.swappiness" -> (the sysctl tuner, "vm.swappiness")."""
    family, key = parse_knob(knob)
    tuner = tuners.get(family)
    if tuner is None:
        known = ", ".join(sorted(tuners))
        raise KnobError(knob, f"unknown knob family {family!r} (known: {known})")
    return tuner, key


def default_allowlist() -> dict[str, dict[str, Any]]:
    """What hosttune may set on its own, and within which bounds: every
    family's own entries (a fresh copy: callers merge the site's config over it)."""
    return {knob: copy.deepcopy(dict(entry))
            for family in FAMILIES for knob, entry in family.allowlist.items()}


def capture_patterns() -> tuple[str, ...]:
    """The host paths (fnmatch patterns per component) `hosttune capture`
    copies for the knob families."""
    return tuple(pattern for family in FAMILIES for pattern in family.capture)


def search_hints() -> dict[str, SearchHint]:
    """Knob pattern -> how `hosttune tune` steps through its range."""
    return {knob: hint for family in FAMILIES for knob, hint in family.search.items()}
