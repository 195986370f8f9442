"""The workload the daemon believes in, with hysteresis.

The classifier answers once a window. A new class is believed only after it
has won `hysteresis` windows in a row, so one odd window (a compile in the
middle of training, a checkpoint burst) does not flip the belief and trigger
tuning, while a real change (training starts, the host goes idle) is taken
within `hysteresis` windows. "unknown" answers never replace a belief; they
only break a streak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """One classification of one window."""

    label: str
    confidence: float
    top_features: tuple[tuple[str, float], ...] = ()
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": round(self.confidence, 4),
                "top_features": [[n, v] for n, v in self.top_features],
                "reason": self.reason}


@dataclass
class WorkloadTracker:
    hysteresis: int = 2
    stable: str | None = None
    stable_confidence: float = 0.0
    since: float | None = None
    candidate: str | None = None
    streak: int = 0
    last: Verdict | None = None
    changes: int = 0
    history: list[tuple[float, str]] = field(default_factory=list)

    def update(self, verdict: Verdict, now: float) -> bool:
        """Feed one window's verdict; True when the believed class changed."""
        self.last = verdict
        if verdict.label == "unknown":
            self.candidate, self.streak = None, 0
            return False
        if verdict.label == self.stable:
            self.stable_confidence = verdict.confidence
            self.candidate, self.streak = None, 0
            return False
        if verdict.label == self.candidate:
            self.streak += 1
        else:
            self.candidate, self.streak = verdict.label, 1
        if self.streak >= self.hysteresis:
            self.stable = verdict.label
            self.stable_confidence = verdict.confidence
            self.since = now
            self.candidate, self.streak = None, 0
            self.changes += 1
            self.history.append((now, verdict.label))
            del self.history[:-50]
            return True
        return False
