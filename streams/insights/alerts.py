"""When one tenant's window stands out from its own recent past: volume, escalation rate, dead-letter rate or
cost per record above a multiple of the trailing baseline (the mean of the windows before it)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ALERTS_TOPIC = "triage.alerts"
METRICS = ("volume", "escalation_rate", "dead_letter_rate", "cost_per_end_usd")


@dataclass(frozen=True)
class AlertPolicy:
    multiple: float = 3.0
    """A window's value above this many times its baseline alerts."""
    baseline_windows: int = 10
    """How many windows before it the baseline looks at (it averages those with records: a quiet night is
    not the baseline of the morning)."""
    min_history: int = 3
    """Windows with records the baseline needs before anything alerts: a new tenant's first traffic is not a
    surge."""
    min_ends: int = 20
    """Records a window needs to alert at all: three records against one is not a surge."""


def metric(report: Mapping[str, Any], name: str) -> float:
    if name == "volume":
        return float(report["ends"])
    value = report.get(name)
    return float(value) if value is not None else 0.0


def check(window: Mapping[str, Any], history: Sequence[Mapping[str, Any] | None],
          policy: AlertPolicy) -> list[tuple[str, float, float]]:
    """``(metric, value, baseline)`` for each metric of ``window`` (a report) over the multiple of its
    baseline; ``history`` the reports of the windows before it, oldest first, None for a window without
    records."""
    recent = list(history)[-policy.baseline_windows:]
    seen = [r for r in recent if r is not None and r["ends"]]
    if window["ends"] < policy.min_ends or len(seen) < policy.min_history:
        return []
    fired = []
    for name in METRICS:
        baseline = sum(metric(r, name) for r in seen) / len(seen)
        value = metric(window, name)
        if baseline > 0 and value > policy.multiple * baseline:
            fired.append((name, value, baseline))
    return fired
