"""The human-queue page in a real browser (headless system Chromium driven by Playwright) with the real broker
behind it: log in as acme, open an escalated ticket, answer it by hand and watch it leave the queue; replay a
dead letter; as globex, be refused acme's ticket. Leaves a screenshot at ``.triage-ui-screenshot.png``."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from streams import avro
from processors.topology import dlq_topic
from tests.harness import REPO_ROOT, Stack
from tests.test_ui import TOKENS, UiServer, critical, entry_id, escalate

pytestmark = pytest.mark.kafka

CHROMIUM = os.environ.get("TRIAGE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = REPO_ROOT / ".triage-ui-screenshot.png"

import playwright.sync_api as playwright_api  # noqa: E402 - the test extra installs it


@pytest.fixture(scope="session", autouse=True)
def chromium() -> str:
    """The browser, checked before any stack starts (autouse, session scope: set up first). Without one this
    module's tests fail with the reason, never skip, and never stop the rest of the run (an assert at import
    used to interrupt pytest's whole collection). `make test` installs Debian's chromium when run as root."""
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set TRIAGE_CHROMIUM to a browser)",
                    pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="module")
def traffic(pipeline: Stack) -> dict[str, Any]:
    """An escalated acme ticket and an acme dead letter in tickets.dlq.ingest (a body over the size limit)."""
    escalated = escalate(pipeline, critical("acme", 2, skip=6), "uib-")
    assert escalated, "no acme ticket escalated"
    cid, esc = next(iter(sorted(escalated.items())))
    big = {"tenant_id": "acme", "subject": "Log dump attached", "body": "x" * (pipeline.settings.max_body_chars + 500)}
    sent = pipeline.produce([big], as_json=True, prefix="uib-big-")
    outs = pipeline.outcomes(set(sent), timeout=120, settle=1.0)
    (big_cid, [dead]), = outs.items()
    assert dead.topic == dlq_topic("ingest") and dead.headers["dlq.reason"] == "OVERSIZED"
    assert "tenant_id" not in dead.headers  # the page takes the tenant the ticket claims
    return {"cid": cid, "escalation": esc, "subject": avro.decode(esc.raw, avro.CASE)["ticket"]["subject"],
            "dead_cid": big_cid, "dead": dead}


@pytest.fixture(scope="module")
def ui(pipeline: Stack, traffic: dict[str, Any]) -> Iterator[UiServer]:
    server = UiServer(pipeline, TOKENS).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def log_in(browser: Any, ui: UiServer, tenant: str) -> Any:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(45_000)
    page = ctx.new_page()
    page.goto(ui.url + "/")  # not logged in: sent to the login form
    assert page.url.endswith("/login")
    page.fill("#token", TOKENS[tenant])
    page.click("button[type=submit]")
    page.wait_for_url(ui.url + "/")
    return page


def reload_until(page: Any, selector: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while page.locator(selector).count() == 0:
        assert time.monotonic() < deadline, f"{selector} never appeared"
        time.sleep(0.5)
        page.reload()


def test_an_agent_answers_by_hand_replays_and_cannot_see_other_tenants(
        browser: Any, ui: UiServer, traffic: dict[str, Any]) -> None:
    esc_id, dead_id = entry_id(traffic["escalation"]), entry_id(traffic["dead"])
    page = log_in(browser, ui, "acme")
    reload_until(page, f'tr[data-id="{esc_id}"]')
    reload_until(page, f'tr[data-id="{dead_id}"]')
    assert "tenant acme" in page.inner_text("header")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Open the escalated ticket: its whole trail is there.
    page.click(f'tr[data-id="{esc_id}"] td:nth-child(2) a')
    assert traffic["subject"] in page.inner_text("h1")
    assert "route: escalated (CRITICAL)" in page.inner_text("#trail")
    assert "ingest: accepted" in page.inner_text("#trail")
    page.fill("#answer", "A person has looked at this: the fix is rolling out now.")
    page.click("#send-answer")
    page.wait_for_url("**/?notice=answered*")
    assert traffic["cid"] in page.inner_text(".notice")
    assert page.locator(f'tr[data-id="{esc_id}"]').count() == 0

    # The dead letter: filter by step, open it, replay it.
    page.select_option("select[name=step]", "ingest")
    page.click("form.filters button")
    page.wait_for_url("**/?*step=ingest*")
    row = page.locator(f'tr[data-id="{dead_id}"]')
    assert "OVERSIZED" in row.inner_text() and "open" in row.inner_text()
    assert all(r.inner_text().split("\t")[4] == "ingest" for r in page.locator("#queue tbody tr").all())
    row.locator("td:nth-child(3) a").click()
    assert "OVERSIZED" in page.inner_text("main")
    page.click("#replay")
    page.wait_for_selector("#notice")
    assert "Replayed: 1 record(s)" in page.inner_text("#notice")
    assert page.locator("h1 .badge.replayed").count() == 1
    assert page.locator("#replay").count() == 0
    page.context.close()

    # globex follows a link to acme's ticket: refused, and nothing of it shows.
    other = log_in(browser, ui, "globex")
    assert other.locator(f'tr[data-id="{esc_id}"]').count() == 0
    for ident in (esc_id, dead_id):
        resp = other.goto(ui.url + "/ticket/" + ident)
        assert resp is not None and resp.status == 404
        text = other.content()
        assert traffic["subject"] not in text and traffic["cid"] not in text and traffic["dead_cid"] not in text
    other.context.close()
