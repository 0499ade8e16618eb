"""The insights worker's settings (TRIAGE_INSIGHTS_*, TRIAGE_PRICES), read once at its start."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from streams.insights import prices
from streams.insights.alerts import AlertPolicy


@dataclass(frozen=True)
class InsightsSettings:
    port: int = 9390
    """Loopback port of the worker's /insights page (TRIAGE_INSIGHTS_PORT)."""
    window_s: float = 60.0
    """Tumbling window size (TRIAGE_INSIGHTS_WINDOW_S)."""
    prices: Mapping[str, float] = field(default_factory=lambda: dict(prices.DEFAULT))
    policy: AlertPolicy = field(default_factory=AlertPolicy)


def load(env: Mapping[str, str] | None = None) -> InsightsSettings:
    """Raises SystemExit naming a bad setting."""
    env = os.environ if env is None else env

    def number(name: str, default: float, low: float, high: float) -> float:
        raw = env.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SystemExit(f"{name} must be a number, got {raw[:100]!r}") from None
        if not low <= value <= high:
            raise SystemExit(f"{name} must be between {low:g} and {high:g}, got {value:g}")
        return value

    try:
        table = prices.load(env.get("TRIAGE_PRICES"))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"TRIAGE_PRICES: {exc}") from None
    return InsightsSettings(
        port=int(number("TRIAGE_INSIGHTS_PORT", 9390, 1, 65535)),
        window_s=number("TRIAGE_INSIGHTS_WINDOW_S", 60.0, 1.0, 3600.0),
        prices=table,
        policy=AlertPolicy(multiple=number("TRIAGE_ALERT_MULTIPLE", 3.0, 1.0, 1000.0),
                           baseline_windows=int(number("TRIAGE_ALERT_BASELINE_WINDOWS", 10, 1, 1440)),
                           min_history=int(number("TRIAGE_ALERT_MIN_HISTORY", 3, 1, 1440)),
                           min_ends=int(number("TRIAGE_ALERT_MIN_ENDS", 20, 1, 1_000_000))),
    )

