"""The command line contract: every command answers --help, and bad arguments get a clear error."""
from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from streams.cli import app
from processors.topology import STEPS

COMMANDS = [[], ["up"], ["supervise"], ["scale"], ["down"], ["steps"], ["worker"], ["produce"], ["tail"], ["demo"], ["insights"], ["insights-worker"], ["status"], ["kb"],
            ["kb", "load"], ["dlq"], ["dlq", "list"],
            ["dlq", "show"], ["dlq", "replay"], ["drift"], ["drift", "reset"], ["trace"], ["ui"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "triage")
def test_help(cmd: list[str]) -> None:
    result = CliRunner().invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_steps_lists_every_step() -> None:
    result = CliRunner().invoke(app, ["steps"])
    assert result.exit_code == 0
    assert result.output.split() == list(STEPS)


def test_unknown_step_is_refused() -> None:
    result = CliRunner().invoke(app, ["worker", "nope"])
    assert result.exit_code == 2
    assert "unknown step" in result.output


def test_produce_missing_file() -> None:
    result = CliRunner().invoke(app, ["produce", "/nonexistent.jsonl"])
    assert result.exit_code == 1
    assert "no such file" in result.output


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "streams.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "triage" in out.stdout


def test_drift_reset_refuses_an_unknown_classifier() -> None:
    result = CliRunner().invoke(app, ["drift", "reset", "mood"])
    assert result.exit_code == 2
    assert "unknown classifier" in result.output


def test_the_demo_summary_prints_markup_and_escapes_as_data() -> None:
    """A sample reply whose tenant, subject or text holds markup or a terminal escape is printed as typed (a subject
    with ``[/x]`` made the summary raise MarkupError after the whole demo had run)."""
    import io

    from rich.console import Console

    from streams.demo import _print

    buf = io.StringIO()
    summary = {"tickets": 1, "missing": 0, "duplicates": 0, "seconds": 1.0, "per_topic": {"tickets.responses": 1},
               "accuracy": {"intent": 1.0}, "model_calls_per_ticket": 6, "all_models_calls_per_ticket": 7,
               "tokens_per_ticket": 100,
               "sample_replies": [{"tenant": "acme[/x]", "subject": "[bold]hi\x1b[2J", "reply": "ok [/red]\x1b]0;t\x07"}]}
    _print(summary, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "acme[/x]" in text and "[bold]hi" in text and "ok [/red]" in text
    assert "\x1b" not in text and "\x07" not in text
