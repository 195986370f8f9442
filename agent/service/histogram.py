"""A Prometheus-style histogram kept in a few numbers: the daemon's sampling
lateness, shown by the metrics endpoint (which the daemon imports only when
the listener is on)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Upper bounds (seconds) of the sampling-lateness histogram: a healthy loop is
# late by milliseconds; a whole interval (1-10 s) late means a tick was lost.
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """Cumulative bucket counts, their sum and count: what a Prometheus
    histogram needs, kept in a few numbers rather than every observation."""

    bounds: tuple[float, ...] = LATENESS_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total, self.count)
