"""Load averages and the scheduling-entity count from /proc/loadavg."""

from __future__ import annotations

from hosttune.agent.sense.errors import ParseError
from hosttune.agent.sense.telemetry.collector import KeptFileCollector
from hosttune.agent.sense.telemetry.parsing import number

LOADAVG = "/proc/loadavg"


def parse_loadavg(text: str, path: str = LOADAVG) -> dict[str, float]:
    """"0.11 0.10 0.03 3/96 6258" -> load.1/5/15 and proc.threads."""
    parts = text.split()
    loads = [number(tok) for tok in parts[:3]]
    if len(loads) < 3 or None in loads:
        raise ParseError(path, f"expected three load averages, got {text[:60]!r}", line=1)
    out = {"load.1": loads[0], "load.5": loads[1], "load.15": loads[2]}
    if len(parts) > 3:
        _, _, total = parts[3].partition("/")
        threads = number(total)
        if threads is not None:
            out["proc.threads"] = threads
    return out  # type: ignore[return-value]


class LoadCollector(KeptFileCollector):
    name = "load"
    path = LOADAVG

    def parse(self, text: str) -> dict[str, float]:
        return parse_loadavg(text, self._described)
