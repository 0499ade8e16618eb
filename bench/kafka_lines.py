"""The lines over Kafka (triage, naive, limit): one real broker and Redis (tests.harness.Stack), worker
processes swapped between lines, tickets produced in bursts or at a steady rate, terminal records observed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from bench.measure import CpuMeter, peak_rss_mb, reset_peak_rss
from bench.pipeline import correlation_id, sample_tickets
from processors import prompts
from streams.client import TicketProducer
from streams.services import proc
from streams import avro
from streams.errors import TriageError
from processors.topology import ESCALATIONS, RESPONSES, STEPS, TOPIC_SCHEMA, terminal_topics
from tests.fake_openai import FakeModels
from tests.harness import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]

MODEL_ENV = {
    "TRIAGE_MODEL_CLASSIFY_INTENT": "fake-intent", "TRIAGE_MODEL_CLASSIFY_LANGUAGE": "fake-language",
    "TRIAGE_MODEL_CLASSIFY_PRIORITY": "fake-priority", "TRIAGE_MODEL_CLASSIFY_SENTIMENT": "fake-sentiment",
    "TRIAGE_MODEL_GENERATE": "fake-writer", "TRIAGE_MODEL_GENERATE_STRONG": "fake-writer-strong",
    "TRIAGE_MODEL_GATE": "fake-judge",
}


PROBE_MODEL = "fake-probe"
"""A model only the latency probe calls (routed to the offline intent classifier): not counted as work."""


class Probe(threading.Thread):
    """Calls the model server every ``period_s`` from this otherwise idle process and records how long each
    call took: the latency the server delivers under the run's load, apart from any client's own delays."""

    def __init__(self, base_url: str, period_s: float = 0.2) -> None:
        super().__init__(name="bench-probe", daemon=True)
        self._url = f"{base_url}/chat/completions"
        self._body = json.dumps({"model": PROBE_MODEL, "messages": prompts.classify(
            "intent", "Refund", "I was charged twice last month; please refund the second charge.")}).encode()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.period_s = period_s
        self.ms: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.perf_counter()
            try:
                req = urllib.request.Request(self._url, data=self._body, headers={"content-type": "application/json"})
                self._opener.open(req, timeout=30).read()
                self.ms.append((time.perf_counter() - t) * 1000)
            except OSError:
                pass
            self._halt.wait(self.period_s)

    def stop(self) -> list[float]:
        self._halt.set()
        self.join(35)
        return self.ms


def outcome_of(topic: str) -> str:
    return {RESPONSES: "responses", ESCALATIONS: "escalations"}.get(topic, "dlq")


class Observer(threading.Thread):
    """Reads every terminal topic (read_committed) from where they end now; records when each correlation
    ID's first terminal record is seen, and how many it has (more than one would break exactly-once)."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(name="bench-observer", daemon=True)
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench.observer.{uuid.uuid4()}",
                            "enable.auto.commit": False, "isolation.level": "read_committed",
                            "fetch.wait.max.ms": 10, "fetch.min.bytes": 1})
        self._c.assign(self._ends())
        self.seen: dict[str, tuple[float, str]] = {}
        self.count: dict[str, int] = {}
        self.reasons: dict[str, str] = {}
        self.model_calls: dict[str, int] = {}
        """Model calls the ticket's terminal case counts (its critical path is derived from them)."""
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def _ends(self, patience: float = 60.0) -> list[TopicPartition]:
        """Every terminal partition at its current end (retried while fresh topics elect their leaders)."""
        deadline = time.time() + patience
        while True:
            try:
                md = self._c.list_topics(timeout=10)
                return [TopicPartition(t, p, self._c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1])
                        for t in terminal_topics() for p in md.topics[t].partitions]
            except (KafkaException, KeyError):
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def run(self) -> None:
        while not self._halt.is_set():
            msgs = self._c.consume(1000, 0.05)
            now = time.time()
            with self._lock:
                for m in msgs:
                    if m.error() or m.key() is None:
                        continue
                    cid = m.key().decode("utf-8", "replace")
                    self.count[cid] = self.count.get(cid, 0) + 1
                    if cid not in self.seen:
                        self.seen[cid] = (now, m.topic())
                        if m.topic() in (RESPONSES, ESCALATIONS):
                            try:
                                self.model_calls[cid] = int(avro.decode(m.value(), TOPIC_SCHEMA[m.topic()])["model_calls"])
                            except (TriageError, KeyError, TypeError, ValueError):
                                pass
                        if m.topic() == ESCALATIONS:
                            self.reasons[cid] = next((v.decode("utf-8", "replace") for k, v in m.headers() or []
                                                      if k == "escalation.reason" and v is not None), "")
        self._c.close()

    def done(self, cids: Any) -> int:
        with self._lock:
            return sum(1 for c in cids if c in self.seen)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


@dataclass
class Burst:
    """What one measured run over Kafka saw."""

    sent: dict[str, float]
    seen: dict[str, tuple[float, str]]
    duplicates: int
    cpu: dict[str, float]
    peak_rss_mb: float
    model_calls: int
    complete: bool
    extra: dict[str, Any] = field(default_factory=dict)


class KafkaBench:
    """One Stack (broker, Redis) for every Kafka line; the model server is the given fake."""

    def __init__(self, home: Path, fake: FakeModels, partitions: int = 6) -> None:
        self.fake = fake
        self.stack = Stack.create(home, OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="bench",
                                  TRIAGE_PARTITIONS=str(partitions), **MODEL_ENV)
        self.tickets = sample_tickets()
        self.extra_procs: list[subprocess.Popen[bytes]] = []
        self.observer: Observer | None = None
        self.producer: TicketProducer | None = None
        self.kind = ""

    # ---- services and workers ---------------------------------------------------------------------------
    def start(self) -> None:
        self.stack.start(workers=[])
        self.observer = Observer(self.stack.bootstrap)
        self.observer.start()
        self.producer = TicketProducer(self.stack.bootstrap)

    def env(self) -> dict[str, str]:
        return self.stack.worker_env()

    @property
    def home(self) -> Path:
        return self.stack.home

    def broker_pid(self) -> int | None:
        return proc.read_pid(self.home, "kafka-1")

    def redis_pid(self) -> int | None:
        return proc.read_pid(self.home, "redis")

    def worker_pids(self) -> list[int]:
        procs = [p for ps in self.stack.workers.values() for p in ps] + self.extra_procs
        return [p.pid for p in procs if p.poll() is None]

    def start_workers(self, kind: str, trace: Path | None = None) -> None:
        """``triage`` (defaults), ``naive`` (TRIAGE_PARTITION_SERIAL=1) or ``limit`` (pass-through steps)."""
        self.stop_workers()
        self.kind = kind
        self.stack.env.pop("TRIAGE_PARTITION_SERIAL", None)
        if kind == "naive":
            self.stack.env["TRIAGE_PARTITION_SERIAL"] = "1"
        if kind in ("triage", "naive"):
            for step in STEPS:
                self.stack.start_worker(step)
            return
        assert kind == "limit" and trace is not None
        for step in STEPS:
            log = (self.home / "logs" / f"bench-limit-{step}.log").open("ab")
            self.extra_procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.passthrough", step, "--trace", str(trace), "--instance", f"limit-{step}"],
                env=self.env(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def stop_workers(self) -> None:
        procs = [p for ps in self.stack.workers.values() for p in ps] + self.extra_procs
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        self.stack.workers.clear()
        self.extra_procs.clear()
        self.kind = ""

    def stop(self) -> None:
        try:
            if self.observer is not None:
                self.observer.stop()
            self.stop_workers()
        finally:
            self.stack.stop()

    # ---- traffic -----------------------------------------------------------------------------------------
    def _calls(self) -> int:
        return sum(sum(c.values()) for model, c in self.fake.stats().items() if model != PROBE_MODEL)

    def run(self, tag: str, n: int, *, rate: float | None = None, timeout: float = 300.0,
            templates: list[int] | None = None) -> Burst:
        """Produce ``n`` tickets (all at once, or ``rate`` per second) and wait for each terminal record."""
        assert self.observer is not None and self.producer is not None
        templates = templates if templates is not None else [i % len(self.tickets) for i in range(n)]
        workers = self.worker_pids()
        for pid in workers:
            reset_peak_rss(pid)
        meter = CpuMeter({"workers": workers, "broker": [self.broker_pid() or 0], "redis": [self.redis_pid() or 0],
                          "models": [self.fake._proc.pid if self.fake._proc else 0], "driver": [os.getpid()]})
        calls0 = self._calls()
        meter.start()
        sent: dict[str, float] = {}
        t0 = time.time()
        for i, t in enumerate(templates):
            if rate:
                wait = t0 + i / rate - time.time()
                if wait > 0:
                    time.sleep(wait)
            cid = correlation_id(tag, t, i)
            sent[cid] = time.time()
            self.producer.send(self.tickets[t], correlation_id=cid)
        self.producer.flush()
        deadline = time.time() + timeout
        while time.time() < deadline and self.observer.done(sent) < len(sent):
            time.sleep(0.05)
        cpu = meter.stop()
        calls = self._calls() - calls0
        time.sleep(0.3)  # late duplicates, if any, would show here
        with self.observer._lock:
            seen = {c: self.observer.seen[c] for c in sent if c in self.observer.seen}
            dups = sum(1 for c in sent if self.observer.count.get(c, 0) > 1)
            reasons: dict[str, int] = {}
            for c in sent:
                if c in self.observer.reasons:
                    reasons[self.observer.reasons[c]] = reasons.get(self.observer.reasons[c], 0) + 1
        rss = sum(peak_rss_mb(pid) for pid in workers)
        return Burst(sent, seen, dups, cpu, rss, calls, len(seen) == len(sent), {"escalation_reasons": reasons})

    def drain(self, cids: Any, timeout: float = 120.0) -> None:
        """After a run that timed out: wait for its remaining tickets, so they do not load the next run."""
        assert self.observer is not None
        deadline = time.time() + timeout
        while time.time() < deadline and self.observer.done(cids) < len(cids):
            time.sleep(0.2)
