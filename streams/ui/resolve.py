"""What a person does with a queue entry on the page: answer it by hand, or replay a dead letter. Each entry
gets at most one of these, ever, whichever process asks (this page, another replica, ``triage dlq replay``).

An answer is the queued Case with ``reply`` = the text and ``writer_model = "human"`` on ``tickets.responses``,
and its resolution on the compacted ``triage.human.resolutions`` (key ``<tenant>/<entry id>``), in one Kafka
transaction. Both actions run in the entry's scope (:mod:`streams.transact`: one ``transactional.id`` per queue
topic, shared with the CLI's replays of that step): fenced, then the ledger (:mod:`streams.ledger`) read to its
end, then the decision. The page's index is only a cache for showing the queue; it never decides.

An answer carries an ``answer_id``: when a commit times out and the answer is tried again, the ledger read
after the new producer's fencing shows whether the first one landed; if it did, that one is the result.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from confluent_kafka import Producer

from streams import dlq
from streams.kafka_io import KafkaFailure
from streams.ledger import ANSWERED, HUMAN_RESOLUTIONS, REPLAYED, Decisions, read_decisions
from streams.records import CARRIED_HEADERS
from streams.transact import Commit, Scope, Txn, _commit, scope_id
from streams.ui.queue import (DEAD_LETTER, MAX_ANSWER_CHARS, AlreadyResolved, Entry, NotAnswerable, NotReplayable,
                              QueueError, QueueIndex, answer_form, resolution_key)

log = logging.getLogger("triage.ui")


class AlreadyAnswered(AlreadyResolved):
    """409: the entry was answered by hand (here or on another replica)."""

    code = "ALREADY_ANSWERED"

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        where = f" (response {info['response']})" if info.get("response") else ""
        super().__init__(f"already answered at {_when(info.get('resolved_at_ms'))}{where}")


class AlreadyReplayed(AlreadyResolved):
    """409: the dead letter was replayed (from this page or with ``triage dlq replay``)."""

    code = "ALREADY_REPLAYED"

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        super().__init__(f"already replayed as attempt {info.get('attempt', '?')} at {_when(info.get('ts'))}"
                         f"{' into ' + info['to'] if info.get('to') else ''}")


class NotRecorded(QueueError):
    """503: Kafka did not confirm the action; the ledger says later whether it landed."""

    status = 503
    code = "NOT_RECORDED"


def _when(ms: Any) -> str:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"


def refusal(kind: str, info: dict[str, Any]) -> AlreadyResolved:
    return AlreadyAnswered(info) if kind == ANSWERED else AlreadyReplayed(info)


class Resolver:
    """The write side of the page: one :class:`~streams.transact.Scope` per queue topic, kept between
    requests (its producer is fenced again only when someone else wrote in the scope meanwhile)."""

    def __init__(self, bootstrap: str, index: QueueIndex, *,
                 new_producer: Callable[[dict[str, Any]], Producer] = Producer, commit: Commit = _commit) -> None:
        self.bootstrap = bootstrap
        self.index = index
        self._new_producer, self._commit = new_producer, commit
        self._scopes: dict[str, Scope[Decisions]] = {}
        self._guard = threading.Lock()

    def scope(self, queue_topic: str) -> Scope[Decisions]:
        with self._guard:
            s = self._scopes.get(queue_topic)
            if s is None:
                s = self._scopes[queue_topic] = Scope(self.bootstrap, scope_id(queue_topic),
                                                      lambda: read_decisions(self.bootstrap),
                                                      new_producer=self._new_producer, commit=self._commit)
            return s

    def close(self) -> None:
        with self._guard:
            scopes, self._scopes = list(self._scopes.values()), {}
        for s in scopes:
            s.close()

    def _noted(self, tenant: str, entry: Entry, kind: str, info: dict[str, Any]) -> None:
        """Tell the index what the ledger said, so the page shows it at once."""
        if kind == ANSWERED:
            self.index.note_resolution(resolution_key(tenant, entry), info)
        else:
            self.index.note_replays([entry.id], info)

    # ---- answer by hand --------------------------------------------------------------------------------
    def answer(self, tenant: str, entry: Entry, text: str, *, now: Callable[[], float] = time.time) -> dict[str, Any]:
        """Answer ``entry`` once. AlreadyAnswered / AlreadyReplayed if the ledger has a decision about it,
        NotRecorded if Kafka did not confirm the answer."""
        if entry.tenant != tenant:
            raise QueueError("not this tenant's entry")
        text = text.strip()
        if not text:
            raise NotAnswerable("the answer is empty")
        if len(text) > MAX_ANSWER_CHARS:
            raise NotAnswerable(f"the answer has {len(text)} characters; the limit is {MAX_ANSWER_CHARS}")
        form = answer_form()
        cid, value = form.answer(entry, tenant, text)
        topic_out = form.TOPIC
        headers = {k: entry.headers[k] for k in CARRIED_HEADERS if entry.headers.get(k)}
        headers.update({"correlation_id": cid, "tenant_id": tenant, "attempt": str(entry.attempt),
                        "resolution": "human", "resolves": entry.id})
        key = resolution_key(tenant, entry)
        answer_id = uuid.uuid4().hex

        def decide(view: Decisions, txn: Txn) -> dict[str, Any]:
            decided = view.of(entry.id)
            if decided is not None:
                kind, info = decided
                if kind == ANSWERED and info.get("answer_id") == answer_id:
                    return info  # ours: the commit that "failed" had landed
                raise refusal(kind, info)
            i = txn.produce(topic_out, cid, value, headers)
            txn.flush()
            topic, partition, offset = txn.position(i)
            info = {"resolution": "human", "correlation_id": cid, "attempt": entry.attempt,
                    "resolved_at_ms": int(now() * 1000), "response_topic": topic_out,
                    "response": f"{topic}/{partition}/{offset}", "answer_id": answer_id}
            txn.produce(HUMAN_RESOLUTIONS, key, json.dumps(info).encode(), {"tenant_id": tenant})
            return info

        try:
            info = self.scope(entry.topic).run(decide)
        except AlreadyResolved as exc:
            self._noted(tenant, entry, ANSWERED if isinstance(exc, AlreadyAnswered) else REPLAYED,
                        getattr(exc, "info", {}))
            raise
        except KafkaFailure as exc:
            raise NotRecorded(f"Kafka did not confirm the answer ({exc}). Reload the page: it shows whether it was "
                              f"recorded; trying again never sends a second answer.") from exc
        self._noted(tenant, entry, ANSWERED, info)
        log.info("tenant %s answered %s (correlation id %s) by hand -> %s", tenant, entry.id, cid, info["response"])
        return {"resolves": entry.id, "correlation_id": cid, "attempt": entry.attempt, "response": info["response"],
                "resolution_key": key}

    # ---- replay ----------------------------------------------------------------------------------------
    def replay(self, tenant: str, entry: Entry) -> dict[str, Any]:
        """Replay the dead letter ``entry`` once: it is read at its offset (no scan of its topic) and sent in
        its scope. AlreadyAnswered if it was answered by hand; a replay done before is reported, not redone."""
        if entry.tenant != tenant:
            raise QueueError("not this tenant's entry")
        if entry.kind != DEAD_LETTER:
            raise NotReplayable("only dead letters can be replayed")
        if not entry.correlation_id:
            raise NotReplayable("this dead letter has no correlation ID; replay it with `triage dlq replay`")
        if not entry.source_topic:
            raise NotReplayable("this dead letter has no dlq.source header; there is nowhere to replay it")
        step = entry.replay_step
        try:
            letter = dlq.read_entry(self.bootstrap, entry.id)
            if letter is None:
                raise NotReplayable("this dead letter is no longer in Kafka")
            report = dlq.replay_letters(self.bootstrap, step, [letter], scope=self.scope(entry.topic))
        except KafkaFailure as exc:
            raise NotRecorded(f"Kafka did not confirm the replay ({exc}). Reload the page: it shows whether it was "
                              f"recorded; trying again never replays it twice.") from exc
        for ident, kind, info in report.decisions:
            if ident == entry.id:
                self._noted(tenant, entry, kind, info)
                if kind == ANSWERED:
                    raise AlreadyAnswered(info)
        if entry.id in report.ids:
            self.index.note_replays([entry.id], {"ts": str(int(time.time() * 1000)), "to": entry.source_topic,
                                                 "attempt": entry.attempt + 1, "correlation_id": entry.correlation_id})
        log.info("tenant %s replayed %s (correlation id %s): %d sent, %d already", tenant, entry.id,
                 entry.correlation_id, report.replayed, report.already)
        return {"selected": report.selected, "replayed": report.replayed, "already": report.already,
                "answered": report.answered, "truncated": report.truncated, "ids": list(report.ids)}
