"""What users do with the pipeline: put tickets in, read records out. Used by the CLI, the demo and tests."""
from __future__ import annotations

import base64
import json
import logging
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streams import avro, pipelines
from streams.kafka_io import KafkaFailure, producer_config, reader_config, unread
from streams.records import decode_key, message_headers

log = logging.getLogger("triage.client")
TICKET_FIELDS = ("tenant_id", "subject", "body", "ticket_id", "customer_id", "channel")


@dataclass(frozen=True)
class Sent:
    correlation_id: str
    tenant_id: str
    ticket_id: str | None


def ticket_record(doc: dict[str, Any]) -> dict[str, Any]:
    """The Avro Ticket for a JSON ticket; ``expected`` and other unknown fields are dropped."""
    rec = {k: doc.get(k) for k in TICKET_FIELDS}
    rec["subject"] = rec["subject"] or ""
    rec["submitted_at_ms"] = int(time.time() * 1000)
    rec["labels"] = {}
    return rec


class InputProducer:
    """Sends JSON objects to a pipeline's input topic, each keyed by a new correlation ID (or its own
    ``correlation_id`` field), ``content-type: application/json``."""

    def __init__(self, bootstrap: str, *, as_json: bool = True, topic: str | None = None) -> None:
        self._p = Producer(producer_config(bootstrap, None))
        self._as_json, self._topic = as_json, topic or pipelines.active().input
        self._errors: list[str] = []

    def _report(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.key()!r}: {err}")

    def send(self, doc: dict[str, Any], correlation_id: str | None = None,
             headers: dict[str, str] | None = None) -> Sent:
        given = doc.get("correlation_id")
        cid = correlation_id or (given if isinstance(given, str) and given.strip() else str(uuid.uuid4()))
        tenant = doc.get("tenant_id") if isinstance(doc.get("tenant_id"), str) else None
        hdrs = {"content-type": "application/json", "correlation_id": cid, **({"tenant_id": tenant} if tenant else {})}
        hdrs.update(headers or {})
        self.send_raw(json.dumps(doc, ensure_ascii=False).encode(), cid, hdrs)
        return Sent(cid, tenant or "-", None)

    def send_raw(self, value: bytes | None, key: str | None, headers: dict[str, str]) -> None:
        while True:
            try:
                self._p.produce(self._topic, value=value, key=key.encode() if key is not None else None,
                                headers=[(k, v.encode()) for k, v in headers.items()], on_delivery=self._report)
                break
            except BufferError:
                self._p.poll(0.1)
        self._p.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        left = self._p.flush(timeout)
        if left or self._errors:
            raise RuntimeError(f"{left} records not delivered; errors: {self._errors[:5]}")

    def close(self) -> None:
        """Drop the broker connections now, not whenever the object is collected: a producer still open when
        its broker stops prints librdkafka's ``FAIL ... Connection refused`` lines."""
        self._p.close()


class TicketProducer(InputProducer):
    """Sends tickets to tickets.in, Avro by default or JSON (``content-type: application/json``). Avro is framed
    with the id ``registry`` has for the Ticket schema on that topic (default: the process's, :func:`avro.active`;
    a Schema Registry registers it under ``tickets.in-value`` at the first send)."""

    def __init__(self, bootstrap: str, *, as_json: bool = False, topic: str | None = None,
                 registry: avro.SchemaSource | None = None) -> None:
        super().__init__(bootstrap, as_json=as_json, topic=topic)
        self._registry = registry

    def send(self, doc: dict[str, Any], correlation_id: str | None = None,
             headers: dict[str, str] | None = None) -> Sent:
        cid = correlation_id or str(uuid.uuid4())
        if self._as_json:
            value = json.dumps({k: doc.get(k) for k in TICKET_FIELDS if k in doc}).encode()
            hdrs = {"content-type": "application/json"}
        else:
            value = avro.encode(avro.TICKET, ticket_record(doc), registry=self._registry, topic=self._topic)
            hdrs = {"content-type": "avro/binary"}
        hdrs.update(headers or {})
        self.send_raw(value, cid, hdrs)
        return Sent(cid, str(doc.get("tenant_id")), doc.get("ticket_id"))


def decode_value(topic: str, raw: bytes | None) -> Any:
    """A record's value for humans: Avro decoded by the topic's schema, else JSON, else text or base64."""
    if raw is None:
        return None
    schema = pipelines.active().schema_of(topic)
    if schema is not None:
        try:
            return avro.decode(raw, schema)
        except Exception:  # noqa: BLE001 - display only: fall through to a raw view
            pass
    if raw[:1] == b"\x00":
        try:
            return {"avro": avro.decode(raw, avro.TICKET)}
        except Exception:  # noqa: BLE001
            pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # not JSON, or nested past the parser (a dead letter's bytes)
        return text if len(text) <= 10_000 else text[:10_000] + f"... ({len(text)} chars)"


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _invisible(ch: str) -> bool:
    # Not printable and not a space: C0/C1 controls (ESC starts terminal sequences), format characters (bidi
    # overrides, zero-width), line separators, lone surrogates. Spaces such as U+3000 are text.
    return not ch.isprintable() and unicodedata.category(ch) != "Zs"


def visible(value: object) -> str:
    """``value`` as text for a terminal, on one line: every control or format character spelt out (``\\x1b``,
    ``\\n``, ``\\u202e``), so data can neither move the cursor, colour the screen, nor forge a line."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if not _invisible(ch):
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        else:
            n = ord(ch)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return "".join(out)


def json_text(doc: Any, *, indent: int | None = None) -> str:
    """JSON for a terminal: readable non-ASCII text, but every character a terminal would act on escaped.
    ``json.dumps`` escapes C0 controls itself; C1 controls, bidi and zero-width characters and lone surrogates
    it leaves raw with ``ensure_ascii=False``, so they are written as ``\\uXXXX`` (still the same JSON)."""
    text = json.dumps(doc, ensure_ascii=False, default=str, indent=indent)

    def escape(ch: str) -> str:
        if ch == "\n" or not _invisible(ch):  # a newline here is indentation: inside strings json escaped it
            return ch
        n = ord(ch)
        if n < 0x10000:
            return f"\\u{n:04x}"
        n -= 0x10000
        return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"

    return text if text.isprintable() else "".join(escape(ch) for ch in text)


@dataclass(frozen=True)
class Out:
    topic: str
    partition: int
    offset: int
    key: str | None
    headers: dict[str, str]
    raw: bytes | None
    timestamp_ms: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset, "key": self.key,
                "headers": self.headers, "value": decode_value(self.topic, self.raw)}


class RecordReader:
    """Reads single records by their (topic, partition, offset): one assign()ed consumer, ``read_committed``,
    no group, nothing committed, reused from one read to the next (one read at a time; thread-safe).

    For a page that lists records by their offsets and shows one when asked, instead of keeping every
    record's bytes in memory, and for a replay of one known record without scanning its topic."""

    def __init__(self, bootstrap: str) -> None:
        self._conf = reader_config(bootstrap, f"triage.reader.at.{uuid.uuid4()}", **{
            "auto.offset.reset": "earliest", "enable.partition.eof": True, "fetch.wait.max.ms": 50})
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()

    def read(self, topic: str, partition: int, offset: int, *, timeout: float = 15.0) -> Out | None:
        """The committed record at exactly that offset, or None if there is none: past the end, deleted by
        retention or compaction, or not a committed data record (an aborted one, a transaction marker).
        Raises :class:`KafkaFailure` when the broker does not answer within ``timeout``."""
        if offset < 0 or partition < 0:
            return None
        with self._lock:
            if self._consumer is None:
                self._consumer = Consumer(self._conf)
            c = self._consumer
            try:
                return self._read(c, topic, partition, offset, timeout)
            except BaseException:
                # A consumer that failed or stalled is not trusted with the next read (librdkafka #5153).
                self._consumer = None
                c.close()
                raise
            finally:
                if self._consumer is c:
                    c.unassign()

    @staticmethod
    def _read(c: Consumer, topic: str, partition: int, offset: int, timeout: float) -> Out | None:
        c.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaFailure(f"reading {topic}/{partition}/{offset} took over {timeout:.0f} s",
                                   abortable=False, fatal=False, retriable=True)
            m = c.poll(min(left, 1.0))
            if m is None or m.topic() != topic or m.partition() != partition:
                continue
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return None  # nothing committed at or after the offset
                if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    return None
                if err.fatal() or not err.retriable():
                    raise KafkaFailure(f"reading {topic}/{partition}/{offset}: {err}", abortable=False,
                                       fatal=err.fatal(), retriable=False, code=err.name())
                continue
            if m.offset() < offset:
                continue  # fetched for an earlier assignment
            if m.offset() > offset:
                return None  # the offset is gone (retention, compaction) or was no committed record
            return Out(m.topic(), m.partition(), m.offset(), decode_key(m.key()), message_headers(m), m.value(),
                       m.timestamp()[1])

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def read_record(bootstrap: str, topic: str, partition: int, offset: int, *, timeout: float = 15.0) -> Out | None:
    """The committed record at ``topic/partition/offset``, or None (see :meth:`RecordReader.read`); one
    consumer made for this read. To read many, keep one :class:`RecordReader`."""
    reader = RecordReader(bootstrap)
    try:
        return reader.read(topic, partition, offset, timeout=timeout)
    finally:
        reader.close()


def read(bootstrap: str, topics: Iterable[str], *, from_beginning: bool = True, timeout: float = 5.0,
         idle: float | None = None, stop: Callable[[Out], bool] | None = None,
         max_records: int | None = None, stall_s: float = 10.0) -> Iterator[Out]:
    """Committed records of ``topics`` (no consumer group, nothing committed).

    Ends after ``timeout`` seconds in all, at ``max_records``, when ``stop(record)`` says so, or after ``idle``
    seconds without a record; from the beginning, ``idle`` counts only once every partition has been read up
    to where it ended when the read began, so a slow fetch cannot cut a listing short.

    A consumer that has received nothing for ``stall_s`` while a partition has committed records past its
    position is replaced by a fresh one at the same positions: an assign()ed librdkafka consumer can stop
    fetching after a broker restart without reporting anything (librdkafka #5153; seen in the chaos test).
    """
    reader = Reader(bootstrap, topics, from_beginning=from_beginning)
    try:
        yield from reader.records(timeout=timeout, idle=idle, stop=stop, max_records=max_records, stall_s=stall_s)
    finally:
        reader.close()


class Reader:
    """The consumer behind :func:`read`, which replaces it when it stops fetching."""

    def __init__(self, bootstrap: str, topics: Iterable[str], *, from_beginning: bool = True) -> None:
        self._conf = reader_config(bootstrap, f"triage.reader.{uuid.uuid4()}", **{
            "auto.offset.reset": "earliest" if from_beginning else "latest", "fetch.wait.max.ms": 50})
        self.consumer = Consumer(self._conf)
        self.replaced = 0
        try:
            md = self.consumer.list_topics(timeout=10)
            self._tps = [TopicPartition(t, p) for t in topics if t in md.topics for p in md.topics[t].partitions]
            ends = {(tp.topic, tp.partition): _watermarks(self.consumer, tp) for tp in self._tps}
            # Where each partition ended (read_committed: its last stable offset) when the read began.
            self._ends = ends if from_beginning else {}
            # The next offset to read in each partition, as far as this reader knows. A consumer's position() is
            # unknown (-1001) until it hands out a record of that partition, so a replacement could not tell
            # where its predecessor stopped: it would read a finished partition again from the start. Reading
            # from the end, the end is fixed now, so a replacement does not skip what came in meanwhile.
            self._next: dict[tuple[str, int], int] = {} if from_beginning else {k: end for k, (_, end) in ends.items()}
            self.consumer.assign(self._positions(ask=False))
        except BaseException:
            self.consumer.close()
            raise

    def records(self, *, timeout: float, idle: float | None = None, stop: Callable[[Out], bool] | None = None,
                max_records: int | None = None, stall_s: float = 10.0) -> Iterator[Out]:
        deadline = time.monotonic() + timeout
        last = checked = time.monotonic()
        caught_up = not self._ends
        n = 0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if not caught_up and now - last > 1.0:
                caught_up = _reached(self._positions(), self._ends)
            if idle is not None and caught_up and now - last > idle:
                return
            msgs = self.consumer.consume(500, 0.2)
            for m in msgs:
                if m.error():
                    continue
                last = time.monotonic()
                self._next[(m.topic(), m.partition())] = m.offset() + 1
                out = Out(m.topic(), m.partition(), m.offset(), decode_key(m.key()), message_headers(m), m.value(),
                          m.timestamp()[1])
                yield out
                n += 1
                if (max_records is not None and n >= max_records) or (stop is not None and stop(out)):
                    return
            if not msgs and time.monotonic() - max(last, checked) > stall_s:
                checked = time.monotonic()
                if behind(self.consumer, self._positions()):
                    self._replace()

    def read_to_end(self) -> bool:
        """Whether every partition has been read up to where it ended when the read began (from the beginning)."""
        return _reached(self._positions(), self._ends)

    def _positions(self, ask: bool = True) -> list[TopicPartition]:
        """Each partition's next offset: the consumer's position where it has one (it steps past commit markers
        and aborted records), else the offset after the last record handed out, else the start."""
        if ask:
            for tp in self.consumer.position(self._tps):
                key = (tp.topic, tp.partition)
                if tp.offset > self._next.get(key, -1):
                    self._next[key] = tp.offset
        return [TopicPartition(tp.topic, tp.partition, self._next.get((tp.topic, tp.partition), OFFSET_BEGINNING))
                for tp in self._tps]

    def _replace(self) -> None:
        log.warning("the reader received nothing while records wait; replacing its consumer")
        positions = self._positions()
        self.consumer.close()
        self.consumer = Consumer(self._conf)
        self.consumer.assign(positions)
        self.replaced += 1

    def close(self) -> None:
        self.consumer.close()


def _watermarks(c: Consumer, tp: TopicPartition, patience: float = 30.0) -> tuple[int, int]:
    """(low, end) of ``tp``. A topic just created has no leader for a moment (NOT_LEADER_FOR_PARTITION): asked
    again until ``patience`` runs out."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return c.get_watermark_offsets(tp, timeout=10)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _reached(positions: list[TopicPartition], ends: dict[tuple[str, int], tuple[int, int]]) -> bool:
    """Whether every partition has been read up to its end at the start."""
    for tp in positions:
        low, end = ends[(tp.topic, tp.partition)]
        if end > low and tp.offset < end:
            return False
    return True


def behind(c: Consumer, positions: list[TopicPartition]) -> bool:
    """Whether some partition has committed records past its position (an unknown position, below zero, counts
    from the log start)."""
    for tp in positions:
        try:
            if unread(c, tp.topic, tp.partition, tp.offset):
                return True
        except KafkaException:
            return False  # the broker is away: nothing to conclude yet
    return False


def wait_for_outcomes(bootstrap: str, correlation_ids: set[str], timeout: float,
                      progress: Callable[[int], None] | None = None) -> dict[str, list[Out]]:
    """Every terminal record of the given tickets, read until each has one (or ``timeout``)."""
    seen: dict[str, list[Out]] = {}
    pending = set(correlation_ids)

    def done(o: Out) -> bool:
        cid = o.headers.get("correlation_id") or o.key or ""
        if cid in correlation_ids:
            seen.setdefault(cid, []).append(o)
            if cid in pending:
                pending.discard(cid)
                if progress:
                    progress(len(correlation_ids) - len(pending))
        return not pending

    for _ in read(bootstrap, pipelines.active().terminal_topics(), timeout=timeout, stop=done):
        pass
    return seen
