"""The samples the loop holds: the last `window` samples and the rates between
them, the latest of each, and how sampling is going (counts, lateness)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from hosttune.agent.sense.sample import Sample
from hosttune.agent.service.histogram import Histogram


@dataclass
class SampleWindow:
    size: int
    samples: collections.deque[Sample] = field(init=False)
    # rows[i]: the rates from one sample to the next, computed once per tick
    rows: collections.deque[dict[str, float]] = field(init=False)
    last_sample: Sample | None = None
    last_rates: dict[str, float] = field(default_factory=dict)
    sample_count: int = 0
    sample_errors: int = 0
    missed_ticks: int = 0
    max_lateness: float = 0.0
    lateness: Histogram = field(default_factory=Histogram)
    in_window: int = 0
    windows: int = 0

    def __post_init__(self) -> None:
        self._last_lateness = 0.0
        self.samples = collections.deque(maxlen=self.size + 1)
        self.rows = collections.deque(maxlen=self.size)

    # The loop sets `last_lateness` once per tick; each value is also counted
    # into the histogram the metrics endpoint shows.
    @property
    def last_lateness(self) -> float:
        return self._last_lateness

    @last_lateness.setter
    def last_lateness(self, seconds: float) -> None:
        self._last_lateness = seconds
        self.lateness.observe(seconds)

    def resize(self, size: int) -> None:
        self.size = size
        self.samples = collections.deque(self.samples, maxlen=size + 1)
        self.rows = collections.deque(self.rows, maxlen=size)

    def add(self, sample: Sample, rates: dict[str, float] | None) -> bool:
        """Keeps `sample` (and its rates against the one before, None for the
        first); True when it completes a window."""
        self.samples.append(sample)
        self.last_sample = sample
        self.sample_count += 1
        if rates is None:
            return False
        self.last_rates = rates
        self.rows.append(rates)
        self.in_window += 1
        if self.in_window < self.size:
            return False
        self.in_window = 0
        self.windows += 1
        return True

    def for_classifier(self) -> tuple[list[Sample], list[dict[str, float]]]:
        """The window's samples and the rows between them (one fewer)."""
        samples = list(self.samples)
        rows = list(self.rows)[-(len(samples) - 1):] if len(samples) > 1 else []
        return samples[-len(rows) - 1:], rows
