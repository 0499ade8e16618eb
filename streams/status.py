"""`triage status`: what runs, how far behind each step is, how deep each terminal topic is."""
from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from rich.console import Console
from rich.table import Table

from processors.registry import build
from streams.config import Settings
from streams.services import proc
from streams.topology import STEPS, group_id, terminal_topics


def _watermarks(c: Consumer, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=5) for p in partitions}


def collect(settings: Settings) -> dict[str, Any]:
    running = proc.list_running(settings.home)
    doc: dict[str, Any] = {"home": str(settings.home), "bootstrap": settings.bootstrap,
                           "processes": running, "steps": {}, "terminal": {}, "reachable": True}
    try:
        probe = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "triage.status"})
        md = probe.list_topics(timeout=5)
    except KafkaException as exc:
        doc["reachable"] = False
        doc["error"] = str(exc)
        return doc
    try:
        for step in STEPS:
            inputs = build(step, settings).inputs
            lag = 0
            c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": group_id(step)})
            try:
                tps = [TopicPartition(t, p) for t in inputs if t in md.topics for p in md.topics[t].partitions]
                committed = c.committed(tps, timeout=5) if tps else []
                for tp in committed:
                    low, high = probe.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
                    pos = tp.offset if tp.offset >= 0 else low
                    lag += max(0, high - pos)
            finally:
                c.close()
            workers = sorted(n for n in running if n.startswith(f"worker-{step}-"))
            doc["steps"][step] = {"lag": lag, "workers": len(workers)}
        for t in terminal_topics():
            if t in md.topics:
                depth = sum(h - lo for lo, h in _watermarks(probe, t, list(md.topics[t].partitions)).values())
                doc["terminal"][t] = depth
    finally:
        probe.close()
    doc["drift"] = _drift(settings)
    return doc


def _drift(settings: Settings) -> dict[str, Any]:
    import asyncio

    from streams.drift import read_states
    from streams.tenant_state import connect
    from streams.topology import CLASSIFIERS

    async def read() -> dict[str, Any]:
        r = connect(settings.redis_url)
        try:
            return await read_states(r, list(CLASSIFIERS))
        finally:
            await r.aclose()
    try:
        return asyncio.run(read())
    except Exception as exc:  # noqa: BLE001 - status shows what it can; Redis down is a status, not a crash
        return {"error": f"redis unavailable: {exc}"}


def render(doc: dict[str, Any], console: Console) -> None:
    if not doc["reachable"]:
        console.print(f"[red]Kafka at {doc['bootstrap']} is not reachable[/red]: {doc.get('error')}")
    t = Table(title="steps")
    for col in ("step", "workers", "lag"):
        t.add_column(col)
    for step, s in doc["steps"].items():
        t.add_row(step, str(s["workers"]), str(s["lag"]))
    console.print(t)
    t2 = Table(title="terminal topics (records, incl. transaction markers)")
    t2.add_column("topic")
    t2.add_column("depth")
    for topic, depth in doc["terminal"].items():
        t2.add_row(topic, str(depth))
    console.print(t2)
    drift = doc.get("drift") or {}
    if "error" in drift:
        console.print(f"drift monitors: {drift['error']}")
    else:
        console.print("drift monitors: " + ", ".join(
            f"{c} {'[red]TRIPPED[/red]' if d.get('tripped') == '1' else 'ok'} (score {d.get('score', '-')}, {d.get('seen', 0)} seen)"
            for c, d in drift.items()))
    console.print("processes: " + (", ".join(f"{n}={p}" for n, p in sorted(doc["processes"].items())) or "none"))
