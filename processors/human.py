"""How the queue page answers a support ticket by hand: the reply becomes the ticket's response, a Case.

The page (``streams.ui``) knows entries, tenants and the ledger; what an answer *is* belongs to the pipeline.
"""
from __future__ import annotations

from typing import Any

from processors.case import evolve, new_case
from processors.topology import IN, RESPONSES
from streams import avro
from streams.ui.queue import DEAD_LETTER, Entry, NotAnswerable

TOPIC = RESPONSES
"""Where an answer by hand goes: the pipeline's responses, like any other."""


def case_for_answer(entry: Entry, tenant: str) -> dict[str, Any]:
    """The Case an answer by hand is built on: the queued Case, or for a dead letter of ``ingest`` a Case
    made from the ticket it rejected. NotAnswerable when the entry carries no ticket."""
    entry = entry.load()  # one read by offset for what follows
    case = entry.case()
    if case is not None:
        return case
    if entry.kind == DEAD_LETTER and entry.source_topic == IN:
        t = entry.ticket() or {}
        if t.get("tenant_id") == tenant and isinstance(t.get("body"), str) and entry.correlation_id:
            fields = {k: (t.get(k) if isinstance(t.get(k), str) else None)
                      for k in ("subject", "body", "ticket_id", "customer_id", "channel")}
            case = new_case(entry.correlation_id, tenant, fields, entry.timestamp_ms)
            case["trail"] = [f"ingest: dead-lettered ({entry.reason})"]
            return case
    raise NotAnswerable("this entry carries no ticket that can be answered")


def answer(entry: Entry, tenant: str, text: str) -> tuple[str, bytes]:
    """The correlation ID and the value of the response that answers ``entry`` with ``text``."""
    case = case_for_answer(entry, tenant)
    out = evolve(case, "human: answered by hand in the queue", reply=text, writer_model="human",
                 citations=[], route="human")
    return entry.correlation_id or case["correlation_id"], avro.encode(avro.CASE, out, topic=TOPIC)
