"""Prometheus metrics of a worker, served on ``/metrics`` when the worker is given a port.

Labels are bounded sets only (step, topic, reason code, model, tenant, classifier): never a correlation ID.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

RECORDS_IN = Counter("triage_records_in_total", "Records consumed", ["step"])
RECORDS_OUT = Counter("triage_records_out_total", "Records produced (committed or not)", ["step", "topic"])
DEAD_LETTERS = Counter("triage_dead_letters_total", "Records dead-lettered", ["step", "reason"])
STEP_FAILURES = Counter("triage_step_failures_passed_on_total",
                        "Records a fan-out branch (a classifier) failed on, passed on as a failed result", ["step", "reason"])
STEP_SECONDS = Histogram("triage_step_seconds", "Time to handle one record", ["step"], buckets=_STEP_BUCKETS)
IN_FLIGHT = Gauge("triage_in_flight", "Records consumed and not yet committed", ["step"])
HOL_WAIT = Gauge("triage_head_of_line_seconds", "Longest time one record held its partition's commits", ["step"])
TRANSACTIONS = Counter("triage_transactions_total", "Kafka transactions", ["step", "outcome"])
STALLS = Counter("triage_consumer_stalls_total",
                 "Runners restarted because a partition had records to read that the consumer did not fetch", ["step"])
COMMIT_SECONDS = Histogram("triage_commit_seconds", "Time one transaction (outputs and offsets) took to commit",
                           ["step"], buckets=_STEP_BUCKETS)
MODEL_CALLS = Counter("triage_model_calls_total", "Model calls", ["model", "tenant", "outcome"])
MODEL_SECONDS = Histogram("triage_model_seconds", "Model call latency", ["model"], buckets=_STEP_BUCKETS)
MODEL_TOKENS = Counter("triage_model_tokens_total", "Tokens used", ["model", "tenant"])
MODEL_RETRIES = Counter("triage_model_retries_total", "Model calls retried", ["model", "reason"])
FALLBACKS = Counter("triage_model_fallbacks_total", "Answers that came from a fallback model", ["step"])
JOIN_PARTIAL = Counter("triage_join_partial_total", "Inputs a join sent on without a dependency it gave up on",
                       ["step"])
LOOP_ROUNDS = Counter("triage_loop_rounds_total", "Rounds of a bounded loop after the first", ["step"])
MEMO_HITS = Counter("triage_memo_hits_total", "Model calls answered by the memo", ["step"])
DRIFT_SCORE = Gauge("triage_drift_score", "Jensen-Shannon divergence of a classifier from its baseline", ["classifier"])
DRIFT_TRIPPED = Gauge("triage_drift_tripped", "1 while a classifier's drift monitor is tripped", ["classifier"])
MODEL_CONCURRENCY = Gauge("triage_model_concurrency_limit",
                          "Calls a worker may have in flight to a model (halved on time-outs, see streams/call_limit.py)",
                          ["model"])
CIRCUIT_REJECTED = Counter("triage_circuit_rejected_total", "Model calls refused by an open circuit", ["model"])
GUARD_TRIPS = Counter("triage_guard_trips_total", "Guards that stopped a ticket", ["guard"])


def serve(port: int) -> None:
    """Serve /metrics on 127.0.0.1:``port`` (0.0.0.0 inside a container: set TRIAGE_METRICS_HOST)."""
    import os
    start_http_server(port, addr=os.environ.get("TRIAGE_METRICS_HOST", "127.0.0.1"))
