"""The human queue behind the page: what is in it (:class:`QueueIndex`) and what a person does with it
(:mod:`streams.ui.resolve`).

Reading: one background consumer (a thread, ``read_committed``, no consumer group, nothing committed) reads
``tickets.escalations``, every ``tickets.dlq.<step>``, the replay ledger ``triage.dlq.replays`` and the
resolution ledger ``triage.human.resolutions`` from the beginning into memory, then follows them; it picks up
new topics and partitions every few seconds. Requests read the index, never Kafka; the page is as fresh as the
consumer (well under a second behind the committed log). Actions taken here are also noted in the index at
once, so the agent who acts sees the result on the next page.

Tenants: an entry belongs to the tenant in its ``tenant_id`` header. Dead letters of ``ingest`` carry no such
header (ingest failed before it knew the tenant), so for them the tenant the ticket itself claims is used
(``tenant_id`` of the JSON or Avro body, when it parses). Entries whose header and Case disagree belong to no
one and are shown to no one.

Answering and replaying are :mod:`streams.ui.resolve`'s: decided against the ledger after fencing, never
against this index.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams import avro, pipelines
from streams.client import RecordReader, behind, decode_value
from streams.kafka_io import KafkaFailure, reader_config
from streams.ledger import HUMAN_RESOLUTIONS, ledgers
from streams.records import decode_key, message_headers

log = logging.getLogger("triage.ui")

RESOLUTIONS = HUMAN_RESOLUTIONS


def queue_topics() -> tuple[str, ...]:
    """What the page lists: the pipeline's escalations (if it has any) and every dead-letter topic."""
    p = pipelines.active()
    escalations = p.extras.get("escalations")
    return (*([escalations] if escalations else []), *p.dead_letter_topics())
ESCALATION, DEAD_LETTER = "escalation", "dead-letter"
MAX_ANSWER_CHARS = 20_000


class QueueError(Exception):
    """An action that cannot be done; ``status`` is the HTTP status that says why."""

    status = 400


class NotAnswerable(QueueError):
    status = 422


class NotReplayable(QueueError):
    status = 422


class AlreadyResolved(QueueError):
    status = 409


class Gone(QueueError):
    """The entry's record is no longer in Kafka (retention deleted it, or its topic was made again)."""

    status = 410


# What the index keeps of a record is bounded whatever the record holds: the body is read again by offset when
# the entry is opened, so no record's bytes stay in memory.
MAX_SUMMARY_CHARS = 200
MAX_INDEX_HEADER_CHARS = 256
MAX_INDEX_HEADERS_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Entry:
    """One record of the queue: an escalation or a dead letter, with what the list shows of it.

    Entries in the index carry no bytes (``raw`` is None, ``opened`` False) and only the small headers;
    :meth:`QueueIndex.open` gives the entry with its record's bytes and all its headers, read by offset."""

    kind: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    headers: Mapping[str, str]
    tenant: str | None
    correlation_id: str
    step: str
    reason: str
    subject: str
    attempt: int
    raw: bytes | None = None
    opened: bool = False
    opener: Callable[["Entry"], "Entry"] | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def source_topic(self) -> str:
        """The topic a dead letter's bytes came from (``dlq.source``), or the entry's own topic."""
        if self.kind == ESCALATION:
            return self.topic
        return self.headers.get("dlq.source", "").split("/")[0]

    @property
    def replay_step(self) -> str:
        return self.topic.removeprefix(pipelines.active().dlq_topic(""))

    def load(self) -> "Entry":
        """This entry with its record's bytes (itself when it has them): read from Kafka by offset."""
        if self.opened:
            return self
        if self.opener is None:
            raise Gone("this entry's record cannot be read")
        return self.opener(self)

    def value(self) -> Any:
        """The body for humans: a Case, a Classification, a ticket (JSON or ``{"avro": ...}``) or raw text."""
        e = self.load()
        return decode_value(e.source_topic, e.raw)

    def case(self) -> dict[str, Any] | None:
        """The Case this entry carries, if its body is one."""
        e = self.load()
        if pipelines.active().schema_of(e.source_topic) != avro.CASE:
            return None
        try:
            return avro.decode(e.raw, avro.CASE)
        except Exception:  # noqa: BLE001 - a dead letter's bytes may be anything
            return None

    def ticket(self) -> dict[str, Any] | None:
        """The ticket fields of the body, whichever shape it has."""
        return _ticket_of(self.value())


def _ticket_of(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("ticket"), dict):  # a Case
        return {"tenant_id": value.get("tenant_id"), **value["ticket"]}
    if isinstance(value.get("avro"), dict):  # an Avro Ticket that could not be read as the topic's schema
        return value["avro"]
    if "body" in value or "subject" in value or "tenant_id" in value:  # a JSON ticket
        return value
    return None


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw not in (None, "") else default
    except ValueError:
        return default


def _short(text: str | None, limit: int = MAX_SUMMARY_CHARS) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _index_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers an index entry keeps: short ones only, a few KiB in all (a dead letter may carry 64 KiB)."""
    kept: dict[str, str] = {}
    room = MAX_INDEX_HEADERS_CHARS
    for k, v in headers.items():
        if len(k) + len(v) <= min(MAX_INDEX_HEADER_CHARS, room):
            kept[k] = v
            room -= len(k) + len(v)
    return kept


def make_entry(topic: str, partition: int, offset: int, timestamp_ms: int, key: str | None,
               headers: Mapping[str, str], raw: bytes | None, *, keep: bool = False,
               opener: Callable[[Entry], Entry] | None = None) -> Entry:
    """An entry for one record of a queue topic: with its bytes and all its headers if ``keep`` (an entry
    opened to be shown or acted on), else the bounded summary the index holds."""
    kind = ESCALATION if topic == pipelines.active().extras.get("escalations") else DEAD_LETTER
    source = topic if kind == ESCALATION else headers.get("dlq.source", "").split("/")[0]
    value = decode_value(source, raw)
    ticket = _ticket_of(value) or {}
    claimed = ticket.get("tenant_id") if isinstance(ticket.get("tenant_id"), str) else None
    if claimed is not None and len(claimed) > MAX_SUMMARY_CHARS:
        claimed = None  # no tenant has such a name
    header_tenant = headers.get("tenant_id") or None
    if header_tenant and claimed and header_tenant != claimed and isinstance(value, dict) and "ticket" in value:
        tenant = None  # a Case whose header and body disagree: nobody's
    else:
        tenant = header_tenant or claimed
    if kind == ESCALATION:
        case = value if isinstance(value, dict) else {}
        reason = case.get("escalation_reason") or headers.get("escalation.reason") or "UNKNOWN"
        trail = case.get("trail") or []
        step = "gate" if reason == "QUALITY_GATE" else (trail[-1].split(":", 1)[0] if trail else "route")
        if step not in pipelines.active().step_names:
            step = "route"
        ts = timestamp_ms
    else:
        reason = headers.get("dlq.reason") or "UNKNOWN"
        step = headers.get("dlq.step") or topic.removeprefix(pipelines.active().dlq_topic(""))
        ts = _int(headers.get("dlq.ts"), timestamp_ms)
    subject = ticket.get("subject") if isinstance(ticket.get("subject"), str) else ""
    cid = headers.get("correlation_id") or key or ""
    if not keep:
        key, cid, subject, reason, step = (_short(key) if key is not None else None), _short(cid), _short(subject), \
            _short(str(reason)), _short(step)
    return Entry(kind, topic, partition, offset, ts, key, dict(headers) if keep else _index_headers(headers),
                 tenant, cid, step, reason, subject, max(1, _int(headers.get("attempt"), 1)),
                 raw=raw if keep else None, opened=keep, opener=None if keep else opener)


def resolution_key(tenant: str, entry: Entry) -> str:
    return f"{tenant}/{entry.id}"


def ensure_resolutions_topic(bootstrap: str, partitions: int) -> None:
    """Create the compacted resolution ledger if it is missing (replication: the cluster's default)."""
    from streams.services.kafka_broker import TopicSpec, ensure_topics

    ensure_topics(bootstrap, [TopicSpec(RESOLUTIONS, partitions, -1, {"cleanup.policy": "compact"})])


class QueueIndex:
    """Every queue entry (its summary, never its bytes) and ledger record, in memory, kept current by one
    background consumer; :meth:`open` reads one entry's record by its offset."""

    def __init__(self, bootstrap: str, *, refresh_s: float = 5.0, stall_s: float = 30.0,
                 consumer: Callable[[dict[str, Any]], Consumer] = Consumer) -> None:
        self.bootstrap = bootstrap
        self._refresh_s = refresh_s
        self._stall_s = stall_s
        self._new_consumer = consumer
        self.restarts = 0
        """Times the consumer was started again (it failed, or stopped fetching while records waited)."""
        self._entries: dict[str, Entry] = {}
        self._resolutions: dict[str, dict[str, Any]] = {}
        self._replays: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader = RecordReader(bootstrap)

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> "QueueIndex":
        self._thread = threading.Thread(target=self._run, name="triage-ui-index", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float) -> bool:
        """True once the index has read every topic to the end it had when the index started."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        self._reader.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception:  # noqa: BLE001 - keep serving what we have; try again shortly
                log.exception("queue index consumer failed; restarting it in 2s")
                self.restarts += 1
                self._stop.wait(2)

    def _follow(self) -> None:
        c = self._new_consumer(reader_config(self.bootstrap, f"triage.ui.reader.{uuid.uuid4()}", **{
            "auto.offset.reset": "earliest", "enable.partition.eof": True, "fetch.wait.max.ms": 100}))
        assigned: set[tuple[str, int]] = set()
        awaiting_eof: set[tuple[str, int]] = set()
        last = time.monotonic()
        try:
            def refresh() -> bool:
                """Assign the queue partitions not yet assigned (a topic created or grown since); whether any."""
                md = c.list_topics(timeout=10)
                new = [(t, p) for t in (*queue_topics(), *ledgers()) if t in md.topics
                       for p in md.topics[t].partitions if (t, p) not in assigned]
                if new:
                    c.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in new])
                    assigned.update(new)
                    if not self._ready.is_set():
                        awaiting_eof.update(new)
                return bool(new)

            refresh()
            next_refresh = time.monotonic() + self._refresh_s
            while not self._stop.is_set():
                msgs = c.consume(500, 0.2)
                if msgs:
                    last = time.monotonic()
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            awaiting_eof.discard((m.topic(), m.partition()))
                        else:
                            log.debug("queue index: %s", err)
                        continue
                    self._add(m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(), message_headers(m),
                              m.value())
                if not awaiting_eof and not self._ready.is_set():
                    self._ready.set()
                if time.monotonic() >= next_refresh:
                    if refresh():
                        last = time.monotonic()  # partitions just assigned get their chance to fetch first
                    next_refresh = time.monotonic() + self._refresh_s
                    # An assign()ed consumer can stop fetching after a broker restart and say nothing (librdkafka
                    # #5153): the page would go stale for good. Read again from the start (adding is idempotent).
                    if time.monotonic() - last > self._stall_s:
                        if behind(c, c.position([TopicPartition(t, p) for t, p in assigned])):
                            raise KafkaFailure("the consumer stopped fetching while records wait", abortable=False,
                                               fatal=False, retriable=True)
                        last = time.monotonic()  # idle and caught up: look again after another stall_s
        finally:
            c.close()

    def _add(self, topic: str, partition: int, offset: int, ts: int, key: bytes | None,
             headers: dict[str, str], raw: bytes | None) -> None:
        k = decode_key(key) or None
        if topic in ledgers():
            table = self._resolutions if topic == RESOLUTIONS else self._replays
            if not k:
                return
            with self._lock:
                if raw is None:
                    table.pop(k, None)
                    return
                try:
                    info = json.loads(raw)
                except ValueError:
                    info = {}
                table[k] = info if isinstance(info, dict) else {}
            return
        try:
            entry = make_entry(topic, partition, offset, ts, k, headers, raw, opener=self.open)
        except Exception:  # noqa: BLE001 - one odd record must not stop the index
            log.warning("queue index: cannot read %s/%s/%s", topic, partition, offset, exc_info=True)
            return
        with self._lock:
            self._entries[entry.id] = entry

    # ---- queries (always per tenant) -------------------------------------------------------------------
    def entries(self, tenant: str, *, reason: str | None = None, step: str | None = None, kind: str | None = None,
                include_resolved: bool = False) -> list[Entry]:
        """The tenant's entries, newest first; resolved ones only if asked for."""
        with self._lock:
            rows = [e for e in self._entries.values() if e.tenant == tenant
                    and (include_resolved or resolution_key(tenant, e) not in self._resolutions)
                    and (reason is None or e.reason == reason) and (step is None or e.step == step)
                    and (kind is None or e.kind == kind)]
        rows.sort(key=lambda e: (e.timestamp_ms, e.offset), reverse=True)
        return rows

    def get(self, tenant: str, ident: str) -> Entry | None:
        """The entry ``topic/partition/offset`` if it exists *and* is the tenant's; otherwise None."""
        with self._lock:
            e = self._entries.get(ident)
        return e if e is not None and e.tenant == tenant else None

    def open(self, entry: Entry) -> Entry:
        """``entry`` with its record's bytes and all its headers, read from Kafka by its offset (blocking: call
        it off the event loop). Raises :class:`Gone` if the record is no longer there or is no longer the
        same tenant's (its topic was deleted and made again), and drops the entry from the index then."""
        if entry.opened:
            return entry
        out = self._reader.read(entry.topic, entry.partition, entry.offset)
        opened = None
        if out is not None:
            try:
                opened = make_entry(out.topic, out.partition, out.offset, out.timestamp_ms, out.key, out.headers,
                                    out.raw, keep=True)
            except Exception:  # noqa: BLE001 - it was read once; if it cannot be now, it is not the same record
                log.warning("queue index: cannot read %s again", entry.id, exc_info=True)
        if opened is None or opened.tenant != entry.tenant or opened.kind != entry.kind:
            with self._lock:
                if self._entries.get(entry.id) is entry:
                    del self._entries[entry.id]
            raise Gone("this entry's record is no longer in Kafka (retention deleted it)")
        return opened

    def resolution(self, tenant: str, entry: Entry) -> dict[str, Any] | None:
        with self._lock:
            return self._resolutions.get(resolution_key(tenant, entry))

    def replay_of(self, entry: Entry) -> dict[str, Any] | None:
        with self._lock:
            return self._replays.get(entry.id)

    def note_resolution(self, key: str, info: dict[str, Any]) -> None:
        with self._lock:
            self._resolutions[key] = info

    def note_replays(self, ids: Iterable[str], info: dict[str, Any]) -> None:
        with self._lock:
            for i in ids:
                self._replays.setdefault(i, info)


def answer_form() -> Any:
    """The pipeline's form of an answer by hand: ``TOPIC``, ``answer(entry, tenant, text) -> (correlation ID,
    value)`` and ``case_for_answer(entry, tenant)``. NotAnswerable when its entries can only be replayed."""
    form = pipelines.active().extras.get("human")
    if form is None:
        raise NotAnswerable(f"the pipeline {pipelines.active().name!r} takes no answers by hand; replay the entry")
    return form


def check_answerable(entry: Entry, tenant: str) -> None:
    """NotAnswerable unless the pipeline can answer ``entry`` by hand."""
    answer_form().case_for_answer(entry, tenant)
