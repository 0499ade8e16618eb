"""Inputs the pipeline must not trust, on a real broker: identifiers with control characters, text that is no
text, the configured body limit; and the real CLI printing such data as data (no markup, no raw escapes)."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from streams.client import TicketProducer, read
from streams.config import REPO_ROOT
from processors.topology import VALID, dlq_topic
from tests.harness import Stack

pytestmark = pytest.mark.kafka

BODY_LIMIT = 2000
GOOD = {"tenant_id": "acme", "subject": "Refund", "body": "I was charged twice this month, please refund the duplicate."}
# What a terminal acts on: ESC (CSI, OSC sequences), the 8-bit CSI, BEL, NUL, a bidi override, a line separator.
TERMINAL_CONTROLS = ("\x1b", "\x9b", "\x07", "\x00", "\u202e", "\u2028")


@pytest.fixture(scope="module")
def ingest_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Kafka, Redis and the ingest worker alone, with a body limit of its own: every case here ends at ingest
    (a dead letter) or on tickets.valid (accepted)."""
    s = Stack.create(tmp_path_factory.mktemp("untrusted-home"), TRIAGE_MAX_BODY_CHARS=str(BODY_LIMIT))
    try:
        s.start(workers=["ingest"])
        yield s
    finally:
        s.stop()


def _accepted(stack: Stack, cids: set[str], timeout: float = 120) -> dict[str, int]:
    """How many times each of ``cids`` reached tickets.valid (waits until each did once, then reads to the end)."""
    pending = set(cids)

    def done(o) -> bool:  # noqa: ANN001
        pending.discard(o.key or "")
        return not pending
    for _ in read(stack.bootstrap, [VALID], timeout=timeout, stop=done):
        pass
    counts = {c: 0 for c in cids}
    for o in read(stack.bootstrap, [VALID], timeout=timeout, idle=2):
        if o.key in counts:
            counts[o.key] += 1
    return counts


def test_untrusted_identifiers_and_text_each_get_one_dead_letter(ingest_only: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    p = TicketProducer(ingest_only.bootstrap)
    js = {"content-type": "application/json"}
    expected: dict[str, tuple[str, str]] = {}  # cid -> (reason, what dlq.error starts with)
    for field in ("tenant_id", "ticket_id", "customer_id", "channel"):
        for n, bad in enumerate(("\x00", "\n", "\x1b[31m", "\x9b2J", "\u202e", "\u2028")):
            doc = {**GOOD, "ticket_id": "T-1", "customer_id": "C-1", "channel": "web"}
            doc[field] = doc[field] + bad
            cid = f"ctl-{field}-{n}-{tag}"
            p.send_raw(json.dumps(doc).encode(), cid, js)
            expected[cid] = ("MALFORMED", f"{field} holds a control character, U+")
    for n, key in enumerate((f"key-{tag}-\x1b[2J", f"key-{tag}-\nforged", f"key-{tag}-\u202e")):
        p.send(GOOD, correlation_id=key)  # Avro
        expected[key] = ("MALFORMED", "correlation ID (the record key) holds a control character, U+")
    p.send({**GOOD, "tenant_id": "acme\x1b[0m"}, correlation_id=f"avro-tenant-{tag}")
    expected[f"avro-tenant-{tag}"] = ("MALFORMED", "tenant_id holds a control character, U+001B")
    p.send_raw(b'{"tenant_id": "acme", "subject": "s", "body": "half a pair \\ud83d here"}', f"surrogate-{tag}", js)
    expected[f"surrogate-{tag}"] = ("ENCODING", "field body holds a lone surrogate")
    p.send_raw(b'{"tenant_id": "acme", "body": "x", "expected": ' + b"[" * 30_000, f"deep-{tag}", js)
    expected[f"deep-{tag}"] = ("MALFORMED", "value is not a ticket: JSON nested too deeply")
    p.send_raw(json.dumps({**GOOD, "body": "b" * (BODY_LIMIT + 1)}).encode(), f"long-{tag}", js)
    expected[f"long-{tag}"] = ("OVERSIZED", f"body has {BODY_LIMIT + 1} characters; the limit is {BODY_LIMIT}")
    # Accepted: a body at the configured limit, text fields with any characters, markup-like printable ids.
    fine = {f"at-limit-{tag}": {**GOOD, "body": "b" * BODY_LIMIT},
            f"text-{tag}": {**GOOD, "subject": "[/x] \x1b[31m", "body": "line\n\tnext [bold] \u202e \u9000"},
            f"[/x][bold]-{tag}": {**GOOD, "ticket_id": "[/x]", "customer_id": "\u9867\u5ba2 7"}}
    for cid, doc in fine.items():
        p.send_raw(json.dumps(doc).encode(), cid, js)
    p.flush()

    outcomes = ingest_only.outcomes(set(expected), timeout=180)
    problems = []
    for cid, (reason, error) in expected.items():
        got = outcomes.get(cid, [])
        if len(got) != 1:
            problems.append((cid, len(got)))
            continue
        h = got[0].headers
        if (got[0].topic, h["dlq.reason"]) != (dlq_topic("ingest"), reason) or not h["dlq.error"].startswith(error):
            problems.append((cid, got[0].topic, h["dlq.reason"], h["dlq.error"]))
        elif not h["dlq.error"].isprintable():
            problems.append((cid, "dlq.error carries the character it refuses", h["dlq.error"]))
    assert not problems, "\n".join(map(repr, problems))
    assert _accepted(ingest_only, set(fine)) == {c: 1 for c in fine}


# ---- the CLI prints data as data -----------------------------------------------------------------------

def _cli(stack: Stack, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in stack.worker_env().items() if k not in ("FORCE_COLOR", "PY_COLORS", "CLICOLOR_FORCE")}
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "streams.cli", *argv], env=env, cwd=REPO_ROOT, capture_output=True,
                          timeout=240, input=stdin.encode() if stdin is not None else None)


def _assert_printed_as_data(r: subprocess.CompletedProcess[bytes], argv: tuple[str, ...], code: int = 0) -> str:
    out, err = r.stdout.decode("utf-8"), r.stderr.decode("utf-8")
    assert r.returncode == code and "Traceback" not in err, (argv, r.returncode, err[-2000:])
    for ch in TERMINAL_CONTROLS:
        assert ch not in out and ch not in err, (argv, f"raw {ch!r} printed", out[:2000])
    return out


@pytest.fixture(scope="module")
def hostile(ingest_only: Stack) -> dict[str, str]:
    """Dead letters whose keys, values and errors hold markup and terminal escapes."""
    tag = uuid.uuid4().hex[:8]
    ids = {"markup": f"cli-[/x][bold]-{tag}", "escape": f"cli-esc-{tag}-\x1b[31m\x9b2J",
           "newline": f"cli-nl-{tag}\n0/0\tforged\tline", "junk": f"cli-junk-{tag}"}
    p = TicketProducer(ingest_only.bootstrap)
    js = {"content-type": "application/json"}
    p.send_raw(json.dumps({"tenant_id": "[/x]", "subject": "[bold]hi", "body": "[/x] body"}).encode(), ids["markup"], js)
    p.send_raw(json.dumps(GOOD).encode(), ids["escape"], js)
    p.send_raw(json.dumps(GOOD).encode(), ids["newline"], js)
    p.send_raw("not json \x1b]0;owned\x07 \x1b[2J \x9b31m \u202edesrever [/x]".encode(), ids["junk"], {})
    p.flush()
    outcomes = ingest_only.outcomes(set(ids.values()), timeout=120)
    assert {k: len(outcomes.get(v, [])) for k, v in ids.items()} == {k: 1 for k in ids}
    ids["escape-entry"] = "{0.topic}/{0.partition}/{0.offset}".format(outcomes[ids["escape"]][0])
    ids["junk-entry"] = "{0.topic}/{0.partition}/{0.offset}".format(outcomes[ids["junk"]][0])
    return ids


def test_tail_prints_one_line_per_record_and_no_escapes(ingest_only: Stack, hostile: dict[str, str]) -> None:
    argv = ("tail", "tickets.dlq.ingest", "--timeout", "8")
    out = _assert_printed_as_data(_cli(ingest_only, *argv), argv)
    lines = out.splitlines()
    assert lines and all(line.split("\t", 1)[0].count("/") == 1 and line.split("/", 1)[0].isdigit() for line in lines), \
        "a newline in a key must not start a line of its own"
    assert any("cli-esc-" in line and "\\x1b[31m" in line for line in lines), lines
    assert any("forged" in line and "cli-nl-" in line for line in lines)
    argv = ("tail", "tickets.dlq.ingest", "--timeout", "8", "--json")
    out = _assert_printed_as_data(_cli(ingest_only, *argv), argv)
    docs = [json.loads(line) for line in out.splitlines()]
    assert any(d["key"] == hostile["escape"] for d in docs), "escaped, the JSON still says what the key is"
    assert any(isinstance(d["value"], str) and "\u202edesrever" in d["value"] for d in docs)


@pytest.mark.parametrize("which", ["markup", "escape", "junk"])
def test_trace_prints_markup_and_escapes_as_data(ingest_only: Stack, hostile: dict[str, str], which: str) -> None:
    cid = hostile[which]
    out = _assert_printed_as_data(_cli(ingest_only, "trace", cid), ("trace", which))
    assert "dead-lettered by ingest" in out and "outcome: tickets.dlq.ingest" in out, out
    if which == "markup":
        assert "[/x][bold]" in out and "tenant '[/x]' is not configured" in out, out
    doc = json.loads(_assert_printed_as_data(_cli(ingest_only, "trace", cid, "--json"), ("trace --json", which)))
    assert doc["found"] and doc["correlation_id"] == cid
    if which == "markup":  # an argument is data too: the error quoting it is printed as typed
        r = _cli(ingest_only, "trace", "[/x]no-such-ticket\x1b[31m")
        _assert_printed_as_data(r, ("trace", "missing"), code=1)
        assert "no record with correlation ID '[/x]no-such-ticket\\x1b[31m'" in r.stderr.decode(), r.stderr


def test_dlq_commands_print_markup_and_escapes_as_data(ingest_only: Stack, hostile: dict[str, str]) -> None:
    for argv in (("dlq", "show", hostile["escape-entry"]), ("dlq", "show", hostile["junk-entry"]),
                 ("dlq", "show", hostile["markup"])):
        docs = _assert_printed_as_data(_cli(ingest_only, *argv), argv)
        assert docs.lstrip().startswith("{")
    r = _cli(ingest_only, "dlq", "show", "[/x]nothing\x1b[31m")
    assert "no dead letter with id or correlation ID" in _assert_printed_as_data(r, ("dlq show", "missing"), 1) + \
        r.stderr.decode()
    out = _assert_printed_as_data(_cli(ingest_only, "dlq", "list"), ("dlq", "list"))
    assert "MALFORMED" in out and "UNKNOWN_TENANT" in out
    assert json.loads(_assert_printed_as_data(_cli(ingest_only, "dlq", "list", "--json"), ("dlq list --json",)))
    out = _assert_printed_as_data(_cli(ingest_only, "dlq", "replay", "ingest", "--id", hostile["junk"], "--dry-run"),
                                  ("dlq replay --dry-run",))
    assert "1 selected" in out


def test_produce_status_and_steps_print_data_as_data(ingest_only: Stack, tmp_path: Path) -> None:
    tickets = tmp_path / "hostile.jsonl"
    tickets.write_text("\n".join(json.dumps(d) for d in (
        {**GOOD, "tenant_id": "acme\x1b[31m", "ticket_id": "T\x1b]0;owned\x07"},
        {**GOOD, "ticket_id": "[/x]\u202e"}, {**GOOD, "subject": 7}, "[/x]")) + "\n")
    r = _cli(ingest_only, "produce", str(tickets))
    out = _assert_printed_as_data(r, ("produce",))
    assert [line.split("\t")[:3] for line in out.splitlines()] == [
        ["sent", "acme\\x1b[31m", "T\\x1b]0;owned\\x07"], ["sent", "acme", "[/x]\\u202e"]], out
    assert "line 3: skipped" in r.stderr.decode() and "line 4: skipped" in r.stderr.decode()
    for argv in (("status",), ("status", "--json"), ("steps",), ("drift", "reset", "intent")):
        _assert_printed_as_data(_cli(ingest_only, *argv), argv)
