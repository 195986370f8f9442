"""Pressure stall information: /proc/pressure/{cpu,memory,io,irq}.

Kernels without PSI (or booted with psi=0) have no such files: that is
normal and gives no metrics and no error. /proc/pressure/irq exists only on
kernels built with CONFIG_IRQ_TIME_ACCOUNTING (and not on this VM)."""

from __future__ import annotations

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.catalogue import PSI_RESOURCES
from hosttune.agent.sense.telemetry.parsing import nothing_usable

PRESSURE_DIR = "/proc/pressure"
_AVGS = frozenset(("avg10", "avg60", "avg300"))


def _names(resource: str, scope: str, cache: dict[tuple[str, str], dict[str, str]]
           ) -> dict[str, str]:
    found = cache.get((resource, scope))
    if found is None:
        prefix = f"psi.{resource}.{scope}."
        found = cache[(resource, scope)] = {key: prefix + key for key in (*_AVGS, "total")}
    return found


def parse_pressure(text: str, resource: str, path: str = "",
                   names: dict[tuple[str, str], dict[str, str]] | None = None
                   ) -> dict[str, float]:
    """'some avg10=0.00 avg60=0.29 avg300=0.24 total=3649009' lines ->
    psi.<resource>.<some|full>.avg10/60/300 (%) and .total (seconds).
    `names` caches the metric names between calls."""
    out: dict[str, float] = {}
    cache = {} if names is None else names
    for line in text.splitlines():
        scope, _, rest = line.partition(" ")
        if scope not in ("some", "full"):
            continue
        wanted = _names(resource, scope, cache)
        for field in rest.split():
            key, sep, raw = field.partition("=")
            name = wanted.get(key) if sep else None
            if name is None:
                continue
            try:  # number() inlined: ~24 values every sample
                value = float(raw)
            except ValueError:
                continue
            if value - value != 0:  # nan and inf give nan
                continue
            out[name] = value / 1e6 if key == "total" else value  # total: microseconds
    if not out:
        raise nothing_usable(path or f"{PRESSURE_DIR}/{resource}", "'some'/'full' line")
    return out


class PressureCollector:
    name = "pressure"

    def __init__(self, host: Host) -> None:
        self._host = host
        self._files = [
            (res, host.kept(f"{PRESSURE_DIR}/{res}"), host.describe(f"{PRESSURE_DIR}/{res}"))
            for res in PSI_RESOURCES
            if host.exists(f"{PRESSURE_DIR}/{res}")
        ]
        self._names: dict[tuple[str, str], dict[str, str]] = {}

    @property
    def available(self) -> bool:
        return bool(self._files)

    def collect(self, values: dict[str, float]) -> None:
        out: dict[str, float] = {}
        for res, kept, described in self._files:
            out.update(parse_pressure(kept.read(), res, described, self._names))
        values.update(out)

    def paths(self) -> list[str]:
        return [kept.path for _, kept, _ in self._files]

    def close(self) -> None:
        for _, kept, _ in self._files:
            kept.close()
