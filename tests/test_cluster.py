"""Scale out and survive the loss of one part, on a real three-node KRaft cluster (replication 3,
min.insync.replicas 2, acks=all, idempotent producers), each fault with thousands of tickets in flight:

1. kill -9 of one broker mid-run, then its restart;
2. a second worker for every step added mid-run, and workers kill -9'd again and again;
3. Redis killed and restarted mid-run;
4. the model endpoint down for 30 s (TRIAGE_MODEL_OUTAGE=wait: records are held and catch up).

Each reports missing and duplicated (both must be 0) and the time to recover (the longest silence of the
terminal topics after the fault). Figures go to stdout and the stack's home (fault-report.json).
"""
from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import pytest

from streams.config import REPO_ROOT
from streams.services import proc
from streams.services.kafka_broker import start_broker
from streams.services.redis_server import start_redis
from streams.stack import broker_specs
from processors.topology import STEPS
from tests.fake_openai import FakeModels
from tests.harness import Stack, fake_models_env, sample_tickets

pytestmark = pytest.mark.kafka
TICKETS = int(os.environ.get("TRIAGE_FAULT_TICKETS", "5000"))
REPORT: dict[str, dict] = {}
IN_FLIGHT_SHARE = 0.25  # each fault strikes after about a sixth of the run's model calls (the workers test: a twelfth)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fake: FakeModels) -> Iterator[Stack]:
    s = Stack.create(tmp_path_factory.mktemp("cluster-home"), brokers=3, **fake_models_env(
        fake.base_url, TRIAGE_MODEL_GENERATE="fake-writer", TRIAGE_MODEL_OUTAGE="wait",
        TRIAGE_STEP_DEADLINE_S="120", TRIAGE_MODEL_TIMEOUT_S="5", TRIAGE_PARTITIONS="6",
        TRIAGE_DRIFT_CLASSIFIERS=""))
    reviver = Reviver(s)
    try:
        s.start()
        reviver.start()
        yield s
    finally:
        reviver.done.set()
        s.stop()
        print("faults:", json.dumps(REPORT))
        (Path(s.home) / "fault-report.json").write_text(json.dumps(REPORT, indent=2))


class Reviver(threading.Thread):
    """What the supervisor does for `triage up`: starts again any worker that exited."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.done, self.revived = stack, threading.Event(), 0

    def run(self) -> None:
        while not self.done.wait(0.5):
            for step, procs in list(self.stack.workers.items()):
                for index in {int(p.args[-1].rsplit("-", 1)[1]) for p in procs}:
                    latest = [p for p in procs if p.args[-1] == f"{step}-{index}"][-1]
                    if latest.poll() is not None and not getattr(latest, "killed_on_purpose", False):
                        self.stack.start_worker(step, index)
                        self.revived += 1


def _calls(fake: FakeModels) -> int:
    return sum(sum(by_status.values()) for by_status in fake.stats().values())


def _run(stack: Stack, fake: FakeModels, name: str, fault: Callable[[], dict], after_calls: int = TICKETS) -> dict:
    """Produce TICKETS, strike with ``fault`` once the models have answered ``after_calls`` calls (about a sixth
    of the run's at the default: the pipeline is flowing and most of the work is still ahead), then check that
    every ticket came out once."""
    docs = sample_tickets()
    calls_before = _calls(fake)
    sent = stack.produce([docs[i % len(docs)] for i in range(TICKETS)], prefix=f"{name}-")
    started = time.time()
    info: dict = {}
    failed: list[BaseException] = []

    def inject() -> None:
        try:
            deadline = time.monotonic() + 300
            while _calls(fake) - calls_before < after_calls and time.monotonic() < deadline:
                time.sleep(0.2)
            info["fault_after_calls"] = _calls(fake) - calls_before
            info["fault_at"] = time.time()  # recovery counts from the moment the part fails
            info.update(fault())
        except BaseException as exc:  # a fault that never struck must fail the test, not vanish with its thread
            failed.append(exc)
    t = threading.Thread(target=inject, daemon=True)
    t.start()
    outcomes = stack.outcomes(set(sent), timeout=1200, settle=5)
    t.join(300)
    assert not t.is_alive(), f"{name}: the fault was still running after every ticket came out"
    if failed:
        raise AssertionError(f"{name}: the fault failed, so the run proves nothing about it") from failed[0]
    assert "fault_at" in info, f"{name}: the fault never struck"
    stamps = sorted(outs[0].timestamp_ms / 1000 for outs in outcomes.values())
    after = [x for x in stamps if x >= info.get("fault_at", started)]
    gaps = [b - a for a, b in zip(after, after[1:])]
    report = {"tickets": len(sent), "missing": len(set(sent) - set(outcomes)),
              "duplicated": sum(1 for outs in outcomes.values() if len(outs) > 1),
              "seconds": round(stamps[-1] - started, 1) if stamps else None,
              "recovery_s": round(max(gaps), 1) if gaps else None,
              "model_calls_per_ticket": round((_calls(fake) + info.pop("calls_cleared", 0) - calls_before)
                                              / max(1, len(sent)), 2),
              "terminal": dict(Counter(outs[0].topic for outs in outcomes.values())),
              **{k: v for k, v in info.items() if k != "fault_at"}}
    REPORT[name] = report
    print(name, json.dumps(report))
    assert report["missing"] == 0, report
    assert report["duplicated"] == 0, report
    # The fault struck with tickets in flight: a good share of them came out only after it (a fault after the
    # last ticket, or one that waited out its deadline on an idle pipeline, would test nothing).
    assert len(after) >= IN_FLIGHT_SHARE * len(sent), \
        f"{name}: only {len(after)} of {len(sent)} tickets came out after the fault struck: {report}"
    return report


@pytest.mark.timeout(1800)
def test_kill_9_one_broker_then_restart_it(cluster: Stack, fake: FakeModels) -> None:
    def fault() -> dict:
        victim = 2
        pid = proc.read_pid(cluster.home, f"kafka-{victim}")
        os.kill(pid, signal.SIGKILL)
        time.sleep(15)
        spec = broker_specs(cluster.settings, 3)[victim - 1]
        t = time.monotonic()
        # A restart that fails is the fault failing (the test says so); on a loaded machine it needs longer than
        # the 90 s a cold start gets.
        start_broker(cluster.home, REPO_ROOT, spec, timeout=300)
        return {"killed_broker": victim, "broker_restart_s": round(time.monotonic() - t, 1)}
    _run(cluster, fake, "broker", fault)


@pytest.mark.timeout(1800)
def test_workers_added_and_killed_during_the_run(cluster: Stack, fake: FakeModels) -> None:
    rng = random.Random(11)

    def fault() -> dict:
        for step in STEPS:
            cluster.start_worker(step, 1)  # a second replica per step: the group rebalances mid-run
        kills = []
        for _ in range(12):
            time.sleep(2.5)
            step = rng.choice(STEPS)
            victim = cluster.workers[step][-1]
            victim.killed_on_purpose = True  # type: ignore[attr-defined]
            cluster.kill_worker(victim)
            cluster.start_worker(step, int(victim.args[-1].rsplit("-", 1)[1]))
            kills.append(step)
        return {"workers_added": len(STEPS), "kills": len(kills)}
    _run(cluster, fake, "workers", fault, after_calls=TICKETS // 2)


@pytest.mark.timeout(1800)
def test_redis_killed_and_restarted(cluster: Stack, fake: FakeModels) -> None:
    def fault() -> dict:
        pid = proc.read_pid(cluster.home, "redis")
        os.kill(pid, signal.SIGKILL)
        time.sleep(5)
        start_redis(cluster.home, cluster.settings.redis_port)
        return {"redis_down_s": 5}
    _run(cluster, fake, "redis", fault)


@pytest.mark.timeout(1800)
def test_model_endpoint_down_for_30_s(cluster: Stack, fake: FakeModels) -> None:
    def fault() -> dict:
        fake.set("*", "down")
        time.sleep(30)
        cleared = _calls(fake)  # reset() clears the fake's counters too
        fake.reset()
        return {"model_down_s": 30, "calls_cleared": cleared}
    report = _run(cluster, fake, "model-outage", fault)
    # Held, not degraded: tickets came out as they would have without the outage.
    assert report["terminal"].get("tickets.responses", 0) >= 0.8 * TICKETS, report
