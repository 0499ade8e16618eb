"""The queue page under attack, over real HTTP with the real broker behind it: failed logins and bearer tokens
are rate-limited (429 + Retry-After), the login form has a CSRF token, logging out ends the session on the
server, malformed query strings and forms are a 400 (never a 500); and `triage ui` takes no token on its
command line and writes its token file with mode 600 from the first byte."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest
from aiohttp import web
from confluent_kafka import Producer

from streams.kafka_io import producer_config
from processors.topology import dlq_topic
from streams.ui.app import make_app
from streams.ui.auth import FailureLimiter
from tests.harness import REPO_ROOT, Stack, free_port
from tests.test_ui import TOKENS, UiServer, bearer, csrf_of, login, login_csrf, session

pytestmark = pytest.mark.kafka


class Clock:
    """The limiter's clock, moved by the test (the buckets refill with time; the test does not wait for it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LimitedUi(UiServer):
    def __init__(self, stack: Stack, limiter: FailureLimiter) -> None:
        super().__init__(stack, TOKENS)
        self.limiter = limiter

    async def _start(self) -> None:
        self.app = make_app(self.stack.settings, self.tokens, limiter=self.limiter)
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack.create(tmp_path_factory.mktemp("ui-login-home"))
    try:
        s.start(workers=[])
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def ui(services: Stack, clock: Clock) -> Iterator[LimitedUi]:
    server = LimitedUi(services, FailureLimiter(burst=5, per_s=1 / 12, clock=clock)).start()
    try:
        yield server
    finally:
        server.stop()


def dead_letter(bootstrap: str, tenant: str) -> str:
    """One ingest dead letter of ``tenant``; its entry id."""
    p = Producer(producer_config(bootstrap, None))
    got: list[str] = []
    cid = f"login-{uuid.uuid4().hex[:8]}"
    headers = {"dlq.reason": "MALFORMED", "dlq.step": "ingest", "dlq.source": "tickets.in/0/0", "attempt": "1",
               "correlation_id": cid, "dlq.ts": str(int(time.time() * 1000))}
    p.produce(dlq_topic("ingest"), key=cid.encode(),
              value=json.dumps({"tenant_id": tenant, "subject": "no body"}).encode(),
              headers=[(k, v.encode()) for k, v in headers.items()],
              on_delivery=lambda err, msg: got.append(f"{msg.topic()}/{msg.partition()}/{msg.offset()}"))
    assert p.flush(30) == 0 and got
    return got[0]


async def test_failed_logins_are_rate_limited(ui: LimitedUi, clock: Clock) -> None:
    async with session(ui) as s:
        for _ in range(5):
            r = await s.post("/login", data={"token": f"guess-{uuid.uuid4().hex}", "csrf": await login_csrf(s)},
                             allow_redirects=False)
            assert r.status == 401
        r = await s.post("/login", data={"token": "guess-again-xx", "csrf": await login_csrf(s)},
                         allow_redirects=False)
        assert r.status == 429, "the sixth wrong token in a row from one address must be refused"
        wait = int(r.headers["Retry-After"])
        assert 1 <= wait <= 12 and "Set-Cookie" not in r.headers
        # While limited, even the right token is refused: a refusal that depended on the token would tell a
        # guesser when they had it.
        r = await s.post("/login", data={"token": TOKENS["acme"], "csrf": await login_csrf(s)},
                         allow_redirects=False)
        assert r.status == 429
        # The API's bearer token is the same guess: counted against the same address.
        r = await s.get("/api/queue", headers=bearer("acme"))
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        clock.now += wait
        r = await s.post("/login", data={"token": TOKENS["acme"], "csrf": await login_csrf(s)},
                         allow_redirects=False)
        assert r.status == 303, "after Retry-After seconds the right token logs in"
        # A wrong bearer token costs a try too: the one refilled try, spent, and the API is refused again.
        assert (await s.get("/api/queue", headers={"Authorization": "Bearer not-a-token-at-all"})).status == 401
        assert (await s.get("/api/queue", headers=bearer("acme"))).status == 429
        clock.now += 600  # the bucket is full again: later tests of this module start clean
        assert (await s.get("/api/queue", headers=bearer("acme"))).status == 200


async def test_the_login_form_has_a_csrf_token(ui: LimitedUi) -> None:
    async with session(ui) as s:
        r = await s.post("/login", data={"token": TOKENS["acme"]}, allow_redirects=False)
        assert r.status == 403 and "Set-Cookie" not in r.headers, "a login without the form's CSRF token"
    # Another site can fetch a form of its own, but not this browser's pre-login cookie: its token is refused.
    async with session(ui) as attacker:
        theirs = await login_csrf(attacker)
    async with session(ui) as victim:
        await login_csrf(victim)
        r = await victim.post("/login", data={"token": TOKENS["globex"], "csrf": theirs}, allow_redirects=False)
        assert r.status == 403 and "Set-Cookie" not in r.headers
    async with aiohttp.ClientSession(base_url=ui.url) as s:  # no cookie jar for an IP host: no pre-login cookie
        html = await (await s.get("/login")).text()
        r = await s.post("/login", data={"token": TOKENS["acme"], "csrf": csrf_of(html)}, allow_redirects=False)
        assert r.status == 403


async def test_logout_ends_the_session_on_the_server(ui: LimitedUi) -> None:
    s = await login(ui, "acme")
    async with s:
        cookie = next(c for c in s.cookie_jar if c.key == "triage_session").value
        page = await s.get("/", allow_redirects=False)
        assert page.status == 200
        r = await s.post("/logout", data={"csrf": csrf_of(await page.text())}, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/login"
    # The cookie, kept and sent again after logging out, is no session.
    async with session(ui) as replay:
        replay.cookie_jar.update_cookies({"triage_session": cookie})
        r = await replay.get("/", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/login", "a session cookie replayed after logout"
        r = await replay.get("/api/queue")
        assert r.status == 401
    # Another session of the same tenant is not ended by it.
    async with await login(ui, "acme") as other:
        assert (await other.get("/", allow_redirects=False)).status == 200


async def test_malformed_queries_and_forms_are_a_400(ui: LimitedUi, services: Stack) -> None:
    ident = dead_letter(services.bootstrap, "acme")
    async with await login(ui, "acme") as s:
        deadline = time.monotonic() + 60
        while (await s.get("/ticket/" + ident, allow_redirects=False)).status != 200:
            assert time.monotonic() < deadline, "the dead letter never showed"
        ok = await s.get(f"/ticket/{ident}?notice=replayed&sent=1&already=0")
        assert ok.status == 200 and "Replayed: 1 record(s)" in await ok.text()
        for query in ("notice=replayed&sent=abc", "notice=replayed&already=-1", "notice=replayed&sent=1e9",
                      "notice=replayed&sent=%C2%B2"):
            r = await s.get(f"/ticket/{ident}?{query}")
            assert r.status == 400, (query, r.status)
        for query in ("page=abc", "page=0", "limit=x", "kind=bogus", "resolved=maybe", "page=%FF"):
            r = await s.get(f"/?{query}")
            assert r.status in (200, 400) and r.status != 500, (query, r.status)
            if query != "page=%FF":
                assert r.status == 400, (query, r.status)
        r = await s.get("/api/queue?limit=abc", headers=bearer("acme"))
        assert r.status == 400 and "limit" in (await r.json())["error"]
        # A CSRF field that is not ASCII, and a body that is no form: refused, not a crash.
        page = await s.get("/")
        assert page.status == 200
        r = await s.post("/ticket/" + ident + "/replay", data={"csrf": "é" * 43}, allow_redirects=False)
        assert r.status == 403
        r = await s.post("/logout", data=b"--x\r\nbroken", allow_redirects=False,
                         headers={"Content-Type": "multipart/form-data"})
        assert r.status == 400, r.status
        r = await s.post("/login", data=b"\xff\xfe", headers={"Content-Type": "application/x-www-form-urlencoded"},
                         allow_redirects=False)
        assert r.status in (400, 403), r.status


# ---- the `triage ui` command ---------------------------------------------------------------------------------
def cli(services: Stack, home: Path, *args: str, extra_env: dict[str, str] | None = None,
        wrapper: str | None = None) -> subprocess.Popen[bytes]:
    env = services.worker_env()
    env["TRIAGE_HOME"] = str(home)
    env.update(extra_env or {})
    cmd = [sys.executable, "-c", wrapper, *args] if wrapper else [sys.executable, "-m", "streams.cli", *args]
    return subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def stop(p: subprocess.Popen[bytes]) -> tuple[str, str]:
    if p.poll() is None:
        p.terminate()
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=30)
    return out.decode(), err.decode()


def test_no_token_is_taken_on_the_command_line(services: Stack, tmp_path: Path) -> None:
    p = cli(services, tmp_path, "ui", "--port", str(free_port()), "--tokens", "acme:acme-secret-token-1")
    try:
        p.wait(60)
    finally:
        out, err = stop(p)
    assert p.returncode == 2, (p.returncode, out, err)
    assert "--tokens" in err and "ps" in err and "--tokens-file" in err and "TRIAGE_UI_TOKENS" in err
    assert "human queue on" not in out, "the page must not start with a token from the command line"


def test_tokens_from_a_file_or_the_environment(services: Stack, tmp_path: Path) -> None:
    loose = tmp_path / "loose.json"
    loose.write_text(json.dumps({"acme": "acme-token-from-file"}))
    loose.chmod(0o644)
    p = cli(services, tmp_path, "ui", "--port", str(free_port()), "--tokens-file", str(loose))
    try:
        p.wait(60)
    finally:
        _, err = stop(p)
    assert p.returncode == 2 and "readable by others" in err and "chmod 600" in err
    for how in ("file", "env"):
        port = free_port()
        token = f"acme-token-from-{how}-{uuid.uuid4().hex[:6]}"
        if how == "file":
            f = tmp_path / "tokens"
            f.write_text(f"# agents\nacme:{token}\n")
            f.chmod(0o600)
            p = cli(services, tmp_path, "ui", "--port", str(port), "--tokens-file", str(f))
        else:
            p = cli(services, tmp_path, "ui", "--port", str(port), extra_env={"TRIAGE_UI_TOKENS": f"acme:{token}"})
        try:
            assert_logs_in(port, token, p)
            with open(f"/proc/{p.pid}/cmdline", "rb") as cmdline:
                assert token.encode() not in cmdline.read()
        finally:
            stop(p)


def assert_logs_in(port: int, token: str, p: subprocess.Popen[bytes]) -> None:
    import asyncio
    import re

    async def go() -> None:
        deadline = time.monotonic() + 90
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            while True:
                assert p.poll() is None, p.communicate()
                try:
                    html = await (await s.get(f"http://127.0.0.1:{port}/login")).text()
                    break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline, "triage ui never listened"
                    await asyncio.sleep(0.3)
            csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
            r = await s.post(f"http://127.0.0.1:{port}/login", data={"token": token, "csrf": csrf},
                             allow_redirects=False)
            assert r.status == 303

    asyncio.run(go())


# Runs `triage ui` with an audit hook that, at every file event, looks at each file this process has opened
# for writing: a file holding the tokens in a mode others may read, even for a moment (written, then chmod'ed),
# is reported. When the page is about to listen, the hook writes its report and ends the process.
WATCHED = r'''
import json, os, stat, sys
report, seen, bad = sys.argv.pop(1), set(), []
home = os.path.realpath(os.environ["TRIAGE_HOME"])
def check():
    for path in list(seen):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size and st.st_mode & 0o077:
            bad.append([path, oct(stat.S_IMODE(st.st_mode))])
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)) and (
            (isinstance(args[1], str) and any(c in args[1] for c in "wax+")) or
            (args[1] is None and isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR))):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path.startswith(home + os.sep) or os.path.dirname(path) == os.path.dirname(home):
            seen.add(path)
    if event in ("open", "os.chmod", "os.rename", "os.replace", "os.remove", "socket.bind"):
        check()
    if event == "socket.bind":
        with open(report, "w") as f:
            json.dump({"bad": bad, "seen": sorted(seen)}, f)
        os._exit(0)
sys.addaudithook(hook)
from streams.cli import app
sys.argv[0] = "triage"
app()
'''


def test_the_generated_token_file_is_mode_600_from_its_first_byte(services: Stack, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    elsewhere = tmp_path / "elsewhere.json"
    # A symlink where the file goes (planted by someone who can write the directory): replaced, not written
    # through to a file of their choosing.
    (home / "ui-tokens.json").symlink_to(elsewhere)
    report = tmp_path / "report.json"
    p = cli(services, home, str(report), "ui", "--port", str(free_port()), wrapper=WATCHED,
            extra_env={"TRIAGE_TENANTS": "acme,globex"})
    try:
        p.wait(120)
    finally:
        out, err = stop(p)
    assert report.exists(), (p.returncode, out, err)
    doc = json.loads(report.read_text())
    path = home / "ui-tokens.json"
    assert doc["bad"] == [], f"tokens were on disk in a file others could read: {doc['bad']}"
    assert not elsewhere.exists(), "the tokens were written through a symlink"
    st = path.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    tokens = json.loads(path.read_text())
    assert set(tokens) == {"acme", "globex"} and all(len(t) >= 16 for t in tokens.values())
    assert [f for f in os.listdir(home) if f.endswith(".tmp")] == []


def test_guesses_spread_over_many_addresses_are_limited_together() -> None:
    """The per-address bucket alone would let a botnet guess at full speed: the shared one stops that too."""
    clock = Clock()
    limiter = FailureLimiter(burst=5, per_s=1 / 12, shared_burst=20, shared_per_s=1.0, clock=clock)
    for i in range(20):
        assert limiter.retry_after(f"10.0.0.{i}") == 0
        limiter.failed(f"10.0.0.{i}")
    assert limiter.retry_after("10.0.1.1") == 1, "a fresh address, but 20 failures in all just now"
    clock.now += 1
    assert limiter.retry_after("10.0.1.1") == 0
    limiter.failed("10.0.1.1")
    assert limiter.retry_after("10.0.1.2") == 1


def test_a_forged_cookie_that_is_not_ascii_is_no_session() -> None:
    """compare_digest raises on a str that is not ASCII: a forged session or login cookie must be refused, not
    raise (which the page turned into a 500)."""
    from streams.ui.auth import Auth

    a = Auth({"acme": "t" * 24})
    good = a.new_session("acme")
    assert a.session(good) is not None
    assert a.session(good[:-2] + "é") is None
    assert a._login_payload(a.new_login_nonce()[:-1] + "é") is None
