"""Per-interface traffic from /proc/net/dev (of the network namespace the
sampler runs in), and totals over every interface but loopback."""

from __future__ import annotations

from hosttune.agent.host import Host
from hosttune.agent.telemetry.parsing import nothing_usable, number

NET_DEV = "/proc/net/dev"

# column after the name -> metric suffix (rx: bytes packets errs drop fifo
# frame compressed multicast; tx: bytes packets errs drop fifo colls carrier
# compressed)
_COLUMNS: tuple[tuple[int, str], ...] = (
    (0, "rx_bytes"), (1, "rx_packets"), (2, "rx_errors"), (3, "rx_drops"),
    (8, "tx_bytes"), (9, "tx_packets"), (10, "tx_errors"), (11, "tx_drops"),
)


def parse_net_dev(text: str, path: str = NET_DEV) -> dict[str, float]:
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
        if not name or any(c.isspace() for c in name) or len(parts) < 12:
            continue
        stats = [number(tok) for tok in parts[:12]]
        if any(v is None for v in stats):
            continue
        seen += 1
        prefix = f"net.{name}."
        loopback = name == "lo"
        for col, suffix in _COLUMNS:
            value: float = stats[col]  # type: ignore[assignment]
            out[prefix + suffix] = value
            if not loopback:
                totals[suffix] += value
    if not seen and text.strip() and "|" not in text:
        raise nothing_usable(path, "interface line")
    for suffix, value in totals.items():
        out["net." + suffix] = value
    return out


class NetworkCollector:
    name = "network"

    def __init__(self, host: Host) -> None:
        self._file = host.kept(NET_DEV)
        self._path = host.describe(NET_DEV)

    def collect(self, values: dict[str, float]) -> None:
        values.update(parse_net_dev(self._file.read(), self._path))

    def paths(self) -> list[str]:
        return [NET_DEV]

    def close(self) -> None:
        self._file.close()
