"""The queue page under load, on the real broker: its index keeps no record's bytes (a dead letter may be
7.75 MiB; a hundred of them were ~775 MB in the page's process), opening an entry reads its record by offset,
and lists come in pages."""
from __future__ import annotations

import gc
import json
import re
import time
import tracemalloc
import uuid
from typing import Any, Iterator

import aiohttp
import pytest
from confluent_kafka import Producer

from streams.client import RecordReader, read_record
from streams.kafka_io import producer_config
from processors.topology import dlq_topic
from streams.ui.app import INDEX, MAX_PAGE, PAGE
from streams.ui.queue import QueueIndex
from tests.harness import Stack
from tests.test_ui import TOKENS, UiServer, bearer, login, wait_for

pytestmark = pytest.mark.kafka

BIG = 3 * 1024 * 1024
N_BIG = 6


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Kafka and Redis with every topic, no workers: the dead letters here are written straight to their topic."""
    s = Stack.create(tmp_path_factory.mktemp("ui-index-home"))
    try:
        s.start(workers=[])
        yield s
    finally:
        s.stop()


def dead_letters(bootstrap: str, tenant: str, bodies: list[str], tag: str) -> list[tuple[str, str]]:
    """Write one ingest dead letter (a JSON ticket the tenant claims, as ingest keeps them) per body; their
    (correlation id, entry id)."""
    p = Producer(producer_config(bootstrap, None))
    out: dict[int, tuple[str, str]] = {}
    errors: list[Any] = []

    def delivered(i: int) -> Any:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                out[i] = (msg.key().decode(), f"{msg.topic()}/{msg.partition()}/{msg.offset()}")
        return cb

    for i, body in enumerate(bodies):
        cid = f"{tag}-{i}-{uuid.uuid4().hex[:6]}"
        value = json.dumps({"tenant_id": tenant, "subject": f"{tag} {i}", "body": body}).encode()
        headers = {"dlq.reason": "OVERSIZED", "dlq.step": "ingest", "dlq.source": f"tickets.in/0/{i}",
                   "dlq.ts": str(int(time.time() * 1000) + i), "dlq.attempts": "1", "dlq.error": "too big",
                   "attempt": "1", "correlation_id": cid, "content-type": "application/json"}
        p.produce(dlq_topic("ingest"), key=cid.encode(), value=value,
                  headers=[(k, v.encode()) for k, v in headers.items()], on_delivery=delivered(i))
        p.poll(0)
        del value
    assert p.flush(60) == 0 and not errors, errors
    return [out[i] for i in range(len(bodies))]


def retained() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_the_index_keeps_no_record_bytes_and_opening_reads_by_offset(services: Stack) -> None:
    index = QueueIndex(services.bootstrap, refresh_s=0.5).start()
    try:
        measure_and_open(services, index)
    finally:
        index.close()


def measure_and_open(services: Stack, index: QueueIndex) -> None:
    tracemalloc.start()
    try:
        assert index.wait_ready(60)
        before = retained()
        written = dead_letters(services.bootstrap, "acme", [f"{i}" * BIG for i in range(N_BIG)], "big")
        cids = {cid for cid, _ in written}
        wait_for(lambda: cids <= {e.correlation_id for e in index.entries("acme")}, timeout=60,
                 what="the big dead letters listed")
        # The index has read all N x 3 MiB; what it keeps of them must be a few KiB each, not the bytes. (Waited
        # for, not read once: the consumer's last batch of messages is let go at its next poll.)
        grown: list[int] = []

        def small() -> bool:
            grown.append(retained() - before)
            return grown[-1] < N_BIG * 64 * 1024

        try:
            wait_for(small, timeout=15, what="the index to let go of the records' bytes")
        except AssertionError:
            raise AssertionError(f"the index retains {grown[-1] / 2**20:.1f} MiB after reading {N_BIG} dead letters "
                                 f"of {BIG / 2**20:.0f} MiB") from None
        mine = [e for e in index.entries("acme") if e.correlation_id in cids]
        assert len(mine) == N_BIG
        assert all(e.raw is None and not e.opened for e in mine)
        assert all(sum(len(k) + len(v) for k, v in e.headers.items()) < 4096 for e in mine)
    finally:
        tracemalloc.stop()

    # Opening one reads its record by topic/partition/offset: the whole body, the full headers.
    cid, ident = written[3]
    e = index.get("acme", ident)
    assert e is not None and e.correlation_id == cid
    opened = index.open(e)
    assert opened.opened and len(opened.raw or b"") > BIG
    assert opened.value()["body"] == "3" * BIG and opened.subject == "big 3"
    assert opened.headers["dlq.error"] == "too big"
    assert index.get("acme", ident).raw is None  # opening does not put the bytes into the index
    assert index.get("globex", ident) is None


def test_read_one_record_at_an_offset(services: Stack) -> None:
    written = dead_letters(services.bootstrap, "acme", ["one", "two", "three"], "at")
    topic, partition, offset = written[1][1].rsplit("/", 2)
    got = read_record(services.bootstrap, topic, int(partition), int(offset))
    assert got is not None and got.key == written[1][0] and json.loads(got.raw)["body"] == "two"
    reader = RecordReader(services.bootstrap)
    try:
        # One reader, many reads, in any order: each gives exactly the record at its offset.
        for cid, ident in reversed(written):
            t, p, o = ident.rsplit("/", 2)
            assert reader.read(t, int(p), int(o)).key == cid  # type: ignore[union-attr]
        assert reader.read(topic, int(partition), 10**12) is None  # past the end
    finally:
        reader.close()


@pytest.fixture(scope="module")
def ui(services: Stack) -> Iterator[UiServer]:
    server = UiServer(services, TOKENS).start()
    try:
        yield server
    finally:
        server.stop()


async def test_the_queue_comes_in_pages(ui: UiServer, services: Stack) -> None:
    n = 2 * PAGE + 7
    written = dead_letters(services.bootstrap, "globex", ["small"] * n, "paged")
    ids = {ident for _, ident in written}
    async with aiohttp.ClientSession(base_url=ui.url) as s:
        async def listing(**params: Any) -> dict[str, Any]:
            r = await s.get("/api/queue", headers=bearer("globex"), params=params)
            assert r.status == 200, await r.text()
            return await r.json()

        deadline = time.monotonic() + 60
        while (await listing(limit=str(MAX_PAGE)))["total"] < n:
            assert time.monotonic() < deadline, "the dead letters were never all listed"
        first = await listing()
        assert len(first["entries"]) == PAGE and first["page"] == 1 and first["limit"] == PAGE
        assert first["total"] == n and first["pages"] == 3 and first["next_page"] == 2
        seen: list[str] = []
        page: int | None = 1
        while page is not None:
            body = await listing(page=str(page), limit=str(PAGE))
            seen += [e["id"] for e in body["entries"]]
            page = body["next_page"]
        assert len(seen) == len(set(seen)) == n and set(seen) == ids
        assert len((await listing(page="3"))["entries"]) == 7
        assert (await listing(page="9"))["entries"] == []
        assert (await listing(limit=str(10 * MAX_PAGE)))["limit"] == MAX_PAGE
        for bad in ({"page": "0"}, {"page": "abc"}, {"limit": "0"}, {"limit": "-5"}, {"page": "1e3"}):
            r = await s.get("/api/queue", headers=bearer("globex"), params=bad)
            assert r.status == 400, (bad, r.status)

    async with await login(ui, "globex") as s:
        html = await (await s.get("/")).text()
        assert html.count("<tr data-id=") == PAGE
        assert f"1–{PAGE} of {n}" in html
        nxt = re.search(r'id="next-page" href="([^"]+)"', html)
        assert nxt and "page=2" in nxt.group(1)
        html = await (await s.get("/?page=3")).text()
        assert html.count("<tr data-id=") == 7 and 'id="next-page"' not in html and 'id="prev-page"' in html
        r = await s.get("/?page=abc")
        assert r.status == 400


async def test_opening_a_ticket_reads_its_record(ui: UiServer, services: Stack) -> None:
    (cid, ident), = dead_letters(services.bootstrap, "acme", ["é" * 50_000], "open")
    async with aiohttp.ClientSession(base_url=ui.url) as s:
        deadline = time.monotonic() + 60
        while True:
            r = await s.get("/api/ticket/" + ident, headers=bearer("acme"))
            if r.status == 200:
                break
            assert r.status == 404 and time.monotonic() < deadline, r.status
        body = await r.json()
        assert body["value"]["body"] == "é" * 50_000 and body["correlation_id"] == cid
        assert (await s.get("/api/ticket/" + ident, headers=bearer("globex"))).status == 404
    async with await login(ui, "acme") as s:
        html = await (await s.get("/ticket/" + ident)).text()
        assert "é" * 1000 in html and cid in html


async def test_an_entry_whose_record_is_gone_is_a_410(ui: UiServer, services: Stack) -> None:
    """Retention deleted the record the index listed (here: delete_records): opening it says so, and it
    leaves the list; nothing of it was kept to show instead."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    (cid, ident), = dead_letters(services.bootstrap, "acme", ["soon gone"], "gone")
    index = ui.app[INDEX]
    wait_for(lambda: index.get("acme", ident), timeout=60, what="the dead letter listed")
    topic, partition, offset = ident.rsplit("/", 2)
    admin = AdminClient({"bootstrap.servers": services.bootstrap})
    for f in admin.delete_records([TopicPartition(topic, int(partition), int(offset) + 1)]).values():
        f.result(30)
    async with aiohttp.ClientSession(base_url=ui.url) as s:
        r = await s.get("/api/ticket/" + ident, headers=bearer("acme"))
        assert r.status == 410, r.status
        assert index.get("acme", ident) is None
        r = await s.get("/api/ticket/" + ident, headers=bearer("acme"))
        assert r.status == 404
