"""The Collector interface every source of metrics implements.

A collector reads one kind of host file (through `Host`, never by path on its
own) and adds catalogued metric names to the dict it is given. On failure it
raises a `HosttuneError` subclass (`HostReadError`, `ParseError`) naming the
path; the sampler records that in `Sample.errors` and carries on with the
other collectors.

The accelerator seam: an accelerator backend (hosttune.agent.accel) is just
one more Collector, named e.g. "accel.nvidia", that fills `accel.<i>.*` names
from the catalogue; it is added to the list given to `Sampler`. Nothing else in
telemetry needs to know about vendors.

Collectors may also have `close()` (release kept-open files; the sampler calls
it when present) and `paths()` (the host files one `collect` reads, used by
benchmarks/sample_cost.py to time reading the same files raw).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Collector(Protocol):
    name: str

    def collect(self, values: dict[str, float]) -> None:
        """Add this collector's metrics to `values`."""
