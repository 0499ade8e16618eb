"""`triage status`: what runs, how far behind each step is, how deep each terminal topic is."""
from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streams import pipelines
from streams.client import visible
from streams.config import Settings
from streams.kafka_io import base_config
from streams.services import proc


def _watermarks(c: Consumer, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=5) for p in partitions}


def _brokers(settings: Settings, running: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for name, pid in sorted(running.items()):
        if not name.startswith("kafka-"):
            continue
        node = int(name.split("-", 1)[1])
        props = settings.home / "kafka" / f"node-{node}" / "server.properties"
        port = None
        for line in props.read_text().splitlines() if props.exists() else []:
            if line.startswith("advertised.listeners="):
                port = int(line.rsplit(":", 1)[1])
        out.append({"node_id": node, "port": port, "pid": pid})
    return out


def _registry(settings: Settings, running: dict[str, int]) -> dict[str, Any] | None:
    """The registry in use: the embedded one triage runs (pid, port, answering) or the external URL."""
    from streams.config import redact_url
    from streams.services import schema_registry as service
    if settings.schema_registry_url:
        return {"kind": "external", "url": redact_url(settings.schema_registry_url)}
    pid = running.get(service.NAME)
    if pid is None:
        return {"kind": "embedded", "running": False} if settings.manage_schema_registry else None
    port = service.registry_port(settings.home) or settings.schema_registry_port
    return {"kind": "embedded", "running": True, "pid": pid, "port": port, "url": service.url(port),
            "ready": service.registry_ready(port, timeout=1.0)}


def _scrape(port: int) -> dict[str, float]:
    """The few counters status shows, summed per metric name (and per reason for dead letters)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    wanted = ("triage_records_in_total", "triage_in_flight", "triage_dead_letters_total")
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name in wanted:
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
            elif sample.name == "triage_model_calls_total" and sample.labels.get("outcome") != "ok":
                out["model_errors"] = out.get("model_errors", 0.0) + sample.value
    return out


def _worker_metrics(running: dict[str, int], interval: float) -> dict[str, dict[str, float]]:
    """Per step: in flight, records/s, dead letters/s and model errors/s, from each worker's /metrics."""
    import time

    from streams.supervisor import metrics_port
    ports: dict[str, list[int]] = {}
    for name in running:
        if name.startswith("worker-"):
            step, _, index = name.removeprefix("worker-").rpartition("-")
            if step in pipelines.active().step_names:
                ports.setdefault(step, []).append(metrics_port(step, int(index)))

    def sample() -> dict[str, dict[str, float]]:
        snap: dict[str, dict[str, float]] = {}
        for step, ps in ports.items():
            acc: dict[str, float] = {}
            for port in ps:
                try:
                    for k, v in _scrape(port).items():
                        acc[k] = acc.get(k, 0.0) + v
                except OSError:
                    continue
            snap[step] = acc
        return snap

    first = sample()
    time.sleep(interval)
    second = sample()
    out = {}
    for step, now in second.items():
        before = first.get(step, {})
        rate = lambda k: round((now.get(k, 0.0) - before.get(k, 0.0)) / interval, 2)  # noqa: E731
        out[step] = {"in_flight": now.get("triage_in_flight", 0.0), "records_per_s": rate("triage_records_in_total"),
                     "dead_letters_per_s": rate("triage_dead_letters_total"), "model_errors_per_s": rate("model_errors"),
                     "records_total": now.get("triage_records_in_total", 0.0)}
    return out


def collect(settings: Settings, interval: float = 1.0) -> dict[str, Any]:
    running = proc.list_running(settings.home)
    doc: dict[str, Any] = {"home": str(settings.home), "bootstrap": settings.bootstrap,
                           "processes": running, "brokers": _brokers(settings, running),
                           "schema_registry": _registry(settings, running), "steps": {},
                           "terminal": {}, "reachable": True}
    try:
        probe = Consumer(base_config(settings.bootstrap, **{"group.id": "triage.status"}))
        md = probe.list_topics(timeout=5)
    except KafkaException as exc:
        doc["reachable"] = False
        doc["error"] = str(exc)
        return doc
    try:
        pipeline = pipelines.active()
        for spec in pipeline.steps:
            step, inputs = spec.name, spec.consumes
            lag = 0
            c = Consumer(base_config(settings.bootstrap, **{"group.id": pipeline.group_id(step)}))
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
        for step, m in _worker_metrics(running, interval).items():
            doc["steps"][step].update(m)
        for t in pipeline.terminal_topics():
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

    async def read() -> dict[str, Any]:
        r = connect(settings.redis_url)
        try:
            return await read_states(r, list(pipelines.active().extras.get("classifiers", ())))
        finally:
            await r.aclose()
    try:
        return asyncio.run(read())
    except Exception as exc:  # noqa: BLE001 - status shows what it can; Redis down is a status, not a crash
        return {"error": f"redis unavailable: {exc}"}


def _cell(value: Any) -> Text:
    # Every value shown is data (topic and process names, Redis fields, a broker's error): never markup.
    return Text(visible("-" if value is None else value))


def render(doc: dict[str, Any], console: Console) -> None:
    if not doc["reachable"]:
        console.print(Text.assemble((visible(f"Kafka at {doc['bootstrap']} is not reachable"), "red"),
                                    f": {visible(doc.get('error'))}"))
    t = Table(title="steps (lag counts transaction markers too)")
    for col in ("step", "workers", "lag", "in flight", "records/s", "DLQ/s", "model errors/s"):
        t.add_column(col)
    for step, s in doc["steps"].items():
        t.add_row(*map(_cell, (step, s["workers"], s["lag"], int(s.get("in_flight", 0)), s.get("records_per_s", "-"),
                               s.get("dead_letters_per_s", "-"), s.get("model_errors_per_s", "-"))))
    console.print(t)
    t2 = Table(title="terminal topics (records, incl. transaction markers)")
    t2.add_column("topic")
    t2.add_column("depth")
    for topic, depth in doc["terminal"].items():
        t2.add_row(_cell(topic), _cell(depth))
    console.print(t2)
    drift = doc.get("drift") or {}
    if "error" in drift:
        console.print(Text(visible(f"drift monitors: {drift['error']}")))
    else:
        line = Text("drift monitors: ")
        for i, (c, d) in enumerate(drift.items()):
            line.append((", " if i else "") + visible(c) + " ")
            line.append("TRIPPED" if d.get("tripped") == "1" else "ok", "red" if d.get("tripped") == "1" else "")
            line.append(visible(f" (score {d.get('score', '-')}, {d.get('seen', 0)} seen)"))
        console.print(line)
    reg = doc.get("schema_registry")
    if reg:
        state = ("external" if reg["kind"] == "external" else
                 f"pid {reg['pid']}, {'ready' if reg.get('ready') else 'not answering'}" if reg.get("running")
                 else "not running")
        console.print(Text(visible(f"schema registry: {reg.get('url', 'embedded')} ({state})")))
    console.print(Text(visible("processes: " + (", ".join(f"{n}={p}" for n, p in sorted(doc["processes"].items()))
                                                or "none"))))
