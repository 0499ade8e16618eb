"""route: critical tickets (and those a policy says a human must see) go to tickets.escalations; the rest on."""
from __future__ import annotations

from processors.case import evolve, label
from streams.records import Emit, Record
from streams.step import StepContext
from streams.topology import ESCALATIONS, ROUTED, JOINED


def decide(case: dict, missing_priority_policy: str) -> tuple[str, str]:
    """(route, reason): route is 'human' or 'auto'."""
    reasons = case.get("missing_reasons") or {}
    drifted = sorted(c for c, why in reasons.items() if why == "DRIFT")
    if drifted:
        return "human", "DRIFT_REVIEW"
    priority = label(case, "priority")
    if priority is None:
        if missing_priority_policy == "human":
            return "human", "MISSING_PRIORITY"
        priority = "medium"
    if priority == "critical":
        if "INJECTION_SUSPECTED" in (case.get("flags") or []):
            # The text asked for urgency; a human decides, but the ticket does not jump the critical queue.
            return "human", "INJECTION_SUSPECTED"
        return "human", "CRITICAL"
    return "auto", f"priority {priority}"


class Route:
    name = "route"
    inputs = (JOINED,)
    stateful = False

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        case = record.value
        route, reason = decide(case, ctx.settings.missing_priority_policy)
        if route == "human":
            out = evolve(case, f"route: escalated ({reason})", route=route, route_reason=reason,
                         escalation_reason=reason)
            return [Emit(ESCALATIONS, out, headers={"escalation.reason": reason})]
        return [Emit(ROUTED, evolve(case, f"route: automatic ({reason})", route=route, route_reason=reason))]
