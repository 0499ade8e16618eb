from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.fake_openai import FakeModels
from tests.harness import Stack
from tests.otlp_receiver import Receiver


@pytest.fixture(autouse=True)
def _pipeline_env() -> Iterator[None]:
    """Every test leaves TRIAGE_PIPELINE as it found it: a command run in-process (`triage ... --pipeline X`
    through typer's runner) makes X the process's pipeline, and a later module's stack would take it."""
    before = os.environ.get("TRIAGE_PIPELINE")
    yield
    if before is None:
        os.environ.pop("TRIAGE_PIPELINE", None)
    else:
        os.environ["TRIAGE_PIPELINE"] = before


@pytest.fixture(scope="session")
def otlp() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory, otlp: Receiver) -> Iterator[Stack]:
    """The whole pipeline on a real broker and Redis, with the offline models, shared by the tests that
    only send good traffic and count outcomes by their own correlation IDs. Its workers export spans to
    the test's OTLP receiver."""
    s = Stack.create(tmp_path_factory.mktemp("triage-home"), OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
                     OTEL_BSP_SCHEDULE_DELAY="200")
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModels]:
    """The fake OpenAI-compatible server (real HTTP) for a module's stack; modes are set per test."""
    with FakeModels.start() as f:
        yield f
