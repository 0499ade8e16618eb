"""The offline models' accuracy on a labelled file, in this process: the demo's second column.

The demo scores what the pipeline labelled on the sample, which was made from templates and flatters any
model that learned them; beside it stands the evaluation split (deploy/sample/eval), written apart from the
templates and from the training corpus, scored here through the same function the offline server calls.
"""
from __future__ import annotations

import json
from pathlib import Path

from processors.offline.classify import TASKS, classify


def accuracy(path: Path, tasks: tuple[str, ...] = TASKS) -> dict[str, float]:
    """Share right per task over the tickets of a JSON-lines file with ``expected`` labels; a task no ticket
    is labelled for is left out. Raises OSError or ValueError for a file that cannot be read."""
    right: dict[str, int] = {}
    seen: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        ticket = json.loads(line)
        expected = ticket.get("expected") or {}
        for task in tasks:
            if task in expected:
                seen[task] = seen.get(task, 0) + 1
                label, _ = classify(task, ticket.get("subject") or "", ticket.get("body") or "")
                right[task] = right.get(task, 0) + (label == expected[task])
    return {task: round(right[task] / seen[task], 3) for task in tasks if seen.get(task)}
