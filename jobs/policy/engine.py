"""Per-entity decisions: context from a gold.entity_risk row, the first matching tier, guardrails.

Everything here is pure Python over dicts, so it runs the same in `policy test`, in
unit tests and inside `mapInPandas` on Spark executors (`decide_partitions`), where
policies travel as small picklable objects and no entity row ever reaches the driver.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date
from typing import Any

import pandas as pd

from jobs.policy.expressions import Compare, Literal, Name, lookup, walk
from jobs.policy.guardrails import GuardrailOutcome, apply_guardrails
from jobs.policy.schema import CompiledPolicy, CompiledTier, ExceptionGrant, Guardrails

MAX_REASON_CHARS = 1500
MAX_SIGNALS_IN_REASON = 8

# Columns of the frame `decide_partitions` yields (Spark DDL; arrays travel as JSON text).
DECISIONS_DDL = (
    "rec_id string, run_date string, domain string, target_type string, target_id string, "
    "action string, status string, valid_for_hours int, risk int, reason string, "
    "policy_id string, policy_version string, policy_hash string, policy_mode string, "
    "domain_rank int, tier string, policy_action string, inputs string, signals_json string, "
    "thresholds string, exceptions_checked_json string, guardrails string, "
    "expired_exceptions_json string, ceiling string"
)
DECISION_COLUMNS = [part.strip().split(" ")[0] for part in DECISIONS_DDL.split(",")]


def rec_id(target_type: str, target_id: str, action: str, run_date: date | str) -> str:
    """sha256 of `target_type|target_id|action|YYYY-MM-DD` (hex): same inputs, same id.

    Only target_id is free text and the other parts never contain '|', so the
    joined text is unambiguous. Spark: sha2(concat_ws('|', ...), 256).
    """
    day = run_date.isoformat() if isinstance(run_date, date) else str(run_date)
    return hashlib.sha256(f"{target_type}|{target_id}|{action}|{day}".encode()).hexdigest()


def _strongest(instances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    best = max(
        instances,
        key=lambda s: (
            s.get("value") is not None,
            s.get("value") or 0.0,
            s.get("contribution") or 0.0,
        ),
    )
    return {k: best.get(k) for k in ("value", "threshold", "contribution", "source")}


def build_context(entity: Mapping[str, Any], day_degraded: Iterable[str] = ()) -> dict[str, Any]:
    """The names a condition can read, from one gold.entity_risk row (as Python values).

    `degraded_sources` joins the entity's own list with the sources ops.source_status
    marks degraded or missing that day.
    """
    signals = [s for s in (entity.get("signals") or []) if s and s.get("name")]
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for s in signals:
        by_name.setdefault(str(s["name"]), []).append(s)
    privileged = entity.get("privileged", entity.get("is_privileged"))
    return {
        "risk": entity.get("risk"),
        "risk_today": entity.get("risk_today"),
        "sessions": entity.get("sessions"),
        "signal_count": len(by_name),
        "entity_type": entity.get("entity_type"),
        "entity_id": entity.get("entity_id"),
        "user_type": entity.get("user_type"),
        "peer_group": entity.get("peer_group"),
        "asset_criticality": entity.get("asset_criticality"),
        "privileged": privileged if isinstance(privileged, bool) else None,
        "degraded_sources": sorted(set(entity.get("degraded_sources") or ()) | set(day_degraded)),
        "signals": sorted(by_name),
        "signal": {name: _strongest(items) for name, items in by_name.items()},
    }


def match_tier(policy: CompiledPolicy, context: Mapping[str, Any]) -> CompiledTier | None:
    """The first tier whose condition holds; None means the policy allows."""
    for tier in policy.tiers:
        if tier.when.evaluate(context):
            return tier
    return None


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def thresholds_of(tier: CompiledTier | None, context: Mapping[str, Any]) -> dict[str, Any]:
    """The matched tier's comparisons with the values they saw (the decision log's `thresholds`)."""
    if tier is None:
        return {"tier": None, "when": None, "comparisons": [], "signals_required": []}
    comparisons = []
    for node in walk(tier.when.tree):
        if (
            isinstance(node, Compare)
            and isinstance(node.left, Name)
            and isinstance(node.right, Literal)
        ):
            comparisons.append(
                {
                    "name": node.left.dotted,
                    "op": node.op,
                    "threshold": node.right.value,
                    "actual": lookup(context, node.left.path),
                }
            )
    return {
        "tier": tier.name,
        "when": tier.when.source,
        "comparisons": comparisons,
        "signals_required": sorted(tier.when.signals),
    }


def _describe_signals(signals: Sequence[Mapping[str, Any]], supporting: Sequence[str]) -> str:
    if not signals:
        return "no signals"
    ordered = sorted(signals, key=lambda s: (s.get("name") not in supporting, str(s.get("name"))))
    parts = []
    for s in ordered[:MAX_SIGNALS_IN_REASON]:
        bits = []
        if s.get("value") is not None:
            measured = _number(s["value"])
            if s.get("threshold") is not None:
                measured += f" vs threshold {_number(s['threshold'])}"
            bits.append(measured)
        if s.get("source"):
            bits.append(f"from {s['source']}")
        text = str(s.get("name")) + (f" ({', '.join(bits)})" if bits else "")
        if s.get("detail"):
            text += f": {str(s['detail'])[:160]}"
        parts.append(text)
    if len(ordered) > MAX_SIGNALS_IN_REASON:
        parts.append(f"and {len(ordered) - MAX_SIGNALS_IN_REASON} more")
    return "signals " + "; ".join(parts)


def explain(
    policy: CompiledPolicy,
    tier: CompiledTier | None,
    context: Mapping[str, Any],
    signals: Sequence[Mapping[str, Any]],
    outcome: GuardrailOutcome,
) -> str:
    """The plain-language reason an auditor reads: policy, tier, signals, guardrails, status."""
    who = f"{context.get('entity_type')} {context.get('entity_id')}"
    head = f"Policy {policy.id} v{policy.version} ({policy.domain}, {policy.mode})"
    evidence = (
        f"risk {context.get('risk')}; {_describe_signals(signals, outcome.supporting_signals)}"
    )
    if tier is None:
        text = f"{head}: no tier matched for {who} ({evidence}), so allow; nothing is published."
    else:
        text = (
            f"{head}, tier '{tier.name}' matched for {who} because {tier.when.source} ({evidence})."
        )
        if outcome.applied:
            steps = "; ".join(
                f"{a['guardrail']} lowered {a['from']} to {a['to']}: {a['why']}"
                for a in outcome.applied
            )
            text += f" Policy action {tier.action}; guardrails: {steps}."
        text += f" Action {outcome.action}, status {outcome.status}"
        text += f" ({outcome.status_because})." if outcome.status_because else "."
    if outcome.expired_exceptions:
        text += f" Expired exception(s) ignored: {', '.join(outcome.expired_exceptions)}."
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return text


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def decide(
    entity: Mapping[str, Any],
    policy: CompiledPolicy,
    rules: Guardrails,
    exceptions: Sequence[ExceptionGrant],
    run_date: date,
    day_degraded: Iterable[str] = (),
) -> dict[str, Any]:
    """One (entity, policy) decision as a row of DECISIONS_DDL."""
    signals = [s for s in (entity.get("signals") or []) if s and s.get("name")]
    context = build_context(entity, day_degraded)
    tier = match_tier(policy, context)
    outcome = apply_guardrails(policy, tier, context, signals, rules, exceptions, run_date)
    target_type, target_id = str(context["entity_type"]), str(context["entity_id"])
    inputs = {k: v for k, v in context.items() if k not in ("signal", "signals")}
    inputs["reasons"] = list(entity.get("reasons") or [])
    inputs["day_degraded_sources"] = sorted(set(day_degraded))
    return {
        "rec_id": rec_id(target_type, target_id, outcome.action, run_date),
        "run_date": run_date.isoformat(),
        "domain": policy.domain,
        "target_type": target_type,
        "target_id": target_id,
        "action": outcome.action,
        "status": outcome.status,
        "valid_for_hours": tier.valid_for_hours
        if tier is not None and outcome.action != "allow"
        else 0,
        "risk": int(context["risk"] or 0),
        "reason": explain(policy, tier, context, signals, outcome),
        "policy_id": policy.id,
        "policy_version": policy.version,
        "policy_hash": policy.hash,
        "policy_mode": policy.mode,
        "domain_rank": policy.domain_rank,
        "tier": tier.name if tier is not None else None,
        "policy_action": tier.action if tier is not None else "allow",
        "inputs": _json(inputs),
        "signals_json": _json(signals),
        "thresholds": _json(thresholds_of(tier, context)),
        "exceptions_checked_json": _json(outcome.exceptions_checked),
        "guardrails": _json(
            {
                "applied": outcome.applied,
                "ceiling": outcome.ceiling,
                "status": outcome.status,
                "status_because": outcome.status_because,
            }
        ),
        "expired_exceptions_json": _json(outcome.expired_exceptions),
        "ceiling": outcome.ceiling,
    }


def decide_entity(
    entity: Mapping[str, Any],
    policies: Sequence[CompiledPolicy],
    rules: Guardrails,
    exceptions: Sequence[ExceptionGrant],
    run_date: date,
    day_degraded: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Every applicable policy's decision for one entity."""
    degraded = tuple(day_degraded)
    return [
        decide(entity, p, rules, exceptions, run_date, degraded)
        for p in policies
        if entity.get("entity_type") in p.applies_to
    ]


def _row_from_frame(record: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(record)
    for column in ("signals", "reasons", "degraded_sources"):
        text = row.pop(f"{column}_json", None)
        row[column] = json.loads(text) if isinstance(text, str) else []
    for column in ("risk_today", "sessions"):
        value = row.get(column)
        row[column] = None if value is None or value != value else int(value)
    if row.get("is_privileged") is not None and row["is_privileged"] == row["is_privileged"]:
        row["is_privileged"] = bool(row["is_privileged"])
    else:
        row["is_privileged"] = None
    for column in ("user_type", "peer_group", "asset_criticality"):
        if not isinstance(row.get(column), str):
            row[column] = None
    return row


def decide_partitions(
    policies: Sequence[CompiledPolicy],
    rules: Guardrails,
    exceptions: Sequence[ExceptionGrant],
    degraded_by_date: Mapping[str, Sequence[str]],
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The function for `mapInPandas`: entity frames in, decision frames (DECISIONS_DDL) out.

    Input columns: gold.entity_risk with `signals`, `reasons` and `degraded_sources` as
    JSON text (`<name>_json`) and `run_date` as ISO text.
    """
    policies = tuple(policies)
    exceptions = tuple(exceptions)
    degraded = {k: tuple(v) for k, v in degraded_by_date.items()}

    def run(frames: Iterator[Any]) -> Iterator[Any]:
        for frame in frames:
            rows: list[dict[str, Any]] = []
            for record in frame.to_dict("records"):
                entity = _row_from_frame(record)
                day = date.fromisoformat(str(entity["run_date"]))
                rows.extend(
                    decide_entity(
                        entity, policies, rules, exceptions, day, degraded.get(day.isoformat(), ())
                    )
                )
            yield pd.DataFrame(rows, columns=DECISION_COLUMNS).astype(
                {"valid_for_hours": "int32", "risk": "int32", "domain_rank": "int32"}
            )

    return run
