"""What the insights read in a support case (a terminal Case record): the models it called, whether a
fallback served it, the gate's verdict, why it was escalated and which of its classifications contradict
each other. Declared to the engine as the pipeline's ``extras["insights"]``."""
from __future__ import annotations

from typing import Any

from streams.pipeline import Pipeline

# Classifications that a careful triager would not give together: each is a sign that one classifier drifted
# (the source documents' contradiction rate). Pairs over the labels of one case.
CONTRADICTIONS = {
    "general_intent_at_critical": lambda l: l.get("intent") == "general" and l.get("priority") == "critical",
    "satisfied_at_critical": lambda l: l.get("sentiment") == "satisfied" and l.get("priority") == "critical",
    "angry_at_low": lambda l: l.get("sentiment") == "angry" and l.get("priority") == "low",
}


def labels(case: dict[str, Any]) -> dict[str, str]:
    return {name: lab["label"] for name, lab in (case.get("labels") or {}).items()}


def contradictions(case: dict[str, Any]) -> list[str]:
    got = labels(case)
    return [name for name, rule in CONTRADICTIONS.items() if rule(got)]


def usage(case: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Calls and tokens per model. A case totals its calls and tokens; which model made each call is known
    for the classifiers, the writer and the gate, so the tokens are shared out per call (an estimate), and
    calls the trail does not name go to the writer (its tool loop)."""
    calls: dict[str, int] = {}
    for lab in (case.get("labels") or {}).values():
        if lab.get("model"):
            calls[lab["model"]] = calls.get(lab["model"], 0) + 1
    for g in case.get("gate_history") or ([case["gate"]] if case.get("gate") else []):
        calls[g["model"]] = calls.get(g["model"], 0) + 1
    total = int(case.get("model_calls") or 0)
    writer = case.get("writer_model")
    named = sum(calls.values())
    if writer:
        calls[writer] = calls.get(writer, 0) + max(1, total - named)
    counted = sum(calls.values())
    tokens = int(case.get("tokens") or 0)
    return {m: (n, round(tokens * n / counted)) for m, n in calls.items()} if counted else {}


def fallback(case: dict[str, Any], pipeline: Pipeline) -> bool:
    """A model other than its chain's first served a classifier, the stronger writer wrote, or the gate sent
    a draft back."""
    for name, lab in (case.get("labels") or {}).items():
        chain = pipeline.models.get(f"classify-{name}")
        if chain and lab.get("model") and lab["model"] not in (chain.offline[:1] + chain.remote[:1]):
            return True
    strong = pipeline.models.get("generate-strong")
    if strong and case.get("writer_model") in (*strong.offline, *strong.remote):
        return True
    return len(case.get("gate_history") or []) > 1


def gate(case: dict[str, Any]) -> bool | None:
    return bool(case["gate"]["passed"]) if case.get("gate") else None


def reason(case: dict[str, Any]) -> str | None:
    return case.get("escalation_reason") or None


HOOKS = {"usage": usage, "fallback": fallback, "gate": gate, "reason": reason, "contradictions": contradictions}
