"""The in-process lines, each run in a fresh process so its CPU and peak RSS are its own.

    python -m bench.inprocess --line sequential|langgraph|capture --tickets N --out FILE [...]

Settings come from the environment (the same TRIAGE_* / OPENAI_* as the workers). ``sequential`` takes the
tickets one after another, the four classifiers one after another; ``langgraph`` runs them all through the
graph of :mod:`bench.graph` under a semaphore; ``capture`` runs them (classifiers in parallel) and pickles
what every step emitted, for the ``limit`` line; ``calls`` makes model calls alone (the classifiers' prompts
through the workers' gateway, no step, memo or Redis around them) to measure what one call costs in CPU. All N tickets are offered at once when the measured window
opens, so a ticket's latency counts its wait for its turn, as for a burst produced to Kafka.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import time
import urllib.request
from typing import Any

import psutil

from bench.measure import peak_rss_mb
from bench.pipeline import Pipeline, Trace, correlation_id, sample_tickets
from streams import config
from streams.context import configure_logging
from streams.models import ModelGateway
from streams.tenant_state import connect
from processors.topology import CLASSIFIERS
from streams.worker import settle_gc

WARMUP = 8


def _stats(fake_url: str | None) -> dict[str, dict[str, int]]:
    if not fake_url:
        return {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{fake_url}/stats", timeout=10) as resp:
        return json.loads(resp.read())


def _cpu(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            out[pid] = 0.0
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = config.load()
    gateway = ModelGateway(settings.model_base_url, settings.api_key.reveal())
    # The workers' client (commands coalesced per loop turn), with a pool as large as the concurrency: 32
    # connections are sized for one step per worker, and with every step of hundreds of tickets in one
    # process, memo calls waited past the pool's 5 s timeout.
    redis = connect(settings.redis_url, max_connections=max(32, args.concurrency))
    pipe = Pipeline(settings, gateway, redis)
    tickets = sample_tickets()
    try:
        if args.line == "capture":
            return await capture(pipe, tickets, args)
        if args.line == "calls":
            return await model_calls(gateway, settings, tickets, args)
        graph = None
        if args.line == "langgraph":
            from bench.graph import build_graph
            graph = build_graph(pipe)

        async def one(template: int, cid: str) -> str:
            if graph is None:
                return await pipe.run(tickets[template], cid, parallel=False)
            state = await graph.ainvoke({"record": Pipeline.first(tickets[template], cid)})
            return state.get("outcome") or "dlq"

        # Warm-up (connections, first calls), with templates the measured run does not use.
        warm = [len(tickets) - 1 - i for i in range(WARMUP)]
        await asyncio.gather(*(one(t, correlation_id(f"{args.tag}w", t, i)) for i, t in enumerate(warm)))
        settle_gc()  # the same GC settings as a triage worker, so the lines differ by architecture only

        pipe.escalation_reasons.clear()
        pids = [int(p) for p in args.pids.split(",") if p] if args.pids else []
        stats0 = _stats(args.fake_url)
        others0 = _cpu(pids)
        cpu0 = time.process_time()
        offered = time.time()
        results: list[tuple[float, float, str]] = []
        sem = asyncio.Semaphore(args.concurrency)

        async def timed(i: int) -> None:
            if time.time() - offered > args.max_seconds:
                return  # the time cap: tickets not started by then are not counted
            start = time.time()
            outcome = await one(i % len(tickets), correlation_id(args.tag, i % len(tickets), i))
            results.append((start, time.time(), outcome))

        if args.line == "sequential":
            for i in range(args.tickets):
                await timed(i)
        else:
            async def limited(i: int) -> None:
                async with sem:
                    await timed(i)
            await asyncio.gather(*(limited(i) for i in range(args.tickets)))
        cpu_self = time.process_time() - cpu0
        others1 = _cpu(pids)
        stats1 = _stats(args.fake_url)
        calls = sum(sum(c.values()) for c in stats1.values()) - sum(sum(c.values()) for c in stats0.values())
        return {"offered": offered, "results": results, "cpu_self_s": cpu_self,
                "cpu_others_s": {str(p): others1[p] - others0[p] for p in pids},
                "peak_rss_mb": peak_rss_mb(None), "model_calls": calls,
                "escalation_reasons": dict(pipe.escalation_reasons)}
    finally:
        await gateway.close()
        await redis.aclose()


async def capture(pipe: Pipeline, tickets: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Every step's emits for templates 0..N-1 and the warm-up templates, for the limit line to replay."""
    wanted = sorted(set(range(min(args.tickets, len(tickets)))) | {len(tickets) - 1 - i for i in range(args.extra)})
    traces: dict[int, Trace] = {}
    sem = asyncio.Semaphore(args.concurrency)

    async def one(t: int) -> None:
        async with sem:
            trace = Trace()
            await pipe.run(tickets[t], correlation_id(args.tag, t, 0), parallel=True, trace=trace)
            traces[t] = trace

    await asyncio.gather(*(one(t) for t in wanted))
    with open(args.trace, "wb") as fh:
        pickle.dump({t: tr.steps for t, tr in traces.items()}, fh)
    outcomes: dict[str, int] = {}
    for tr in traces.values():
        outcomes[tr.outcome] = outcomes.get(tr.outcome, 0) + 1
    return {"templates": len(traces), "outcomes": outcomes}


async def model_calls(gateway: ModelGateway, settings: config.Settings, tickets: list[dict[str, Any]],
                      args: argparse.Namespace) -> dict[str, Any]:
    """``args.tickets`` model calls, ``args.concurrency`` at once: each a classifier's prompt for a sample ticket,
    through ``complete_json`` (the call, its JSON parse and its validation, as a classifier makes it) with no
    memo. What this process and the model server spend is the CPU any orchestrator of these steps pays per call.
    """
    from processors import prompts
    from processors.classify import label_validator

    jobs = [(c, t) for t in tickets for c in CLASSIFIERS]
    validators = {c: label_validator(c) for c in CLASSIFIERS}
    policies = {c: settings.policy(f"classify-{c}") for c in CLASSIFIERS}
    sem = asyncio.Semaphore(args.concurrency)

    async def one(i: int) -> None:
        c, t = jobs[i % len(jobs)]
        messages = prompts.classify(c, t["subject"], t["body"])
        async with sem:
            await gateway.complete_json(policies[c], messages, validators[c])

    await asyncio.gather(*(one(i) for i in range(WARMUP * 8)))
    settle_gc()
    pids = [int(p) for p in args.pids.split(",") if p] if args.pids else []
    stats0, others0, cpu0, t0 = _stats(args.fake_url), _cpu(pids), time.process_time(), time.time()
    await asyncio.gather(*(one(i) for i in range(args.tickets)))
    cpu_self, elapsed, others1, stats1 = time.process_time() - cpu0, time.time() - t0, _cpu(pids), _stats(args.fake_url)
    calls = sum(sum(c.values()) for c in stats1.values()) - sum(sum(c.values()) for c in stats0.values())
    return {"calls": calls, "elapsed_s": elapsed, "cpu_self_s": cpu_self,
            "cpu_others_s": {str(p): others1[p] - others0[p] for p in pids}}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.split("\n\n")[0])
    ap.add_argument("--line", choices=["sequential", "langgraph", "capture", "calls"], required=True)
    ap.add_argument("--tickets", type=int, required=True, help="tickets (calls: model calls)")
    ap.add_argument("--max-seconds", type=float, default=1e9, help="stop starting tickets after this")
    ap.add_argument("--concurrency", type=int, default=256, help="tickets in flight (langgraph, capture)")
    ap.add_argument("--tag", default="ip", help="correlation ID prefix")
    ap.add_argument("--pids", default="", help="comma-separated pids whose CPU is measured too (models, redis)")
    ap.add_argument("--fake-url", default="", help="the fake model server's root, for its call counts")
    ap.add_argument("--trace", default="", help="capture: where to pickle the traces")
    ap.add_argument("--extra", type=int, default=0, help="capture: also the last N templates (warm-up)")
    ap.add_argument("--out", required=True, help="where to write the JSON result")
    args = ap.parse_args()
    configure_logging("WARNING")
    result = asyncio.run(main_async(args))
    with open(args.out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
