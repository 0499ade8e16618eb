"""Helpers for the tests of decisions about queue entries: dead letters made on the real pipeline, queue pages
served in this process over real HTTP (aiohttp's test server: each page its own index and producers, as a
replica would have), the real CLI as a subprocess, and counts of what reached Kafka."""
from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from aiohttp.test_utils import TestClient, TestServer

from streams.client import Out, TicketProducer, read
from processors.topology import RESPONSES, dlq_topic
from streams.ui.app import INDEX, RESOLVER, make_app
from streams.ui.queue import QueueIndex
from tests.harness import REPO_ROOT, Stack

TOKENS = {"acme": f"acme-{secrets.token_hex(12)}", "globex": f"globex-{secrets.token_hex(12)}"}
RESOLUTIONS = "triage.human.resolutions"


def bearer(tenant: str = "acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[tenant]}"}


def entry_id(o: Out) -> str:
    return f"{o.topic}/{o.partition}/{o.offset}"


def path_of(ident: str) -> str:
    return f"/ticket/{ident}"


def dead_letters(stack: Stack, n: int, *, prefix: str, same_cid: bool = False) -> list[Out]:
    """``n`` dead letters of ``ingest`` for acme that a person can answer (a ticket with a blank body), each
    with its own correlation ID or all with one."""
    shared = f"{prefix}{uuid.uuid4().hex[:8]}"
    cids = [shared if same_cid else f"{prefix}{i}-{uuid.uuid4().hex[:8]}" for i in range(n)]
    p = TicketProducer(stack.bootstrap, as_json=True)
    for i, cid in enumerate(cids):
        p.send_raw(json.dumps({"tenant_id": "acme", "subject": f"blank {i}", "body": "   "}).encode(), cid,
                   {"content-type": "application/json"})
    p.flush()
    wanted = set(cids)
    deadline = time.monotonic() + 120
    while True:
        got = stack.outcomes(wanted, timeout=120, settle=1.0)
        outs = [o for c in wanted for o in got.get(c, []) if o.headers.get("attempt") == "1"]
        if len(outs) >= n:
            break
        assert time.monotonic() < deadline, f"only {len(outs)} of {n} dead letters"
    assert all(o.topic == dlq_topic("ingest") for o in outs), [o.topic for o in outs]
    return sorted(outs, key=lambda o: (o.partition, o.offset))


@asynccontextmanager
async def page(stack: Stack, *, index: QueueIndex | None = None, **resolver: Any) -> AsyncIterator[TestClient]:
    """A queue page (its own index unless one is given, its own producers) on a free port. ``resolver``:
    arguments of the page's Resolver (e.g. ``commit=``, to inject a fault into its commits)."""
    app = make_app(stack.settings, TOKENS, index=index)
    if resolver:
        from streams.ui.resolve import Resolver
        app[RESOLVER] = Resolver(stack.bootstrap, app[INDEX], **resolver)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def until_indexed(client: TestClient, ident: str, tenant: str = "acme", timeout: float = 60) -> dict[str, Any]:
    """The page's JSON view of the entry, once its index has it."""
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get("/api" + path_of(ident), headers=bearer(tenant))
        if r.status == 200:
            return await r.json()
        assert time.monotonic() < deadline, f"{ident} never showed on the page ({r.status})"
        await asyncio.sleep(0.3)


async def until_status(client: TestClient, ident: str, status: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = await until_indexed(client, ident)
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, f"{ident} stayed {body['status']}, never {status}"
        await asyncio.sleep(0.3)


async def answer(client: TestClient, ident: str, text: str = "A person answered this.") -> tuple[int, dict[str, Any]]:
    r = await client.post("/api" + path_of(ident) + "/answer", json={"text": text}, headers=bearer())
    return r.status, await r.json()


async def login(client: TestClient, tenant: str = "acme") -> None:
    form = await (await client.get("/login")).text()
    data = {"token": TOKENS[tenant]}
    m = re.search(r'name="csrf" value="([^"]+)"', form)
    if m:
        data["csrf"] = m.group(1)
    r = await client.post("/login", data=data, allow_redirects=False)
    assert r.status == 303, r.status


def responses_to(stack: Stack, ident: str) -> list[Out]:
    """Every response on tickets.responses that answers the entry ``ident`` by hand."""
    return [o for o in read(stack.bootstrap, [RESPONSES], timeout=60, idle=1.5) if o.headers.get("resolves") == ident]


def resolutions_of(stack: Stack, ident: str) -> list[Out]:
    """Every ledger record of a resolution of ``ident`` (the topic is compacted, but not this soon)."""
    return [o for o in read(stack.bootstrap, [RESOLUTIONS], timeout=60, idle=1.5)
            if o.key and o.key.endswith("/" + ident)]


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``triage`` command against the stack."""
    out = subprocess.run([sys.executable, "-m", "streams.cli", *args], env=stack.worker_env(), cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out
