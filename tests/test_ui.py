"""The human-queue web page over HTTP, on the real broker: log in per tenant, see only your own tenant's
escalations, be refused another tenant's ticket, answer one by hand (one transaction: the response on
tickets.responses with ``resolution: human`` and the resolution in the compacted ledger) and see it leave."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import threading
import time
import uuid
from typing import Any, Iterator

import aiohttp
import pytest
from aiohttp import web
from confluent_kafka import Consumer

from streams import avro
from streams.client import Out, TicketProducer, read
from processors.topology import ESCALATIONS, RESPONSES
from streams.ui.app import INDEX, make_app
from streams.ui.queue import RESOLUTIONS, QueueIndex
from tests.harness import Stack, free_port, sample_tickets

pytestmark = pytest.mark.kafka

TOKENS = {"acme": f"acme-{secrets.token_hex(12)}", "globex": f"globex-{secrets.token_hex(12)}"}


class UiServer:
    """The UI app in this process, on a free port, served by an AppRunner on its own event-loop thread (so
    sync tests, e.g. a browser's, can use it as well as async ones)."""

    def __init__(self, stack: Stack, tokens: dict[str, str]) -> None:
        self.stack, self.tokens = stack, tokens
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ui-test-server", daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> "UiServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(60)
        assert self.app[INDEX].wait_ready(30), "the queue index never caught up with Kafka"
        return self

    async def _start(self) -> None:
        self.app = make_app(self.stack.settings, self.tokens)
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def critical(tenant: str, n: int, skip: int = 0) -> list[dict[str, Any]]:
    rows = [t for t in sample_tickets() if t["tenant_id"] == tenant and t["expected"]["priority"] == "critical"]
    return rows[skip:skip + n]


def escalate(stack: Stack, docs: list[dict[str, Any]], prefix: str) -> dict[str, Out]:
    """Send ``docs``; the escalation record of each that escalated (critical ones nearly all do)."""
    sent = stack.produce(docs, prefix=prefix)
    outcomes = stack.outcomes(set(sent), timeout=240, settle=1.0)
    return {cid: outs[0] for cid, outs in outcomes.items() if outs and outs[0].topic == ESCALATIONS}


def entry_id(o: Out) -> str:
    return f"{o.topic}/{o.partition}/{o.offset}"


def wait_for(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def find_record(bootstrap: str, topic: str, match: Any, timeout: float = 30.0) -> Out | None:
    found: list[Out] = []

    def stop(o: Out) -> bool:
        if match(o):
            found.append(o)
            return True
        return False

    for _ in read(bootstrap, [topic], timeout=timeout, stop=stop):
        pass
    return found[0] if found else None


@pytest.fixture(scope="module")
def escalated(pipeline: Stack) -> dict[str, dict[str, Out]]:
    """tenant -> {correlation id: escalation record}, two or more per tenant."""
    out = escalate(pipeline, critical("acme", 3) + critical("globex", 3), "ui-")
    by_tenant = {t: {c: o for c, o in out.items() if o.headers.get("tenant_id") == t} for t in TOKENS}
    assert all(len(v) >= 2 for v in by_tenant.values()), {t: len(v) for t, v in by_tenant.items()}
    return by_tenant


@pytest.fixture(scope="module")
def ui(pipeline: Stack, escalated: dict[str, dict[str, Out]]) -> Iterator[UiServer]:
    server = UiServer(pipeline, TOKENS).start()
    try:
        yield server
    finally:
        server.stop()


def session(ui: UiServer) -> aiohttp.ClientSession:
    # unsafe=True: the cookie jar must keep cookies of an IP-address host (127.0.0.1).
    return aiohttp.ClientSession(base_url=ui.url, cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login_csrf(s: aiohttp.ClientSession) -> str:
    """The login form's CSRF token (the form also sets the pre-login cookie it is bound to)."""
    return csrf_of(await (await s.get("/login")).text())


async def login(ui: UiServer, tenant: str) -> aiohttp.ClientSession:
    s = session(ui)
    r = await s.post("/login", data={"token": TOKENS[tenant], "csrf": await login_csrf(s)}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKENS[tenant] not in cookie
    return s


def bearer(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[tenant]}"}


async def api_ids(s: aiohttp.ClientSession, tenant: str, **params: str) -> dict[str, dict[str, Any]]:
    r = await s.get("/api/queue", headers=bearer(tenant), params=params)
    assert r.status == 200
    body = await r.json()
    assert body["tenant"] == tenant
    return {e["id"]: e for e in body["entries"]}


async def until_listed(s: aiohttp.ClientSession, tenant: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        got = await api_ids(s, tenant)
        if ids <= set(got):
            return got
        assert time.monotonic() < deadline, f"{len(ids - set(got))} escalations never showed in the queue"
        await asyncio.sleep(0.3)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


async def test_a_wrong_token_gets_nothing(ui: UiServer) -> None:
    async with session(ui) as s:
        r = await s.post("/login", data={"token": "acme-not-the-token", "csrf": await login_csrf(s)},
                         allow_redirects=False)
        assert r.status == 401 and "Set-Cookie" not in r.headers
        assert "not valid" in await r.text()
        r = await s.get("/", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/login"
        r = await s.get("/api/queue")
        assert r.status == 401
        r = await s.get("/api/queue", headers={"Authorization": "Bearer acme-not-the-token"})
        assert r.status == 401
        # A session cookie is only good with our signature: a forged or edited one is no session.
        s.cookie_jar.update_cookies({"triage_session": "YWNtZXw5OTk5OTk5OTk5fHh4.AAAA"})
        r = await s.get("/", allow_redirects=False)
        assert r.status == 303
    # The API does not take the cookie (no CSRF surface): only the bearer token.
    async with await login(ui, "acme") as s:
        r = await s.get("/api/queue")
        assert r.status == 401


async def test_each_tenant_sees_only_its_own_escalations(ui: UiServer, escalated: dict[str, dict[str, Out]]) -> None:
    acme = {entry_id(o) for o in escalated["acme"].values()}
    globex = {entry_id(o) for o in escalated["globex"].values()}
    async with await login(ui, "acme") as s:
        listed = await until_listed(s, "acme", acme)
        assert not (set(listed) & globex)
        assert all(e["tenant"] == "acme" for e in listed.values())
        html = await (await s.get("/")).text()
        for cid in escalated["acme"]:
            assert cid in html
        for cid in escalated["globex"]:
            assert cid not in html
        # Filters: by reason and by step (escalations of critical tickets come from the router).
        crit = await api_ids(s, "acme", reason="CRITICAL", step="route")
        assert acme <= set(crit) and all(e["reason"] == "CRITICAL" and e["step"] == "route" for e in crit.values())
        assert not (acme & set(await api_ids(s, "acme", reason="QUALITY_GATE")))
        assert not (acme & set(await api_ids(s, "acme", step="ingest")))
        row = listed[next(iter(acme))]
        assert row["subject"] and row["kind"] == "escalation" and row["status"] == "open"
    async with await login(ui, "globex") as s:
        listed = await until_listed(s, "globex", globex)
        assert not (set(listed) & acme)


async def test_another_tenants_ticket_is_refused_without_its_content(
        ui: UiServer, pipeline: Stack, escalated: dict[str, dict[str, Out]]) -> None:
    cid, o = sorted(escalated["acme"].items())[-1]
    subject = avro.decode(o.raw, avro.CASE)["ticket"]["subject"]
    path = f"/ticket/{o.topic}/{o.partition}/{o.offset}"
    async with await login(ui, "acme") as s:
        await until_listed(s, "acme", {entry_id(o)})
        r = await s.get(path)
        assert r.status == 200 and subject in await r.text()
    async with await login(ui, "globex") as s:
        page = await s.get("/")
        csrf = csrf_of(await page.text())
        for r in (await s.get(path), await s.post(path + "/answer", data={"csrf": csrf, "text": "mine now"}),
                  await s.post(path + "/replay", data={"csrf": csrf}),
                  await s.get("/api" + path, headers=bearer("globex")),
                  await s.post("/api" + path + "/answer", json={"text": "mine now"}, headers=bearer("globex")),
                  await s.post("/api" + path + "/replay", headers=bearer("globex"))):
            body = await r.text()
            assert r.status == 404, (r.method, r.url, r.status)
            assert cid not in body and subject not in body
    stray = find_record(pipeline.bootstrap, RESPONSES, lambda x: x.headers.get("resolves") == entry_id(o), timeout=4)
    assert stray is None, "another tenant's answer reached tickets.responses"


async def test_answer_by_hand_responds_and_leaves_the_queue(
        ui: UiServer, pipeline: Stack, escalated: dict[str, dict[str, Out]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cid, o = sorted(escalated["acme"].items())[0]
    ident = entry_id(o)
    path = f"/ticket/{o.topic}/{o.partition}/{o.offset}"
    text = f"Hello, a person here: we are on it ({secrets.token_hex(4)})."
    pages: list[str] = []
    async with await login(ui, "acme") as s:
        await until_listed(s, "acme", {ident})
        detail = await (await s.get(path)).text()
        pages.append(detail)
        assert "route: escalated" in detail and "CRITICAL" in detail and 'id="answer"' in detail
        r = await s.post(path + "/answer", data={"text": text}, allow_redirects=False)
        assert r.status == 403, "a form without its CSRF token must be refused"
        r = await s.post(path + "/answer", data={"text": text, "csrf": csrf_of(detail)}, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/?notice=answered")
        listing = await (await s.get(r.headers["Location"])).text()
        pages.append(listing)
        table = listing.split("<table", 1)[1] if "<table" in listing else ""
        assert cid not in table  # (the notice above the table names it)
        assert f'data-id="{ident}"' not in listing
        assert ident not in await api_ids(s, "acme")
        answered = await api_ids(s, "acme", resolved="1")
        assert answered[ident]["status"] == "answered"
        r = await s.post("/api" + path + "/answer", json={"text": "again"}, headers=bearer("acme"))
        assert r.status == 409

    resp = find_record(pipeline.bootstrap, RESPONSES, lambda x: x.headers.get("resolves") == ident)
    assert resp is not None, "no human response on tickets.responses"
    assert resp.key == cid
    assert resp.headers["resolution"] == "human" and resp.headers["correlation_id"] == cid
    assert resp.headers["tenant_id"] == "acme" and resp.headers["attempt"] == o.headers["attempt"]
    case = avro.decode(resp.raw, avro.CASE)
    assert case["reply"] == text and case["writer_model"] == "human" and case["correlation_id"] == cid
    assert case["trail"][-1].startswith("human:") and case["escalation_reason"] == "CRITICAL"
    ledger = find_record(pipeline.bootstrap, RESOLUTIONS, lambda x: x.key == f"acme/{ident}")
    assert ledger is not None

    # A fresh index (a restarted UI) rebuilds the same state from Kafka: the entry stays out of the queue.
    fresh = UiServer(pipeline, TOKENS).start()
    try:
        async with session(fresh) as s:
            await until_listed(s, "acme", {entry_id(x) for x in escalated["acme"].values()} - {ident})
            assert ident not in await api_ids(s, "acme")
    finally:
        fresh.stop()

    for secret in TOKENS.values():
        assert secret not in caplog.text
        assert all(secret not in p for p in pages)


class StallingConsumer(Consumer):
    """A real consumer that, once told to, pauses what it has (on its own thread, inside consume) and says
    nothing: what a fetch that never resumes after a broker restart looks like from outside."""

    stall = threading.Event()
    stalled = threading.Event()

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        if self.stall.is_set() and not self.stalled.is_set():
            self.pause(self.assignment())
            self.stalled.set()
        return super().consume(*args, **kwargs)


def test_the_queue_index_replaces_a_consumer_that_stops_fetching(pipeline: Stack) -> None:
    """After a broker restart an assign()ed consumer can stop fetching without an error; the page must not go
    stale for good."""
    index = QueueIndex(pipeline.bootstrap, refresh_s=0.2, stall_s=1.0, consumer=StallingConsumer).start()
    try:
        assert index.wait_ready(60)
        StallingConsumer.stall.set()
        wait_for(StallingConsumer.stalled.is_set, what="the index's consumer paused")
        cid = f"stalled-index-{uuid.uuid4().hex[:8]}"
        p = TicketProducer(pipeline.bootstrap, as_json=True)
        p.send_raw(json.dumps({"tenant_id": "acme", "subject": "no body"}).encode(), cid,
                   {"content-type": "application/json"})
        p.flush()
        wait_for(lambda: any(e.correlation_id == cid for e in index.entries("acme")), timeout=90,
                 what="the dead letter listed")
        assert index.restarts >= 1
    finally:
        index.close()
