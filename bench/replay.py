"""Replay speed: `triage dlq replay` of many dead letters, a replay with nothing left to send, the listing, and
a Replay click on the queue page.

    .venv/bin/python -m bench.replay [--letters 10000] [--size 2048]

Starts a real broker and Redis (tests.harness.Stack, temporary home, no workers: the replayed records wait in
the step's input topic), writes ``--letters`` dead letters of ``generate`` as the runtime writes them, then
times the real CLI (`triage dlq list`, `triage dlq replay generate` twice) as subprocesses, one ledger read on
its own, and two Replay clicks on a queue page served in this process. Prints the figures and saves
bench/results/replay.json. It asserts nothing: the figures are the result.

Before the fix a replay read the whole ledger once per dead letter (183 letters: 308 s; the same replay with
nothing left: 373 s); the "old design" line estimates that cost from the measured time of one ledger read.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from streams.kafka_io import producer_config
from streams.ledger import read_decisions
from processors.topology import ENRICHED, dlq_topic
from tests.harness import REPO_ROOT, Stack

RESULTS = Path(__file__).resolve().parent / "results"
STEP = "generate"


def write_dead_letters(bootstrap: str, n: int, size: int, prefix: str) -> list[str]:
    """``n`` dead letters of ``generate`` (reason INVALID_OUTPUT, source tickets.enriched); their entry ids."""
    p = Producer(producer_config(bootstrap, None, {"linger.ms": 20}))
    ids: list[str] = []
    body = os.urandom(size // 2).hex().encode()[:size]

    def done(err: Any, msg: Any) -> None:
        if err is not None:
            raise RuntimeError(err)
        ids.append(f"{msg.topic()}/{msg.partition()}/{msg.offset()}")

    for i in range(n):
        cid = f"{prefix}{i:06d}"
        headers = {"correlation_id": cid, "tenant_id": "acme", "attempt": "1", "dlq.reason": "INVALID_OUTPUT",
                   "dlq.error": "the writer returned an empty reply", "dlq.step": STEP,
                   "dlq.source": f"{ENRICHED}/{i % 4}/{i}", "dlq.attempts": "3", "dlq.ts": str(int(time.time() * 1000))}
        while True:
            try:
                p.produce(dlq_topic(STEP), key=cid.encode(), value=body,
                          headers=[(k, v.encode()) for k, v in headers.items()], on_delivery=done)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    if p.flush(120):
        raise RuntimeError("dead letters not delivered")
    return ids


def timed_cli(stack: Stack, *args: str) -> tuple[float, str]:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "streams.cli", *args], env=stack.worker_env(), cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=3600)
    took = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(f"triage {' '.join(args)} failed: {out.stderr[-2000:]}")
    return took, out.stdout.strip()


async def page_clicks(stack: Stack, ids: list[str]) -> list[float]:
    """Seconds of each Replay click (the JSON API) on a page that has indexed the entries."""
    from aiohttp.test_utils import TestClient, TestServer

    from streams.ui.app import INDEX, make_app
    token = f"acme-{uuid.uuid4().hex}"
    app = make_app(stack.settings, {"acme": token})
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        await asyncio.to_thread(app[INDEX].wait_ready, 300)
        took = []
        for ident in ids:
            deadline = time.monotonic() + 120
            while app[INDEX].get("acme", ident) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ident} never indexed")
                await asyncio.sleep(0.2)
            t0 = time.monotonic()
            r = await client.post(f"/api/ticket/{ident}/replay", headers={"Authorization": f"Bearer {token}"})
            body = await r.json()
            took.append(time.monotonic() - t0)
            if r.status != 200 or body.get("replayed") != 1:
                raise RuntimeError(f"click on {ident}: {r.status} {body}")
        return took
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--letters", type=int, default=10_000, help="dead letters to replay (default 10000)")
    ap.add_argument("--size", type=int, default=2048, help="bytes per dead letter (default 2048)")
    args = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="triage-bench-replay-"))
    stack = Stack.create(home)
    figures: dict[str, Any] = {"letters": args.letters, "bytes_per_letter": args.size, "cpus": os.cpu_count(),
                               "load_1m_at_start": round(os.getloadavg()[0], 1)}
    try:
        stack.start(workers=())
        t0 = time.monotonic()
        write_dead_letters(stack.bootstrap, args.letters, args.size, f"bench-{uuid.uuid4().hex[:6]}-")
        figures["write_dead_letters_s"] = round(time.monotonic() - t0, 2)

        figures["list_before_s"], listing = timed_cli(stack, "dlq", "list", STEP, "--json")
        figures["listed"] = json.loads(listing)
        figures["replay_all_s"], figures["replay_all_out"] = timed_cli(stack, "dlq", "replay", STEP)
        figures["replay_nothing_left_s"], figures["replay_nothing_left_out"] = timed_cli(stack, "dlq", "replay", STEP)
        figures["list_after_s"], _ = timed_cli(stack, "dlq", "list", STEP, "--json")
        t0 = time.monotonic()
        ledger = read_decisions(stack.bootstrap)
        one_read = time.monotonic() - t0
        figures["one_ledger_read_s"] = round(one_read, 3)
        figures["ledger_records"] = len(ledger.replayed)
        figures["old_design_estimate_s"] = round(args.letters * one_read, 1)

        clicks = write_dead_letters(stack.bootstrap, 2, args.size, f"bench-click-{uuid.uuid4().hex[:6]}-")
        took = asyncio.run(page_clicks(stack, clicks))
        figures["page_click_first_s"], figures["page_click_second_s"] = (round(t, 3) for t in took)
    finally:
        stack.stop()
    for k in ("list_before_s", "replay_all_s", "replay_nothing_left_s", "list_after_s"):
        figures[k] = round(figures[k], 2)

    print(f"{args.letters} dead letters of {args.size} B ({figures['cpus']} cpus, load {figures['load_1m_at_start']})")
    print(f"  triage dlq list                      {figures['list_before_s']:8.2f} s")
    print(f"  triage dlq replay {STEP} (all)      {figures['replay_all_s']:8.2f} s   {figures['replay_all_out']}")
    print(f"  triage dlq replay {STEP} (none left){figures['replay_nothing_left_s']:8.2f} s   "
          f"{figures['replay_nothing_left_out']}")
    print(f"  triage dlq list (ledger full)        {figures['list_after_s']:8.2f} s")
    print(f"  one ledger read ({figures['ledger_records']} records)   {one_read:8.3f} s   "
          f"old design (one read per letter): ~{figures['old_design_estimate_s']:.0f} s")
    print(f"  page Replay click: first {figures['page_click_first_s']:.3f} s (fences, reads the ledger), "
          f"second {figures['page_click_second_s']:.3f} s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"saved {RESULTS / 'replay.json'}")


if __name__ == "__main__":
    main()
