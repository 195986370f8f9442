"""Per-interface traffic from /proc/net/dev (of the network namespace the
sampler runs in), and totals over every interface but loopback."""

from __future__ import annotations

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.collector import KeptFileCollector
from hosttune.agent.sense.telemetry.parsing import nothing_usable

NET_DEV = "/proc/net/dev"

# column after the name -> metric suffix (rx: bytes packets errs drop fifo
# frame compressed multicast; tx: bytes packets errs drop fifo colls carrier
# compressed)
_COLUMNS: tuple[tuple[int, str], ...] = (
    (0, "rx_bytes"), (1, "rx_packets"), (2, "rx_errors"), (3, "rx_drops"),
    (8, "tx_bytes"), (9, "tx_packets"), (10, "tx_errors"), (11, "tx_drops"),
)


def _names(name: str) -> tuple[tuple[int, str, str], ...]:
    return tuple((col, f"net.{name}.{suffix}", suffix) for col, suffix in _COLUMNS)


def parse_net_dev(text: str, path: str = NET_DEV,
                  names: dict[str, tuple[tuple[int, str, str], ...]] | None = None,
                  ) -> dict[str, float]:
    """`names` caches interface -> its metric names between calls."""
    cache = {} if names is None else names
    out: dict[str, float] = {}
    totals = {suffix: 0.0 for _, suffix in _COLUMNS}
    seen = 0
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        parts = rest.split()
        # The two header lines have '|' where interfaces have ':'; a header
        # line with a ':' in it fails the number check below.
        if not name or len(parts) < 12 or len(name.split()) != 1:
            continue
        try:
            stats = list(map(float, parts[:12]))
        except ValueError:
            continue
        if sum(stats) - sum(stats) != 0:  # a nan or inf among them
            continue
        seen += 1
        metrics = cache.get(name)
        if metrics is None:
            metrics = cache[name] = _names(name)
        loopback = name == "lo"
        for col, metric, suffix in metrics:
            value = stats[col]
            out[metric] = value
            if not loopback:
                totals[suffix] += value
    if not seen and text.strip() and "|" not in text:
        raise nothing_usable(path, "interface line")
    for suffix, value in totals.items():
        out["net." + suffix] = value
    return out


class NetworkCollector(KeptFileCollector):
    name = "network"
    path = NET_DEV

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._names: dict[str, tuple[tuple[int, str, str], ...]] = {}

    def parse(self, text: str) -> dict[str, float]:
        return parse_net_dev(text, self._described, self._names)
