"""The tasks of faq.toml: plain functions of (input, deps), deterministic, no model needed."""
from __future__ import annotations

from typing import Any

TOPICS = {"billing": ("invoice", "refund", "charge", "price"), "account": ("password", "login", "email"),
          "shipping": ("delivery", "parcel", "shipping", "track")}
ANSWERS = {"billing": "Invoices are under Settings > Billing; refunds take 5 working days.",
           "account": "Reset your password from the sign-in page; the link is valid for one hour.",
           "shipping": "Every parcel has a tracking link in its confirmation email."}


def classify(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    words = str(input["question"]).lower().split()
    scores = {t: sum(any(k in w for k in keys) for w in words) for t, keys in TOPICS.items()}
    topic = max(scores, key=lambda t: scores[t])
    return {"topic": topic if scores[topic] else "other"}


def needs_context(input: dict[str, Any], deps: dict[str, Any]) -> bool:
    return deps["classify"]["topic"] != "other"


def search(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    topic = deps["classify"]["topic"]
    return {"documents": [{"id": f"{topic}-1", "text": ANSWERS[topic]}]}


def answer(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    if deps["retrieve"] is None:  # skipped: nothing to answer from
        raise LookupError("no documents for this question")
    return {"text": deps["retrieve"]["documents"][0]["text"], "cites": [deps["retrieve"]["documents"][0]["id"]]}


def canned_answer(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    return {"text": "A person from our team will answer you shortly.", "cites": []}
