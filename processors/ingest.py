"""ingest: validate what users put on tickets.in, give it an identity, and pass it on as a Case.

Accepts Avro (Confluent-framed Ticket) or JSON (header ``content-type: application/json``; sniffed when the
header is absent). Anything it cannot accept raises an InputError, which the runtime dead-letters to
``tickets.dlq.ingest`` with the original bytes and the error's code as ``dlq.reason``.
"""
from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from typing import Any

from processors.case import new_case
from processors.injection import suspicious
from streams import avro
from streams.dead_letter import source_id
from streams.errors import EncodingError, MalformedInput, Oversized, SchemaInvalid, UnknownTenant
from streams.records import Emit, Record
from streams.step import StepContext
from processors.topology import IN, VALID

_OPTIONAL = ("ticket_id", "customer_id", "channel")
MAX_KEY_CHARS = 200
MAX_SUBJECT_CHARS = 1000
MAX_FIELD_CHARS = 200  # ticket_id, customer_id, channel
# Identifiers end up in terminals, log lines, headers and Redis keys: none may hold a control character.
IDENTIFIERS = ("tenant_id", "ticket_id", "customer_id", "channel")
# Cc: C0, DEL and C1 (ESC starts terminal sequences, NUL and newline cut or forge lines); Cf: format characters
# (bidi overrides reorder what an operator reads, zero-width ones hide); Zl/Zp: line and paragraph separators;
# Cs: a lone surrogate, which is no character at all.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def control_character(text: str) -> str | None:
    """How the first control character of ``text`` is described (``U+001B at 4``), or None if it has none."""
    for i, ch in enumerate(text):
        if unicodedata.category(ch) in _CONTROL_CATEGORIES:
            return f"U+{ord(ch):04X} ({unicodedata.name(ch, 'control')}) at position {i}"
    return None


def _lone_surrogate(doc: dict[str, Any]) -> str | None:
    """The top-level field of ``doc`` holding a lone surrogate (``"\\ud800"``) in its name or value: JSON may
    spell one, but no UTF-8 text can hold it, so nothing could write the ticket on."""
    for key, value in doc.items():
        for text in (key, json.dumps(value, ensure_ascii=False)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return key.encode("utf-8", "backslashreplace").decode()
    return None


def parse_json_ticket(raw: bytes) -> dict[str, Any]:
    """A ticket from JSON bytes. Raises EncodingError, MalformedInput or SchemaInvalid."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EncodingError(f"value is not UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedInput(f"value is not JSON: {exc}") from exc
    except RecursionError as exc:
        # Arrays or objects nested past the parser's depth: no ticket is shaped like that.
        raise MalformedInput("value is not a ticket: JSON nested too deeply") from exc
    if not isinstance(doc, dict):
        raise SchemaInvalid("a ticket must be a JSON object")
    try:
        where = _lone_surrogate(doc)
    except RecursionError as exc:
        raise MalformedInput("value is not a ticket: JSON nested too deeply") from exc
    if where is not None:
        raise EncodingError(f"field {where} holds a lone surrogate (an unpaired \\ud800-\\udfff escape): not text")
    return doc


def validate(doc: dict[str, Any], *, tenants: tuple[str, ...], max_body_chars: int) -> dict[str, Any]:
    """The ticket fields we keep, checked. Unknown fields (e.g. ``expected``) are ignored."""
    problems: list[str] = []
    for name in ("tenant_id", "body"):
        if name not in doc:
            problems.append(f"{name} is missing")
        elif not isinstance(doc[name], str):
            problems.append(f"{name} must be a string, not {type(doc[name]).__name__}")
    if "subject" in doc and doc["subject"] is not None and not isinstance(doc["subject"], str):
        problems.append(f"subject must be a string, not {type(doc['subject']).__name__}")
    for name in _OPTIONAL:
        if doc.get(name) is not None and not isinstance(doc[name], str):
            problems.append(f"{name} must be a string")
    if problems:
        raise SchemaInvalid("; ".join(problems))
    body = doc["body"]
    if len(body) > max_body_chars:
        raise Oversized(f"body has {len(body)} characters; the limit is {max_body_chars}")
    # Every field that reaches a prompt is bounded: the subject goes into every model call of the ticket.
    for name, limit in (("subject", MAX_SUBJECT_CHARS), *((n, MAX_FIELD_CHARS) for n in _OPTIONAL)):
        if len(doc.get(name) or "") > limit:
            raise Oversized(f"{name} has {len(doc[name])} characters; the limit is {limit}")
    for name in IDENTIFIERS:
        found = control_character(doc.get(name) or "")
        if found:
            raise MalformedInput(f"{name} holds a control character, {found}; identifiers may not")
    if not body.strip():
        raise SchemaInvalid("body is blank")
    if doc["tenant_id"] not in tenants:
        raise UnknownTenant(f"tenant {doc['tenant_id']!r} is not configured (known: {', '.join(tenants)})")
    return {"tenant_id": doc["tenant_id"], "subject": doc.get("subject") or "", "body": body,
            **{k: doc.get(k) for k in _OPTIONAL}}


def new_traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def _traceparent(given: str | None) -> str:
    """The producer's W3C traceparent if it is one, else a new trace. Every later record carries this header:
    anything else in it (megabytes, say) would make every one of them too big to write."""
    return given if given and _TRACEPARENT.fullmatch(given) else new_traceparent()


class Ingest:
    name = "ingest"
    inputs = (IN,)
    stateful = False

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        raw = record.raw or b""
        settings = ctx.settings
        # A cheap bound before parsing, loose enough for any text within the character limit: JSON may spell
        # a character as a 12-byte surrogate pair escape (the exact limit is checked on the parsed body).
        if len(raw) > settings.max_body_chars * 12 + 65536:
            raise Oversized(f"value of {len(raw)} bytes is over the ticket size limit")
        ctype = (record.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype == "application/json" or (not ctype and raw[:1] in (b"{", b"[", b" ")):
            doc, fmt = parse_json_ticket(raw), "json"
        else:
            try:
                doc, fmt = avro.decode(raw, avro.TICKET), "avro"
            except MalformedInput as exc:
                if isinstance(exc.__cause__, UnicodeDecodeError):  # a string field that is not UTF-8
                    raise EncodingError(str(exc)) from exc
                raise
        ticket = validate(doc, tenants=settings.tenants, max_body_chars=settings.max_body_chars)
        found = control_character(record.key or "")
        if found:
            # The key is the correlation ID: on every later record, log line and the operator's screen.
            raise MalformedInput(f"correlation ID (the record key) holds a control character, {found}; "
                                 "identifiers may not")
        cid = record.key if record.key and len(record.key) <= MAX_KEY_CHARS else None
        # Keyless tickets get an ID that is stable if this record is delivered again after a crash.
        cid = cid or source_id(record.topic, record.partition, record.offset)
        now = int(time.time() * 1000)
        case = new_case(cid, ticket["tenant_id"], ticket, now)
        case["trail"] = [f"ingest: accepted ({fmt})"]
        if suspicious(f"{ticket['subject']}\n{ticket['body']}"):
            # Not rejected: a real customer may write oddly. Flagged, so the labels it asks for are not honoured.
            case["flags"] = ["INJECTION_SUSPECTED"]
            case["trail"].append("ingest: instruction-like text flagged (INJECTION_SUSPECTED)")
        headers = {"correlation_id": cid, "tenant_id": ticket["tenant_id"], "attempt": str(record.attempt),
                   "traceparent": _traceparent(record.headers.get("traceparent")), "hops": "0"}
        return [Emit(VALID, case, key=cid, headers=headers)]
