"""Ingest's validation rules, without Kafka: each bad input gets its machine-readable reason."""
from __future__ import annotations

import pytest

from processors.ingest import parse_json_ticket, validate
from streams.errors import TriageError

TENANTS = ("acme", "globex")


def _check(raw: bytes) -> dict:
    return validate(parse_json_ticket(raw), tenants=TENANTS, max_body_chars=20_000)


@pytest.mark.parametrize("raw, code", [
    (b"ticket: my card was charged twice", "MALFORMED"),
    (b'{"tenant_id": "acme", "subject": "Refund", "body": "I was charged tw', "MALFORMED"),
    ('{"tenant_id": "acme", "subject": "Caf\u00e9", "body": "x"}'.encode("latin-1"), "ENCODING"),
    (b'{"tenant_id": "acme", "subject": "No body here"}', "SCHEMA_INVALID"),
    (b'{"tenant_id": "acme", "subject": 42, "body": ["not", "a", "string"]}', "SCHEMA_INVALID"),
    (b'{"tenant_id": "acme", "subject": "", "body": "   "}', "SCHEMA_INVALID"),
    (b'[1, 2]', "SCHEMA_INVALID"),
    (b'{"tenant_id": "initech", "body": "Please refund"}', "UNKNOWN_TENANT"),
    (('{"tenant_id": "acme", "body": "%s"}' % ("x" * 20_001)).encode(), "OVERSIZED"),
    (('{"tenant_id": "acme", "subject": "%s", "body": "x"}' % ("s" * 1_001)).encode(), "OVERSIZED"),
    (('{"tenant_id": "acme", "ticket_id": "%s", "body": "x"}' % ("t" * 201)).encode(), "OVERSIZED"),
])
def test_reasons(raw: bytes, code: str) -> None:
    with pytest.raises(TriageError) as info:
        _check(raw)
    assert info.value.code == code
    assert not info.value.retryable


def test_unknown_fields_are_ignored_and_optional_ones_kept() -> None:
    t = _check(b'{"tenant_id": "acme", "body": "hello there", "expected": {"intent": "x"}, "channel": "web"}')
    assert t == {"tenant_id": "acme", "subject": "", "body": "hello there", "ticket_id": None,
                 "customer_id": None, "channel": "web"}


async def test_text_within_the_character_limit_is_never_rejected_for_its_escaped_bytes() -> None:
    """JSON may spell each character as a 6-byte escape (12 for a surrogate pair): the byte pre-check before
    parsing must leave room for that, and the character limit decide."""
    import json

    from processors.ingest import Ingest
    from streams import config
    from streams.records import Record
    from streams.step import StepContext

    settings = config.load({"TRIAGE_TENANTS": "acme,globex"})
    ctx = StepContext("ingest", settings, None, None)  # type: ignore[arg-type]
    for body in ("\u53f0" * (settings.max_body_chars - 10), "\U0001f600" * (settings.max_body_chars // 2 - 10)):
        raw = json.dumps({"tenant_id": "acme", "subject": "s", "body": body}).encode()  # ASCII, escaped
        assert len(raw) > settings.max_body_chars * 4 + 4096  # what the old pre-check refused
        [emit] = await Ingest().handle(Record("tickets.in", 0, 1, "k", raw, {}, 0), ctx)
        assert emit.value["ticket"]["body"] == body
