"""Guardrails and per-entity decisions, without Spark: each guardrail on its own, then the reason."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from jobs.policy.engine import decide, decide_entity, rec_id
from jobs.policy.schema import ExceptionGrant, Guardrails, PolicySet, load_policy_set

POLICIES = Path(__file__).resolve().parent.parent / "policies"
DAY = date(2026, 10, 1)


@pytest.fixture(scope="module")
def shipped() -> PolicySet:
    return load_policy_set(POLICIES)


def policy(shipped: PolicySet, policy_id: str) -> Any:
    return next(p.compiled for p in shipped.policies if p.compiled.id == policy_id)


def sig(
    name: str,
    source: str | None = "idp",
    value: float | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "threshold": threshold,
        "contribution": 40.0,
        "detail": f"{name} seen",
        "source": source,
    }


def entity(
    entity_type: str = "user",
    entity_id: str = "alice@corp.example",
    risk: int = 94,
    signals: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    row = {
        "entity_type": entity_type,
        "entity_id": entity_id,
        "risk": risk,
        "risk_today": risk,
        "signals": signals
        if signals is not None
        else [sig("impossible_travel", value=1843.0, threshold=900.0)],
        "reasons": ["travel"],
        "sessions": 3,
        "degraded_sources": [],
        "user_type": "human",
        "peer_group": "sales",
        "is_privileged": False,
        "asset_criticality": None,
    }
    row.update(extra)
    return row


def grant(**changes: Any) -> ExceptionGrant:
    base = {
        "id": "EXC-9",
        "entity_type": "user",
        "entity_id": "alice@corp.example",
        "policies": ["identity-sessions"],
        "max_action": "challenge",
        "owner": "sales@corp.example",
        "approver": "iam@corp.example",
        "reason": "travelling to a trade fair",
        "expires": date(2026, 10, 31),
    }
    base.update(changes)
    return ExceptionGrant.model_validate(base)


def identity(
    shipped: PolicySet,
    row: dict[str, Any],
    rules: Guardrails | None = None,
    exceptions: tuple[ExceptionGrant, ...] = (),
    degraded: tuple[str, ...] = (),
) -> dict[str, Any]:
    return decide(
        row,
        policy(shipped, "identity-sessions"),
        rules or shipped.guardrails,
        exceptions,
        DAY,
        degraded,
    )


def test_plain_block_is_approved_with_time_limited_validity(shipped: PolicySet) -> None:
    d = identity(shipped, entity())
    assert (d["action"], d["status"], d["tier"], d["valid_for_hours"]) == (
        "block",
        "approved",
        "account-takeover",
        24,
    )
    assert d["guardrails"] == json.dumps(
        {
            "applied": [],
            "ceiling": "block",
            "status": "approved",
            "status_because": "no approval required",
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def test_rec_id_is_sha256_of_target_action_and_date() -> None:
    expected = hashlib.sha256(b"user|alice@corp.example|block|2026-10-01").hexdigest()
    assert rec_id("user", "alice@corp.example", "block", DAY) == expected
    assert rec_id("user", "alice@corp.example", "block", "2026-10-01") == expected
    assert rec_id("user", "alice@corp.example", "limit", DAY) != expected
    assert rec_id("user", "alice@corp.example", "block", date(2026, 10, 2)) != expected


def test_decisions_are_deterministic(shipped: PolicySet) -> None:
    rows = [
        decide_entity(entity(), shipped.compiled, shipped.guardrails, shipped.exceptions, DAY)
        for _ in range(2)
    ]
    assert rows[0] == rows[1]


def test_break_glass_is_never_blocked_and_only_alerts(shipped: PolicySet) -> None:
    d = identity(
        shipped,
        entity(
            entity_id="breakglass01@corp.example",
            user_type="break_glass",
            is_privileged=True,
            risk=99,
        ),
    )
    assert (d["action"], d["status"]) == ("challenge", "alert_only")
    assert d["policy_action"] == "block"
    assert '"guardrail":"break_glass"' in d["guardrails"]
    # matched by the account list too, whatever the directory says its type is
    d = identity(shipped, entity(entity_id="breakglass02@corp.example", user_type="admin", risk=99))
    assert (d["action"], d["status"]) == ("challenge", "alert_only")


def test_break_glass_is_never_isolated_even_by_a_custom_policy(shipped: PolicySet) -> None:
    rules = shipped.guardrails.model_copy(
        update={
            "break_glass": shipped.guardrails.break_glass.model_copy(update={"max_action": "allow"})
        }
    )
    d = identity(
        shipped, entity(entity_id="breakglass01@corp.example", user_type="break_glass"), rules
    )
    assert d["action"] == "allow" and d["status"] == "no_action"


def test_allowlisted_critical_service_is_never_blocked_or_isolated(shipped: PolicySet) -> None:
    d = identity(
        shipped,
        entity(
            "service_account",
            "svc-backup@corp.example",
            93,
            [sig("new_country")],
            user_type="service",
        ),
    )
    assert (d["action"], d["status"]) == ("challenge", "alert_only")
    assert "allowlisted critical service svc-backup@corp.example" in d["reason"]
    host = decide(
        entity(
            "host",
            "dc01-nyc",
            95,
            [sig("lateral_fan_out", "windows")],
            asset_criticality="critical",
        ),
        policy(shipped, "endpoint-containment"),
        shipped.guardrails,
        (),
        DAY,
    )
    assert (host["policy_action"], host["action"], host["status"]) == (
        "isolate",
        "challenge",
        "alert_only",
    )


def test_allowlisted_entity_within_the_cap_keeps_its_normal_status(shipped: PolicySet) -> None:
    host = decide(
        entity("host", "dc01-nyc", 65, [sig("off_hours", "windows")], asset_criticality="critical"),
        policy(shipped, "endpoint-containment"),
        shipped.guardrails,
        (),
        DAY,
    )
    assert (host["action"], host["status"]) == ("challenge", "approved")


def test_valid_exception_applies_and_is_logged(shipped: PolicySet) -> None:
    d = identity(shipped, entity(), exceptions=(grant(),))
    assert (d["policy_action"], d["action"], d["status"]) == ("block", "challenge", "approved")
    checked = json.loads(d["exceptions_checked_json"])
    assert checked == [
        "EXC-9: active until 2026-10-31, caps at challenge (owner sales@corp.example, approved by iam@corp.example)"
    ]
    assert json.loads(d["expired_exceptions_json"]) == []


def test_expired_exception_is_ignored_and_reported(shipped: PolicySet) -> None:
    d = identity(shipped, entity(), exceptions=(grant(expires=date(2026, 9, 30)),))
    assert d["action"] == "block"
    assert json.loads(d["exceptions_checked_json"]) == ["EXC-9: expired 2026-09-30, ignored"]
    assert json.loads(d["expired_exceptions_json"]) == ["EXC-9"]
    assert "Expired exception(s) ignored: EXC-9" in d["reason"]


def test_exception_expiring_on_the_run_date_still_applies(shipped: PolicySet) -> None:
    d = identity(shipped, entity(), exceptions=(grant(expires=DAY),))
    assert d["action"] == "challenge"


def test_exception_for_another_policy_or_entity_does_not_apply(shipped: PolicySet) -> None:
    for other in (
        grant(policies=["network-edge"]),
        grant(entity_id="bob@corp.example"),
        grant(entity_type="service_account"),
    ):
        d = identity(shipped, entity(), exceptions=(other,))
        assert d["action"] == "block" and json.loads(d["exceptions_checked_json"]) == []


def test_high_impact_on_privileged_user_waits_for_approval(shipped: PolicySet) -> None:
    d = identity(shipped, entity(is_privileged=True))
    assert (d["action"], d["status"]) == ("block", "pending_approval")
    assert "privileged account" in d["reason"]
    admin = identity(shipped, entity(user_type="admin"))
    assert admin["status"] == "pending_approval"


def test_high_impact_on_critical_asset_waits_for_approval(shipped: PolicySet) -> None:
    endpoint = policy(shipped, "endpoint-containment")
    crit = decide(
        entity(
            "host",
            "db-nyc-fin01",
            92,
            [sig("exfiltration_volume", "zeek_conn", 8e9, 1e9)],
            asset_criticality="critical",
        ),
        endpoint,
        shipped.guardrails,
        (),
        DAY,
    )
    low = decide(
        entity(
            "host",
            "ws-nyc-00001",
            92,
            [sig("exfiltration_volume", "zeek_conn", 8e9, 1e9)],
            asset_criticality="low",
        ),
        endpoint,
        shipped.guardrails,
        (),
        DAY,
    )
    assert (crit["action"], crit["status"]) == ("isolate", "pending_approval")
    assert (low["action"], low["status"]) == ("isolate", "approved")


def test_lower_actions_on_privileged_users_need_no_approval(shipped: PolicySet) -> None:
    d = identity(shipped, entity(risk=75, signals=[sig("off_hours")], is_privileged=True))
    assert (d["action"], d["status"]) == ("limit", "approved")


def test_degraded_only_evidence_falls_back(shipped: PolicySet) -> None:
    d = identity(shipped, entity(), degraded=("idp",))
    assert (d["policy_action"], d["action"], d["status"]) == ("block", "challenge", "approved")
    assert "degraded_evidence lowered block to challenge" in d["reason"]
    # the entity's own degraded_sources count too
    d = identity(shipped, entity(degraded_sources=["idp"]))
    assert d["action"] == "challenge"


def test_degraded_fallback_is_configurable(shipped: PolicySet) -> None:
    rules = shipped.guardrails.model_copy(
        update={
            "degraded_evidence": shipped.guardrails.degraded_evidence.model_copy(
                update={"fallback_action": "limit"}
            )
        }
    )
    assert identity(shipped, entity(), rules, degraded=("idp",))["action"] == "limit"


def test_evidence_from_a_healthy_source_keeps_the_action(shipped: PolicySet) -> None:
    row = entity(signals=[sig("impossible_travel", "idp"), sig("new_country", "cloudtrail")])
    assert identity(shipped, row, degraded=("idp",))["action"] == "block"
    # signals the tier does not name do not count as support
    row = entity(signals=[sig("impossible_travel", "idp"), sig("off_hours", "windows")])
    assert identity(shipped, row, degraded=("idp",))["action"] == "challenge"


def test_degraded_rule_leaves_lower_actions_alone(shipped: PolicySet) -> None:
    d = identity(shipped, entity(risk=72, signals=[sig("off_hours", "idp")]), degraded=("idp",))
    assert (d["action"], d["status"]) == ("challenge", "approved")


def test_domain_ceiling_caps_actions(shipped: PolicySet) -> None:
    rules = shipped.guardrails.model_copy(
        update={"max_action": {**shipped.guardrails.max_action, "identity": "limit"}}
    )
    d = identity(shipped, entity(), rules)
    assert (d["action"], d["status"]) == ("limit", "approved")
    assert '"guardrail":"domain_max_action"' in d["guardrails"]


def test_shadow_policy_gives_shadow_status(shipped: PolicySet) -> None:
    cloud = policy(shipped, "cloud-iam")
    assert cloud.mode == "shadow"
    d = decide(
        entity(risk=93, signals=[sig("risky_iam_change", "cloudtrail")], is_privileged=True),
        cloud,
        shipped.guardrails,
        (),
        DAY,
    )
    assert (d["action"], d["status"]) == ("block", "shadow")


def test_allow_is_logged_with_no_action_status(shipped: PolicySet) -> None:
    d = identity(shipped, entity(risk=10, signals=[]))
    assert (d["action"], d["status"], d["valid_for_hours"]) == ("allow", "no_action", 0)
    assert d["rec_id"] == rec_id("user", "alice@corp.example", "allow", DAY)
    assert "Policy identity-sessions v1.0.0" in d["reason"] and "no signals" in d["reason"]


def test_reason_names_policy_tier_signals_and_values(shipped: PolicySet) -> None:
    d = identity(
        shipped, entity(signals=[sig("impossible_travel", "idp", 1843.0, 900.0), sig("new_device")])
    )
    reason = d["reason"]
    for part in (
        "identity-sessions v1.0.0",
        "tier 'account-takeover'",
        "impossible_travel (1,843 vs threshold 900, from idp)",
        "new_device",
        "risk 94",
        "Action block, status approved",
    ):
        assert part in reason, part
    thresholds = json.loads(d["thresholds"])
    assert thresholds["comparisons"] == [
        {"name": "risk", "op": ">=", "threshold": 90, "actual": 94}
    ]
    assert thresholds["signals_required"] == ["impossible_travel", "new_country"]


def test_only_policies_for_the_entity_type_decide(shipped: PolicySet) -> None:
    ip = decide_entity(
        entity("ip", "203.0.113.9", 88, [sig("password_spray")]),
        shipped.compiled,
        shipped.guardrails,
        shipped.exceptions,
        DAY,
    )
    assert [(d["policy_id"], d["action"]) for d in ip] == [("network-edge", "block")]
    user = decide_entity(entity(), shipped.compiled, shipped.guardrails, shipped.exceptions, DAY)
    assert sorted(d["policy_id"] for d in user) == ["cloud-iam", "identity-sessions"]


def test_analyst_decision_ids_are_deterministic() -> None:
    from jobs.governance.decisions import AnalystDecisionIn

    row = {
        "rec_id": "a" * 64,
        "decision": "approve",
        "analyst": "ana@corp.example",
        "decided_at": "2026-10-02T10:00:00+02:00",
    }
    first, again = AnalystDecisionIn.model_validate(row), AnalystDecisionIn.model_validate(row)
    assert first.decision_id == again.decision_id
    assert first.decided_at.isoformat() == "2026-10-02T08:00:00+00:00"  # stored in UTC
    other = AnalystDecisionIn.model_validate({**row, "decision": "reject", "reason": "benign"})
    assert other.decision_id != first.decision_id


def test_high_impact_on_a_host_of_unknown_criticality_waits_for_approval(
    shipped: PolicySet,
) -> None:
    """Issue 24, finding 4: a host the inventory does not know might be critical."""
    unknown = decide(
        entity("host", "ws-nyc-09999", 92, [sig("exfiltration_volume", "zeek_conn", 8e9, 1e9)]),
        policy(shipped, "endpoint-containment"),
        shipped.guardrails,
        (),
        DAY,
    )
    assert (unknown["action"], unknown["status"]) == ("isolate", "pending_approval")
    assert "asset criticality unknown" in unknown["reason"]
