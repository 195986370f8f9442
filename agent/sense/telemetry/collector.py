"""The Collector interface every source of metrics implements.

A collector reads one kind of host file (through `Host`, never by path on its
own) and adds catalogued metric names to the dict it is given. On failure it
raises a `HosttuneError` subclass (`HostReadError`, `ParseError`) naming the
path; the sampler records that in `Sample.errors` and carries on with the
other collectors.

The accelerator seam: the accelerators (hosttune.agent.sense.accel.select's
AccelCollector, over whichever vendor backends serve this host) are just one
more Collector, named "accel", that fills `accel.<i>.*` names from the
catalogue; `sampler.open_sampler` adds it. Nothing else in telemetry needs to
know about vendors.

Collectors may also have `close()` (release kept-open files; the sampler calls
it when present) and `paths()` (the host files one `collect` reads, used by
benchmarks/sample_cost.py to time reading the same files raw).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from hosttune.agent.sense.host import Host


@runtime_checkable
class Collector(Protocol):
    name: str

    def collect(self, values: dict[str, float]) -> None:
        """Add this collector's metrics to `values`."""


class KeptFileCollector:
    """A collector of one /proc file kept open and re-read with pread: the
    shape of most system collectors. Subclasses set `name` and `path` and
    implement `parse`; per-collector parse caches live on the subclass."""

    name: str
    path: str

    def __init__(self, host: Host) -> None:
        self._file = host.kept(self.path)
        self._described = host.describe(self.path)

    def parse(self, text: str) -> dict[str, float]:
        raise NotImplementedError

    def collect(self, values: dict[str, float]) -> None:
        values.update(self.parse(self._file.read()))

    def paths(self) -> list[str]:
        return [self.path]

    def close(self) -> None:
        self._file.close()
