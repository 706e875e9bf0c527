"""Recommendations on the shared generated month: every injected scenario gets the action its
policy says, and the guardrails hold over every decision of the month.

The expected actions are read from the policy files themselves (the tier the decision log
names, looked up in `policies/<id>.yaml` with a plain YAML reader), not from the engine, and
the guardrail rules are restated here from `policies/guardrails.yaml`, so a regression in
the engine or in the guardrails fails these tests. Slow: it uses `pipeline_month`.
"""

from __future__ import annotations

import fnmatch
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import functions as F

from jobs.generate.scenarios import EXPECTED_SIGNALS, KINDS
from tests.conftest import REPO_ROOT, PipelineMonth

pytestmark = pytest.mark.slow

POLICIES = REPO_ROOT / "policies"
# The policy that owns each kind of attack (by the entity it is about and its signals).
POLICY_OF = {
    "impossible_travel": "identity-sessions",
    "new_country_new_device": "identity-sessions",
    "password_spray": "network-edge",
    "brute_force": "identity-sessions",
    "lateral_movement": "identity-sessions",  # the scenario is about the user who moves
    "privileged_off_hours": "identity-sessions",
    "exfiltration": "endpoint-containment",
    "risky_iam_change": "cloud-iam",
}
LOG_COLUMNS = ("run_date", "policy_id", "target_type", "target_id", "tier", "policy_action",
               "action", "status", "reason", "guardrails", "inputs", "rec_id", "signals")  # fmt: skip
SEVERITY = {"allow": 0, "challenge": 1, "limit": 2, "isolate": 3, "block": 4}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def needs_approval(row: dict[str, Any], inputs: dict[str, Any], approval: dict[str, Any]) -> bool:
    """The approval rule of guardrails.yaml, restated: a privileged account, an approval user
    type, a critical asset or a host of unknown criticality."""
    return (
        inputs.get("privileged") is True
        or inputs.get("user_type") in approval["user_types"]
        or inputs.get("asset_criticality") in approval["asset_criticality"]
        or (
            approval.get("unknown_asset_criticality", True)
            and row["target_type"] == "host"
            and not inputs.get("asset_criticality")
        )
    )


@pytest.fixture(scope="module")
def month_log(pipeline_month: PipelineMonth) -> list[dict[str, Any]]:
    rows = pipeline_month.ctx.lake.read("gold.decision_log").select(*LOG_COLUMNS).collect()
    return [r.asDict() for r in rows]


def test_every_kind_of_attack_was_injected(pipeline_month: PipelineMonth) -> None:
    assert {sc["scenario"] for sc in pipeline_month.truth} == set(KINDS)
    assert set(POLICY_OF) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_each_scenario_gets_the_action_its_policy_says(
    kind: str, pipeline_month: PipelineMonth, month_log: list[dict[str, Any]]
) -> None:
    policy = _yaml(POLICIES / f"{POLICY_OF[kind]}.yaml")
    tiers = {t["name"]: t for t in policy["tiers"]}
    rules = _yaml(POLICIES / "guardrails.yaml")
    scenarios = [sc for sc in pipeline_month.truth if sc["scenario"] == kind]
    assert scenarios
    wrong = []
    for sc in scenarios:
        day = date.fromisoformat(sc["start"][:10])
        found = [
            r
            for r in month_log
            if r["run_date"] == day
            and r["policy_id"] == policy["id"]
            and r["target_type"] == sc["entity_type"]
            and r["target_id"] == sc["entity_id"]
        ]
        if len(found) != 1:
            wrong.append((sc["entity_id"], day, f"{len(found)} decisions of {policy['id']}"))
            continue
        r = found[0]
        tier = tiers.get(r["tier"] or "")
        # a real tier, not the catch-all, and the action that tier of the file names
        if tier is None or tier["when"].strip() == "true" or r["policy_action"] == "allow":
            wrong.append((sc["entity_id"], day, f"tier {r['tier']}: {r['policy_action']}"))
            continue
        if r["policy_action"] != tier["action"]:
            wrong.append((sc["entity_id"], day, f"{r['policy_action']} != {tier['action']}"))
        # a tier that asks for signals matched on signals the entity has (the first matching
        # tier wins, so it may be another attack pattern the same sessions show)
        asked = set(re.findall(r"has_signal\('([a-z_]+)'\)", tier["when"]))
        present = {s["name"] for s in r["signals"] or []}
        if asked and not asked & present:
            wrong.append((sc["entity_id"], day, f"tier {r['tier']} without {sorted(asked)}"))
        # guardrails only ever lower, and within the domain ceiling
        ceiling = rules["max_action"][policy["domain"]]
        expected = min(tier["action"], ceiling, key=SEVERITY.__getitem__)
        applied = json.loads(r["guardrails"])["applied"]
        if not applied and r["action"] != expected:
            wrong.append((sc["entity_id"], day, f"action {r['action']} != {expected}"))
        if SEVERITY[r["action"]] > SEVERITY[expected]:
            wrong.append((sc["entity_id"], day, f"action {r['action']} above {expected}"))
        # the status follows the policy mode and the approval rule
        inputs = json.loads(r["inputs"])
        if policy["mode"] == "shadow":
            want = {"shadow"}
        elif "blast_radius" in json.loads(r["guardrails"]):  # the run's limit was reached
            want = {"pending_approval"}
        elif r["action"] in rules["approval"]["actions"] and needs_approval(
            r, inputs, rules["approval"]
        ):
            want = {"pending_approval", "alert_only"}
        else:
            want = {"approved", "alert_only"}
        if r["status"] not in want:
            wrong.append((sc["entity_id"], day, f"status {r['status']} not in {sorted(want)}"))
        # the reason an auditor reads names the policy and the signals the tier matched on
        reason = r["reason"] or ""
        named = (asked & present) or set(EXPECTED_SIGNALS[kind])
        if policy["id"] not in reason or not any(s in reason for s in named):
            wrong.append((sc["entity_id"], day, f"reason: {reason[:120]}"))
    assert wrong == []


def test_break_glass_and_allowlisted_entities_are_never_blocked_or_isolated(
    month_log: list[dict[str, Any]],
) -> None:
    rules = _yaml(POLICIES / "guardrails.yaml")
    patterns = [(e["entity_type"], e["entity_id"]) for e in rules["allowlist"]["entries"]]
    glass = rules["break_glass"]
    listed, breakglass = [], []
    for r in month_log:
        inputs = json.loads(r["inputs"])
        if any(r["target_type"] == t and fnmatch.fnmatch(r["target_id"], p) for t, p in patterns):
            listed.append(r)
        if inputs.get("user_type") in glass["user_types"] or any(
            fnmatch.fnmatch(r["target_id"], p) for p in glass["accounts"]
        ):
            breakglass.append(r)
    assert listed, "the month's allowlisted service accounts should have been evaluated"
    for r in listed + breakglass:
        assert r["action"] not in ("block", "isolate"), r
        if r["action"] != "allow" and r["status"] != "shadow":
            assert r["status"] == "alert_only", r


def test_high_impact_actions_wait_for_approval_and_every_recommendation_is_logged(
    pipeline_month: PipelineMonth, month_log: list[dict[str, Any]]
) -> None:
    rules = _yaml(POLICIES / "guardrails.yaml")["approval"]
    high = [
        r
        for r in month_log
        if r["action"] in rules["actions"] and r["status"] not in ("shadow", "alert_only")
    ]
    assert high, "the month should hold isolate/block decisions"
    for r in high:
        inputs = json.loads(r["inputs"])
        needs = needs_approval(r, inputs, rules) or "blast_radius" in json.loads(r["guardrails"])
        assert r["status"] == ("pending_approval" if needs else "approved"), r
    # every recommendation has its decision-log row, whose reason names the policy
    recs = pipeline_month.ctx.lake.read("gold.policy_recommendations")
    logged = {(r["rec_id"], r["policy_id"]) for r in month_log}
    missing = [
        (r["rec_id"], r["policy_id"])
        for r in recs.select("rec_id", F.col("policy_id")).collect()
        if (r["rec_id"], r["policy_id"]) not in logged
    ]
    assert missing == []
