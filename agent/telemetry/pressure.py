"""Pressure stall information: /proc/pressure/{cpu,memory,io,irq}.

Kernels without PSI (or booted with psi=0) have no such files: that is
normal and gives no metrics and no error. /proc/pressure/irq exists only on
kernels built with CONFIG_IRQ_TIME_ACCOUNTING (and not on this VM)."""

from __future__ import annotations

from hosttune.agent.host import Host
from hosttune.agent.telemetry.catalogue import PSI_RESOURCES
from hosttune.agent.telemetry.parsing import nothing_usable, number

PRESSURE_DIR = "/proc/pressure"
_AVGS = frozenset(("avg10", "avg60", "avg300"))


def parse_pressure(text: str, resource: str, path: str = "") -> dict[str, float]:
    """'some avg10=0.00 avg60=0.29 avg300=0.24 total=3649009' lines ->
    psi.<resource>.<some|full>.avg10/60/300 (%) and .total (seconds)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        scope, _, rest = line.partition(" ")
        if scope not in ("some", "full"):
            continue
        prefix = f"psi.{resource}.{scope}."
        for field in rest.split():
            key, sep, raw = field.partition("=")
            if not sep:
                continue
            value = number(raw)
            if value is None:
                continue
            if key == "total":
                out[prefix + "total"] = value / 1e6  # microseconds
            elif key in _AVGS:
                out[prefix + key] = value
    if not out:
        raise nothing_usable(path or f"{PRESSURE_DIR}/{resource}", "'some'/'full' line")
    return out


class PressureCollector:
    name = "pressure"

    def __init__(self, host: Host) -> None:
        self._host = host
        self._files = [
            (res, host.kept(f"{PRESSURE_DIR}/{res}"))
            for res in PSI_RESOURCES
            if host.exists(f"{PRESSURE_DIR}/{res}")
        ]

    @property
    def available(self) -> bool:
        return bool(self._files)

    def collect(self, values: dict[str, float]) -> None:
        out: dict[str, float] = {}
        for res, kept in self._files:
            out.update(parse_pressure(kept.read(), res, self._host.describe(kept.path)))
        values.update(out)

    def paths(self) -> list[str]:
        return [kept.path for _, kept in self._files]

    def close(self) -> None:
        for _, kept in self._files:
            kept.close()
