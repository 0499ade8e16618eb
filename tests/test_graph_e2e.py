"""A six-step graph declared in a TOML file (tests/graph_sample/pipeline.toml), run on the real broker: fan-out,
a join of three branches, a condition, a step that raises for some inputs, a step that sleeps past its
timeout, a fallback and two sinks. Every input ends exactly once, in gsample.results or one dead letter,
with the reason its kind calls for; the records have the documented shape."""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from streams import pipelines
from tests import graph_run
from tests.graph_run import NAME, SAMPLE_TOML
from tests.harness import Stack, running

pytestmark = pytest.mark.kafka
N = 120
STEPS = ("parse", "sentiment", "keywords", "lookup", "answer", "audit")


@pytest.fixture(scope="module")
def graph_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running(tmp_path_factory.mktemp("graph-home"), str(SAMPLE_TOML)) as s:
        yield s


@pytest.fixture(scope="module")
def run(graph_stack: Stack) -> tuple[dict[str, tuple[str, Any]], dict[str, list[Any]]]:
    sent = graph_run.inputs(N, "e2e-")
    graph_run.produce(graph_stack.bootstrap, sent)
    return sent, graph_run.outcomes(graph_stack.bootstrap, set(sent), timeout=300)


def test_every_input_ends_exactly_once_with_its_reason(run: tuple[dict, dict]) -> None:
    sent, seen = run
    wrong = graph_run.verdicts(sent, seen)
    assert not wrong, f"{len(wrong)} of {len(sent)} inputs wrong: {list(wrong.items())[:5]}"


def test_result_records_hold_every_step(run: tuple[dict, dict]) -> None:
    sent, seen = run
    results = [(sent[c], outs[0]) for c, outs in seen.items() if outs[0].topic == f"{NAME}.results"]
    assert len(results) == N * 4 // 10
    for (kind, doc), o in results:
        rec = json.loads(o.raw)
        assert set(rec) == {"correlation_id", "input", "steps"}
        assert rec["correlation_id"] == o.key and rec["input"] == doc
        assert tuple(rec["steps"]) == STEPS, rec["steps"]
        assert rec["steps"]["parse"] == {"text": doc["text"], "words": len(doc["text"].split())}
        assert (rec["steps"]["lookup"] is None) == (not doc.get("lookup")), (kind, rec)
        if kind == "flaky":
            assert rec["steps"]["answer"]["text"] == "canned"
        else:
            assert rec["steps"]["answer"]["text"] != "canned"
        assert rec["steps"]["answer"]["looked_up"] == bool(doc.get("lookup"))


def test_dead_letters_carry_what_the_failed_step_consumed(run: tuple[dict, dict]) -> None:
    sent, seen = run
    checked = set()
    for cid, outs in seen.items():
        kind, doc = sent[cid]
        o = outs[0]
        if o.topic == f"{NAME}.results":
            continue
        h = o.headers
        step = o.topic.removeprefix(f"{NAME}.dlq.")
        assert h["dlq.step"] == step and h["correlation_id"] == cid and h["attempt"] == "1"
        assert {"dlq.error", "dlq.source", "dlq.ts"} <= set(h)
        if step == "parse":
            assert o.raw == doc and h["dlq.source"].startswith(f"{NAME}.in/")  # the input's bytes, untouched
            assert h["dlq.attempts"] == "1"
        else:
            # What keywords/lookup/audit consumed: parse's record, from which the input is read back.
            consumed = json.loads(o.raw)
            assert consumed["input"] == doc and consumed["steps"]["parse"]["text"] == doc["text"]
            assert h["dlq.source"].startswith(f"{NAME}.out.parse/")
            assert h["dlq.attempts"] == {"keywords": "2", "lookup": "2", "audit": "1"}[step], h  # 1 + retries
            if step == "lookup":
                assert "not done within 0.5s" in h["dlq.error"]
            else:
                assert "raised" in h["dlq.error"]
        checked.add(kind)
    assert checked == {"boom", "slow", "two-branches", "two-sinks", "not-json", "not-object"}


def test_a_replayed_dead_letter_of_a_later_step_runs_the_whole_graph_again(
        graph_stack: Stack, run: tuple[dict, dict]) -> None:
    """`triage dlq replay` of keywords' dead letter: what keywords consumed was parse's envelope, but the replay is
    the original input on gsample.in as attempt 2, so every branch runs again and the input ends once more (here
    in the same dead letter, since a boom input always raises); replayed into keywords' own input it would meet a
    join whose other branches never come again, and never end."""
    from streams import dlq
    from streams.client import read
    sent, seen = run
    cid = next(c for c, outs in seen.items() if sent[c][0] == "boom")
    entry = seen[cid][0]
    report = dlq.replay(graph_stack.bootstrap, "keywords", entry_id=f"{entry.topic}/{entry.partition}/{entry.offset}")
    assert report.replayed == 1, report
    topics = pipelines.active().terminal_topics()
    found: list[Any] = []

    def second(o: Any) -> bool:
        if o.key == cid and o.headers.get("attempt") == "2":
            found.append(o)
        return bool(found)

    for _ in read(graph_stack.bootstrap, topics, timeout=120, stop=second):
        pass
    assert found, "the replayed input never ended"
    again = [o for o in read(graph_stack.bootstrap, topics, timeout=60, idle=3.0)
             if o.key == cid and o.headers.get("attempt") == "2"]
    assert [(o.topic, o.headers.get("dlq.reason")) for o in again] == [(f"{NAME}.dlq.keywords", "TASK_ERROR")]
    assert json.loads(again[0].raw)["input"] == sent[cid][1]
