"""The insights worker on the real broker: its tables count every terminal record once, per tenant and
outcome, the same totals as a direct count of the terminal topics, before and after a kill -9 of the worker
mid-run (the tables restored from their changelog); an injected surge raises one alert and steady traffic none.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.harness import REPO_ROOT, Stack, free_port, sample_tickets
from processors.support import PIPELINE
from streams.client import TicketProducer, read
from streams.insights import client
from streams.insights.alerts import ALERTS_TOPIC
from streams.insights.settings import load as load_insights
from streams.kafka_io import base_config

pytestmark = pytest.mark.kafka
WINDOW_S = 2.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack.create(tmp_path_factory.mktemp("insights"), TRIAGE_INSIGHTS_PORT=str(free_port()),
                     TRIAGE_INSIGHTS_WINDOW_S=str(WINDOW_S), TRIAGE_ALERT_MIN_ENDS="5",
                     TRIAGE_ALERT_MIN_HISTORY="3", TRIAGE_ALERT_MULTIPLE="3")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _start_insights(s: Stack) -> subprocess.Popen[bytes]:
    log = (s.home / "logs" / "test-insights.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "insights-worker"], env=s.worker_env(),
                            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _conf(s: Stack):  # noqa: ANN202 - the worker's settings as the test's stack sets them
    return load_insights(s.env)


def _tables(s: Stack, tenants: set[str] | None = None) -> dict[str, Counter[str]]:
    """``{tenant: Counter(outcome)}`` of the tables' day view (empty while the worker does not answer)."""
    try:
        doc = client.snapshot(_conf(s), timeout=5)
    except client.Unavailable:
        return {}
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for t in doc["tenants"]:
        if t["pipeline"] == "support" and (tenants is None or t["tenant"] in tenants):
            out[t["tenant"]].update(t["day"]["outcomes"])
    return dict(out)


def _direct(s: Stack) -> dict[str, Counter[str]]:
    """The same, counted from the terminal topics themselves (committed records)."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    dead = set(PIPELINE.dead_letter_topics())
    for o in read(s.bootstrap, PIPELINE.terminal_topics(), timeout=120, idle=3):
        out[o.headers.get("tenant_id") or "-"]["dead_letter" if o.topic in dead else o.topic] += 1
    return dict(out)


def _wait(what: str, cond, timeout: float = 240.0, every: float = 1.0, detail=None):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f": {detail()}" if detail else ""))
        time.sleep(every)


def _caught_up(s: Stack, group: str) -> bool:
    """The worker's group has committed, on every terminal partition, past the last committed record (the
    end offset itself lies past a transaction's commit marker, which a consumer never acknowledges)."""
    last: dict[tuple[str, int], int] = {}
    for o in read(s.bootstrap, PIPELINE.terminal_topics(), timeout=120, idle=3):
        last[(o.topic, o.partition)] = max(last.get((o.topic, o.partition), -1), o.offset)
    c = Consumer(base_config(s.bootstrap, **{"group.id": group, "enable.auto.commit": False}))
    try:
        committed = c.committed([TopicPartition(t, p) for t, p in last], timeout=10)
        return all(tp.offset > last[(tp.topic, tp.partition)] for tp in committed)
    finally:
        c.close()


def _mix(s: Stack, n: int, prefix: str) -> int:
    """Tickets of two tenants (responses and escalations), and inputs that are dead letters: not JSON, an
    unknown tenant. Returns how many were sent."""
    sent = s.produce(sample_tickets(n), prefix=prefix)
    p = TicketProducer(s.bootstrap, as_json=True)
    for i in range(4):
        p.send_raw(b"{not json", f"{prefix}bad-{i}", {"content-type": "application/json", "tenant_id": "globex",
                                                      "correlation_id": f"{prefix}bad-{i}"})
    for i in range(3):
        p.send({"tenant_id": "initech", "subject": "Hello", "body": "Who am I?"}, correlation_id=f"{prefix}who-{i}")
    p.flush()
    return len(sent) + 7


def _total(counts: dict[str, Counter[str]]) -> int:
    return sum(sum(c.values()) for c in counts.values())


def test_tables_count_every_terminal_record_once_through_a_kill_9(stack: Stack) -> None:
    first = _mix(stack, 60, "one-")
    _wait("the first batch's outcomes", lambda: _total(_direct(stack)) >= first)
    worker = _start_insights(stack)
    try:
        direct = _direct(stack)
        assert _total(direct) == first
        got = _wait("the tables to count the first batch", lambda: (t := _tables(stack)) == direct and t,
                    detail=lambda: f"tables {_tables(stack)}, topics {direct}")
        # an unknown tenant's dead letters carry no tenant (it is not one): they count under "-"
        assert {"acme", "globex", "-"} <= set(got)
        assert got["globex"]["dead_letter"] >= 4 and got["-"]["dead_letter"] == 3
        assert sum(c["tickets.escalations"] for c in got.values()) > 0

        second = _mix(stack, 400, "two-")
        # kill -9 while it folds the second batch: past the first batch, short of the end
        _wait("the worker to count part of the second batch", lambda: _total(_tables(stack)) > first, every=0.2)
        mid = _total(_tables(stack))
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
        _wait("the second batch's outcomes", lambda: _total(_direct(stack)) >= first + second, timeout=600)
        direct = _direct(stack)
        assert _total(direct) == first + second, "the pipeline itself ended a record twice or lost one"
        assert mid < first + second, f"the kill came after the worker had counted everything ({mid})"

        worker = _start_insights(stack)
        _wait("the restored tables to match the topics", lambda: _tables(stack) == direct, timeout=300,
              detail=lambda: f"tables {_tables(stack)}, topics {direct}")
        from streams.insights.app import app_id
        from streams import config
        _wait("the worker to commit every terminal partition",
              lambda: _caught_up(stack, app_id(config.load(stack.env))))
        assert _tables(stack) == direct, "a record re-read after the restart was counted again"
        shown = subprocess.run([sys.executable, "-m", "streams.cli", "insights", "--tenant", "acme", "--json"],
                               env=stack.worker_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        doc = json.loads(shown.stdout)
        assert {t["tenant"] for t in doc["tenants"]} == {"acme"}
        assert sum(t["day"]["ends"] for t in doc["tenants"]) == sum(direct["acme"].values())
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)


def _dead_letter(p: Producer, tenant: str, ts_ms: int, i: int) -> None:
    p.produce("tickets.dlq.ingest", key=f"{tenant}-{ts_ms}-{i}".encode(), value=b"{}", timestamp=ts_ms,
              headers=[("tenant_id", tenant.encode()), ("dlq.step", b"ingest"), ("dlq.reason", b"MALFORMED"),
                       ("correlation_id", f"{tenant}-{ts_ms}-{i}".encode()), ("attempt", b"1")])


def test_a_surge_raises_one_alert_and_steady_traffic_none(stack: Stack) -> None:
    worker = _start_insights(stack)
    try:
        _wait("the insights worker", lambda: client.snapshot(_conf(stack), timeout=5) if _tables(stack) else None)
        size = int(WINDOW_S * 1000)
        now = int(time.time() * 1000)
        first = (now // size) * size - 10 * size  # ten closed windows before this one
        p = Producer(base_config(stack.bootstrap))
        for w in range(10):
            for tenant in ("steady", "surging"):
                n = 60 if tenant == "surging" and w == 8 else 6  # x10 in one window
                for i in range(n):
                    _dead_letter(p, tenant, first + w * size + i * size // (n + 1), i)
        assert p.flush(30) == 0
        last_close = first + 10 * size + size // 2
        _wait("the tables to count the injected records",
              lambda: all(t.get(k, Counter())["dead_letter"] == v
                          for t in [_tables(stack, {"steady", "surging"})]
                          for k, v in (("steady", 60), ("surging", 114))))
        _wait("an alert check after the last window closed",
              lambda: client.snapshot(_conf(stack), timeout=5)["alerts_checked_ms"] > last_close + size)
        alerts = [json.loads(o.raw) for o in read(stack.bootstrap, [ALERTS_TOPIC], timeout=30, idle=2)]
        mine = [(a["tenant"], a["metric"], a["window"]["start_ms"]) for a in alerts
                if a["tenant"] in ("steady", "surging")]
        assert mine == [("surging", "volume", first + 8 * size)], alerts
        a = next(a for a in alerts if a["tenant"] == "surging")
        assert a["pipeline"] == "support" and a["value"] == 60 and a["baseline"] == 6.0
        tail = subprocess.run([sys.executable, "-m", "streams.cli", "tail", ALERTS_TOPIC, "--json", "--timeout", "20"],
                              env=stack.worker_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        shown = [json.loads(line)["value"] for line in tail.stdout.splitlines() if line.startswith("{")]
        assert a in shown, tail.stdout + tail.stderr
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
