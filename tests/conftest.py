from __future__ import annotations

import os
from typing import Iterator

import pytest

from streams.services import schema_registry as registry_service
from tests.fake_openai import FakeModels
from tests.harness import REPO_ROOT, Stack, free_port
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
def schema_registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Confluent API of one Schema Registry for the whole session: TRIAGE_TEST_SCHEMA_REGISTRY_URL if it
    names one, else the embedded registry (Apicurio), started once on a free loopback port. Its build is the
    checkout's (build/registry, made by `make registry` or by the first start); a build or start that fails
    fails every test that asks for this fixture, with Maven's or the registry's own output: never a skip."""
    external = os.environ.get("TRIAGE_TEST_SCHEMA_REGISTRY_URL", "").rstrip("/")
    if external:
        yield external
        return
    home = tmp_path_factory.mktemp("triage-registry-home")
    port = free_port()
    # Generous: a JVM start under a loaded CI machine was seen at 286 s (5.8 s on a quiet one).
    registry_service.start_registry(home, REPO_ROOT, bootstrap="", port=port, timeout=600.0)
    try:
        yield registry_service.url(port)
    finally:
        registry_service.stop_registry(home)


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
