"""The insights dashboard in a real browser (headless Chromium) over the real broker and a real insights
worker: an agent of acme sees acme's figures and charts, never globex's, and asking for globex's is refused,
on the page and on the API. Leaves a screenshot at ``.triage-insights-screenshot.png`` (an artefact of the
run, not committed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest

from tests.harness import REPO_ROOT, Stack, free_port, sample_tickets
from tests.test_ui import TOKENS, UiServer
from tests.test_ui_browser import browser, chromium, log_in, reload_until  # noqa: F401 - fixtures

pytestmark = pytest.mark.kafka

SCREENSHOT = REPO_ROOT / ".triage-insights-screenshot.png"

import playwright.sync_api as playwright_api  # noqa: E402 - the test extra installs it


@pytest.fixture(scope="module")
def insights(pipeline: Stack) -> Iterator[str]:
    """An insights worker over the session's stack, on a port of its own; the UI is told the port the same
    way (TRIAGE_INSIGHTS_PORT)."""
    port = str(free_port())
    env = {**pipeline.worker_env(), "TRIAGE_INSIGHTS_PORT": port}
    log = (pipeline.home / "logs" / "test-dashboard-insights.log").open("ab")
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "insights-worker"], env=env, cwd=REPO_ROOT,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRIAGE_INSIGHTS_PORT", port)
        try:
            yield port
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)


@pytest.fixture(scope="module")
def traffic(pipeline: Stack) -> dict[str, int]:
    tickets = [t for t in sample_tickets(80) if t["tenant_id"] in ("acme", "globex")]
    sent = pipeline.produce(tickets, prefix="dash-")
    outs = pipeline.outcomes(set(sent), timeout=300, settle=1.0)
    assert len(outs) == len(sent)
    return {t: sum(1 for d in tickets if d["tenant_id"] == t) for t in ("acme", "globex")}


@pytest.fixture(scope="module")
def ui(pipeline: Stack, insights: str, traffic: dict[str, int]) -> Iterator[UiServer]:
    server = UiServer(pipeline, TOKENS).start()
    try:
        yield server
    finally:
        server.stop()


def _finished(page: Any) -> int:
    tile = page.locator("#insights-support .tile", has_text="finished (day)").first
    return int(tile.locator("b").inner_text()) if tile.count() else 0


def test_an_agent_sees_its_tenants_figures_and_never_anothers(browser: Any, ui: UiServer,
                                                               traffic: dict[str, int]) -> None:
    page = log_in(browser, ui, "acme")
    page.click("#nav-insights")
    page.wait_for_url(ui.url + "/insights")
    reload_until(page, "#insights-support", timeout=120)
    deadline_reloads = 120
    while _finished(page) < traffic["acme"] and deadline_reloads:
        page.wait_for_timeout(1000)  # the worker folds records as they come; the page shows its tables now
        page.reload()
        deadline_reloads -= 1
    assert _finished(page) >= traffic["acme"], "the dashboard never counted acme's tickets"
    assert "Insights · acme" in page.inner_text("h1")
    for chart in ("volume", "latency", "cost", "rates"):
        assert page.locator(f"#{chart}-support svg").count() == 1, chart
    assert page.locator("#volume-support rect").count() > 0
    assert page.locator("#latency-support circle").count() > 0
    assert "globex" not in page.inner_text("main")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    resp = page.goto(ui.url + "/insights?tenant=globex")
    assert resp is not None and resp.status == 403
    assert "only acme" in page.inner_text("main") and "finished" not in page.inner_text("main")
    page.context.close()

    # The API: a bearer token of acme gets acme's figures only; asking for globex's is forbidden.
    def api(tenant_query: str) -> tuple[int, bytes]:
        req = urllib.request.Request(ui.url + "/api/insights" + tenant_query,
                                     headers={"Authorization": f"Bearer {TOKENS['acme']}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    status, body = api("")
    assert status == 200 and {t["tenant"] for t in json.loads(body)["tenants"]} == {"acme"}
    status, body = api("?tenant=globex")
    assert status == 403 and b"forbidden" in body

    other = log_in(browser, ui, "globex")
    other.goto(ui.url + "/insights")
    reload_until(other, "#insights-support", timeout=60)
    assert "Insights · globex" in other.inner_text("h1") and "acme" not in other.inner_text("main")
    other.context.close()
