"""A window's figures as one plain, JSON-able aggregate: folded one terminal record at a time, merged across
partitions and windows, and reported (percentiles from a log-scale histogram, cost from a price table).

An aggregate also carries the offset of the last record folded into it (``upto``): a record at or below it
is already counted. Its table key names one source partition, so that offset and the counts it covers are
one changelog record, written together or not at all: re-reading after a crash counts nothing twice.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from streams.insights.ends import End

Aggregate = dict[str, Any]
_RATIO = 1.1  # histogram buckets 10% wide: a percentile is within 10% of the exact one


def empty() -> Aggregate:
    return {"ends": 0, "escalated": 0, "outcomes": {}, "reasons": {}, "latency": {}, "calls": {}, "tokens": {},
            "fallback": 0, "gate_passed": 0, "gated": 0, "contradicted": 0, "rules": {}, "replays": 0,
            "upto": -1}


def fold(agg: Aggregate | None, end: End, offset: int) -> Aggregate:
    """``agg`` with ``end`` counted (a new dict), unless ``offset`` is already in it."""
    out = _copy(agg or empty())
    if offset <= out["upto"]:
        return out
    out["upto"] = offset
    out["ends"] += 1
    out["escalated"] += int(end.escalated)
    _add(out["outcomes"], end.outcome)
    if end.reason:
        _add(out["reasons"], f"{end.outcome}:{end.reason}")
    if end.latency_ms is not None:
        _add(out["latency"], str(_bucket(end.latency_ms)))
    for model, (calls, tokens) in end.usage.items():
        _add(out["calls"], model, calls)
        _add(out["tokens"], model, tokens)
    out["fallback"] += int(end.fallback)
    if end.gate is not None:
        out["gated"] += 1
        out["gate_passed"] += int(end.gate)
    if end.contradictions:
        out["contradicted"] += 1
        for rule in end.contradictions:
            _add(out["rules"], rule)
    out["replays"] += int(end.attempt > 1)
    return out


def merge(aggs: Iterable[Aggregate]) -> Aggregate:
    """One aggregate of several (partitions of one window, or windows of an hour). ``upto`` means nothing
    in the result."""
    out = empty()
    for a in aggs:
        for k, v in a.items():
            if k == "upto":
                continue
            if isinstance(v, dict):
                for kk, n in v.items():
                    _add(out[k], kk, n)
            else:
                out[k] += v
    return out


def report(agg: Aggregate, prices: Mapping[str, float], every_model: Iterable[str] = ()) -> dict[str, Any]:
    """The figures a person reads: counts, the outcome mix, latency percentiles, cost and rates."""
    n = agg["ends"]
    cost = sum(tokens * price_of(prices, m) / 1e6 for m, tokens in agg["tokens"].items())
    calls = sum(agg["calls"].values())
    tokens = sum(agg["tokens"].values())
    full = _cost_of_every_model(list(every_model), prices, tokens / calls if calls else 0.0) * n
    return {
        "ends": n,
        "outcomes": dict(sorted(agg["outcomes"].items())),
        "reasons": dict(sorted(agg["reasons"].items())),
        "latency_ms": {f"p{q}": _percentile(agg["latency"], q / 100) for q in (50, 95, 99)},
        "model_calls": dict(sorted(agg["calls"].items())),
        "tokens": dict(sorted(agg["tokens"].items())),
        "cost_usd": round(cost, 6),
        "cost_per_end_usd": round(cost / n, 8) if n else 0.0,
        "saving_vs_every_model": round(1 - cost / full, 4) if full else None,
        "fallback_rate": _rate(agg["fallback"], n),
        "gate_pass_rate": _rate(agg["gate_passed"], agg["gated"]),
        "contradiction_rate": _rate(agg["contradicted"], n),
        "contradictions": dict(sorted(agg["rules"].items())),
        "escalation_rate": _rate(agg["escalated"], n),
        "dead_letter_rate": _rate(agg["outcomes"].get("dead_letter", 0), n),
        "replays": agg["replays"],
    }


def price_of(prices: Mapping[str, float], model: str) -> float:
    """US dollars per million tokens of ``model``: its own price, else the longest prefix priced, else
    ``*``."""
    if model in prices:
        return prices[model]
    prefixes = [p for p in prices if p.endswith("*") and model.startswith(p[:-1])]
    return prices[max(prefixes, key=len)] if prefixes else prices.get("*", 0.0)


def _cost_of_every_model(models: list[str], prices: Mapping[str, float], tokens_per_call: float) -> float:
    # What one ticket would cost if every model chain's first model ran on it, at the observed call size.
    return sum(tokens_per_call * price_of(prices, m) / 1e6 for m in models)


def _bucket(ms: int) -> int:
    return 0 if ms <= 1 else int(math.ceil(math.log(ms, _RATIO)))


def _percentile(hist: Mapping[str, int], q: float) -> int | None:
    total = sum(hist.values())
    if not total:
        return None
    seen = 0
    for b in sorted(hist, key=int):
        seen += hist[b]
        if seen >= q * total:
            return 1 if int(b) == 0 else int(round(_RATIO ** int(b)))
    return None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _add(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def _copy(agg: Aggregate) -> Aggregate:
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in agg.items()}
