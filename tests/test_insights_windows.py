"""The insights' arithmetic without a broker: a record read into a summary, folded once, merged, reported;
alerts against a baseline; the support pipeline's contradiction rules and model use."""
from __future__ import annotations

from processors import insights as support_insights
from processors.case import new_case
from processors.support import PIPELINE
from streams import avro
from streams.insights import alerts, prices, windows
from streams.insights.ends import End, read


def test_a_record_at_or_below_the_aggregates_offset_is_not_counted_again() -> None:
    end = End("support", "acme", "tickets.responses", latency_ms=120)
    agg = windows.fold(None, end, 10)
    agg = windows.fold(agg, end, 11)
    again = windows.fold(windows.fold(agg, end, 10), end, 11)  # a re-read after a crash
    assert again["ends"] == agg["ends"] == 2
    assert windows.fold(again, end, 12)["ends"] == 3


def test_report_mix_percentiles_and_rates() -> None:
    agg = None
    for i in range(100):
        outcome = "tickets.escalations" if i % 10 == 0 else "tickets.responses"
        agg = windows.fold(agg, End("support", "acme", outcome, escalated=outcome.endswith("escalations"),
                                    reason="CRITICAL" if i % 10 == 0 else None, latency_ms=10 * (i + 1),
                                    usage={"gpt-4o-mini": (2, 1000)}, fallback=i < 5, gate=i % 4 != 0,
                                    contradictions=("angry_at_low",) if i < 3 else ()), i)
    r = windows.report(agg, {"gpt-4o-mini": 0.5}, ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini"])
    assert r["ends"] == 100 and r["outcomes"] == {"tickets.escalations": 10, "tickets.responses": 90}
    assert r["reasons"] == {"tickets.escalations:CRITICAL": 10}
    assert r["escalation_rate"] == 0.1 and r["fallback_rate"] == 0.05 and r["contradiction_rate"] == 0.03
    assert r["gate_pass_rate"] == 0.75
    # the true p50/p95/p99 are 500, 950, 990 ms; buckets are 10% wide
    for q, exact in (("p50", 500), ("p95", 950), ("p99", 990)):
        assert exact <= r["latency_ms"][q] <= exact * 1.1, (q, r["latency_ms"])
    assert abs(r["cost_usd"] - 100 * 1000 * 0.5 / 1e6) < 1e-9
    # every model on every ticket: four calls of 500 tokens each, against the two that ran
    assert r["saving_vs_every_model"] == 0.5


def test_merge_adds_partitions_and_windows() -> None:
    a = windows.fold(None, End("p", "t", "x", latency_ms=5), 0)
    b = windows.fold(windows.fold(None, End("p", "t", "dead_letter", reason="s:R"), 0), End("p", "t", "x"), 1)
    m = windows.merge([a, b])
    assert m["ends"] == 3 and m["outcomes"] == {"x": 2, "dead_letter": 1} and m["reasons"] == {"dead_letter:s:R": 1}


def _report(ends: int, escalated: int = 0) -> dict:
    agg = None
    for i in range(ends):
        agg = windows.fold(agg, End("p", "t", "x", escalated=i < escalated), i)
    return windows.report(agg or windows.empty(), {})


def test_a_surge_alerts_and_steady_traffic_does_not() -> None:
    policy = alerts.AlertPolicy(multiple=3.0, baseline_windows=10, min_history=3, min_ends=20)
    steady = [_report(30) for _ in range(10)]
    assert alerts.check(_report(35), steady, policy) == []
    assert [m for m, *_ in alerts.check(_report(300), steady, policy)] == ["volume"]
    assert [m for m, *_ in alerts.check(_report(40, escalated=40), [_report(30, 3)] * 10, policy)] == ["escalation_rate"]


def test_no_alert_without_history_or_volume() -> None:
    policy = alerts.AlertPolicy(min_history=3, min_ends=20)
    assert alerts.check(_report(300), [None] * 8 + [_report(30), _report(30)], policy) == []  # two windows only
    assert alerts.check(_report(19), [_report(1)] * 10, policy) == []


def test_prices_table_and_override() -> None:
    table = prices.load('{"offline-judge": 9.0}')
    assert windows.price_of(table, "offline-judge") == 9.0
    assert windows.price_of(table, "offline-intent") == prices.DEFAULT["offline-*"]
    assert windows.price_of(table, "some-model") == prices.DEFAULT["*"]


def _case(**labels: str) -> dict:
    return {"labels": {k: {"label": v, "confidence": 0.9, "model": f"offline-{k}"} for k, v in labels.items()},
            "gate": {"score": 0.9, "passed": True, "checks": {}, "model": "offline-judge"}, "gate_history": [],
            "writer_model": "offline-writer", "model_calls": 7, "tokens": 1400, "escalation_reason": None}


def test_support_contradiction_rules() -> None:
    assert support_insights.contradictions(_case(intent="general", priority="critical", sentiment="neutral")) == [
        "general_intent_at_critical"]
    assert support_insights.contradictions(_case(intent="billing", priority="low", sentiment="angry")) == ["angry_at_low"]
    assert support_insights.contradictions(_case(intent="billing", priority="high", sentiment="angry")) == []


def test_support_usage_and_fallback() -> None:
    case = _case(intent="billing", language="en", priority="high", sentiment="neutral")
    use = support_insights.usage(case)
    assert sum(c for c, _ in use.values()) == 7 and sum(t for _, t in use.values()) == 1400
    assert use["offline-writer"][0] == 2  # 7 calls: 4 classifiers, 1 gate, the rest the writer's
    assert not support_insights.fallback(case, PIPELINE)
    assert support_insights.fallback({**case, "writer_model": "offline-writer-strong"}, PIPELINE)
    case["labels"]["intent"]["model"] = "some-fallback"
    assert support_insights.fallback(case, PIPELINE)


def test_read_a_case_and_a_dead_letter() -> None:
    case = {**_case(intent="general", priority="critical", sentiment="satisfied", language="en"),
            "escalation_reason": "CRITICAL"}
    headers = {"tenant_id": "acme", "attempt": "2", "entered_ms": "1000"}
    record = {**new_case("c1", "acme", {"subject": "s", "body": "b"}, 0), **case}
    end = read(PIPELINE, "tickets.escalations", headers, avro.encode("dev.triage.Case", record), 4000)
    assert (end.tenant, end.outcome, end.escalated, end.reason, end.latency_ms, end.attempt) == (
        "acme", "tickets.escalations", True, "CRITICAL", 3000, 2)
    assert set(end.contradictions) == {"general_intent_at_critical", "satisfied_at_critical"}
    dl = read(PIPELINE, "tickets.dlq.ingest", {"tenant_id": "globex", "dlq.step": "ingest", "dlq.reason": "MALFORMED"},
              b"not json", 10)
    assert (dl.tenant, dl.outcome, dl.reason, dl.escalated) == ("globex", "dead_letter", "ingest:MALFORMED", False)
    # a value that cannot be read still counts as its outcome
    assert read(PIPELINE, "tickets.responses", {"tenant_id": "acme"}, b"\x00garbage", 10).outcome == "tickets.responses"
