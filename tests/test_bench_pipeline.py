"""The benchmark's in-process pipeline (bench/pipeline.py), which the sequential, langgraph and limit lines
run, takes sample tickets to their outcomes as the workers do. It hands each step what the runtime hands it;
when it did not (the join came to keep a ticket's own bytes), the limit line's capture joined nothing and
`python -m bench.run` stopped there, unnoticed until a benchmark run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.services import redis_server
from tests.fake_openai import FakeModels
from tests.harness import REPO_ROOT, fake_models_env, free_port

pytestmark = pytest.mark.kafka  # needs the project's redis-server
N = 24


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home: Path = tmp_path_factory.mktemp("bench-home")
    port = free_port()
    redis_server.start_redis(home, port=port)
    try:
        with FakeModels.start() as fake:
            e = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "OPENAI_"))}
            e.update({"TRIAGE_HOME": str(home), "TRIAGE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                      **fake_models_env(fake.base_url)})
            yield e
    finally:
        redis_server.stop_redis(home)


def _inprocess(env: dict[str, str], tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, "-m", "bench.inprocess", *args, "--tickets", str(N), "--out", str(out)],
                         env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


def test_the_limit_lines_capture_takes_every_ticket_to_an_outcome(env: dict[str, str], tmp_path: Path) -> None:
    doc = _inprocess(env, tmp_path, "--line", "capture", "--trace", str(tmp_path / "trace.pkl"),
                     "--concurrency", "8")
    outcomes = doc["outcomes"]
    assert sum(outcomes.values()) == N and outcomes.get("responses", 0) > N // 2, outcomes


def test_the_sequential_line_answers_as_the_workers_do(env: dict[str, str], tmp_path: Path) -> None:
    doc = _inprocess(env, tmp_path, "--line", "sequential")
    outcomes = [outcome for _, _, outcome in doc["results"]]
    assert len(outcomes) == N and outcomes.count("responses") > N // 2, outcomes
