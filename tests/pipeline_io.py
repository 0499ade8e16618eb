"""Sending JSON inputs to a shipped pipeline and reading every terminal record of them (doubles included)."""
from __future__ import annotations

import json
from typing import Any

from confluent_kafka import Producer

from streams import pipelines
from streams.client import Out, read
from streams.kafka_io import producer_config


def produce(bootstrap: str, pipeline: str, docs: dict[str, Any]) -> None:
    """``{correlation ID: a JSON object, or raw bytes}`` to the pipeline's input topic, keyed by the ID."""
    topic = pipelines.load(pipeline).input
    p = Producer(producer_config(bootstrap, None))
    for cid, doc in docs.items():
        value = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        while True:
            try:
                p.produce(topic, value=value, key=cid.encode())
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


def outcomes(bootstrap: str, pipeline: str, cids: set[str], timeout: float = 300) -> dict[str, list[Out]]:
    """Waits until each of ``cids`` has a terminal record, then reads them all again to see doubles."""
    topics = pipelines.load(pipeline).terminal_topics()
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
