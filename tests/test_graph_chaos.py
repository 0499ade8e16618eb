"""The TOML graph of tests/graph_sample under kill -9: 1,000 inputs of every kind while a worker of each of its
eight steps (the six declared, the join before answer, the collector) is killed and started again. At the end,
in read_committed terminal topics, every input exactly once, in gsample.results or the one dead letter its kind
calls for: missing 0, duplicated 0, wrong 0."""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from typing import Iterator

import pytest

from streams import pipelines
from tests import graph_run
from tests.graph_run import SAMPLE_TOML
from tests.harness import Stack, running

pytestmark = pytest.mark.kafka
INPUTS = 1000


@pytest.fixture(scope="module")
def chaos_graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running(tmp_path_factory.mktemp("graph-chaos-home"), str(SAMPLE_TOML)) as s:
        yield s


class Killer(threading.Thread):
    """Every ``every`` seconds kills one step's worker with SIGKILL (each step once, then at random) and starts
    it again at once under the same instance, which fences its dead predecessor's transaction."""

    def __init__(self, stack: Stack, steps: tuple[str, ...], kills: int, every: float = 2.0, seed: int = 16) -> None:
        super().__init__(daemon=True)
        self.stack, self.steps, self.max_kills, self.every = stack, steps, kills, every
        self.rng = random.Random(seed)
        self.done = threading.Event()
        self.kills: list[str] = []
        self.kill_times: dict[str, float] = {}
        """When each step was first killed."""
        self.revived: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            order = list(self.steps)
            self.rng.shuffle(order)
            while not self.done.is_set():
                for step, procs in self.stack.workers.items():
                    if procs and procs[-1].poll() is not None:
                        self.revived.append(f"{step}:exit {procs[-1].returncode}")
                        self.stack.start_worker(step, index=0)
                if len(self.kills) < self.max_kills:
                    step = order.pop() if order else self.rng.choice(self.steps)
                    self.stack.kill_worker(self.stack.workers[step][-1])
                    self.kills.append(step)
                    self.kill_times.setdefault(step, time.time())
                    self.stack.start_worker(step, index=0)
                self.done.wait(self.every)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(exc))


@pytest.mark.timeout(1500)
def test_every_input_once_under_kill_9(chaos_graph: Stack) -> None:
    steps = pipelines.active().step_names
    sent = graph_run.inputs(INPUTS, "chaos-")
    half = dict(list(sent.items())[: INPUTS // 2])
    killer = Killer(chaos_graph, steps, kills=2 * len(steps), every=1.0)
    graph_run.produce(chaos_graph.bootstrap, half)
    killer.start()
    graph_run.produce(chaos_graph.bootstrap, {c: v for c, v in sent.items() if c not in half})
    try:
        seen = graph_run.outcomes(chaos_graph.bootstrap, set(sent), timeout=900, settle=5)
    finally:
        killer.done.set()
        killer.join(120)
    wrong = graph_run.verdicts(sent, seen)
    last_s = max(o.timestamp_ms for outs in seen.values() for o in outs) / 1000 if seen else 0.0
    missing = [c for c in sent if c not in seen]
    doubled = [c for c, outs in seen.items() if len(outs) > 1]
    report = {"inputs": len(sent), "missing": len(missing), "duplicated": len(doubled), "wrong": len(wrong),
              "kills": len(killer.kills), "kills_per_step": dict(Counter(killer.kills)),
              "self_exits_revived": killer.revived,
              "first_kills_s_before_the_last_outcome": {s: round(last_s - t, 1) for s, t in killer.kill_times.items()},
              "terminal": dict(Counter(f"{outs[0].topic} {outs[0].headers.get('dlq.reason') or ''}".strip()
                                      for outs in seen.values()))}
    print("graph chaos:", json.dumps(report))
    assert not killer.errors, killer.errors
    assert set(killer.kills) == set(steps), f"every step must be killed at least once: {Counter(killer.kills)}"
    late = [s for s, t in killer.kill_times.items() if t >= last_s]
    assert not late, f"killed only after the last input had ended, so not mid-run: {late}"
    assert not missing, f"{len(missing)} inputs lost: {missing[:5]}"
    assert not doubled, f"{len(doubled)} inputs doubled: {[(c, [o.topic for o in seen[c]]) for c in doubled[:3]]}"
    assert not wrong, f"{len(wrong)} inputs ended wrong: {list(wrong.items())[:5]}"
