"""Benchmarks of triage against a naive consumer, a sequential script, LangGraph and Kafka's own limit.

    .venv/bin/python -m bench.run [--tickets N] [--latencies 0ms,200ms,lognormal] [--lines ...]

Starts a real Kafka broker and Redis (tests.harness.Stack, in a temporary home) and the fake
OpenAI-compatible model server (tests.fake_openai) whose every call sleeps for the chosen latency, runs
every (line, latency), prints a table, the ratios and the targets, and writes bench/results/latest.json,
bench/results/<date>.json and bench/results/latest.png. It asserts nothing: it prints figures. See
bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report
from bench.kafka_lines import PROBE_MODEL, KafkaBench, Probe
from bench.measure import cpu_s, percentile, thread_cpu_s
from bench.pipeline import REPO_ROOT, sample_tickets
from streams import config
from tests.fake_openai import FakeModels, parse_mode

LOGNORMAL = "latency:lognormal:150:0.8:5000"
WARMUP = 100
SLOW_LINES = ("naive", "sequential")
"""Run once whatever --repeats says: at 200 ms each takes minutes."""
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")


def latency_mode(label: str) -> str:
    """``0ms`` -> ok, ``200ms`` -> latency:200, ``lognormal`` -> median 150 ms, sigma 0.8, capped at 5 s;
    ``lognormal:<median_ms>:<sigma>[:<cap_ms>]`` for another one."""
    if label == "lognormal":
        return LOGNORMAL
    if label.startswith("lognormal:"):
        mode = f"latency:{label}"
    elif label.endswith("ms"):
        ms = float(label[:-2])
        mode = "ok" if ms == 0 else f"latency:{label[:-2]}"
    else:
        raise argparse.ArgumentTypeError(f"latency {label!r}: use <N>ms, lognormal or lognormal:<median>:<sigma>[:<cap>]")
    try:
        parse_mode(mode)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return mode


def mean_model_ms(label: str) -> float:
    """The mean latency of one model call for ``label`` (for the critical-path figure)."""
    mode = parse_mode(latency_mode(label)) if latency_mode(label) != "ok" else None
    if mode is None:
        return 0.0
    if mode.label == "lognormal":
        import math
        return mode.number * math.exp(mode.sigma ** 2 / 2)  # the cap barely moves it
    return mode.number


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.home = Path(tempfile.mkdtemp(prefix="triage-bench-"))
        self.fake = FakeModels.start(routes={PROBE_MODEL: "offline-intent"})
        self.kafka = KafkaBench(self.home / "stack", self.fake, partitions=args.partitions)
        self.runs: list[dict[str, Any]] = []
        self.half_max: dict[str, Any] | None = None
        self.broker_warmup: list[dict[str, Any]] = []
        self.floor: dict[str, Any] | None = None
        self.seq = 0

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def tag(self, line: str, latency: str) -> str:
        self.seq += 1
        return f"{line[:3]}{latency.replace(':', '').replace('.', '')[:12]}r{self.seq}t{int(time.time()) % 100000}"

    def set_latency(self, label: str) -> None:
        self.fake.reset()
        self.fake.set("*", latency_mode(label))
        self._reset_drift()

    def _reset_drift(self) -> None:
        """Each run starts with fresh drift baselines (they live in Redis, shared by every line)."""
        import redis
        r = redis.Redis.from_url(self.kafka.stack.settings.redis_url)
        try:
            keys = list(r.scan_iter("triage:drift:*", count=1000))
            if keys:
                r.delete(*keys)
        finally:
            r.close()

    def count(self, line: str, latency: str) -> int:
        a = self.args
        if line in ("naive", "sequential"):
            return min(a.tickets, a.slow_tickets)
        return a.tickets

    # ---- in-process lines ----------------------------------------------------------------------------------
    def inprocess(self, line: str, latency: str) -> dict[str, Any]:
        n = self.count(line, latency)
        self.set_latency(latency)
        out = self.home / f"{line}-{latency}.json"
        cmd = [sys.executable, "-m", "bench.inprocess", "--line", line, "--tickets", str(n), "--out", str(out),
               "--tag", self.tag(line, latency), "--concurrency", str(self.args.concurrency),
               "--max-seconds", str(self.args.max_seconds if line == "sequential" else 1e9),
               "--fake-url", self.fake.url,
               "--pids", ",".join(str(p) for p in (self.fake._proc.pid, self.kafka.redis_pid()) if p)]
        with (self.home / f"{line}.log").open("ab") as log:
            subprocess.run(cmd, env=self.kafka.env(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                           check=True, timeout=max(600, self.args.max_seconds * 3))
        d = json.loads(out.read_text())
        res = d["results"]
        pids = {str(self.fake._proc.pid): "models", str(self.kafka.redis_pid()): "redis"}
        cpu = {"process": d["cpu_self_s"], **{pids.get(k, k): v for k, v in d["cpu_others_s"].items()}}
        service = [(e - s) * 1000 for s, e, _ in res]
        return report.row(line, latency, n, [d["offered"]] * len(res), [e for _, e, _ in res], [o for *_, o in res],
                          d["offered"], cpu, list(cpu), d["peak_rss_mb"], d["model_calls"], len(res) == n,
                          service_p50_ms=report._r(percentile(service, 50)),
                          service_p99_ms=report._r(percentile(service, 99)),
                          escalation_reasons=d.get("escalation_reasons", {}))

    # ---- Kafka lines -------------------------------------------------------------------------------------
    def kafka_run(self, line: str, latency: str, n: int, *, rate: float | None = None) -> tuple[dict[str, Any], Any]:
        timeout = self.args.run_timeout
        b = self.kafka.run(self.tag(line, latency), n, rate=rate, timeout=timeout)
        if not b.complete:
            self.say(f"  {line} {latency}: {len(b.seen)}/{len(b.sent)} done after {timeout:.0f} s; waiting for the rest")
            self.kafka.drain(b.sent)
        cids = [c for c in b.sent if c in b.seen]
        t0 = min(b.sent.values())
        counted = ["workers", "broker", "redis", "models"] if line != "limit" else ["workers", "broker"]
        r = report.row(line, latency, n, [b.sent[c] for c in cids], [b.seen[c][0] for c in cids],
                       [_outcome(b.seen[c][1]) for c in cids], t0, b.cpu, counted, b.peak_rss_mb, b.model_calls,
                       b.complete, duplicates=b.duplicates, **b.extra)
        return r, b

    def warm(self, line: str) -> None:
        self.set_latency("0ms")
        templates = [len(sample_tickets()) - 1 - i for i in range(WARMUP)]
        b = self.kafka.run(self.tag(line, "warm"), WARMUP, templates=templates, timeout=180)
        self.say(f"  warm-up: {len(b.seen)}/{WARMUP} tickets through")

    def warm_broker(self) -> None:
        """Bursts through the triage pipeline at 0 ms until the broker's JIT compilers have (nearly) finished.

        A fresh JVM spends seconds of CPU compiling the code paths that transactions and fetches take; without
        this, the first Kafka line measured pays for the broker's warm-up and the last one does not."""
        pid = self.kafka.broker_pid()
        if not pid or self.args.broker_warmup_rounds <= 0:
            return
        self.say(f"broker warm-up: bursts of {self.args.tickets} tickets at 0 ms until its JIT compilers go quiet")
        self.kafka.start_workers("triage")
        try:
            self.set_latency("0ms")
            for i in range(self.args.broker_warmup_rounds):
                cpu0, jit0 = cpu_s(pid), thread_cpu_s(pid, JIT_THREADS)
                b = self.kafka.run(self.tag("warm", f"broker{i}"), self.args.tickets, timeout=self.args.run_timeout)
                cpu, jit = cpu_s(pid) - cpu0, thread_cpu_s(pid, JIT_THREADS) - jit0
                share = jit / cpu if cpu > 0 else 0.0
                self.broker_warmup.append({"round": i + 1, "tickets": len(b.seen), "broker_cpu_s": round(cpu, 2),
                                           "jit_cpu_s": round(jit, 2), "jit_share": round(share, 3)})
                self.say(f"  round {i + 1}: broker CPU {cpu:.1f} s, of which JIT compilers {share:.0%}")
                if share < 0.1:
                    break
        finally:
            self.kafka.stop_workers()

    def kafka_line(self, line: str, latencies: list[str]) -> None:
        trace = None
        if line == "limit":
            trace = self.capture()
        self.say(f"{line}: starting 10 worker processes")
        self.kafka.start_workers(line, trace)
        try:
            self.warm(line)
            for latency in latencies:
                n = self.count(line, latency)
                self.say(f"{line} {latency}: {n} tickets at once")
                self.set_latency(latency)
                self.record(lambda: self.repeated(lambda: self.kafka_run(line, latency, n)[0], line), line, latency)
                if line == "triage" and latency == "200ms" and self.args.steady_seconds > 0:
                    self.steady()
        finally:
            self.kafka.stop_workers()

    def capture(self) -> Path:
        """The records every real step emits for the templates the limit line uses (replayed by it)."""
        trace = self.home / "limit-trace.pkl"
        n = max(self.count("limit", lat) for lat in self.args.latencies)
        self.say(f"limit: capturing what each step emits for {n} sample tickets (in process, models at 0 ms)")
        self.set_latency("0ms")
        out = self.home / "capture.json"
        with (self.home / "capture.log").open("ab") as log:
            subprocess.run([sys.executable, "-m", "bench.inprocess", "--line", "capture", "--tickets", str(n),
                            "--extra", str(WARMUP), "--trace", str(trace), "--tag", self.tag("cap", "0ms"),
                            "--concurrency", "64", "--out", str(out)],
                           env=self.kafka.env(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=True,
                           timeout=900)
        self.say(f"  captured: {json.loads(out.read_text())}")
        return trace

    def model_call_floor(self) -> None:
        """What the model calls alone cost in CPU, client and server, at 0 ms: a floor under any orchestrator's CPU
        per ticket with these steps, and the throughput this machine's cores cap it at."""
        n = self.args.floor_calls
        self.say(f"model calls alone: {n} classifier calls at 0 ms, {self.args.concurrency} in flight")
        self.set_latency("0ms")
        out = self.home / "calls.json"
        fake_pid = self.fake._proc.pid
        with (self.home / "calls.log").open("ab") as log:
            subprocess.run([sys.executable, "-m", "bench.inprocess", "--line", "calls", "--tickets", str(n),
                            "--concurrency", str(self.args.concurrency), "--fake-url", self.fake.url,
                            "--pids", str(fake_pid), "--out", str(out)],
                           env=self.kafka.env(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=True,
                           timeout=600)
        d = json.loads(out.read_text())
        self.floor = report.model_call_floor(d["calls"], d["cpu_self_s"], d["cpu_others_s"][str(fake_pid)],
                                             d["elapsed_s"])
        f = self.floor
        self.say(f"  {f['calls']} calls: {f['client_cpu_ms_per_call']} ms of CPU in the caller and "
                 f"{f['server_cpu_ms_per_call']} ms in the model server per call")

    def steady(self) -> None:
        t = report._get(self.runs, "triage", "200ms")
        if t is None or not t.get("tickets_per_s"):
            return
        rate = t["tickets_per_s"] / 2
        n = max(10, int(rate * self.args.steady_seconds))
        self.say(f"triage 200ms: steady {rate:.1f} tickets/s (half of {t['tickets_per_s']:.1f}) for "
                 f"{self.args.steady_seconds:.0f} s ({n} tickets)")
        self.set_latency("200ms")
        if self.args.steady_warmup_seconds > 0:
            # A steady state is measured after its ramp: the first seconds at a new rate pay for connection
            # pools filling and for the broker compiling the code paths of a trickle (not those of a burst).
            w = max(10, int(rate * self.args.steady_warmup_seconds))
            self.say(f"  lead-in, not measured: {w} tickets at the same rate")
            self.kafka.run(self.tag("triage", "steady-lead-in"), w, rate=rate, timeout=self.args.run_timeout)
        probe = Probe(self.fake.base_url)
        probe.start()
        try:
            r, b = self.kafka_run("triage", "200ms", n, rate=rate)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            traceback.print_exc()
            self.half_max = {"error": f"{type(exc).__name__}: {exc}"}
            return
        finally:
            served = probe.stop()
        critical = report.CRITICAL_PATH_CALLS * mean_model_ms("200ms")
        per_ticket = report.per_ticket_critical_path(
            {c: (b.seen[c][0] - b.sent[c]) * 1000 for c in b.seen}, self.kafka.observer.model_calls,
            mean_model_ms("200ms"))
        sent = sorted(b.sent.values())
        self.half_max = {
            "line": "triage", "latency": "200ms", "rate_per_s": round(rate, 2), "seconds": self.args.steady_seconds,
            "tickets": r["tickets"], "achieved_produce_per_s": round((len(sent) - 1) / (sent[-1] - sent[0]), 2)
            if len(sent) > 1 else None, "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"], "p99_ms": r["p99_ms"],
            "max_ms": report._r(max(((b.seen[c][0] - b.sent[c]) * 1000 for c in b.seen), default=float("nan"))),
            "cpu_s_per_ticket": r["cpu_s_per_ticket"], "complete": r["complete"], "outcomes": r["outcomes"],
            "critical_path_model_ms": critical, "target_ms": 2 * critical, "per_ticket": per_ticket,
            "model_as_served_ms": {"probes": len(served), "p50": report._r(percentile(served, 50)),
                                   "p90": report._r(percentile(served, 90)),
                                   "mean": report._r(sum(served) / len(served)) if served else None}}
        self.say(f"  p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms (target <= {2 * critical:.0f} ms); each ticket "
                 f"against its own critical path: p99 of latency / (2 x path) = {per_ticket.get('p99_ratio')}")

    # ---- driver ----------------------------------------------------------------------------------------------
    def repeated(self, fn: Any, line: str) -> dict[str, Any]:
        """``fn`` run ``--repeats`` times (once for the slow naive and sequential lines), as one median entry."""
        reps = 1 if line in SLOW_LINES else self.args.repeats
        rows = []
        for i in range(reps):
            self._reset_drift()  # each repeat starts from the same state, as each run does
            if reps == 1:
                return fn()
            try:
                r = fn()
            except Exception as exc:  # noqa: BLE001 - one failed repeat must not void the others
                traceback.print_exc()
                r = {"tickets": 0, "complete": False, "error": f"{type(exc).__name__}: {exc}"}
                self.say(f"    repeat {i + 1}/{reps}: failed: {r['error']}")
            else:
                self.say(f"    repeat {i + 1}/{reps}: {r['tickets_per_s']} tickets/s, p99 {r['p99_ms']} ms, "
                         f"CPU {r['cpu_s_per_ticket']} s/ticket")
            rows.append(r)
        if not any(r.get("tickets") for r in rows):
            raise RuntimeError(f"every repeat failed: {rows[-1]['error']}")
        return report.median_of(rows)

    def record(self, fn: Any, line: str, latency: str) -> None:
        try:
            r = fn()
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
            traceback.print_exc()
            r = {"line": line, "latency": latency, "tickets": 0, "error": f"{type(exc).__name__}: {exc}"}
        else:
            self.say(f"  {r['tickets']} tickets, {r['tickets_per_s']} tickets/s, p50 {r['p50_ms']} ms, "
                     f"p99 {r['p99_ms']} ms, CPU {r['cpu_s_per_ticket']} s/ticket, RSS {r['peak_rss_mb']} MB, "
                     f"outcomes {r['outcomes']}")
        self.runs.append(r)

    def record_floor(self) -> None:
        try:
            self.model_call_floor()
        except Exception as exc:  # noqa: BLE001 - one failed measurement must not lose the others
            traceback.print_exc()
            self.floor = {"error": f"{type(exc).__name__}: {exc}"}

    def run(self) -> dict[str, Any]:
        a = self.args
        started = time.time()
        load0 = list(__import__("os").getloadavg())
        self.say(f"home {self.home}; fake models on {self.fake.base_url}")
        self.say("starting Kafka and Redis")
        self.kafka.start()
        if any(line in a.lines for line in ("triage", "naive", "limit")):
            self.warm_broker()
        for line in ("sequential", "langgraph"):
            if line in a.lines:
                for latency in a.latencies:
                    n = self.count(line, latency)
                    self.say(f"{line} {latency}: {n} tickets" + (f" (at most {a.max_seconds:.0f} s)" if line == "sequential" else
                                                               f" at once, {a.concurrency} in flight"))
                    self.record(lambda: self.repeated(lambda: self.inprocess(line, latency), line), line, latency)
        if a.floor_calls > 0:
            self.record_floor()
        for line in ("triage", "naive", "limit"):
            if line in a.lines:
                self.kafka_line(line, a.latencies)
        order = {l: i for i, l in enumerate(report.LINES)}
        lat_order = {l: i for i, l in enumerate(a.latencies)}
        self.runs.sort(key=lambda r: (order[r["line"]], lat_order.get(r["latency"], 99)))
        floor = report.with_tickets(self.floor, self.runs)
        doc = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": {**report.machine(self.kafka.home), "load_avg_at_start": load0,
                        "load_avg_at_end": list(__import__("os").getloadavg())},
            "config": {"lines": a.lines, "latencies": {l: latency_mode(l) for l in a.latencies},
                       "partitions": a.partitions, "worker_max_in_flight": 256, "inprocess_concurrency": a.concurrency,
                       "sequential_max_seconds": a.max_seconds, "tickets": a.tickets, "slow_tickets": a.slow_tickets,
                       "repeats": {"triage, langgraph, limit": a.repeats, "naive, sequential": 1},
                       "steady_seconds": a.steady_seconds, "steady_lead_in_seconds": a.steady_warmup_seconds,
                       "commit_interval_s": config.load(self.kafka.env()).commit_interval_s, "broker_warmup": self.broker_warmup,
                       "wall_s": round(time.time() - started, 1)},
            "runs": self.runs,
            "half_max": self.half_max,
            "model_call_floor": floor,
            "ratios": report.ratios(self.runs),
            "targets": report.targets(self.runs, self.half_max if self.half_max and "p99_ms" in self.half_max else None,
                                      floor),
        }
        return doc

    def close(self) -> None:
        """Stop everything this run started (each part even if another fails)."""
        for stop in (self.kafka.stop, self.fake.stop):
            try:
                stop()
            except Exception:  # noqa: BLE001
                traceback.print_exc()
        if not self.args.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)


def _outcome(topic: str) -> str:
    from bench.kafka_lines import outcome_of
    return outcome_of(topic)


def _at_least_one(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {n}")
    return n


def _csv(choices: tuple[str, ...] | None = None) -> Any:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if choices is not None:
            bad = [t for t in items if t not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(choices)}")
        else:
            for t in items:
                latency_mode(t)
        return items
    return parse


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                 epilog="Lines: triage (the pipeline, 10 worker processes over Kafka), naive (the same "
                                        "with TRIAGE_PARTITION_SERIAL=1), sequential (the steps called in one process, "
                                        "one ticket after another), langgraph (the steps as a LangGraph graph, "
                                        "--concurrency tickets at once), limit (pass-through steps over the same "
                                        "topics: Kafka's own cost). See bench/README.md.")
    ap.add_argument("--tickets", type=int, default=1000,
                    help="tickets per run of triage, langgraph and limit (default: %(default)s)")
    ap.add_argument("--slow-tickets", type=int, default=400,
                    help="tickets per run of naive and sequential (default: %(default)s)")
    ap.add_argument("--max-seconds", type=float, default=90.0,
                    help="sequential stops starting tickets after this many seconds (default: %(default)s)")
    ap.add_argument("--latencies", type=_csv(), default=["0ms", "200ms", "lognormal"],
                    help="model latencies: <N>ms, lognormal (median 150 ms, sigma 0.8, cap 5 s) or "
                         "lognormal:<median_ms>:<sigma>[:<cap_ms>] (default: 0ms,200ms,lognormal)")
    ap.add_argument("--lines", type=_csv(report.LINES), default=list(report.LINES),
                    help=f"lines to run (default: {','.join(report.LINES)})")
    ap.add_argument("--steady-seconds", type=float, default=30.0,
                    help="length of triage's steady run at half its max throughput at 200 ms; 0 skips it "
                         "(default: %(default)s)")
    ap.add_argument("--steady-warmup-seconds", type=float, default=15.0,
                    help="an unmeasured lead-in at the same rate before the steady run (default: %(default)s)")
    ap.add_argument("--broker-warmup-rounds", type=int, default=6,
                    help="at most this many 0 ms bursts of --tickets before the Kafka lines, to finish the broker's "
                         "JIT compilation (stops early once it is quiet); 0 skips it (default: %(default)s)")
    ap.add_argument("--repeats", type=_at_least_one, default=3,
                    help="runs of each burst of triage, langgraph and limit, reported as medians; naive and "
                         "sequential run once, they take minutes (default: %(default)s)")
    ap.add_argument("--concurrency", type=int, default=256, help="langgraph's tickets in flight (default: %(default)s)")
    ap.add_argument("--floor-calls", type=int, default=4000,
                    help="model calls made alone (no step, no Kafka) to measure their CPU per call; 0 skips it "
                         "(default: %(default)s)")
    ap.add_argument("--partitions", type=int, default=6, help="partitions per topic (default: %(default)s, the project's)")
    ap.add_argument("--run-timeout", type=float, default=300.0,
                    help="longest wait for one Kafka run's tickets (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results",
                    help="where the JSON and the PNG go (default: bench/results)")
    ap.add_argument("--keep-home", action="store_true", help="keep the temporary home (logs) afterwards")
    args = ap.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the broker, Redis, the workers and the model server are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    try:
        doc = bench.run()
    finally:
        bench.close()
    print()
    print(report.summary(doc))
    for p in report.save(doc, args.out):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
