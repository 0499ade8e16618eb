"""The operator's path, through the real command line: up, produce, status, trace, down — and nothing left
running afterwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.services import proc
from tests.harness import REPO_ROOT, SAMPLE, free_port

pytestmark = pytest.mark.kafka


def _triage(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=timeout)


def test_up_status_trace_down(tmp_path: Path) -> None:
    kafka = free_port(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "OPENAI_"))}
    env.update({"TRIAGE_HOME": str(tmp_path), "TRIAGE_BOOTSTRAP": f"127.0.0.1:{kafka}",
                "TRIAGE_REDIS_PORT": str(free_port()), "TRIAGE_OFFLINE_PORT": str(free_port()),
                "TRIAGE_METRICS_BASE_PORT": str(free_port(100)), "TRIAGE_PARTITIONS": "3"})
    try:
        up = _triage(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        sent = _triage(env, "produce", str(SAMPLE / "tickets.jsonl"), "--max", "20")
        assert sent.returncode == 0, sent.stderr
        cids = [line.split("\t")[-1] for line in sent.stdout.splitlines()]
        assert len(cids) == 20 and all(len(c) == 36 for c in cids)
        tail = _triage(env, "tail", "tickets.responses", "--json", "--timeout", "120", "--max", "1")
        assert tail.returncode == 0 and json.loads(tail.stdout.splitlines()[0])["headers"]["correlation_id"]

        status = _triage(env, "status", "--json")
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert [b["node_id"] for b in doc["brokers"]] == [1] and doc["brokers"][0]["port"] == kafka
        assert all(s["workers"] == 1 for s in doc["steps"].values()), doc["steps"]
        assert doc["steps"]["ingest"]["records_total"] >= 20  # scraped from the worker's /metrics
        assert set(doc["drift"]) == {"intent", "language", "priority", "sentiment"}

        trace = _triage(env, "trace", cids[0], "--json")
        assert trace.returncode == 0 and json.loads(trace.stdout)["hops"][0]["topic"] == "tickets.in"
    finally:
        down = _triage(env, "down")
    assert down.returncode == 0, down.stderr
    assert proc.list_running(tmp_path) == {}, "triage down left processes behind"
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes still running from {tmp_path}: {leftovers}"
