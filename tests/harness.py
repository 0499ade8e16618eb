"""A real triage stack for tests: a KRaft broker, redis-server, the model server and worker processes, on
free loopback ports under a temporary home, so tests never touch a developer's running stack.

Only the model endpoint may be a fake (tests/fake_openai.py); Kafka and Redis are always the real ones.
"""
from __future__ import annotations

from functools import lru_cache

import json
import os
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from streams import config, pipelines, stack
from streams.client import Out, TicketProducer, decode_value, read
from processors.topology import STEPS, terminal_topics

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "deploy" / "sample"


def free_port(span: int = 1) -> int:
    """A port p such that p .. p+span-1 were free a moment ago."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span < 65000 and all(_free(port + i) for i in range(1, span)):
            return port
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def sample_tickets(n: int | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(l) for l in (SAMPLE / "tickets.jsonl").read_text().splitlines() if l.strip()]
    return rows[:n] if n is not None else rows


def routine_tickets(n: int, offset: int = 0, *, english: bool = False) -> list[dict[str, Any]]:
    """Sample tickets that go all the way to the writer: not critical, not general, long enough to retrieve for,
    by their labels and by what the offline models call them (a stack with offline or fake models routes by
    the latter, and the trained models read some templated tickets more severely than the templates did)."""
    return _routine()[offset:offset + n] if not english else \
        [t for t in _routine() if t["expected"]["language"] == "en"][offset:offset + n]


@lru_cache(maxsize=1)
def _routine() -> list[dict[str, Any]]:
    from processors.offline import classify

    return [t for t in sample_tickets() if t["expected"]["priority"] != "critical"
            and t["expected"]["intent"] != "general" and len(t["body"]) >= 60
            and classify("priority", t["subject"], t["body"])[0] != "critical"
            and classify("intent", t["subject"], t["body"])[0] != "general"]


def fake_models_env(base_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a stack whose every step calls the fake model server at ``base_url``."""
    env = {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "test-key",
           "TRIAGE_MODEL_CLASSIFY_INTENT": "fake-intent", "TRIAGE_MODEL_CLASSIFY_LANGUAGE": "fake-language",
           "TRIAGE_MODEL_CLASSIFY_PRIORITY": "fake-priority", "TRIAGE_MODEL_CLASSIFY_SENTIMENT": "fake-sentiment",
           "TRIAGE_MODEL_GENERATE": "fake-writer,fake-writer-b", "TRIAGE_MODEL_GENERATE_STRONG": "fake-writer-strong",
           "TRIAGE_MODEL_GATE": "fake-judge"}
    env.update(overrides)
    return env


def kb_docs(tenant: str) -> list[dict[str, Any]]:
    return [json.loads(l) for l in (SAMPLE / "kb" / f"{tenant}.jsonl").read_text().splitlines() if l.strip()]


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    settings: config.Settings = field(init=False)
    workers: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self.settings = config.load(self.env)

    brokers: int = 1

    @classmethod
    def create(cls, home: Path, brokers: int = 1, **overrides: str) -> "Stack":
        kafka = free_port(2 * brokers)
        env = {
            "TRIAGE_HOME": str(home),
            "TRIAGE_BOOTSTRAP": ",".join(f"127.0.0.1:{kafka + 2 * i}" for i in range(brokers)),
            "TRIAGE_REDIS_PORT": str(free_port()),
            "TRIAGE_OFFLINE_PORT": str(free_port()),
            "TRIAGE_PARTITIONS": "4",
        }
        # The suite through a registry: TRIAGE_SCHEMA_REGISTRY_URL in the test run's environment reaches every
        # stack (the workers' environment keeps only the stack's own TRIAGE_ names).
        if os.environ.get("TRIAGE_SCHEMA_REGISTRY_URL"):
            env["TRIAGE_SCHEMA_REGISTRY_URL"] = os.environ["TRIAGE_SCHEMA_REGISTRY_URL"]
        env.update(overrides)
        return cls(home, env, brokers=brokers)

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def start(self, *, workers: Iterable[str] = STEPS) -> "Stack":
        stack.start_services(self.settings, brokers=self.brokers)
        if self.registry is not None:
            # The test process decodes what the workers wrote with the registry's ids, as the CLI does.
            from streams import avro
            avro.use(self.registry)
        stack.load_knowledge_bases(self.settings)
        for step in workers:
            self.start_worker(step)
        return self

    def worker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "OPENAI_", "OTEL_"))}
        env.update(self.env)
        return env

    def start_worker(self, step: str, index: int | None = None) -> subprocess.Popen[bytes]:
        index = len(self.workers[step]) if index is None else index
        log = (self.home / "logs" / f"test-worker-{step}-{index}.log").open("ab")
        p = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", step, "--instance", f"{step}-{index}"],
                             env=self.worker_env(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.workers[step].append(p)
        return p

    def kill_worker(self, p: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        p.wait(30)

    def stop(self) -> None:
        for procs in self.workers.values():
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        for procs in self.workers.values():
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    self.kill_worker(p)
        stack.down(self.settings)
        if self.registry is not None:
            from streams import avro
            avro.use(None)

    def alive(self) -> dict[str, int]:
        return {step: sum(p.poll() is None for p in ps) for step, ps in self.workers.items()}

    def progress(self) -> dict[str, Any]:
        """Where each step stands, for a test that failed to say where the tickets stopped: per input
        partition, the group's committed offset, the last stable offset (what read_committed readers may read
        up to) and the high watermark, plus whether its worker lives and the last lines of its log."""
        from confluent_kafka import Consumer, TopicPartition

        from processors.support import PIPELINE
        from streams.kafka_io import base_config
        from processors.topology import group_id

        def client(group: str, isolation: str) -> Consumer:
            return Consumer(base_config(self.bootstrap, **{"group.id": group, "isolation.level": isolation}))

        doc: dict[str, Any] = {}
        committed_reader, stable, high = client("triage.test.progress", "read_committed"), None, None
        try:
            stable, high = committed_reader, client("triage.test.progress", "read_uncommitted")
            for step in STEPS:
                group = client(group_id(step), "read_committed")
                try:
                    tps = [TopicPartition(t, p) for t in PIPELINE.build(step, self.settings).inputs
                           for p in range(self.settings.partitions)]
                    parts = {}
                    for tp in group.committed(tps, timeout=10):
                        key = TopicPartition(tp.topic, tp.partition)
                        lso = stable.get_watermark_offsets(key, timeout=10)[1]
                        hw = high.get_watermark_offsets(key, timeout=10)[1]
                        parts[f"{tp.topic}/{tp.partition}"] = [tp.offset, lso, hw]
                finally:
                    group.close()
                log = self.home / "logs" / f"test-worker-{step}-0.log"
                lines = log.read_text(errors="replace").splitlines() if log.exists() else []
                doc[step] = {"alive": self.alive().get(step, 0), "committed/stable/high": parts,
                             "log": [line[:300] for line in lines[-6:]]}
        except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the failure it explains
            doc["error"] = repr(exc)
        finally:
            for c in (committed_reader, high):
                if c is not None:
                    c.close()
        return doc

    # ---- traffic ---------------------------------------------------------------------------------------
    @property
    def registry(self) -> Any:
        """The Schema Registry this stack's workers use (a RemoteRegistry), or None: the local id table."""
        if self.settings.registry_url and getattr(self, "_registry", None) is None:
            from streams.schema_registry import for_settings
            self._registry = for_settings(self.settings)
        return getattr(self, "_registry", None)

    def produce(self, docs: Iterable[dict[str, Any]], *, as_json: bool = False, prefix: str = "") -> dict[str, dict[str, Any]]:
        p = TicketProducer(self.bootstrap, as_json=as_json, registry=self.registry)
        sent = {}
        for i, d in enumerate(docs):
            cid = f"{prefix}{i:06d}-{os.urandom(4).hex()}"
            p.send(d, correlation_id=cid)
            sent[cid] = d
        p.flush()
        return sent

    def outcomes(self, cids: set[str], timeout: float = 300.0, settle: float = 3.0,
                 attempt: int | None = None) -> dict[str, list[Out]]:
        """Every terminal record of ``cids`` (of one ``attempt``, if given). Waits until each has one (or
        ``timeout``), then counts with one more full read that ends after ``settle`` seconds without a
        record, so duplicates are seen too."""
        def mine(o: Out) -> str | None:
            cid = o.headers.get("correlation_id") or o.key or ""
            if cid not in cids or (attempt is not None and o.headers.get("attempt") != str(attempt)):
                return None
            return cid

        pending = set(cids)

        def done(o: Out) -> bool:
            cid = mine(o)
            if cid is not None:
                pending.discard(cid)
            return not pending

        for _ in read(self.bootstrap, terminal_topics(), timeout=timeout, stop=done):
            pass
        seen: dict[str, list[Out]] = defaultdict(list)
        for o in read(self.bootstrap, terminal_topics(), timeout=timeout, idle=settle):
            cid = mine(o)
            if cid is not None:
                seen[cid].append(o)
        return dict(seen)


def value(o: Out) -> Any:
    return decode_value(o.topic, o.raw)


@contextmanager
def running(home: Path, spec: str, **overrides: str) -> Iterator[Stack]:
    """A stack running every step of the pipeline ``spec``; while it runs this process works on that pipeline
    too (the topics it creates, the records it reads)."""
    before = os.environ.get(pipelines.ENV)
    os.environ[pipelines.ENV] = spec
    s = Stack.create(home, TRIAGE_PIPELINE=spec, **overrides)
    try:
        s.start(workers=pipelines.load(spec).step_names)
        yield s
    finally:
        s.stop()
        if before is None:
            os.environ.pop(pipelines.ENV, None)
        else:
            os.environ[pipelines.ENV] = before
