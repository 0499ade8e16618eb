from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import Stack


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole pipeline on a real broker and Redis, with the offline models, shared by the tests that
    only send good traffic and count outcomes by their own correlation IDs."""
    s = Stack.create(tmp_path_factory.mktemp("triage-home"))
    try:
        s.start()
        yield s
    finally:
        s.stop()
