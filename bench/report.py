"""Results: the row of one run, the ratios, the targets, the table, the JSON files and the plot."""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.measure import percentile

LINES = ("triage", "naive", "sequential", "langgraph", "limit")
CRITICAL_PATH_CALLS = 3  # a classifier, the writer, the judge


def per_ticket_critical_path(latency_ms: dict[str, float], model_calls: dict[str, int],
                             call_ms: float) -> dict[str, Any]:
    """Each ticket against its *own* critical path: the model calls it made one after another (all but three
    of its four classifier calls, which run in parallel: 1 for a ticket escalated at the router, 3 for
    classify-write-judge, 5 for a draft the gate sent back once), times the mean call latency.

    ``ratio`` = latency / (2 x that path); the target holds when the p99 of the ratio is at most 1. Also the
    p99 of the tickets whose path is the common classify-write-judge (3 calls)."""
    ratios: list[float] = []
    by_calls: dict[int, list[float]] = {}
    for cid, ms in latency_ms.items():
        calls = model_calls.get(cid)
        if calls is None or call_ms <= 0:
            continue
        path = max(1, calls - 3)
        by_calls.setdefault(path, []).append(ms)
        ratios.append(ms / (2 * path * call_ms))
    return {
        "tickets": len(ratios), "p50_ratio": _r(percentile(ratios, 50), 3), "p99_ratio": _r(percentile(ratios, 99), 3),
        "within_2x": _r(sum(1 for x in ratios if x <= 1) / len(ratios), 4) if ratios else None,
        "by_path_calls": {str(k): {"tickets": len(v), "p50_ms": _r(percentile(v, 50)), "p99_ms": _r(percentile(v, 99)),
                                   "limit_ms": 2 * k * call_ms} for k, v in sorted(by_calls.items())},
    }


def row(line: str, latency: str, offered: int, starts: list[float], ends: list[float], outcomes: list[str],
        t0: float, cpu: dict[str, float], measured_cpu: list[str], peak_rss: float, calls: int,
        complete: bool, **extra: Any) -> dict[str, Any]:
    """One entry of ``runs``. ``starts`` are offer (produce) times, ``ends`` the times the terminal outcome
    was observed; ``cpu`` is seconds per process group, of which ``measured_cpu`` count towards the figure."""
    n = len(ends)
    lat = [(e - s) * 1000 for s, e in zip(starts, ends)]
    elapsed = (max(ends) - t0) if ends else math.nan
    cpu_total = sum(cpu[k] for k in measured_cpu)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    return {
        "line": line, "latency": latency, "tickets": n,
        "tickets_per_s": _r(n / elapsed if n and elapsed > 0 else math.nan),
        "p50_ms": _r(percentile(lat, 50)), "p95_ms": _r(percentile(lat, 95)), "p99_ms": _r(percentile(lat, 99)),
        "cpu_s_per_ticket": _r(cpu_total / n if n else math.nan, 5),
        "peak_rss_mb": _r(peak_rss, 1),
        "offered": offered, "complete": complete, "elapsed_s": _r(elapsed, 2),
        "cpu_s": {k: _r(v, 2) for k, v in cpu.items()}, "cpu_counted": measured_cpu,
        "model_calls_per_ticket": _r(calls / n if n else math.nan, 2),
        "outcomes": counts, **extra,
    }


_MEDIANS = {"tickets_per_s": 1, "p50_ms": 1, "p95_ms": 1, "p99_ms": 1, "cpu_s_per_ticket": 5, "peak_rss_mb": 1,
            "elapsed_s": 2, "model_calls_per_ticket": 2}


def median_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry of ``runs`` from repeats of the same run: the (low) median of each figure, every repeat kept
    under ``repeats``. ``duplicates`` is the sum over the repeats (any is a failure of exactly-once); the other
    fields (outcomes, extras) are those of the repeat with the median throughput. A repeat that failed (no
    tickets) is kept in ``repeats`` and makes the entry incomplete, but does not void the others."""
    if len(rows) == 1:
        return rows[0]
    ok = [r for r in rows if r.get("tickets")]
    if not ok:
        return rows[-1]
    out = dict(sorted(ok, key=lambda r: r["tickets_per_s"] or 0.0)[(len(ok) - 1) // 2])
    for field, nd in _MEDIANS.items():
        out[field] = _median_low([r.get(field) for r in ok], nd)
    groups = dict.fromkeys(k for r in ok for k in r.get("cpu_s", {}))
    out["cpu_s"] = {k: _median_low([r.get("cpu_s", {}).get(k) for r in ok], 2) for k in groups}
    if any("duplicates" in r for r in ok):
        out["duplicates"] = sum(r.get("duplicates") or 0 for r in ok)
    out["complete"] = all(r.get("complete") for r in rows)
    out["repeats"] = [{k: r[k] for k in ("tickets", "tickets_per_s", "p50_ms", "p99_ms", "cpu_s_per_ticket",
                                         "model_calls_per_ticket", "outcomes", "duplicates", "complete", "error")
                       if k in r} for r in rows]
    return out


def _median_low(values: list[float | None], nd: int) -> float | None:
    present = [v for v in values if v is not None]
    return _r(statistics.median_low(present), nd) if present else None


def _r(x: float, nd: int = 1) -> float | None:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return None
    return round(x, nd)


def _get(runs: list[dict[str, Any]], line: str, latency: str) -> dict[str, Any] | None:
    return next((r for r in runs if r["line"] == line and r["latency"] == latency and r.get("tickets")), None)


def _div(a: float | None, b: float | None, nd: int = 2) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, nd)


def ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``{latency: {"triage/<line>": {metric: triage's / line's}}}``."""
    out: dict[str, Any] = {}
    for latency in dict.fromkeys(r["latency"] for r in runs):
        t = _get(runs, "triage", latency)
        if t is None:
            continue
        per: dict[str, Any] = {}
        for line in LINES[1:]:
            o = _get(runs, line, latency)
            if o is None:
                continue
            per[f"triage/{line}"] = {m: _div(t[m], o[m]) for m in
                                     ("tickets_per_s", "p99_ms", "cpu_s_per_ticket", "peak_rss_mb")}
        out[latency] = per
    return out


def model_call_floor(calls: int, client_cpu_s: float, server_cpu_s: float, elapsed_s: float) -> dict[str, Any]:
    """CPU per model call, in the caller (the workers' gateway and the ``openai`` client) and in the model server."""
    if calls <= 0:
        return {"calls": calls, "error": "no model call was made"}
    return {"calls": calls, "elapsed_s": _r(elapsed_s, 2), "client_cpu_ms_per_call": _r(client_cpu_s / calls * 1000, 3),
            "server_cpu_ms_per_call": _r(server_cpu_s / calls * 1000, 3)}


def with_tickets(floor: dict[str, Any] | None, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The floor per ticket (at triage's calls per ticket at 0 ms) and the throughput it caps this machine at.

    Every ticket costs at least its model calls' CPU, whoever orchestrates them, so ``cpu_count`` cores
    serve at most ``cpu_count / floor`` tickets a second."""
    if not floor or "client_cpu_ms_per_call" not in floor:
        return floor
    ref = _get(runs, "triage", "0ms") or next((r for r in runs if r.get("model_calls_per_ticket")), None)
    if ref is None or not ref.get("model_calls_per_ticket"):
        return floor
    per_call = floor["client_cpu_ms_per_call"] + floor["server_cpu_ms_per_call"]
    per_ticket = per_call * ref["model_calls_per_ticket"]
    cores = os.cpu_count() or 1
    return {**floor, "calls_per_ticket": ref["model_calls_per_ticket"], "cpu_ms_per_ticket": _r(per_ticket, 3),
            "cores": cores, "ceiling_tickets_per_s": _r(cores / per_ticket * 1000, 1)}


def targets(runs: list[dict[str, Any]], half_max: dict[str, Any] | None,
            floor: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t200, n200, g200 = _get(runs, "triage", "200ms"), _get(runs, "naive", "200ms"), _get(runs, "langgraph", "200ms")
    if t200 and n200:
        r = _div(t200["tickets_per_s"], n200["tickets_per_s"])
        out["triage_50x_naive_at_200ms"] = {
            "target": "triage tickets/s >= 50 x naive tickets/s at 200 ms", "triage_tickets_per_s": t200["tickets_per_s"],
            "naive_tickets_per_s": n200["tickets_per_s"], "ratio": r, "met": r is not None and r >= 50}
        if floor and floor.get("ceiling_tickets_per_s") and n200["tickets_per_s"]:
            # What 50x asks for against what the model calls alone leave room for on this machine.
            out["triage_50x_naive_at_200ms"].update(
                needed_tickets_per_s=_r(50 * n200["tickets_per_s"]),
                model_call_ceiling_tickets_per_s=floor["ceiling_tickets_per_s"])
    if t200 and g200:
        r = _div(t200["tickets_per_s"], g200["tickets_per_s"])
        out["triage_ge_langgraph_at_200ms"] = {
            "target": "triage tickets/s >= langgraph tickets/s at 200 ms", "triage_tickets_per_s": t200["tickets_per_s"],
            "langgraph_tickets_per_s": g200["tickets_per_s"], "ratio": r, "met": r is not None and r >= 1}
    t0, l0 = _get(runs, "triage", "0ms"), _get(runs, "limit", "0ms")
    if t0 and l0:
        r = _div(t0["cpu_s_per_ticket"], l0["cpu_s_per_ticket"])
        out["triage_cpu_le_3x_limit_at_0ms"] = {
            "target": "triage CPU s/ticket <= 3 x limit's at 0 ms", "triage_cpu_s_per_ticket": t0["cpu_s_per_ticket"],
            "limit_cpu_s_per_ticket": l0["cpu_s_per_ticket"], "ratio": r, "met": r is not None and r <= 3}
        s0 = _get(runs, "sequential", "0ms")
        if s0 and s0.get("cpu_s_per_ticket"):
            # The same steps with no Kafka at all, against the same limit: what the step logic alone costs.
            out["triage_cpu_le_3x_limit_at_0ms"].update(
                sequential_cpu_s_per_ticket=s0["cpu_s_per_ticket"],
                sequential_ratio=_div(s0["cpu_s_per_ticket"], l0["cpu_s_per_ticket"]))
        if floor and floor.get("cpu_ms_per_ticket"):
            # A ticket costs at least Kafka's part (the limit) plus its model calls: that sum over the limit is the
            # lowest ratio these steps could reach with no step logic, no Redis and no serialisation at all.
            calls_s = floor["cpu_ms_per_ticket"] / 1000
            out["triage_cpu_le_3x_limit_at_0ms"].update(
                model_calls_cpu_s_per_ticket=_r(calls_s, 5),
                lowest_possible_ratio=_div(l0["cpu_s_per_ticket"] + calls_s, l0["cpu_s_per_ticket"]))
    if half_max and half_max.get("p99_ms") is not None:
        out["p99_at_half_max_le_2x_critical_path"] = {
            "target": "triage p99 at half its max throughput (200 ms) <= 2 x the critical path's model latency",
            "rate_per_s": half_max["rate_per_s"], "p99_ms": half_max["p99_ms"],
            "critical_path_model_ms": half_max["critical_path_model_ms"], "limit_ms": half_max["target_ms"],
            "met": half_max["p99_ms"] <= half_max["target_ms"]}
        per = half_max.get("per_ticket") or {}
        if per.get("p99_ratio") is not None:
            out["p99_at_half_max_le_2x_own_critical_path"] = {
                "target": "the same, each ticket against its own critical path (p99 of latency / (2 x its path) <= 1)",
                "rate_per_s": half_max["rate_per_s"], "p99_ratio": per["p99_ratio"], "within_2x": per["within_2x"],
                "met": per["p99_ratio"] <= 1}
    return out


def machine(kafka_home: Path | None) -> dict[str, Any]:
    import confluent_kafka
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "cpu_model": "", "memory_gb": None,
                            "python": platform.python_version(), "platform": platform.platform(),
                            "kafka": None, "confluent_kafka": str(confluent_kafka.__version__),
                            "librdkafka": confluent_kafka.libversion()[0]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    if kafka_home is not None:
        jars = sorted((kafka_home / "kafka" / "libs").glob("kafka_2.13-*.jar"))
        if jars:
            info["kafka"] = jars[0].name.removeprefix("kafka_2.13-").removesuffix(".jar")
    for mod in ("openai", "langgraph", "aiohttp"):
        try:
            from importlib.metadata import version
            info[mod] = version(mod)
        except Exception:  # noqa: BLE001
            info[mod] = None
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            cwd=Path(__file__).resolve().parents[1], timeout=10).stdout.strip()
    except OSError:
        info["git_commit"] = None
    return info


def table(runs: list[dict[str, Any]]) -> str:
    head = (f"{'line':<11}{'latency':<10}{'tickets':>8}{'tickets/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
            f"{'CPU ms/t':>10}{'RSS MB':>8}{'calls/t':>8}  outcomes")
    lines = [head, "-" * len(head)]
    for r in runs:
        if r.get("error"):
            lines.append(f"{r['line']:<11}{r['latency']:<10}  error: {r['error']}")
            continue
        cpu = r["cpu_s_per_ticket"]
        oc = " ".join(f"{k[:4]}={v}" for k, v in sorted(r.get("outcomes", {}).items()))
        reasons = r.get("escalation_reasons") or {}
        if reasons:
            oc += " (" + " ".join(f"{k or '?'}={v}" for k, v in sorted(reasons.items())) + ")"
        lines.append(f"{r['line']:<11}{r['latency']:<10}{r['tickets']:>8}{_f(r['tickets_per_s']):>11}"
                     f"{_f(r['p50_ms'], 0):>9}{_f(r['p95_ms'], 0):>9}{_f(r['p99_ms'], 0):>9}"
                     f"{_f(cpu * 1000 if cpu is not None else None):>10}{_f(r['peak_rss_mb'], 0):>8}"
                     f"{_f(r.get('model_calls_per_ticket'), 2):>8}  {oc}{'' if r.get('complete', True) else '  (incomplete)'}")
    return "\n".join(lines)


def _f(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def summary(doc: dict[str, Any]) -> str:
    out = [table(doc["runs"]), ""]
    hm = doc.get("half_max")
    if hm:
        out.append(f"triage at half max (200 ms): {hm['rate_per_s']:.1f} tickets/s for {hm['seconds']:.0f} s, "
                   f"{hm['tickets']} tickets: p50 {_f(hm['p50_ms'], 0)} ms, p95 {_f(hm['p95_ms'], 0)} ms, "
                   f"p99 {_f(hm['p99_ms'], 0)} ms (limit {hm['target_ms']:.0f} ms)")
        served = hm.get("model_as_served_ms") or {}
        if served.get("p50") is not None:
            out.append(f"  the model server under this load, probed from an idle client: p50 {served['p50']:.0f} ms, "
                       f"p90 {served['p90']:.0f} ms per call (nominal 200 ms)")
        for calls, v in (hm.get("per_ticket") or {}).get("by_path_calls", {}).items():
            out.append(f"  {v['tickets']:>5} tickets with {calls} model call(s) on their critical path: p50 "
                       f"{_f(v['p50_ms'], 0)} ms, p99 {_f(v['p99_ms'], 0)} ms (limit {v['limit_ms']:.0f} ms)")
        out.append("")
    fl = doc.get("model_call_floor")
    if fl and fl.get("cpu_ms_per_ticket"):
        out.append(f"model calls alone ({fl['calls']} at 0 ms): {fl['client_cpu_ms_per_call']} ms of CPU in the caller + "
                   f"{fl['server_cpu_ms_per_call']} ms in the model server per call; x {fl['calls_per_ticket']} calls = "
                   f"{fl['cpu_ms_per_ticket']} ms per ticket, so {fl['cores']} cores serve at most "
                   f"{_f(fl['ceiling_tickets_per_s'])} tickets/s whoever orchestrates them")
        out.append("")
    elif fl and fl.get("error"):
        out.append(f"model calls alone: failed: {fl['error']}")
        out.append("")
    out.append("ratios (triage / line):")
    for latency, per in doc["ratios"].items():
        for k, v in per.items():
            out.append(f"  {latency:<10}{k:<22}throughput x{_f(v['tickets_per_s'], 2)}   p99 x{_f(v['p99_ms'], 2)}   "
                       f"CPU/ticket x{_f(v['cpu_s_per_ticket'], 2)}   RSS x{_f(v['peak_rss_mb'], 2)}")
    out.append("")
    out.append("targets:")
    for name, t in doc["targets"].items():
        figs = ", ".join(f"{k}={v}" for k, v in t.items() if k not in ("target", "met"))
        out.append(f"  [{'MET' if t['met'] else 'NOT MET'}] {t['target']}: {figs}")
    return "\n".join(out)


def save(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    paths = [out_dir / "latest.json", out_dir / f"{time.strftime('%Y-%m-%d')}.json"]
    for p in paths:
        p.write_text(text)
    png = out_dir / "latest.png"
    try:
        plot(doc, png)
        paths.append(png)
    except ImportError as exc:
        print(f"no plot: {exc} (pip install matplotlib)")
    return paths


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    runs = [r for r in doc["runs"] if r.get("tickets")]
    latencies = list(dict.fromkeys(r["latency"] for r in runs))
    lines = [l for l in LINES if any(r["line"] == l for r in runs)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / max(1, len(lines))
    for ax, metric, title in ((axes[0], "tickets_per_s", "throughput (tickets/s, log)"),
                              (axes[1], "p99_ms", "p99 end-to-end latency (ms, log)")):
        for j, line in enumerate(lines):
            xs, ys = [], []
            for i, lat in enumerate(latencies):
                r = _get(runs, line, lat)
                if r is not None and r.get(metric):
                    xs.append(i + (j - (len(lines) - 1) / 2) * width)
                    ys.append(r[metric])
            bars = ax.bar(xs, ys, width, label=line)
            for b, y in zip(bars, ys):
                ax.annotate(f"{y:,.0f}" if y >= 10 else f"{y:.2g}", (b.get_x() + b.get_width() / 2, y),
                            ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:,.6g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(latencies)), latencies)
        ax.set_xlabel("model latency")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    hm = doc.get("half_max")
    if hm and hm.get("p99_ms") and "200ms" in latencies:
        axes[1].axhline(hm["target_ms"], color="grey", ls="--", lw=1)
        axes[1].set_title("p99 end-to-end latency (ms, log), all tickets offered at once\n"
                          f"dashed: {hm['target_ms']:.0f} ms target; triage at half max (200 ms): "
                          f"p99 {hm['p99_ms']:,.0f} ms", fontsize=10)
    fl, tg = doc.get("model_call_floor") or {}, (doc.get("targets") or {}).get("triage_50x_naive_at_200ms") or {}
    if fl.get("ceiling_tickets_per_s"):
        axes[0].axhline(fl["ceiling_tickets_per_s"], color="grey", ls=":", lw=1)
        title = f"throughput (tickets/s, log)\ndotted: {fl['ceiling_tickets_per_s']:,.0f}, the model calls' own CPU ceiling"
        if tg.get("needed_tickets_per_s"):
            axes[0].axhline(tg["needed_tickets_per_s"], color="grey", ls="--", lw=1)
            title += f"; dashed: 50x naive at 200 ms ({tg['needed_tickets_per_s']:,.0f})"
        axes[0].set_title(title, fontsize=10)
    axes[0].legend(fontsize=8, ncol=len(lines), loc="upper center", bbox_to_anchor=(0.5, -0.13))
    m = doc["machine"]
    fig.suptitle(f"triage benchmark, {doc['date']}: {m['cpu_count']} cores {m['cpu_model']}, Kafka {m['kafka']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
