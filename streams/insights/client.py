"""Reading the insights worker's tables from another process: its loopback /insights page."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from streams.insights.settings import InsightsSettings


class Unavailable(Exception):
    """The insights worker does not answer."""


def snapshot(conf: InsightsSettings, tenant: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    query = f"?{urllib.parse.urlencode({'tenant': tenant})}" if tenant else ""
    url = f"http://127.0.0.1:{conf.port}/insights{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback, our own worker
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unavailable(f"the insights worker does not answer at {url} ({exc}); is `triage up` running? "
                          f"(it starts it; TRIAGE_INSIGHTS_PORT sets the port)") from None


def render(doc: dict[str, Any], out: Console) -> None:
    if not doc["tenants"]:
        out.print("no terminal records counted yet")
        return
    for t in doc["tenants"]:
        table = Table(title=f"{t['pipeline']} / {t['tenant']}  (windows of {doc['window_s']:g} s)")
        for col in ("window", "ends", "outcomes", "p50/p95/p99 ms", "cost $", "fallback", "gate pass",
                    "contradictions"):
            table.add_column(col)
        rows = [(_start(w["start_ms"]), w) for w in t["windows"][-10:]] + [("last hour", t["hour"]),
                                                                          ("last day", t["day"])]
        for label, r in rows:
            lat = r["latency_ms"]
            table.add_row(label, str(r["ends"]), ", ".join(f"{k} {v}" for k, v in r["outcomes"].items()),
                          "/".join("-" if lat[p] is None else str(lat[p]) for p in ("p50", "p95", "p99")),
                          f"{r['cost_usd']:.4f}", _pct(r["fallback_rate"]), _pct(r["gate_pass_rate"]),
                          _pct(r["contradiction_rate"]))
        out.print(table)


def _start(ms: int) -> str:
    import time  # noqa: PLC0415
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000))


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def total(doc: dict[str, Any]) -> int:
    """Terminal records the tables hold over the last day, every pipeline and tenant."""
    return sum(t["day"]["ends"] for t in doc["tenants"])


def wait_until(conf: InsightsSettings, ok: Any, timeout: float, every: float = 0.5) -> dict[str, Any] | None:
    """The first snapshot for which ``ok(snapshot)`` holds, or None after ``timeout`` seconds (the worker
    may still be starting: it is asked again)."""
    import time  # noqa: PLC0415
    deadline = time.monotonic() + timeout
    while True:
        try:
            doc = snapshot(conf, timeout=5)
            if ok(doc):
                return doc
        except Unavailable:
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(every)
