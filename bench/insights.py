"""The pipeline's throughput and CPU with the insights worker running and without, side by side in one run.

    python -m bench.insights [--tickets 600] [--repeats 3] [--latency 0ms]

One broker, Redis and the triage workers (the fake model server answering at ``--latency``); bursts of
``--tickets`` alternate without and with the insights worker reading every terminal topic (off, on, off,
on...), so the machine's drift falls on both. Per burst: tickets per second, the workers' CPU per ticket, and
the insights worker's own CPU per ticket (measured until its tables have counted the burst). Prints them and
saves ``bench/results/insights.json``.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.kafka_lines import PROBE_MODEL, KafkaBench
from bench.measure import cpu_s
from bench.pipeline import REPO_ROOT
from bench.run import latency_mode
from streams.insights import client
from streams.insights.settings import load as load_insights
from tests.fake_openai import FakeModels
from tests.harness import free_port


def _insights(kb: KafkaBench, port: str) -> subprocess.Popen[bytes]:
    log = (kb.home / "logs" / "bench-insights.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "insights-worker"],
                            env={**kb.env(), "TRIAGE_INSIGHTS_PORT": port}, cwd=REPO_ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.insights", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tickets", type=int, default=600, help="tickets per burst (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="off/on pairs (default: %(default)s)")
    ap.add_argument("--latency", default="0ms", help="the fake models' latency (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "insights.json")
    a = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="triage-bench-insights-"))
    fake = FakeModels.start(routes={PROBE_MODEL: "offline-intent"})
    kb = KafkaBench(home / "stack", fake)
    port = str(free_port())
    conf = load_insights({"TRIAGE_INSIGHTS_PORT": port})
    runs: list[dict[str, Any]] = []
    worker: subprocess.Popen[bytes] | None = None
    try:
        print("starting the broker, Redis and the triage workers", flush=True)
        kb.start()
        kb.start_workers("triage")
        fake.set("*", latency_mode(a.latency))
        kb.run("warm", 100, timeout=300)
        for i in range(a.repeats):
            for on in (False, True):
                if on:
                    worker = _insights(kb, port)
                    if client.wait_until(conf, lambda d: True, 180) is None:
                        raise SystemExit("the insights worker did not start; see its log under " + str(kb.home))
                    counted0 = client.total(client.snapshot(conf))
                    cpu0 = cpu_s(worker.pid)
                b = kb.run(f"ins{i}{int(on)}t{int(time.time()) % 100000}", a.tickets, timeout=600)
                seconds = max(s for s, _ in b.seen.values()) - min(b.sent.values())
                row: dict[str, Any] = {"insights": on, "repeat": i + 1, "tickets": len(b.seen),
                                       "tickets_per_s": round(len(b.seen) / seconds, 1),
                                       "workers_cpu_ms_per_ticket": round(1000 * b.cpu["workers"] / len(b.seen), 2)}
                if on and worker is not None:
                    caught = client.wait_until(conf, lambda d: client.total(d) >= counted0 + len(b.seen), 300)
                    row["insights_cpu_ms_per_ticket"] = round(1000 * (cpu_s(worker.pid) - cpu0) / len(b.seen), 2)
                    row["insights_caught_up"] = caught is not None
                    worker.send_signal(signal.SIGTERM)
                    worker.wait(60)
                    worker = None
                runs.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        kb.stop()
        fake.stop()

    def median(key: str, on: bool) -> float:
        return statistics.median(r[key] for r in runs if r["insights"] is on)

    summary = {"tickets_per_s": {"off": median("tickets_per_s", False), "on": median("tickets_per_s", True)},
               "workers_cpu_ms_per_ticket": {"off": median("workers_cpu_ms_per_ticket", False),
                                             "on": median("workers_cpu_ms_per_ticket", True)},
               "insights_cpu_ms_per_ticket": median("insights_cpu_ms_per_ticket", True)}
    summary["throughput_ratio_on_off"] = round(summary["tickets_per_s"]["on"] / summary["tickets_per_s"]["off"], 3)
    doc = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "latency": a.latency,
           "tickets_per_burst": a.tickets, "runs": runs, "median": summary}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"saved {a.out}")


if __name__ == "__main__":
    main()
