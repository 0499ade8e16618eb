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
    # A lone surrogate is valid JSON but no text: an encoding error, not a schema one.
    (b'{"tenant_id": "acme", "body": "caf\\ud800e"}', "ENCODING"),
    (b'{"tenant_id": "acme", "body": "x", "expected": {"note": "\\udfff"}}', "ENCODING"),
    (b'{"tenant_id": "acme", "body": "x", "\\ud800": 1}', "ENCODING"),
    # Nested past the parser's depth: malformed input, not an internal error.
    (b'[' * 100_000, "MALFORMED"),
    (b'{"tenant_id": "acme", "body": "x", "expected": ' + b'{"a": ' * 50_000, "MALFORMED"),
    (b'{"tenant_id": "acme", "body": "x", "expected": ' + b'[' * 50_000 + b']' * 50_000 + b'}', "MALFORMED"),
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


CONTROLS = ["\x00", "\n", "\r", "\t", "\x1b[31m", "\x1b]0;owned\x07", "\x7f", "\x9b", "\u202e", "\u2066",
            "\u200b", "\u2028", "\ufeff", "\U000e0041"]


@pytest.mark.parametrize("field", ["tenant_id", "ticket_id", "customer_id", "channel"])
@pytest.mark.parametrize("bad", CONTROLS, ids=lambda c: c.encode("unicode_escape").decode())
def test_control_characters_in_identifiers_are_malformed(field: str, bad: str) -> None:
    import json
    doc = {"tenant_id": "acme", "ticket_id": "T-1", "customer_id": "C-1", "channel": "web", "body": "hello"}
    doc[field] = f"{doc[field]}{bad}x"
    with pytest.raises(TriageError) as info:
        _check(json.dumps(doc).encode())
    assert info.value.code == "MALFORMED"
    message = str(info.value)
    assert message.startswith(f"{field} holds a control character, U+"), message
    assert message.isprintable(), "the reason must not carry the character it refuses"


def test_text_fields_and_printable_identifiers_are_accepted() -> None:
    """Only identifiers are held to printable text: a body has lines, tabs and any script; an id may be
    markup-like or non-Latin (printing escapes it, ingest has no reason to refuse it)."""
    import json
    doc = {"tenant_id": "acme", "ticket_id": "[/x][bold]T-1", "customer_id": "\u9867\u5ba2-7 \u00e9",
           "subject": "Re: [/x] \u202e", "body": "line one\n\tline two \x1b[31m\u3000\u05e9\u05dc\u05d5\u05dd"}
    t = _check(json.dumps(doc).encode())
    assert (t["ticket_id"], t["customer_id"], t["body"]) == (doc["ticket_id"], doc["customer_id"], doc["body"])


async def test_the_correlation_id_and_avro_tickets_are_held_to_the_same_rules() -> None:
    """The record key is the correlation ID; an Avro ticket's identifiers are checked as a JSON one's, and an
    Avro string that is not UTF-8 is an encoding error."""
    from processors.ingest import Ingest
    from streams import avro, config
    from streams.client import ticket_record
    from streams.records import Record
    from streams.step import StepContext

    ctx = StepContext("ingest", config.load({}), None, None)  # type: ignore[arg-type]
    ok = b'{"tenant_id": "acme", "body": "hello"}'

    async def code(raw: bytes, key: str | None = "k", headers: dict | None = None) -> str:
        with pytest.raises(TriageError) as info:
            await Ingest().handle(Record("tickets.in", 0, 1, key, raw, headers or {}, 0), ctx)
        return f"{info.value.code}: {info.value}"

    assert (await code(ok, "T-1\x1b[2J")).startswith("MALFORMED: correlation ID (the record key) holds a control")
    assert (await code(ok, "T-1\nforged log line")).startswith("MALFORMED: correlation ID")
    framed = avro.encode(avro.TICKET, ticket_record({"tenant_id": "acme\u202e", "body": "hello"}))
    assert (await code(framed)).startswith("MALFORMED: tenant_id holds a control character, U+202E")
    good = avro.encode(avro.TICKET, ticket_record({"tenant_id": "acme", "body": "caf\u00e9"}))
    bad_utf8 = good.replace("caf\u00e9".encode(), b"caf\xe9\xff")
    assert bad_utf8 != good and (await code(bad_utf8)).startswith("ENCODING: ")


async def test_the_configured_body_limit_is_the_one_ingest_applies() -> None:
    """TRIAGE_MAX_BODY_CHARS was documented and never read: the limit was always 20,000."""
    from processors.ingest import Ingest
    from streams import config
    from streams.records import Record
    from streams.step import StepContext

    ctx = StepContext("ingest", config.load({"TRIAGE_MAX_BODY_CHARS": "300"}), None, None)  # type: ignore[arg-type]
    ticket = b'{"tenant_id": "acme", "body": "%s"}'
    [emit] = await Ingest().handle(Record("tickets.in", 0, 1, "k", ticket % (b"y" * 300), {}, 0), ctx)
    assert len(emit.value["ticket"]["body"]) == 300
    with pytest.raises(TriageError) as info:
        await Ingest().handle(Record("tickets.in", 0, 2, "k2", ticket % (b"y" * 301), {}, 0), ctx)
    assert (info.value.code, str(info.value)) == ("OVERSIZED", "body has 301 characters; the limit is 300")
