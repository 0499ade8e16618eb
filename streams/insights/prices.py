"""What a million tokens of a model costs, in US dollars, for the insights' cost estimates.

The default table holds list prices of common hosted models (a blend of input and output at 3:1) and prices
each offline model as the class of hosted model it stands in for, so a deployment on the embedded models shows
the cost it would have. ``TRIAGE_PRICES`` replaces entries: JSON (``{"gpt-4o": 4.4}``) or a JSON file's path;
``*`` prices any model not named, and a key ending in ``*`` prices every model it begins.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

DEFAULT: Mapping[str, float] = {
    "gpt-4o-mini": 0.26,
    "gpt-4o": 4.38,
    "gpt-4.1-mini": 0.70,
    "gpt-4.1": 3.50,
    "gpt-4.1-nano": 0.18,
    "offline-*": 0.26,          # the small hosted class the offline models stand in for
    "offline-writer-strong": 4.38,
    "*": 1.00,
}


def load(raw: str | None) -> dict[str, float]:
    """The default table with ``raw``'s entries on top. Raises ValueError naming what is wrong."""
    prices = dict(DEFAULT)
    if not raw or not raw.strip():
        return prices
    text = Path(raw).read_text() if not raw.lstrip().startswith("{") else raw
    try:
        given = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"TRIAGE_PRICES is not JSON ({exc}); give {{\"model\": dollars per 1M tokens}}") from None
    if not isinstance(given, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in given.values()):
        raise ValueError("TRIAGE_PRICES must map model names to non-negative dollars per million tokens")
    prices.update({str(k): float(v) for k, v in given.items()})
    return prices
