"""The partial join and the bounded loop of tests/graph_partial/pipeline.toml on the real broker: the worker of
one branch (``late``) is not running, so the join of three branches gives up on it after ``join_give_up_s`` and
every input ends once with ``missing: ["late"]``; the loop after it stops at its target. When the branch's
worker starts and delivers every input's record at last, those records are dropped: nothing ends twice."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from streams import pipelines
from streams.client import read
from tests import pipeline_io
from tests.harness import running

pytestmark = pytest.mark.kafka
TOML = Path(__file__).resolve().parent / "graph_partial" / "pipeline.toml"
N = 40


def test_a_join_goes_on_without_a_branch_that_is_down_and_drops_it_when_it_comes(tmp_path: Path) -> None:
    spec = str(TOML)
    steps = [s for s in pipelines.load(spec).step_names if s != "late"]
    run = os.urandom(3).hex()
    sent = {f"{run}-{i:03d}": {"n": i, "target": 1 + i % 4} for i in range(N)}
    with running(tmp_path, spec) as stack:
        for p in stack.workers.pop("late"):
            stack.kill_worker(p)
        pipeline_io.produce(stack.bootstrap, spec, sent)
        seen = pipeline_io.outcomes(stack.bootstrap, spec, set(sent), timeout=180)
        assert set(seen) == set(sent) and all(len(v) == 1 for v in seen.values())
        for cid, doc in sent.items():
            out = seen[cid][0]
            assert out.topic == "gpartial.results", (out.topic, out.headers)
            rec = json.loads(out.raw)
            assert rec["missing"] == ["late"] and rec["steps"]["late"] is None
            assert rec["steps"]["merge"] == {"total": 3 * doc["n"], "had_late": False, "missing": ["late"]}
            rounds = min(doc["target"], 3)  # rounds = 3 in the file: the bound holds when the target is 4
            assert rec["steps"]["refine"] == {"score": rounds, "rounds": list(range(1, rounds + 1))}

        stack.start_worker("late")
        delivered = set()

        def all_late(o: object) -> bool:
            delivered.add(getattr(o, "key", None))
            return set(sent) <= delivered

        for _ in read(stack.bootstrap, ["gpartial.out.late"], timeout=180, stop=all_late):
            pass
        assert set(sent) <= delivered, "the late branch never delivered"
        again = pipeline_io.outcomes(stack.bootstrap, spec, set(sent), timeout=60)
        doubled = {c: [o.topic for o in v] for c, v in again.items() if len(v) != 1}
        assert not doubled, f"inputs that ended twice after the late branch came: {list(doubled.items())[:5]}"
    assert steps  # the other steps ran the whole time
