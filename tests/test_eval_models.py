"""The classifier evaluation (bench.models) counts right: figures worked out by hand for a six-ticket file."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import models

REPO = Path(__file__).resolve().parents[1]

# subject -> (expected priority, answered priority, confidence, expected intent, answered intent)
CASES = {
    "db down": ("critical", "critical", 0.95, "technical", "technical"),
    "leak": ("critical", "medium", 0.6, "account", "general"),
    "sso broken": ("high", "critical", 0.8, "technical", "technical"),
    "invoice copy": ("medium", "medium", 0.4, "billing", "billing"),
    "thanks": ("low", "low", 0.92, "general", "general"),
    "cluster gone": ("critical", "high", 0.75, "technical", "technical"),
}


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.jsonl"
    # The first three in English, the others in German: only grouped by, never scored here.
    lines = [json.dumps({"tenant_id": "acme", "subject": subject, "body": "",
                         "expected": {"priority": exp_p, "intent": exp_i, "language": "en" if i < 3 else "de"}})
             for i, (subject, (exp_p, _, _, exp_i, _)) in enumerate(CASES.items())]
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")  # a blank line is skipped, not a ticket
    return path


def _stub(task: str, subject: str, body: str) -> tuple[str, float]:
    """Answers fixed by the table, so the figures below do not move when the real models change."""
    _, ans_p, conf, _, ans_i = CASES[subject]
    return (ans_p, conf) if task == "priority" else (ans_i, 0.75)


def test_figures_match_hand_counts(tmp_path: Path) -> None:
    res = models.evaluate(models.read_tickets(_write(tmp_path)), _stub, tasks=("intent", "priority"))
    assert res["tickets"] == 6 and res["calls"] == 12
    pri = res["tasks"]["priority"]
    assert (pri["correct"], pri["total"], pri["accuracy"]) == (3, 6, 0.5)
    assert pri["confusion"] == {"critical": {"critical": 1, "medium": 1, "high": 1}, "high": {"critical": 1},
                                "medium": {"medium": 1}, "low": {"low": 1}}
    # critical: 1 of the 2 answers "critical" is right (precision), 1 of the 3 critical tickets found (recall);
    # the counts differ on purpose, so swapping "predicted" and "expected" anywhere shows.
    assert pri["per_label"]["critical"] == {"precision": 0.5, "recall": 0.3333, "predicted": 2, "expected": 3}
    assert pri["per_label"]["high"] == {"precision": 0.0, "recall": 0.0, "predicted": 1, "expected": 1}
    assert pri["per_label"]["medium"] == {"precision": 0.5, "recall": 1.0, "predicted": 2, "expected": 1}
    assert res["critical_recall"] == {"called_critical": 1, "critical": 3, "recall": 0.3333,
                                      "called_instead": {"medium": 1, "high": 1}}
    # buckets: 0.95 and 0.92 right; 0.8 and 0.75 wrong; 0.6 wrong; 0.4 right
    assert {b: (c["right"], c["answered"]) for b, c in pri["calibration"].items()} == {
        ">=0.9": (2, 2), "0.7-0.9": (0, 2), "0.5-0.7": (0, 1), "<0.5": (1, 1)}
    intent = res["tasks"]["intent"]
    assert (intent["correct"], intent["total"]) == (5, 6)
    assert intent["per_label"]["general"] == {"precision": 0.5, "recall": 1.0, "predicted": 2, "expected": 1}
    assert intent["calibration"]["0.7-0.9"] == {"right": 5, "answered": 6, "share": 0.8333}
    assert {lang: {t: (c["right"], c["scored"]) for t, c in per.items()}
            for lang, per in res["by_language"].items()} == {
        "en": {"intent": (2, 3), "priority": (1, 3)}, "de": {"intent": (3, 3), "priority": (2, 3)}}


def test_bucket_edges() -> None:
    assert [models.bucket(c) for c in (0.9, 0.8999, 0.7, 0.5, 0.4999)] == [
        ">=0.9", "0.7-0.9", "0.7-0.9", "0.5-0.7", "<0.5"]


def test_main_uses_the_offline_classifier_and_saves(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    assert models.main([str(_write(tmp_path)), "--json", str(out)]) == 0
    saved = json.loads(out.read_text(encoding="utf-8"))
    (res,) = saved.values()
    assert res["calls"] == 18 and res["tasks"]["priority"]["total"] == 6 and res["cpu_us_per_call"] > 0


def test_help_exits_zero() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.models", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "JSON-lines" in done.stdout
