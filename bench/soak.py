"""Soak: the whole pipeline at a steady rate for a long time; are memory and lag flat?

    .venv/bin/python -m bench.soak --minutes 30 --rate 10

Starts its own stack (real broker, Redis, offline models, one worker per step) in a temporary home, sends
tickets at ``--rate`` per second for ``--minutes``, samples every ``--every`` seconds each worker's resident
memory and each step's consumer lag, then waits for the last outcomes and counts them. Prints a line per
sample and saves bench/results/soak.json. It asserts nothing: the figures are the result.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil

from streams.client import read
from streams.status import collect
from processors.topology import terminal_topics
from tests.harness import Stack, sample_tickets

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="how long to send (default 30)")
    ap.add_argument("--rate", type=float, default=10.0, help="tickets per second (default 10)")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between samples (default 30)")
    args = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="triage-soak-"))
    stack = Stack.create(home).start()
    docs = sample_tickets()
    sent: set[str] = set()
    stop = threading.Event()

    def produce() -> None:
        i, t0 = 0, time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - t0) * args.rate)
            if due > i:
                batch = [docs[(i + k) % len(docs)] for k in range(due - i)]
                sent.update(stack.produce(batch, prefix=f"soak-{i}-"))
                i = due
            time.sleep(0.05)

    samples = []
    producer = threading.Thread(target=produce, daemon=True)
    started = time.monotonic()
    producer.start()
    try:
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.every)
            rss = {step: round(sum(psutil.Process(p.pid).memory_info().rss for p in procs if p.poll() is None) / 2**20, 1)
                   for step, procs in stack.workers.items()}
            status = collect(stack.settings, interval=0.1)
            lag = {step: s["lag"] for step, s in status["steps"].items()}
            sample = {"t_s": round(time.monotonic() - started), "sent": len(sent), "rss_mb": rss,
                      "rss_total_mb": round(sum(rss.values()), 1), "lag_total": sum(lag.values()), "lag": lag}
            samples.append(sample)
            print(json.dumps({k: sample[k] for k in ("t_s", "sent", "rss_total_mb", "lag_total")}), flush=True)
        stop.set()
        producer.join(30)
        pending = set(sent)
        for o in read(stack.bootstrap, terminal_topics(), timeout=600,
                      stop=lambda o: (pending.discard(o.headers.get("correlation_id")), not pending)[1]):
            pass
        first, last = samples[0], samples[-1]
        summary = {"minutes": args.minutes, "rate": args.rate, "sent": len(sent), "missing": len(pending),
                   "rss_total_mb_first": first["rss_total_mb"], "rss_total_mb_last": last["rss_total_mb"],
                   "rss_total_mb_max": max(s["rss_total_mb"] for s in samples),
                   "lag_total_max": max(s["lag_total"] for s in samples), "lag_total_last": last["lag_total"]}
        print("summary", json.dumps(summary), flush=True)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "soak.json").write_text(json.dumps({"summary": summary, "samples": samples}, indent=2))
    finally:
        stop.set()
        stack.stop()


if __name__ == "__main__":
    main()
