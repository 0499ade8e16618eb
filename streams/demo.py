"""`triage demo`: the whole pipeline on the sample tickets, from a cold start to a summary."""
from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams import pipelines, stack
from streams.client import InputProducer, TicketProducer, decode_value, visible, wait_for_outcomes
from streams.config import Settings
from streams.services import ServiceError

# What running every model on every ticket would cost: 4 classifiers, writer, stronger writer, judge twice.
ALL_MODELS_PER_TICKET = 8


def summarise(outcomes: dict[str, list[Any]], expected: dict[str, dict[str, str]]) -> dict[str, Any]:
    per_topic: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    judged: Counter[str] = Counter()
    calls = tokens = cases = 0
    replies = []
    p = pipelines.active()
    classifiers, responses, escalations = p.extras["classifiers"], p.extras["responses"], p.extras["escalations"]
    for cid, outs in outcomes.items():
        o = outs[0]
        per_topic[o.topic] += 1
        if o.topic not in (responses, escalations):
            continue
        case = decode_value(o.topic, o.raw)
        cases += 1
        calls += case["model_calls"]
        tokens += case["tokens"]
        truth = expected.get(cid) or {}
        for c in classifiers:
            if c in truth and c in case["labels"]:
                judged[c] += 1
                correct[c] += case["labels"][c]["label"] == truth[c]
        if o.topic == responses and len(replies) < 3:
            replies.append({"tenant": case["tenant_id"], "subject": case["ticket"]["subject"], "reply": case["reply"],
                            "citations": case["citations"]})
    return {
        "tickets": len(outcomes),
        "duplicates": sum(1 for outs in outcomes.values() if len(outs) > 1),
        "per_topic": dict(per_topic),
        "accuracy": {c: round(correct[c] / judged[c], 3) for c in classifiers if judged[c]},
        "model_calls_per_ticket": round(calls / cases, 2) if cases else 0.0,
        "tokens_per_ticket": round(tokens / cases, 1) if cases else 0.0,
        "all_models_calls_per_ticket": ALL_MODELS_PER_TICKET,
        "sample_replies": replies,
    }


def run_demo(settings: Settings, *, count: int | None, timeout: float, keep: bool, console: Console) -> int:
    started = time.monotonic()
    try:
        stack.start_services(settings, say=console.print)
        loaded = stack.load_knowledge_bases(settings)
        console.print("kb         " + ", ".join(f"{t}: {n} docs" for t, n in loaded.items()))
        stack.start_workers(settings, say=console.print)
        pipeline = pipelines.active()
        tickets = pipeline.extras.get("input") == "ticket"
        sample = (pipeline.extras.get("deploy") or {}).get("sample") or pipeline.extras.get("sample")
        if not sample:
            raise ServiceError(f"the pipeline {pipeline.name!r} declares no sample input for the demo; use "
                               f"`triage up`, `triage produce FILE` and `triage tail` with --pipeline")
        path = settings.data_dir / sample
        docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if count is not None:
            docs = docs[:count]
        producer = TicketProducer(settings.bootstrap) if tickets else InputProducer(settings.bootstrap)
        expected: dict[str, dict[str, str]] = {}
        try:
            for d in docs:
                sent = producer.send(d)
                expected[sent.correlation_id] = d.get("expected") or {}
            producer.flush()
        finally:
            producer.close()  # an open client would print connection errors after the summary, when Kafka stops
        console.print(f"sent       {len(docs)} {'tickets' if tickets else 'inputs'} from {escape(str(path))}")
        with Progress(TextColumn("waiting for outcomes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bar:
            task = bar.add_task("outcomes", total=len(expected))
            outcomes = wait_for_outcomes(settings.bootstrap, set(expected), timeout,
                                         progress=lambda n: bar.update(task, completed=n))
        summary = summarise(outcomes, expected) if tickets else _counts(outcomes)
        # A pipeline whose offline models have a held-out split declares it (file, and how to score it): the
        # offline models only, what the pipeline used.
        held = pipeline.extras.get("held_out") or {}
        held_out = settings.data_dir / held["file"] if held else None
        if tickets and settings.offline and held_out is not None and held_out.exists():
            summary["eval_accuracy"] = held["accuracy"](held_out, tuple(summary.get("accuracy", {})))
        summary["missing"] = len(expected) - len(outcomes)
        summary["seconds"] = round(time.monotonic() - started, 1)
        _print(summary, console)
        (settings.home / "demo-summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0 if summary["missing"] == 0 and summary["duplicates"] == 0 else 1
    except ServiceError as exc:
        console.print(f"[red]error:[/red] {escape(visible(str(exc)))}")
        return 1
    finally:
        if not keep:
            stack.down(settings, say=console.print)


def _counts(outcomes: dict[str, list[Any]]) -> dict[str, Any]:
    """The summary of a pipeline without tickets: outcomes per terminal topic, and doubles."""
    return {"tickets": len(outcomes), "duplicates": sum(1 for outs in outcomes.values() if len(outs) > 1),
            "per_topic": dict(Counter(outs[0].topic for outs in outcomes.values()))}


def _print(s: dict[str, Any], console: Console) -> None:
    t = Table(title=f"{s['tickets']} tickets, {s['missing']} missing, {s['duplicates']} duplicated, {s['seconds']}s")
    t.add_column("terminal topic")
    t.add_column("tickets", justify="right")
    for topic, n in sorted(s["per_topic"].items()):
        t.add_row(topic, str(n))
    console.print(t)
    if "accuracy" not in s:
        return
    # Side by side, so that nobody takes the first figure for the second: the sample comes from templates.
    held_out = s.get("eval_accuracy") or {}
    t = Table(title="classifier accuracy")
    t.add_column("classifier")
    t.add_column("sample (this run)", justify="right")
    t.add_column("eval split (held out)", justify="right")
    for c, a in s["accuracy"].items():
        t.add_row(c, f"{a:.1%}", f"{held_out[c]:.1%}" if c in held_out else "-")
    console.print(t)
    console.print(f"model calls per ticket: {s['model_calls_per_ticket']} "
                  f"(every model on every ticket: {s['all_models_calls_per_ticket']}); "
                  f"tokens per ticket: {s['tokens_per_ticket']}")
    for r in s["sample_replies"]:
        console.print(f"[bold]{escape(visible(r['tenant']))}[/bold] · {escape(visible(r['subject']))}\n  "
                      f"{escape(visible(r['reply']))}")
