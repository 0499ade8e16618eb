"""route: critical tickets (and those a policy says a human must see) go to tickets.escalations; the rest on."""
from __future__ import annotations

from processors.case import evolve, label
from processors.injection import critical_confirmed
from processors.prompts import SERVED_LANGUAGES
from streams.records import Emit, Record
from streams.step import StepContext
from processors.topology import ESCALATIONS, ROUTED, JOINED


def decide(case: dict, missing_priority_policy: str) -> tuple[str, str]:
    """(route, reason): route is 'human' or 'auto'.

    Ticket text may talk a model into any label, so a label the text could have demanded is not honoured on
    the model's word alone: ``critical`` goes to the critical queue only when a rule that skips the text's
    instructions agrees (:func:`critical_confirmed`); otherwise a human sees it as ``PRIORITY_UNCONFIRMED``.
    A language the deployment does not serve is escalated (``LANGUAGE_UNSUPPORTED``): a reply in another
    language would pass every check of the writer's own language and still not be read by the customer."""
    reasons = case.get("missing_reasons") or {}
    drifted = sorted(c for c, why in reasons.items() if why == "DRIFT")
    if drifted:
        return "human", "DRIFT_REVIEW"
    priority = label(case, "priority")
    language = label(case, "language")
    unsupported = language is not None and language not in SERVED_LANGUAGES
    if priority == "critical":
        if "INJECTION_SUSPECTED" in (case.get("flags") or []):
            # The text asked for urgency; a human decides, but the ticket does not jump the critical queue.
            return "human", "INJECTION_SUSPECTED"
        ticket = case.get("ticket") or {}
        if critical_confirmed(ticket.get("subject") or "", ticket.get("body") or ""):
            return "human", "CRITICAL"
        return "human", "LANGUAGE_UNSUPPORTED" if unsupported else "PRIORITY_UNCONFIRMED"
    if unsupported:
        return "human", "LANGUAGE_UNSUPPORTED"
    if priority is None:
        if missing_priority_policy == "human":
            return "human", "MISSING_PRIORITY"
        priority = "medium"
    return "auto", f"priority {priority}"


def _why(case: dict, reason: str) -> str:
    """The trail's words for a reason a human must read twice."""
    if reason == "LANGUAGE_UNSUPPORTED":
        return f"{reason}: language {label(case, 'language')}, served {', '.join(SERVED_LANGUAGES)}"
    if reason == "PRIORITY_UNCONFIRMED":
        return f"{reason}: the model said critical, the text states no critical situation"
    return reason


class Route:
    name = "route"
    inputs = (JOINED,)
    stateful = False

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        case = record.value
        route, reason = decide(case, ctx.settings.missing_priority_policy)
        if route == "human":
            out = evolve(case, f"route: escalated ({_why(case, reason)})", route=route, route_reason=reason,
                         escalation_reason=reason)
            return [Emit(ESCALATIONS, out, headers={"escalation.reason": reason})]
        return [Emit(ROUTED, evolve(case, f"route: automatic ({reason})", route=route, route_reason=reason))]
