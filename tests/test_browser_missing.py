"""Without a browser only the browser test fails: pytest still collects and runs everything else, and the
failure says what is missing and how to install it (not a skip, which would hide it). Runs pytest itself on
the browser test and a test without Kafka, with TRIAGE_CHROMIUM naming no browser."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO_ROOT


def test_a_missing_chromium_fails_the_browser_test_alone(tmp_path: Path) -> None:
    env = dict(os.environ, TRIAGE_CHROMIUM=str(tmp_path / "no-chromium"))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE",
                          "tests/test_ui_browser.py", "tests/test_dead_letter_size.py"],
                         cwd=REPO_ROOT, env=env, text=True, capture_output=True, timeout=300)
    out = run.stdout + run.stderr
    closing = out.strip().splitlines()[-1]
    assert "Interrupted" not in out and "error during collection" not in out, out
    assert run.returncode == 1, out
    assert "1 passed" in closing and ("1 failed" in closing or "1 error" in closing), closing
    assert f"no Chromium at {tmp_path / 'no-chromium'}: apt-get install chromium" in out, out
    assert "skipped" not in closing, closing
