"""The whole pipeline on the real broker and Redis: 500 sample tickets in, exactly one outcome each."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from processors.topology import ESCALATIONS, RESPONSES
from tests.harness import Stack, kb_docs, sample_tickets, value

pytestmark = pytest.mark.kafka
N = 500


def _sentences(tenant: str) -> set[str]:
    out = set()
    for d in kb_docs(tenant):
        for s in re.split(r"(?<=[.;])\s+", d["body"]):
            if len(s) > 25:
                out.add(s.strip().rstrip(".;"))
    return out


@pytest.fixture(scope="module")
def run(pipeline: Stack) -> tuple[dict, dict]:
    sent = pipeline.produce(sample_tickets(N), prefix="e2e-")
    return sent, pipeline.outcomes(set(sent), timeout=600)


def test_every_ticket_reaches_exactly_one_terminal_record(run: tuple[dict, dict]) -> None:
    sent, outcomes = run
    missing = set(sent) - set(outcomes)
    doubled = {cid: [o.topic for o in outs] for cid, outs in outcomes.items() if len(outs) > 1}
    assert not missing, f"{len(missing)} tickets never reached a terminal topic"
    assert not doubled, f"{len(doubled)} tickets reached more than one terminal record: {list(doubled.items())[:3]}"
    topics = Counter(outs[0].topic for outs in outcomes.values())
    assert set(topics) <= {RESPONSES, ESCALATIONS}, topics  # sample tickets are all valid
    for outs in outcomes.values():
        h = outs[0].headers
        assert h["correlation_id"] and h["tenant_id"] in ("acme", "globex") and h["attempt"] == "1"


def test_critical_tickets_are_escalated(run: tuple[dict, dict]) -> None:
    sent, outcomes = run
    critical = [cid for cid, d in sent.items() if d["expected"]["priority"] == "critical"]
    assert critical, "the sample must hold critical tickets for this test to mean anything"
    for cid in critical:
        o = outcomes[cid][0]
        assert o.topic == ESCALATIONS, f"critical ticket {sent[cid]['ticket_id']} went to {o.topic}"
        assert value(o)["escalation_reason"] == "CRITICAL"
    for cid, outs in outcomes.items():
        case = value(outs[0])
        if case["labels"]["priority"]["label"] == "critical":
            assert outs[0].topic == ESCALATIONS


def test_join_saw_all_four_classifications(run: tuple[dict, dict]) -> None:
    _, outcomes = run
    for outs in outcomes.values():
        case = value(outs[0])
        assert case["missing"] == []
        assert set(case["labels"]) == {"intent", "language", "priority", "sentiment"}
        assert any(line.startswith("join: complete") for line in case["trail"])


def test_retrieval_only_when_needed(run: tuple[dict, dict]) -> None:
    sent, outcomes = run
    kinds = Counter()
    for cid, outs in outcomes.items():
        case = value(outs[0])
        if outs[0].topic != RESPONSES:
            continue
        body = sent[cid]["body"]
        if case["labels"]["intent"]["label"] == "general":
            assert case["retrieval"] == "skipped:general" and case["documents"] == []
        elif len(body.strip()) < 60:
            assert case["retrieval"] == "skipped:short" and case["documents"] == []
        else:
            assert case["retrieval"] == "used"
        kinds[case["retrieval"]] += 1
    assert kinds["used"] and kinds["skipped:general"], kinds


def test_replies_cite_only_their_own_tenant(run: tuple[dict, dict]) -> None:
    sent, outcomes = run
    own = {t: {d["doc_id"] for d in kb_docs(t)} for t in ("acme", "globex")}
    sentences = {t: _sentences(t) for t in ("acme", "globex")}
    cited = 0
    for outs in outcomes.values():
        if outs[0].topic != RESPONSES:
            continue
        case = value(outs[0])
        tenant = case["tenant_id"]
        other = "globex" if tenant == "acme" else "acme"
        assert set(case["citations"]) <= own[tenant], case["citations"]
        assert all(d["doc_id"] in own[tenant] for d in case["documents"])
        leaked = [s for s in sentences[other] if s in case["reply"]]
        assert not leaked, f"{tenant} reply quotes {other}: {leaked}"
        cited += bool(case["citations"])
    assert cited > 100, "too few grounded replies for the check to mean anything"


def test_ticket_text_cannot_make_itself_critical_or_extract_the_prompt(pipeline: Stack) -> None:
    from processors.injection import leaks_prompt
    from tests.test_guards import INJECTIONS
    docs = [{"tenant_id": t, "subject": s, "body": b} for t in ("acme", "globex") for s, b in INJECTIONS]
    sent = pipeline.produce(docs, prefix="inject-offline-")
    outcomes = pipeline.outcomes(set(sent), timeout=120)
    assert set(outcomes) == set(sent)
    for cid, (o,) in outcomes.items():
        case = value(o)
        assert "INJECTION_SUSPECTED" in case["flags"]
        assert case["escalation_reason"] != "CRITICAL"
        assert not leaks_prompt(case["reply"] or "")
        other = "globex" if case["tenant_id"] == "acme" else "acme"
        assert other not in (case["reply"] or "").lower()


def test_trace_shows_one_ticket_path_and_outcome(pipeline: Stack, run: tuple[dict, dict]) -> None:
    from typer.testing import CliRunner

    from streams.cli import app
    from streams.trace import trace
    sent, outcomes = run
    cid = next(c for c, outs in outcomes.items() if outs[0].topic == RESPONSES)
    doc = trace(pipeline.bootstrap, cid)
    topics = [h["topic"] for h in doc["hops"]]
    assert topics[0] == "tickets.in" and topics.count("tickets.classified") == 4
    for t in ("tickets.valid", "tickets.joined", "tickets.routed", "tickets.enriched", "tickets.drafts"):
        assert t in topics
    assert doc["outcome"]["topic"] == RESPONSES and doc["model_calls"] >= 6
    assert [h["t_ms"] for h in doc["hops"]] == sorted(h["t_ms"] for h in doc["hops"])
    result = CliRunner().invoke(app, ["trace", cid], env=pipeline.env)
    assert result.exit_code == 0 and "outcome: tickets.responses" in result.output
    assert CliRunner().invoke(app, ["trace", "no-such-ticket"], env=pipeline.env).exit_code == 1


def test_one_trace_per_ticket_across_every_step(pipeline: Stack, run: tuple[dict, dict], otlp) -> None:  # noqa: ANN001
    import time
    _, outcomes = run
    cid = next(c for c, outs in outcomes.items() if outs[0].topic == RESPONSES)
    steps = {"ingest", "classify-intent", "classify-language", "classify-priority", "classify-sentiment", "join",
             "route", "retrieve", "generate", "gate"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        mine = [s for s in otlp.snapshot() if s.attributes.get("triage.correlation_id") == cid]
        if {s.name.removeprefix("step ") for s in mine} >= steps:
            break
        time.sleep(0.5)  # the workers export in batches; this waits for the next one
    mine = [s for s in otlp.snapshot() if s.attributes.get("triage.correlation_id") == cid]
    assert {s.name.removeprefix("step ") for s in mine} >= steps, sorted(s.name for s in mine)
    trace_ids = {s.trace_id for s in mine}
    assert len(trace_ids) == 1, "the ticket's spans must form one trace"
    model_spans = [s for s in otlp.snapshot() if s.trace_id in trace_ids and s.name.startswith("model ")]
    step_ids = {s.span_id for s in mine}
    assert len(model_spans) >= 6 and all(m.parent_id in step_ids for m in model_spans)
