"""The dashboard page: one tenant's insights over the last hour, from the insights worker's tables."""
from __future__ import annotations

from html import escape
from typing import Any

from streams.ui import charts, views


def _hm(ms: int) -> str:
    return views.fmt_time(ms)[11:16]


def _pct(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.1f}%"


def page(tenant: str, csrf: str, doc: dict[str, Any] | None, error: str | None = None) -> str:
    nav = '<p><a href="/">← queue</a></p>'
    if error is not None:
        return views.page("Insights", f'{nav}<h1>Insights</h1><div class="error">{escape(error)}</div>',
                          tenant=tenant, csrf=csrf)
    parts = [nav, f'<h1>Insights · {escape(tenant)}</h1>',
             f'<p class="muted">Windows of {doc["window_s"]:g} s over the last hour, counted from the terminal '
             f'topics (every record once).</p>']
    mine = [t for t in doc["tenants"] if t["tenant"] == tenant]
    if not mine:
        parts.append('<p id="no-insights">No finished records for this tenant in the last day.</p>')
    for t in mine:
        parts.append(_pipeline(t, _slots(doc)))
    return views.page("Insights", "".join(parts), tenant=tenant, csrf=csrf)


SLOTS = 60


def _slots(doc: dict[str, Any]) -> list[int]:
    """The starts of the last 60 windows up to now: the x axis is time, with empty windows shown empty."""
    size = int(doc["window_s"] * 1000)
    current = doc["now_ms"] // size * size
    return [current - k * size for k in range(SLOTS - 1, -1, -1)]


def _empty_window() -> dict[str, Any]:
    return {"outcomes": {}, "latency_ms": {"p50": None, "p95": None, "p99": None}, "cost_usd": None,
            "fallback_rate": None, "contradiction_rate": None}


def _pipeline(t: dict[str, Any], slots: list[int]) -> str:
    by_start = {w["start_ms"]: w for w in t["windows"]}
    ws = [by_start.get(s) or _empty_window() for s in slots]
    xs = [_hm(s) for s in slots]
    hour, day = t["hour"], t["day"]
    outcomes = sorted({o for w in ws for o in w["outcomes"]})
    tiles = [("finished (hour)", str(hour["ends"])), ("finished (day)", str(day["ends"])),
             ("escalated", _pct(hour["escalation_rate"])), ("dead letters", _pct(hour["dead_letter_rate"])),
             ("p95 end to end", f'{hour["latency_ms"]["p95"] or "–"} ms'),
             ("cost (hour)", f'${hour["cost_usd"]:.4f}'),
             ("saved vs every model", _pct(hour["saving_vs_every_model"])),
             ("fallback", _pct(hour["fallback_rate"])), ("gate pass", _pct(hour["gate_pass_rate"])),
             ("contradictions", _pct(hour["contradiction_rate"]))]
    grid = "".join(f'<div class="tile"><div class="muted">{escape(k)}</div><b>{escape(v)}</b></div>' for k, v in tiles)
    reasons = "".join(f"<tr><td>{escape(k)}</td><td>{n}</td></tr>" for k, n in hour["reasons"].items())
    ident = t["pipeline"]
    return (f'<section class="card insights" id="insights-{escape(ident)}"><h2>{escape(ident)}</h2>'
            f'<div class="tiles">{grid}</div>'
            + charts.stacked_bars("Volume and outcome mix per window", f"volume-{ident}", xs,
                                  {o: [w["outcomes"].get(o, 0) for w in ws] for o in outcomes})
            + charts.lines("End-to-end latency (ms)", f"latency-{ident}", xs,
                           {q: [w["latency_ms"][q] for w in ws] for q in ("p50", "p95", "p99")}, " ms")
            + charts.lines("Estimated model cost per window ($)", f"cost-{ident}", xs,
                           {"cost": [w["cost_usd"] for w in ws]})
            + charts.lines("Fallback and contradiction rates", f"rates-{ident}", xs,
                           {"fallback": [w["fallback_rate"] for w in ws],
                            "contradiction": [w["contradiction_rate"] for w in ws]})
            + (f'<h3>Why, this hour</h3><table id="reasons-{escape(ident)}"><tr><th>outcome:reason</th><th>n</th></tr>'
               f'{reasons}</table>' if reasons else "")
            + "</section>")
