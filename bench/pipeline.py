"""The pipeline in one process: the real step classes called directly, no Kafka.

Used by the ``sequential`` and ``langgraph`` lines, and to capture the records each step emits for each
sample ticket (the ``limit`` line replays them over Kafka, so its records have the real sizes).

A record moves from step to step as a :class:`streams.records.Record` whose value is the step's output
dict (no Avro round trip: an in-process orchestrator has no reason to serialise). Headers are carried the
way :class:`streams.runtime.StepRunner` carries them. A step that raises a ``TriageError`` ends the ticket
in ``dlq``, as the runtime would dead-letter it.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.classify import Classify
from processors.generate import Generate
from processors.ingest import Ingest
from processors.join import Join
from processors.quality_gate import QualityGate
from processors.retrieve import Retrieve
from processors.route import Route
from streams import avro
from streams.client import ticket_record
from streams.config import Settings
from streams.context import RecordContext, bind, reset
from streams.errors import TriageError
from streams.models import ModelGateway
from streams.records import CARRIED_HEADERS, Emit, Record
from streams.step import StepContext
from processors.topology import CLASSIFIERS, DRAFTS, ENRICHED, ESCALATIONS, IN, JOIN_STATE, JOINED, RESPONSES, ROUTED, TOPIC_SCHEMA

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "deploy" / "sample" / "tickets.jsonl"

TERMINAL = {RESPONSES: "responses", ESCALATIONS: "escalations"}
# The step that consumes each topic after the join (the classifiers and the join are handled apart).
NEXT_STEP = {JOINED: "route", ROUTED: "retrieve", ENRICHED: "generate", DRAFTS: "gate"}


def sample_tickets() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]


def correlation_id(tag: str, template: int, seq: int) -> str:
    """``<tag>-<template>-<seq>``: the template (index in the sample) is part of the id, so the limit line's
    pass-through steps know which captured records to replay for a ticket."""
    return f"{tag}-{template}-{seq}"


def template_of(cid: str) -> int:
    return int(cid.split("-")[-2])


def _hops(headers: dict[str, str]) -> int:
    try:
        return max(0, int(headers.get("hops", "0")))
    except ValueError:
        return 0


@dataclass
class Trace:
    """What each step emitted for one ticket: ``(step, hops of its input) -> [(topic, value, headers)]``."""

    steps: dict[tuple[str, int], list[tuple[str, Any, dict[str, str]]]] = field(default_factory=dict)
    outcome: str = ""


class Pipeline:
    """The step objects and their contexts, and :meth:`run` to take one ticket to its terminal outcome."""

    def __init__(self, settings: Settings, gateway: ModelGateway, redis: Any) -> None:
        self.settings = settings
        self.steps: dict[str, Any] = {"ingest": Ingest(), "route": Route(), "retrieve": Retrieve(),
                                      "generate": Generate(), "gate": QualityGate()}
        for c in CLASSIFIERS:
            self.steps[f"classify-{c}"] = Classify(c)
        self.ctx = {name: StepContext(name, settings, gateway, redis) for name in [*self.steps, "join"]}
        self.escalation_reasons: dict[str, int] = {}
        """Escalations by their ``escalation.reason`` header (to check that lines did the same work)."""

    # ---- one step ---------------------------------------------------------------------------------------
    async def call(self, name: str, record: Record, trace: Trace | None = None) -> list[Emit] | None:
        """The step's emits, or None when it failed (the runtime would dead-letter the record)."""
        token = bind(RecordContext(step=name, correlation_id=record.correlation_id, tenant_id=record.tenant_id,
                                   attempt=record.attempt, topic=record.topic, partition=record.partition,
                                   offset=record.offset))
        try:
            emits = await self.steps[name].handle(record, self.ctx[name])
        except TriageError:
            return None
        finally:
            reset(token)
        if trace is not None:
            trace.steps[(name, _hops(dict(record.headers)))] = [(e.topic, e.value, dict(e.headers)) for e in emits]
        for e in emits:
            if e.topic == ESCALATIONS:
                reason = e.headers.get("escalation.reason", "")
                self.escalation_reasons[reason] = self.escalation_reasons.get(reason, 0) + 1
        return emits

    @staticmethod
    def follow(record: Record, emit: Emit) -> Record:
        """The record a downstream step receives for ``emit`` (headers carried as the runtime does)."""
        headers = {k: record.headers[k] for k in CARRIED_HEADERS if k in record.headers}
        headers.setdefault("attempt", str(record.attempt))
        headers.update(emit.headers)
        # The bytes too: the join keeps a ticket's own tickets.valid bytes, as the runtime hands them over.
        raw, value = emit.value, emit.value
        schema = TOPIC_SCHEMA.get(emit.topic)
        if schema is not None and isinstance(value, (bytes, bytearray)):
            value = avro.decode(bytes(value), schema)
        elif schema is not None and value is not None:
            raw = avro.encode(schema, value)
        return Record(topic=emit.topic, partition=0, offset=0,
                      key=emit.key if emit.key is not None else record.key, raw=raw, headers=headers,
                      timestamp_ms=int(time.time() * 1000), value=value)

    # ---- the stages (also the LangGraph nodes' bodies) ------------------------------------------------------
    @staticmethod
    def first(ticket: dict[str, Any], cid: str) -> Record:
        """The tickets.in record a producer would send: the Avro Ticket, keyed by the correlation ID."""
        return Record(topic=IN, partition=0, offset=0, key=cid, raw=avro.encode(avro.TICKET, ticket_record(ticket)),
                      headers={"content-type": "avro/binary"}, timestamp_ms=int(time.time() * 1000))

    async def ingest(self, rec: Record, trace: Trace | None = None) -> Record | None:
        emits = await self.call("ingest", rec, trace)
        return self.follow(rec, emits[0]) if emits else None

    async def classify(self, classifier: str, valid: Record, trace: Trace | None = None) -> Record | None:
        emits = await self.call(f"classify-{classifier}", valid, trace)
        return self.follow(valid, emits[0]) if emits else None

    async def join(self, valid: Record, classified: list[Record | None]) -> Record:
        """The real Join, fed the ticket and its classifications; a fresh one per ticket (its state is per
        ticket anyway). A classifier that raised is simply missing, as after the join's timeout."""
        join = Join(self.settings.join_timeout_s)
        ctx = self.ctx["join"]
        loop_emits: list[Emit] = []
        for r in [valid, *[c for c in classified if c is not None]]:
            loop_emits = await join.handle(r, ctx)
        joined = [e for e in loop_emits if e.topic == JOINED]
        if not joined:  # fewer than four results: complete now with what there is, as the timeout would
            joined = [e for e in join.tick(10**15) if e.topic == JOINED]
        return self.follow(valid, joined[0])

    async def step(self, rec: Record, trace: Trace | None = None) -> Record | None:
        """Route, retrieve, generate or gate, by the record's topic."""
        emits = await self.call(NEXT_STEP[rec.topic], rec, trace)
        if not emits:
            return None
        out = [e for e in emits if e.topic != JOIN_STATE]
        return self.follow(rec, out[0])

    # ---- a whole ticket -----------------------------------------------------------------------------------
    async def run(self, ticket: dict[str, Any], cid: str, *, parallel: bool, trace: Trace | None = None) -> str:
        """Take one ticket through every step; returns its outcome: responses, escalations or dlq.

        ``parallel``: the four classifiers at once (asyncio.gather), else one after another."""
        valid = await self.ingest(self.first(ticket, cid), trace)
        if valid is None:
            return "dlq"
        if parallel:
            classified = list(await asyncio.gather(*(self.classify(c, valid, trace) for c in CLASSIFIERS)))
        else:
            classified = [await self.classify(c, valid, trace) for c in CLASSIFIERS]
        rec: Record | None = await self.join(valid, classified)
        while rec is not None and rec.topic not in TERMINAL:
            rec = await self.step(rec, trace)
        outcome = "dlq" if rec is None else TERMINAL[rec.topic]
        if trace is not None:
            trace.outcome = outcome
        return outcome

