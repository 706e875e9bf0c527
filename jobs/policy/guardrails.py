"""Guardrails: what a policy's action may become before enforcement sees it.

Policies say what risk deserves; guardrails say what the organisation can afford to
do automatically. They run in a fixed order, each can only lower an action (never
raise it), and every change is recorded for the decision log:

1. exceptions register: an active exception caps the action (expired ones are ignored
   and reported);
2. degraded evidence: isolate/block whose supporting signals all come from degraded or
   missing sources falls back to `fallback_action` (default challenge);
3. domain ceiling: `max_action` per domain;
4. critical-service allowlist: capped at `allowlist.max_action`, status alert_only;
5. break-glass accounts: capped at `break_glass.max_action`, status alert_only;
then the status: shadow (policy mode) > alert_only > pending_approval (high impact on a
critical asset, a host of unknown criticality or a privileged user) > approved. An `allow`
has status no_action. The outcome's `ceiling` is the most an analyst may override to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from fnmatch import fnmatchcase
from typing import Any

from jobs.policy.schema import CompiledPolicy, CompiledTier, ExceptionGrant, Guardrails
from jobs.policy.vocabulary import NO_ACTION, SEVERITY, cap


@dataclass
class GuardrailOutcome:
    action: str
    status: str
    applied: list[dict[str, Any]] = field(default_factory=list)
    status_because: str = ""
    exceptions_checked: list[str] = field(default_factory=list)
    expired_exceptions: list[str] = field(default_factory=list)
    supporting_signals: list[str] = field(default_factory=list)
    # the most severe action the guardrails allow for this entity under this policy (domain
    # ceiling, active exceptions, allowlist and break-glass caps): what an analyst's
    # override may reach at most (jobs.governance.decisions)
    ceiling: str = "block"


def matching_exceptions(
    exceptions: Iterable[ExceptionGrant], entity_type: str, entity_id: str, policy_id: str
) -> list[ExceptionGrant]:
    return [
        e
        for e in exceptions
        if e.entity_type == entity_type
        and fnmatchcase(entity_id, e.entity_id)
        and ("*" in e.policies or policy_id in e.policies)
    ]


def supporting_signals(
    tier: CompiledTier | None, signals: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The signal instances a tier's action rests on: those it names, or all when it names none."""
    if tier is None:
        return []
    named = tier.when.signals
    if not named:
        return list(signals)
    return [s for s in signals if s.get("name") in named]


def all_from_degraded(evidence: Sequence[Mapping[str, Any]], degraded: Iterable[str]) -> bool:
    """True when there is evidence and every piece comes from a degraded or missing source.

    A signal without a source is not counted as degraded: we only fall back on evidence
    we know is weak.
    """
    bad = set(degraded)
    return bool(evidence) and all(s.get("source") in bad for s in evidence)


def _is_break_glass(rules: Guardrails, context: Mapping[str, Any]) -> bool:
    if context.get("user_type") in rules.break_glass.user_types:
        return True
    entity_id = str(context.get("entity_id") or "")
    return any(fnmatchcase(entity_id, pattern) for pattern in rules.break_glass.accounts)


def _allowlisted(rules: Guardrails, context: Mapping[str, Any]) -> str | None:
    entity_id = str(context.get("entity_id") or "")
    for entry in rules.allowlist.entries:
        if entry.entity_type == context.get("entity_type") and fnmatchcase(
            entity_id, entry.entity_id
        ):
            return f"{entry.entity_id} ({entry.reason}; owner {entry.owner})"
    return None


def _high_impact_because(rules: Guardrails, action: str, context: Mapping[str, Any]) -> str | None:
    approval = rules.approval
    if action not in approval.actions:
        return None
    reasons = []
    if context.get("asset_criticality") in approval.asset_criticality:
        reasons.append(f"asset criticality {context.get('asset_criticality')}")
    elif (
        approval.unknown_asset_criticality
        and context.get("entity_type") == "host"
        and not context.get("asset_criticality")
    ):
        reasons.append("asset criticality unknown (not in the asset inventory)")
    if approval.privileged and context.get("privileged") is True:
        reasons.append("privileged account")
    if context.get("user_type") in approval.user_types:
        reasons.append(f"user type {context.get('user_type')}")
    return "; ".join(reasons) or None


def apply_guardrails(
    policy: CompiledPolicy,
    tier: CompiledTier | None,
    context: Mapping[str, Any],
    signals: Sequence[Mapping[str, Any]],
    rules: Guardrails,
    exceptions: Iterable[ExceptionGrant],
    run_date: date,
) -> GuardrailOutcome:
    """Lower the tier's action as the guardrails require and choose the status."""
    action = tier.action if tier is not None else "allow"
    out = GuardrailOutcome(action=action, status="", ceiling=rules.domain_max(policy.domain))

    def lower(to: str, guardrail: str, why: str, **extra: Any) -> None:
        nonlocal action
        if SEVERITY[to] < SEVERITY[action]:
            out.applied.append(
                {"guardrail": guardrail, "from": action, "to": to, "why": why, **extra}
            )
            action = to

    # 1. exceptions register (checked for every decision, so the log shows what was considered)
    for grant in matching_exceptions(
        exceptions, str(context.get("entity_type")), str(context.get("entity_id")), policy.id
    ):
        if not grant.active_on(run_date):
            out.exceptions_checked.append(
                f"{grant.id}: expired {grant.expires.isoformat()}, ignored"
            )
            out.expired_exceptions.append(grant.id)
            continue
        out.exceptions_checked.append(
            f"{grant.id}: active until {grant.expires.isoformat()}, caps at {grant.max_action}"
            f" (owner {grant.owner}, approved by {grant.approver})"
        )
        lower(grant.max_action, "exception", grant.reason, id=grant.id)
        out.ceiling = cap(out.ceiling, grant.max_action)

    # 2. degraded evidence
    evidence = supporting_signals(tier, signals)
    out.supporting_signals = sorted({str(s.get("name")) for s in evidence})
    fallback = rules.degraded_evidence
    if action in fallback.actions and all_from_degraded(
        evidence, context.get("degraded_sources") or ()
    ):
        sources = sorted({str(s.get("source")) for s in evidence})
        lower(
            cap(action, fallback.fallback_action),
            "degraded_evidence",
            f"every supporting signal comes from a degraded or missing source ({', '.join(sources)})",
        )

    # 3. domain ceiling
    ceiling = rules.domain_max(policy.domain)
    lower(
        cap(action, ceiling),
        "domain_max_action",
        f"{policy.domain} actions are capped at {ceiling}",
    )

    alert_only: list[str] = []
    # 4. critical-service allowlist
    listed = _allowlisted(rules, context)
    if listed is not None:
        out.ceiling = cap(out.ceiling, rules.allowlist.max_action)
    if listed is not None and action != "allow":
        before = action
        lower(cap(action, rules.allowlist.max_action), "allowlist", f"critical service {listed}")
        if action != before:
            alert_only.append(f"allowlisted critical service {listed}")

    # 5. break-glass accounts
    break_glass = _is_break_glass(rules, context)
    if break_glass:
        out.ceiling = cap(out.ceiling, rules.break_glass.max_action)
    if break_glass and action != "allow":
        lower(
            cap(action, rules.break_glass.max_action),
            "break_glass",
            "break-glass account: never blocked or isolated",
        )
        alert_only.append("break-glass account: alert only, never enforced automatically")

    out.action = action
    if action == "allow":
        out.status, out.status_because = NO_ACTION, "allow is not published to enforcement"
    elif policy.mode == "shadow":
        out.status, out.status_because = "shadow", f"policy {policy.id} runs in shadow mode"
    elif alert_only:
        out.status, out.status_because = "alert_only", "; ".join(alert_only)
    else:
        because = _high_impact_because(rules, action, context)
        if because is not None:
            out.status = "pending_approval"
            out.status_because = f"{action} needs approval: {because}"
        else:
            out.status, out.status_because = "approved", "no approval required"
    return out
