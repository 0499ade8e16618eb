"""Two pipelines on one cluster at once, through the real command line: `triage up` of support in one home,
then `triage up --pipeline moderation` in a second home beside it, which joins the running broker instead of
starting one. Each pipeline finishes its own inputs exactly once on its own topics and consumer groups; the
second home's `triage down` leaves the first running. A second home whose metrics ports the first holds is
refused before any of its workers starts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streams import pipelines
from streams.kafka_io import base_config
from streams.services import proc
from streams.services.kafka_broker import broker_ready
from tests import pipeline_io
from tests.harness import REPO_ROOT, SAMPLE, free_port

pytestmark = pytest.mark.kafka
POSTS = SAMPLE / "moderation" / "posts.jsonl"


def _triage(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=timeout)


def _home_env(home: Path, bootstrap: str, metrics_base: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "OPENAI_"))}
    env.update({"TRIAGE_HOME": str(home), "TRIAGE_BOOTSTRAP": bootstrap, "TRIAGE_REDIS_PORT": str(free_port()),
                "TRIAGE_OFFLINE_PORT": str(free_port()), "TRIAGE_METRICS_BASE_PORT": str(metrics_base),
                "TRIAGE_PARTITIONS": "3"})
    return env


@pytest.fixture
def support_home(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = _home_env(tmp_path / "support", f"127.0.0.1:{free_port(2)}", free_port(100))
    try:
        up = _triage(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        yield env
    finally:
        down = _triage(env, "down")
        assert down.returncode == 0, down.stderr
        assert proc.list_running(Path(env["TRIAGE_HOME"])) == {}, "triage down left processes behind"


def _sent(produced: subprocess.CompletedProcess[str]) -> list[str]:
    assert produced.returncode == 0, produced.stdout + produced.stderr
    return [line.split("\t")[-1] for line in produced.stdout.splitlines() if line.strip()]


def test_support_and_moderation_run_side_by_side_on_one_cluster(support_home: dict[str, str],
                                                                  tmp_path: Path) -> None:
    bootstrap = support_home["TRIAGE_BOOTSTRAP"]
    taken = _home_env(tmp_path / "clash", bootstrap, int(support_home["TRIAGE_METRICS_BASE_PORT"]))
    try:
        clash = _triage(taken, "up", "--pipeline", "moderation")
        assert clash.returncode != 0 and "TRIAGE_METRICS_BASE_PORT" in clash.stdout + clash.stderr, clash.stdout
        assert not any(n.startswith("worker-") for n in proc.list_running(tmp_path / "clash"))
    finally:
        _triage(taken, "down")

    env = _home_env(tmp_path / "moderation", bootstrap, free_port(100))
    try:
        up = _triage(env, "up", "--pipeline", "moderation")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "joined the cluster already running" in up.stdout, up.stdout
        assert not any(n.startswith("kafka-") for n in proc.list_running(tmp_path / "moderation"))

        tickets = _sent(_triage(support_home, "produce", str(SAMPLE / "tickets.jsonl"), "--max", "30"))
        posts = _sent(_triage(env, "produce", str(POSTS), "--pipeline", "moderation"))
        expected = [json.loads(line)["expected"]["verdict"] for line in POSTS.read_text().splitlines() if line]
        assert len(tickets) == 30 and len(posts) == len(expected)

        for name, cids in (("support", tickets), ("moderation", posts)):
            seen = pipeline_io.outcomes(bootstrap, name, set(cids))
            assert set(seen) == set(cids), f"{name}: missing {sorted(set(cids) - set(seen))[:5]}"
            assert all(len(v) == 1 for v in seen.values()), f"{name}: an input with two outcomes"
        moderated = pipeline_io.outcomes(bootstrap, "moderation", set(posts))
        assert [moderated[c][0].topic for c in posts] == [f"moderation.{v}" for v in expected]

        support, moderation = pipelines.load("support"), pipelines.load("moderation")
        assert not set(support.all_topics()) & set(moderation.all_topics())
        groups = {support.group_id(s) for s in support.step_names}, {moderation.group_id(s) for s in
                                                                     moderation.step_names}
        assert not groups[0] & groups[1]
        admin = AdminClient(base_config(bootstrap))
        listed = {g.group_id for g in admin.list_consumer_groups().result(30).valid}
        assert groups[0] | groups[1] <= listed, sorted(groups[0] | groups[1] - listed)
    finally:
        down = _triage(env, "down")
    assert down.returncode == 0, down.stderr
    assert proc.list_running(tmp_path / "moderation") == {}
    assert broker_ready(bootstrap, 10), "the second home's down stopped the first home's broker"
    again = _sent(_triage(support_home, "produce", str(SAMPLE / "tickets.jsonl"), "--max", "3"))
    assert set(pipeline_io.outcomes(bootstrap, "support", set(again))) == set(again)
