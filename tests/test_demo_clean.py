"""`triage demo`, a newcomer's first command, through the real command line on free ports under a temporary
home: it ends with its summary and a clean stop — no librdkafka `FAIL ... Connection refused` lines from a
client still open while the broker stops — and leaves nothing running."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.services import proc
from tests.harness import REPO_ROOT, free_port

pytestmark = pytest.mark.kafka
NOISE = re.compile(r"\|FAIL\||Connection refused")  # librdkafka: a client still open while its broker stops


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "OPENAI_", "OTEL_"))}
    env.update({"TRIAGE_HOME": str(tmp_path), "TRIAGE_BOOTSTRAP": f"127.0.0.1:{free_port(2)}",
                "TRIAGE_REDIS_PORT": str(free_port()), "TRIAGE_OFFLINE_PORT": str(free_port()),
                "TRIAGE_METRICS_BASE_PORT": str(free_port(100)), "TRIAGE_PARTITIONS": "3",
                "TRIAGE_INSIGHTS_PORT": str(free_port())})
    return env


@pytest.mark.timeout(900)
def test_demo_ends_clean(tmp_path: Path) -> None:
    env = _env(tmp_path)
    try:
        run = subprocess.run([sys.executable, "-m", "streams.cli", "demo", "--count", "20"], env=env, cwd=REPO_ROOT,
                             text=True, capture_output=True, timeout=800)
    finally:
        left = proc.list_running(tmp_path)
        if left:
            subprocess.run([sys.executable, "-m", "streams.cli", "down"], env=env, cwd=REPO_ROOT, timeout=240)
    out = run.stdout + run.stderr
    noise = [line for line in out.splitlines() if NOISE.search(line)]
    assert not noise, "the demo's output ends with client errors:\n" + "\n".join(noise)
    assert run.returncode == 0, out
    summary = json.loads((tmp_path / "demo-summary.json").read_text())
    assert (summary["tickets"], summary["missing"], summary["duplicates"]) == (20, 0, 0), summary
    # the summary quotes the insights tables, which counted this run's 20 ends
    assert summary["insights"] and sum(h["ends"] for h in summary["insights"].values()) == 20, summary
    assert "from the insights tables" in out, out
    assert "stopped    kafka-1" in out, out
    assert not left, f"the demo left processes running: {left}"


@pytest.mark.timeout(900)
def test_the_demo_runs_another_pipeline(tmp_path: Path) -> None:
    """`triage demo --pipeline moderation`: its sample posts, each published or held once, then a clean stop."""
    env = _env(tmp_path)
    try:
        run = subprocess.run([sys.executable, "-m", "streams.cli", "demo", "--count", "30", "--pipeline", "moderation"],
                             env=env, cwd=REPO_ROOT, text=True, capture_output=True, timeout=800)
    finally:
        left = proc.list_running(tmp_path)
        if left:
            subprocess.run([sys.executable, "-m", "streams.cli", "down"], env=env, cwd=REPO_ROOT, timeout=240)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    summary = json.loads((tmp_path / "demo-summary.json").read_text())
    assert (summary["tickets"], summary["missing"], summary["duplicates"]) == (30, 0, 0), summary
    assert set(summary["per_topic"]) == {"moderation.published", "moderation.held"}, summary
    assert not left, f"the demo left processes running: {left}"
