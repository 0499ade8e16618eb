"""The dead-letter topics are the human queue: list them, show one entry, replay after a fix.

A replay sends the original bytes back into the topic the failed step consumed (``dlq.source``) as a new
attempt of the ticket (``attempt`` + 1, the old ``dlq.*`` headers kept as ``replayed.dlq.*``). Replays are
recorded in the compacted ledger ``triage.dlq.replays`` in the same Kafka transaction as the replayed
records, so running the same replay twice sends nothing the second time, even after a crash mid-way. An entry
answered by hand on the queue page is never replayed, nor a replayed one answered: both decisions are made by
the entry's scope (:mod:`streams.transact`) after fencing and reading the ledger (:mod:`streams.ledger`).
A replay reads the ledger twice, whatever the number of dead letters: once to see whether anything is left,
once after fencing.
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

from streams import pipelines
from streams.client import Out, read_record
from streams.ledger import ANSWERED, REPLAYED, Decisions, read_decisions, read_to_end
from streams.transact import Scope, Txn, scope_id

BATCH = 500


@dataclass(frozen=True)
class DeadLetter:
    out: Out

    @property
    def id(self) -> str:
        return f"{self.out.topic}/{self.out.partition}/{self.out.offset}"

    @property
    def step(self) -> str:
        return self.out.headers.get("dlq.step") or self.out.topic.removeprefix("tickets.dlq.")

    @property
    def reason(self) -> str:
        return self.out.headers.get("dlq.reason", "UNKNOWN")

    @property
    def correlation_id(self) -> str:
        return self.out.headers.get("correlation_id") or self.out.key or ""

    @property
    def attempt(self) -> int:
        try:
            return int(self.out.headers.get("attempt", "1"))
        except ValueError:
            return 1

    @property
    def source_topic(self) -> str:
        return self.out.headers.get("dlq.source", "").split("/")[0]


def scan(bootstrap: str, steps: Iterable[str] | None = None, *, timeout: float = 120) -> list[DeadLetter]:
    """Every dead letter of ``steps`` (default: all) up to where each topic ends now."""
    p = pipelines.active()
    topics = [p.dlq_topic(s) for s in (steps or p.step_names)]
    return [DeadLetter(o) for o in read_to_end(bootstrap, topics, timeout=timeout)]


def read_entry(bootstrap: str, entry_id: str, timeout: float = 30.0) -> DeadLetter | None:
    """The one dead letter ``tickets.dlq.<step>/<partition>/<offset>``, read at its offset (not a scan of its
    topic); None if there is no committed record there."""
    if not is_entry_id(entry_id):
        return None
    topic, partition, offset = entry_id.rsplit("/", 2)
    out = read_record(bootstrap, topic, int(partition), int(offset), timeout=timeout)
    return DeadLetter(out) if out is not None else None


def replayed_ids(bootstrap: str, timeout: float = 120) -> dict[str, dict]:
    """The replay ledger (entry id -> its replay record), read to its end; KafkaFailure if it cannot be read
    that far. Entries answered by hand are in :func:`streams.ledger.read_decisions` too."""
    return read_decisions(bootstrap, timeout=timeout).replayed


def summary(letters: Iterable[DeadLetter], decided: Decisions | dict[str, dict] | None = None
            ) -> dict[str, dict[str, dict[str, int]]]:
    """step -> reason -> {"count": n, "replayed": m, "answered": k} (``decided``: the ledger, or the replay
    ledger alone as :func:`replayed_ids` gives it)."""
    if not isinstance(decided, Decisions):
        decided = Decisions(replayed=dict(decided or {}))
    out: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for d in letters:
        c = out[d.step][d.reason]
        c["count"] += 1
        c["replayed"] += d.id in decided.replayed
        c["answered"] += d.id in decided.answered
    return {s: {r: dict(c) for r, c in reasons.items()} for s, reasons in out.items()}


def find(letters: Iterable[DeadLetter], ident: str) -> list[DeadLetter]:
    """Entries whose id (``topic/partition/offset``) or correlation ID is ``ident``."""
    return [d for d in letters if ident in (d.id, d.correlation_id)]


@dataclass(frozen=True)
class ReplayReport:
    selected: int
    replayed: int
    already: int
    """Selected entries replayed before (by anyone: this replay or another, the CLI or the page)."""
    ids: tuple[str, ...]
    truncated: int = 0
    """Selected entries not replayed because their dead letter keeps only a prefix of the record (it was too
    big to write whole): the whole record is at its ``dlq.source``."""
    answered: int = 0
    """Selected entries not replayed because they were answered by hand on the queue page."""
    decisions: tuple[tuple[str, str, dict], ...] = ()
    """(entry id, ANSWERED or REPLAYED, ledger record) of every selected entry decided before."""


def is_entry_id(ident: str) -> bool:
    """Whether ``ident`` is written as a dead letter's id, ``<prefix>.dlq.<step>/<partition>/<offset>``."""
    return bool(_ENTRY_ID.fullmatch(ident))


_ENTRY_ID = re.compile(r"[\w-]+\.dlq\.[\w.-]+/\d+/\d+")  # <prefix>.dlq.<step>/<partition>/<offset>, any pipeline


def replay(bootstrap: str, step: str, *, reason: str | None = None, correlation_id: str | None = None,
           entry_id: str | None = None, dry_run: bool = False,
           progress: Callable[[int, int], None] | None = None) -> ReplayReport:
    """Replay the selected dead letters of ``step`` into the step that failed, each once ever, and never one
    answered by hand: those with ``reason``, of ``correlation_id`` (which two tenants may share), or the one
    entry ``entry_id`` (read at its offset, not found by a scan)."""
    if entry_id is not None and reason is None and correlation_id is None:
        one = read_entry(bootstrap, entry_id) if entry_id.startswith(pipelines.active().dlq_topic(step) + "/") else None
        letters = [one] if one is not None else []
    else:
        letters = [d for d in scan(bootstrap, [step])
                   if (reason is None or d.reason == reason)
                   and (correlation_id is None or d.correlation_id == correlation_id)
                   and (entry_id is None or d.id == entry_id)]
    return replay_letters(bootstrap, step, letters, dry_run=dry_run, progress=progress)


def replay_letters(bootstrap: str, step: str, letters: list[DeadLetter], *, dry_run: bool = False,
                   progress: Callable[[int, int], None] | None = None,
                   scope: Scope[Decisions] | None = None) -> ReplayReport:
    """Replay ``letters`` (dead letters of ``step``) that no one has decided about yet.

    The ledger is read once without fencing (a replay with nothing to send must not stop another), then, if
    something is left, once more after this step's scope has fenced every other writer (a replay of the same
    step, the page answering one of its entries): what they committed is in that read, so nothing is sent
    twice and nothing answered is replayed. Then batches of :data:`BATCH`, one transaction each, each entry's
    replay and its ledger record together. ``scope``: the page's, kept between clicks (its view is the
    ledger, so no read first), or a new one.
    """
    whole = [d for d in letters if "dlq.truncated_from" not in d.out.headers]
    truncated = len(letters) - len(whole)

    def report(decided: Decisions, sent: tuple[str, ...], replayed: int) -> ReplayReport:
        before = [(d.id, *decided.of(d.id)) for d in whole if d.id not in sent and d.id in decided]
        return ReplayReport(len(letters), replayed, sum(k == REPLAYED for _, k, _ in before),
                            sent, truncated, sum(k == ANSWERED for _, k, _ in before), tuple(before))

    # The page passes its scope, whose view is the ledger (or is read again after fencing): no read first.
    decided = read_decisions(bootstrap) if scope is None or dry_run else Decisions()
    todo = [d for d in whole if d.id not in decided]
    if dry_run or not todo:
        return report(decided, tuple(d.id for d in todo) if dry_run else (), 0)
    own = scope is None
    scope = scope or Scope(bootstrap, scope_id(pipelines.active().dlq_topic(step)), lambda: read_decisions(bootstrap))
    sent: list[str] = []
    try:
        while True:
            def batch(view: Decisions, txn: Txn) -> tuple[list[str], Decisions]:
                left = [d for d in todo if d.id not in view][:BATCH]
                for d in left:
                    _send(txn, d)
                return [d.id for d in left], view
            done, decided = scope.run(batch)
            if not done:
                break
            sent += done
            if progress:
                progress(len(sent), len(sent) + sum(d.id not in decided for d in todo))
    finally:
        if own:
            scope.close()
    return report(decided, tuple(sent), len(sent))


def _send(txn: Txn, d: DeadLetter) -> None:
    headers = {k: v for k, v in d.out.headers.items() if not k.startswith(("dlq.", "replayed.", "replay."))}
    headers.update({f"replayed.{k}": v for k, v in d.out.headers.items() if k.startswith("dlq.")})
    headers.update({"attempt": str(d.attempt + 1), "replay.of": d.id, "replay.ts": str(int(time.time() * 1000))})
    if d.correlation_id:
        headers["correlation_id"] = d.correlation_id
    target, value = d.source_topic, d.out.raw
    if not target:
        raise ValueError(f"{d.id} has no dlq.source header; cannot tell where to replay it")
    route = pipelines.active().extras.get("replay")  # a pipeline may send a replay elsewhere (a graph: its input)
    if route is not None:
        target, value = route(target, value)
    txn.produce(target, d.correlation_id or None, value, headers)
    txn.produce(pipelines.active().replay_topic, d.id, json.dumps({"to": target, "attempt": d.attempt + 1, "ts": headers["replay.ts"],
                                               "correlation_id": d.correlation_id}).encode())
