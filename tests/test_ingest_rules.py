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
