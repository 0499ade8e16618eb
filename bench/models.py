"""Classifier accuracy: the offline classifiers scored against labelled tickets, per file, side by side.

    .venv/bin/python -m bench.models [FILE ...] [--json OUT]

Each FILE is JSON lines of tickets with ``subject``, ``body`` and ``expected`` ({intent, language, priority,
sentiment}), like deploy/sample/tickets.jsonl. Without FILE it scores the shipped sample (made from about
forty templates) and the evaluation split written apart from any template and from the training corpus
(deploy/sample/eval/tickets.jsonl): the second is the figure to believe. Every ticket goes through
``processors.offline.classify.classify``, the function the offline server calls, in this process.

Per classifier it prints accuracy (also per language), precision and recall per label, the confusion
matrix, critical recall (of the tickets labelled ``critical``, how many are called critical: an outage
answered by a template is the worst outcome) and calibration (the share right among answers in each
confidence bucket), then the CPU time per classification. Saves the figures to bench/results/models.json.
It asserts nothing: the figures are the result.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from processors.offline.classify import LABELS, TASKS, classify

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "deploy" / "sample" / "tickets.jsonl"
EVAL_SPLIT = REPO / "deploy" / "sample" / "eval" / "tickets.jsonl"
RESULTS = Path(__file__).resolve().parent / "results"

# Lower bounds, highest first: the drift monitor and the gate read confidence >= 0.9 as "sure".
BUCKETS: tuple[tuple[str, float], ...] = ((">=0.9", 0.9), ("0.7-0.9", 0.7), ("0.5-0.7", 0.5), ("<0.5", 0.0))

Classifier = Callable[[str, str, str], tuple[str, float]]


def bucket(confidence: float) -> str:
    """The calibration bucket of one answer's confidence."""
    for name, low in BUCKETS:
        if confidence >= low:
            return name
    return BUCKETS[-1][0]


@dataclass
class TaskScore:
    """Counts for one classifier over one file; every figure is derived from them."""

    task: str
    # confusion[expected][predicted] = tickets
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    # calibration[bucket] = [right, answered]
    calibration: dict[str, list[int]] = field(default_factory=lambda: {name: [0, 0] for name, _ in BUCKETS})

    def add(self, expected: str, predicted: str, confidence: float) -> None:
        row = self.confusion.setdefault(expected, {})
        row[predicted] = row.get(predicted, 0) + 1
        cell = self.calibration[bucket(confidence)]
        cell[0] += expected == predicted
        cell[1] += 1

    @property
    def total(self) -> int:
        return sum(sum(row.values()) for row in self.confusion.values())

    @property
    def correct(self) -> int:
        return sum(row.get(label, 0) for label, row in self.confusion.items())

    def labels(self) -> list[str]:
        """The task's labels in their declared order, then any other label seen (a wrong or unknown one)."""
        seen = set(self.confusion) | {p for row in self.confusion.values() for p in row}
        declared = [label for label in LABELS.get(self.task, ()) if label in seen]
        return declared + sorted(seen - set(declared))

    def precision_recall(self, label: str) -> tuple[int, int, int]:
        """(true positives, predicted as label, expected as label)."""
        tp = self.confusion.get(label, {}).get(label, 0)
        predicted = sum(row.get(label, 0) for row in self.confusion.values())
        expected = sum(self.confusion.get(label, {}).values())
        return tp, predicted, expected

    def as_dict(self) -> dict[str, Any]:
        per_label = {}
        for label in self.labels():
            tp, predicted, expected = self.precision_recall(label)
            per_label[label] = {"precision": _ratio(tp, predicted), "recall": _ratio(tp, expected),
                                "predicted": predicted, "expected": expected}
        return {"total": self.total, "correct": self.correct, "accuracy": _ratio(self.correct, self.total),
                "per_label": per_label, "confusion": self.confusion,
                "calibration": {name: {"right": right, "answered": n, "share": _ratio(right, n)}
                                for name, (right, n) in self.calibration.items()}}


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def read_tickets(path: Path) -> list[dict[str, Any]]:
    """Labelled tickets of a JSON-lines file; raises ValueError naming the line of one without ``expected``."""
    tickets = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        ticket = json.loads(line)
        if not isinstance(ticket.get("expected"), dict):
            raise ValueError(f"{path}:{n}: no 'expected' labels")
        tickets.append(ticket)
    return tickets


def evaluate(tickets: Iterable[dict[str, Any]], classifier: Classifier = classify,
             tasks: tuple[str, ...] = TASKS) -> dict[str, Any]:
    """Scores ``classifier`` on labelled tickets. A task a ticket has no expected label for is skipped for it.

    Returns {"tickets", "tasks": {task: TaskScore.as_dict()}, "by_language": {language: {task: ...}},
    "critical_recall", "cpu_us_per_call", "calls"}; the language is the ticket's expected one.
    """
    scores = {task: TaskScore(task) for task in tasks}
    # by_language[expected language][task] = [right, scored]: a model can be good in one language only.
    by_language: dict[str, dict[str, list[int]]] = {}
    calls = 0
    n = 0
    cpu = 0.0
    for ticket in tickets:
        n += 1
        subject, body = ticket.get("subject") or "", ticket.get("body") or ""
        per_task = by_language.setdefault(str(ticket["expected"].get("language", "?")), {})
        for task in tasks:
            expected = ticket["expected"].get(task)
            if expected is None:
                continue
            # Only the call is timed: reading and counting are not the model's cost.
            start = time.process_time()
            label, confidence = classifier(task, subject, body)
            cpu += time.process_time() - start
            calls += 1
            scores[task].add(expected, label, confidence)
            cell = per_task.setdefault(task, [0, 0])
            cell[0] += label == expected
            cell[1] += 1
    out: dict[str, Any] = {"tickets": n, "tasks": {t: s.as_dict() for t, s in scores.items()}, "calls": calls,
                           "by_language": {lang: {t: {"right": r, "scored": k, "accuracy": _ratio(r, k)}
                                                  for t, (r, k) in per.items()}
                                           for lang, per in by_language.items()},
                           "cpu_us_per_call": round(1e6 * cpu / calls, 2) if calls else None}
    if "priority" in scores:
        tp, _, expected = scores["priority"].precision_recall("critical")
        row = scores["priority"].confusion.get("critical", {})
        out["critical_recall"] = {"called_critical": tp, "critical": expected, "recall": _ratio(tp, expected),
                                  "called_instead": {k: v for k, v in row.items() if k != "critical"}}
    return out


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{100 * value:5.1f}%"


def render(results: dict[str, dict[str, Any]]) -> str:
    """The figures of each file, side by side where they compare (accuracy, critical recall, calibration)."""
    names = list(results)
    short = [Path(n).parent.name + "/" + Path(n).name for n in names]
    width = max([16, *(len(s) for s in short)])
    lines = [f"{'':<22}" + "".join(f"{s:>{width + 2}}" for s in short),
             f"{'tickets':<22}" + "".join(f"{results[n]['tickets']:>{width + 2}}" for n in names)]
    tasks = list(results[names[0]]["tasks"])
    for task in tasks:
        row = [results[n]["tasks"].get(task, {}) for n in names]
        lines.append(f"{task + ' accuracy':<22}" + "".join(
            f"{_pct(r.get('accuracy')) + ' of ' + str(r.get('total', 0)):>{width + 2}}" for r in row))
    if all("critical_recall" in results[n] for n in names):
        lines.append(f"{'critical recall':<22}" + "".join(
            f"{str(c['called_critical']) + '/' + str(c['critical']) + ' ' + _pct(c['recall']):>{width + 2}}"
            for c in (results[n]["critical_recall"] for n in names)))
    for task in tasks:
        # The bucket the drift monitor and the gate trust: its share right should be at least 90%.
        cells = [results[n]["tasks"].get(task, {}).get("calibration", {}).get(BUCKETS[0][0], {}) for n in names]
        lines.append(f"{task + ' right @>=0.9':<22}" + "".join(
            f"{_pct(c.get('share')).strip() + ' of ' + str(c.get('answered', 0)):>{width + 2}}" for c in cells))
    lines.append(f"{'CPU per classification':<22}" + "".join(
        f"{str(results[n]['cpu_us_per_call']) + ' us':>{width + 2}}" for n in names))
    for name, label in zip(names, short):
        lines += ["", f"== {label} ({name})"]
        res = results[name]
        if "critical_recall" in res:
            c = res["critical_recall"]
            lines.append(f"critical recall: {c['called_critical']} of {c['critical']} critical tickets called "
                         f"critical; the others called {c['called_instead'] or '-'}")
        langs = res.get("by_language", {})
        if langs:
            lines.append(f"accuracy by language ({len(langs)}):")
            lines.append(f"{'':<12}" + "".join(f"{t:>11}" for t in res["tasks"]))
            order = LABELS["language"]
            for lang, per in sorted(langs.items(), key=lambda kv: (kv[0] not in order, order.index(kv[0])
                                                                   if kv[0] in order else 0, kv[0])):
                lines.append(f"{lang:<12}" + "".join(
                    f"{_pct(per.get(t, {}).get('accuracy')):>11}" for t in res["tasks"]))
        for task, score in res["tasks"].items():
            if not score["total"]:
                continue  # no ticket of this file is labelled for the task
            lines += ["", f"-- {task}: accuracy {_pct(score['accuracy'])} ({score['correct']}/{score['total']})"]
            labels = list(score["per_label"])
            col = max([9, *(len(lab) + 1 for lab in labels)])
            lines.append(f"{'label':<12}{'precision':>10}{'recall':>8}{'expected':>10}{'predicted':>10}")
            for lab, pr in score["per_label"].items():
                lines.append(f"{lab:<12}{_pct(pr['precision']):>10}{_pct(pr['recall']):>8}"
                             f"{pr['expected']:>10}{pr['predicted']:>10}")
            lines.append("confusion (rows: expected, columns: predicted)")
            lines.append(f"{'':<12}" + "".join(f"{lab:>{col}}" for lab in labels))
            for exp in labels:
                cells = score["confusion"].get(exp, {})
                if cells:
                    lines.append(f"{exp:<12}" + "".join(f"{cells.get(p, 0):>{col}}" for p in labels))
            lines.append("calibration: " + "  ".join(
                f"{b} {_pct(c['share']).strip()} of {c['answered']}" for b, c in score["calibration"].items()))
    return "\n".join(lines)


def _name(path: Path) -> str:
    """The file's path from the repository root when it lies inside, so saved figures do not name this machine."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path,
                    help=f"JSON-lines files of labelled tickets (default: {SAMPLE.relative_to(REPO)} "
                         f"and {EVAL_SPLIT.relative_to(REPO)})")
    ap.add_argument("--json", type=Path, default=RESULTS / "models.json", metavar="OUT",
                    help="where to save the figures (default: bench/results/models.json)")
    args = ap.parse_args(argv)
    files = args.files or [SAMPLE, EVAL_SPLIT]
    results = {}
    for path in files:
        try:
            results[_name(path)] = evaluate(read_tickets(path))
        except (OSError, ValueError) as exc:
            print(f"bench.models: {exc}", file=sys.stderr)
            return 2
    print(render(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nsaved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
