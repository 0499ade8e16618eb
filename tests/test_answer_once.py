"""One decision per queue entry, on the real broker, through the real page (HTTP) and the real CLI: an entry
answered by hand is never replayed, a replayed one is never answered, in either order and across processes;
two page replicas answering at once send one answer; an answer whose commit "timed out" after it landed is not
sent again; a page whose index has not read the ledger still refuses a second answer."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from processors.topology import DLQ_REPLAYS, RESPONSES, dlq_topic
from streams.ui.queue import QueueIndex
from tests.harness import Stack
from tests.queue_pages import (answer, bearer, cli, dead_letters, entry_id, login, page, path_of, resolutions_of,
                               responses_to, until_indexed, until_status)

pytestmark = pytest.mark.kafka


def outcomes_by_attempt(stack: Stack, cid: str) -> dict[str, list[str]]:
    """attempt -> the terminal topics its records are on (a human response included)."""
    out: dict[str, list[str]] = {}
    for o in stack.outcomes({cid}, timeout=60, settle=2.0).get(cid, []):
        out.setdefault(o.headers.get("attempt", "?"), []).append(o.topic)
    return {a: sorted(t) for a, t in out.items()}


async def test_an_answered_dead_letter_is_never_replayed(pipeline: Stack) -> None:
    """Answer on the page, then `triage dlq replay` by entry, by reason and by correlation ID (another
    process): nothing is replayed, and the ticket has its dead letter and the one human answer."""
    [d] = dead_letters(pipeline, 1, prefix="answered-then-replay-")
    ident, cid = entry_id(d), d.key
    async with page(pipeline) as client:
        await until_indexed(client, ident)
        status, body = await answer(client, ident)
        assert status == 200, body
    by_entry = cli(pipeline, "dlq", "replay", "ingest", "--id", ident).stdout
    assert "replayed 0" in by_entry and "1 answered by hand" in by_entry, by_entry
    by_cid = cli(pipeline, "dlq", "replay", "ingest", "--id", cid).stdout
    assert "replayed 0" in by_cid, by_cid
    bulk = cli(pipeline, "dlq", "replay", "ingest", "--reason", d.headers["dlq.reason"], "--dry-run").stdout
    assert ident not in bulk.split(), "a bulk replay would send an entry answered by hand"
    assert outcomes_by_attempt(pipeline, cid) == {"1": sorted([dlq_topic("ingest"), RESPONSES])}
    listed = cli(pipeline, "dlq", "list", "ingest", "--json").stdout
    assert '"answered": ' in listed


async def test_a_replayed_dead_letter_is_never_answered(pipeline: Stack) -> None:
    """Replay with the CLI, then answer on a page (its index may not have seen the replay yet): refused with
    a clear 409; replay on the page, then answer: the same. Neither button is shown once it is replayed."""
    first, second = dead_letters(pipeline, 2, prefix="replay-then-answer-")
    async with page(pipeline) as client:
        await until_indexed(client, entry_id(first))
        cli(pipeline, "dlq", "replay", "ingest", "--id", entry_id(first))
        status, body = await answer(client, entry_id(first))
        assert status == 409 and body["code"] == "ALREADY_REPLAYED", body
        assert "already replayed as attempt 2" in body["error"], body

        await until_indexed(client, entry_id(second))
        r = await client.post("/api" + path_of(entry_id(second)) + "/replay", headers=bearer())
        assert r.status == 200 and (await r.json())["replayed"] == 1
        status, body = await answer(client, entry_id(second))
        assert status == 409 and body["code"] == "ALREADY_REPLAYED", body

        shown = await until_status(client, entry_id(second), "replayed")
        assert shown["answerable"] is False
        await login(client)
        html = await (await client.get(path_of(entry_id(second)))).text()
        assert 'id="send-answer"' not in html and 'id="replay"' not in html
    for d in (first, second):
        assert not responses_to(pipeline, entry_id(d)), "a replayed entry was answered by hand"
        # attempt 1: its dead letter; attempt 2 (the replay, a blank body again): its own dead letter.
        assert outcomes_by_attempt(pipeline, d.key) == {"1": [dlq_topic("ingest")], "2": [dlq_topic("ingest")]}


async def test_two_pages_answering_one_entry_at_once_send_one_answer(pipeline: Stack) -> None:
    """Two replicas (each its own index and producer) answer the same entries at the same moment."""
    letters = dead_letters(pipeline, 3, prefix="two-pages-")
    async with page(pipeline) as a, page(pipeline) as b:
        for d in letters:
            await until_indexed(a, entry_id(d))
            await until_indexed(b, entry_id(d))
        for d in letters:
            results = await asyncio.gather(answer(a, entry_id(d), "from page a"), answer(b, entry_id(d), "from page b"))
            statuses = sorted(s for s, _ in results)
            assert statuses == [200, 409], results
            loser = next(body for s, body in results if s == 409)
            assert loser["code"] == "ALREADY_ANSWERED" and "already answered at" in loser["error"], loser
    for d in letters:
        assert len(responses_to(pipeline, entry_id(d))) == 1
        assert len(resolutions_of(pipeline, entry_id(d))) == 1


class TimedOutAfterCommit:
    """The page's commit: the real commit_transaction, then (once) the timeout a slow coordinator gives, as
    if the commit had not been confirmed."""

    def __init__(self) -> None:
        self.fired = 0

    def __call__(self, p: Producer, timeout: float) -> None:
        p.commit_transaction(timeout)
        if not self.fired:
            self.fired += 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit_transaction timed out", retriable=True))


async def test_an_answer_whose_commit_timed_out_is_sent_once(pipeline: Stack) -> None:
    [d] = dead_letters(pipeline, 1, prefix="commit-timeout-")
    ident = entry_id(d)
    commit = TimedOutAfterCommit()
    async with page(pipeline, commit=commit) as client:
        await until_indexed(client, ident)
        status, body = await answer(client, ident)
        assert commit.fired == 1
        assert status == 200, body
        [response] = responses_to(pipeline, ident)
        assert body["response"] == f"{response.topic}/{response.partition}/{response.offset}"
        again, refused = await answer(client, ident)
        assert again == 409 and refused["code"] == "ALREADY_ANSWERED"
    assert len(resolutions_of(pipeline, ident)) == 1


class LedgerBlindConsumer(Consumer):
    """A real consumer that reads the ledgers only from their end: an index that has read the queue but not
    yet the ledger's past (a page restarted with a backlog, or one that went ahead after 15 s of waiting)."""

    def incremental_assign(self, partitions: list[TopicPartition]) -> Any:
        return super().incremental_assign([
            TopicPartition(tp.topic, tp.partition, OFFSET_END) if tp.topic in ("triage.human.resolutions", DLQ_REPLAYS)
            else tp for tp in partitions])


async def test_a_page_that_has_not_read_the_ledger_does_not_answer_again(pipeline: Stack) -> None:
    [d] = dead_letters(pipeline, 1, prefix="blind-index-")
    ident = entry_id(d)
    async with page(pipeline) as client:
        await until_indexed(client, ident)
        assert (await answer(client, ident))[0] == 200
    blind = QueueIndex(pipeline.bootstrap, consumer=LedgerBlindConsumer).start()
    try:
        assert await asyncio.to_thread(blind.wait_ready, 60)
        async with page(pipeline, index=blind) as client:
            shown = await until_indexed(client, ident)
            assert shown["status"] == "open"  # the index does not know: the page must not rely on it
            status, body = await answer(client, ident, "a second answer")
            assert status == 409 and body["code"] == "ALREADY_ANSWERED", body
    finally:
        blind.close()
    assert len(responses_to(pipeline, ident)) == 1
