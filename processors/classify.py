"""classify-<kind>: one classifier (intent, language, priority, sentiment, or one a declaration adds) per step,
all of them in parallel.

A classifier never passes on a label outside its set or without a confidence: such an answer is invalid and
retried, then the fallback chain is tried. When every model failed, it emits a *failed* classification
(``ok=false`` with the reason) instead of a dead letter: the join owns the ticket's fate and its policy
decides between degrading and a human, so the ticket still reaches exactly one terminal record.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from processors import prompts
from streams.drift import DriftMonitor, DriftState
from streams.errors import InvalidModelOutput, ModelError, StateError
from streams.records import Emit, Record
from streams.step import StepContext
from processors.topology import CLASSIFIED, VALID


# An ISO 639 code with an optional region or script ("it", "pt-br", "zh-hans"): a language we do not serve is a
# valid answer of the language classifier (the router escalates it), a made-up word ("klingon") is not.
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:[-_][a-z0-9]{2,8})?")


# Three-letter codes (ISO 639-2) of the served languages, so "eng" or "en-GB" is English and not "unsupported".
_SERVED_ALIASES = {"eng": "en", "spa": "es", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de", "jpn": "ja"}


def canonical_label(classifier: str, label: str, labels: tuple[str, ...] | None = None) -> str | None:
    """The label as the pipeline stores it, or None when it is not an answer this classifier may give."""
    label = label.strip().lower()
    if label in (labels if labels is not None else prompts.LABELS[classifier]):
        return label
    if classifier != "language":
        return None
    if label in prompts.UNSERVED_LANGUAGES:
        return label
    if not _LANGUAGE_CODE.fullmatch(label):
        return None
    base = re.split(r"[-_]", label)[0]
    base = _SERVED_ALIASES.get(base, base)
    return base if base in prompts.SERVED_LANGUAGES else label.replace("_", "-")


def label_validator(classifier: str, labels: tuple[str, ...] | None = None
                    ) -> Callable[[dict[str, Any]], tuple[str, float]]:
    allowed = labels if labels is not None else prompts.LABELS[classifier]

    def check(doc: dict[str, Any]) -> tuple[str, float]:
        label = doc.get("label")
        canonical = canonical_label(classifier, label, allowed) if isinstance(label, str) else None
        if canonical is None:
            extra = " (or a language code, other, mixed)" if classifier == "language" else ""
            raise InvalidModelOutput(f"{classifier} label {label!r} is not one of {', '.join(allowed)}{extra}")
        conf = doc.get("confidence")
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0.0 <= float(conf) <= 1.0:
            raise InvalidModelOutput(f"{classifier} confidence {conf!r} is not a number in [0, 1]")
        return canonical, float(conf)

    return check


class Classify:
    stateful = False
    inputs = (VALID,)

    def __init__(self, classifier: str, labels: tuple[str, ...] | None = None) -> None:
        self.classifier = classifier
        self.name = f"classify-{classifier}"
        self.labels = tuple(labels) if labels is not None else prompts.LABELS[classifier]
        self._validate = label_validator(classifier, self.labels)
        self._monitor: DriftMonitor | None = None

    def _drift(self, ctx: StepContext) -> DriftMonitor | None:
        if self.classifier not in ctx.settings.drift.classifiers:
            return None
        if self._monitor is None and ctx.redis is not None:
            self._monitor = DriftMonitor(ctx.redis, self.classifier, ctx.settings.drift)
        return self._monitor

    def _result(self, correlation_id: str, tenant_id: str) -> dict[str, Any]:
        return {"correlation_id": correlation_id, "tenant_id": tenant_id, "classifier": self.classifier, "ok": True,
                "label": None, "confidence": None, "model": None, "error_code": None, "error": None,
                "model_calls": 0, "tokens": 0, "drift_score": None}

    def on_failure(self, record: Record, code: str, reason: str) -> list[Emit] | None:
        """Whatever ends this classifier's work on a ticket (the step deadline, a model outage waited out, a
        bug) is a failed classification: the join goes on without this label and the router's policy decides.
        A dead letter here would end the ticket a second time, beside what the join's result leads to."""
        case = record.value if isinstance(record.value, dict) else {}
        cid = case.get("correlation_id") or record.correlation_id
        tenant = case.get("tenant_id") or record.tenant_id
        if not cid or not tenant:
            return None  # no ticket to pass on: the join could not place it either
        out = self._result(cid, tenant)
        out.update(ok=False, error_code=code, error=reason[:500])
        return [Emit(CLASSIFIED, out, key=cid)]

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        case = record.value
        out = self._result(case["correlation_id"], case["tenant_id"])
        messages = prompts.classify(self.classifier, case["ticket"]["subject"], case["ticket"]["body"], self.labels)
        policy = ctx.settings.policy(self.name)
        memo = ctx.memo(record, case["tenant_id"])
        try:
            result = await ctx.models.complete_json(policy, messages, self._validate, memo=memo)
            calls, tokens = result.calls, result.tokens
            state = await self._observe(ctx, result, policy.models[0])
            if state is not None and state.tripped:
                out["drift_score"] = round(state.score, 4)
                fallback = policy.models[1:]
                if ctx.settings.drift.action == "fallback" and fallback and result.model == policy.models[0]:
                    # The primary's label is not trusted while it drifts: the fallback model decides.
                    result = await ctx.models.complete_json(policy, messages, self._validate, memo=memo,
                                                            chain=fallback)
                    calls, tokens = calls + result.calls, tokens + result.tokens
                elif result.model == policy.models[0]:
                    out.update(ok=False, error_code="DRIFT", model_calls=calls, tokens=tokens,
                               error=f"{self.classifier} drift score {state.score:.3f}: sent to human review")
                    return [Emit(CLASSIFIED, out, key=case["correlation_id"])]
        except ModelError as exc:
            out.update(ok=False, error_code=exc.code, error=str(exc)[:500],
                       model_calls=getattr(exc, "calls", 0), tokens=getattr(exc, "tokens", 0))
        else:
            label, conf = result.value
            out.update(label=label, confidence=conf, model=result.model, model_calls=calls, tokens=tokens)
        return [Emit(CLASSIFIED, out, key=case["correlation_id"])]

    async def _observe(self, ctx: StepContext, result: Any, primary: str) -> DriftState | None:
        """Watch the primary model only: that is the one whose drift must not reach the generator."""
        monitor = self._drift(ctx)
        if monitor is None or result.model != primary:
            return None
        label, conf = result.value
        try:
            if result.memo_hit:
                return await monitor.last_verdict()  # observed when it was first answered
            return await monitor.observe(label, conf)
        except StateError:
            return None  # Redis down: no drift verdict, the label still counts
