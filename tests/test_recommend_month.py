"""Recommendations on the shared generated month: every injected scenario gets the action its
policy says, and the guardrails hold over every decision of the month.

The expected actions are read from the policy files themselves (the tier the decision log
names, looked up in `policies/<id>.yaml` with a plain YAML reader), not from the engine, and
the guardrail rules are restated here from `policies/guardrails.yaml`, so a regression in
the engine or in the guardrails fails these tests. Slow: it uses `pipeline_month`.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import json
import os
import re
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from jobs.generate.scenarios import EXPECTED_SIGNALS, KINDS
from tests.conftest import REPO_ROOT, PipelineMonth, test_settings

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


# --- issue 24, done-when: the guardrails hold against any analyst decision and any model ------

SHADOW_POLICIES = {p.stem for p in POLICIES.glob("*.yaml") if p.stem != "guardrails"
                   and (_yaml(p) or {}).get("mode") == "shadow"}  # fmt: skip


def enforceable(rec: dict[str, Any]) -> str | None:
    """The action enforcement acts on (docs/policies.md, Consuming recommendations)."""
    return {"approved": rec["action"], "overridden": rec["override_action"]}.get(rec["status"])


def month_copy(pipeline_month: PipelineMonth, where: Path, **sections: dict[str, object]) -> Any:
    """A RunContext over a copy of the month's lake and reference data: the shared lake is
    read-only, these tests write."""
    from jobs.core.context import RunContext

    for part in ("lake", "reference"):
        shutil.copytree(pipeline_month.workdir / part, where / part, symlinks=True)
    shutil.copy2(pipeline_month.workdir / "ground_truth.jsonl", where / "ground_truth.jsonl")
    return RunContext(pipeline_month.ctx.spark, test_settings(where, **sections))


def account_types(ctx: Any) -> dict[str, str]:
    """user id -> account type, from the directory file itself (not from the engine)."""
    path = Path(ctx.settings.paths.reference_root) / "identity_directory.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        return {r["user_id"].lower(): r["account_type"] for r in csv.DictReader(fh)}


def guardrail_violations(
    recs: list[dict[str, Any]], rules: dict[str, Any], types: dict[str, str]
) -> list[tuple[str, str, str, str]]:
    """Enforceable isolate/block on a break-glass account, an allowlisted entity above its
    cap, anything enforceable from a shadow policy: guardrails.yaml restated, not the engine."""
    glass, listed = rules["break_glass"], rules["allowlist"]
    bad = []
    for r in recs:
        action = enforceable(r)
        if action is None:
            continue
        target = r["target_id"]
        if r["policy_id"] in SHADOW_POLICIES:
            bad.append(("shadow", target, action, r["status"]))
        if action in ("isolate", "block") and (
            types.get(target.lower()) in glass["user_types"]
            or any(fnmatch.fnmatchcase(target, p) for p in glass["accounts"])
        ):
            bad.append(("break_glass", target, action, r["status"]))
        if SEVERITY[action] > SEVERITY[listed["max_action"]] and any(
            e["entity_type"] == r["target_type"] and fnmatch.fnmatchcase(target, e["entity_id"])
            for e in listed["entries"]
        ):
            bad.append(("allowlist", target, action, r["status"]))
    return bad


def test_the_violation_check_catches_a_bypass() -> None:
    """The property below can fail: each guardrail broken by hand is reported."""
    rules = _yaml(POLICIES / "guardrails.yaml")
    row = {"status": "overridden", "action": "challenge", "override_action": "block",
           "policy_id": "identity-sessions", "target_type": "user"}  # fmt: skip
    recs = [
        {**row, "target_id": "breakglass01@corp.example"},
        {**row, "target_id": "ops@corp.example"},  # break-glass by the directory's type
        {**row, "target_type": "service_account", "target_id": "svc-backup@corp.example"},
        {**row, "status": "approved", "action": "limit", "policy_id": "cloud-iam",
         "target_id": "a@corp.example"},
        {**row, "status": "pending_approval", "target_id": "breakglass02@corp.example"},
    ]  # fmt: skip
    got = guardrail_violations(recs, rules, {"ops@corp.example": "break_glass"})
    assert [v[0] for v in got] == ["break_glass", "break_glass", "allowlist", "shadow"]


ANALYSTS = ("ana@corp.example", "ben@corp.example", "mallory@corp.example")
drawn_decisions = st.lists(
    st.fixed_dictionaries(
        {
            "rec": st.integers(min_value=0, max_value=10_000),
            "decision": st.sampled_from(("approve", "reject", "override")),
            "action": st.sampled_from(tuple(SEVERITY)),
            "analyst": st.sampled_from(ANALYSTS),
            "signer": st.sampled_from(("own", "own", "own", "other", "forged", "none")),
            # a point between the first date's start and the feedback clock (a fraction), or
            # minutes from that start, a month before to months after (the future included)
            "at": st.one_of(st.floats(0, 1), st.integers(-31 * 24 * 60, 150 * 24 * 60)),
            "verdict": st.sampled_from((None, "true_positive", "false_positive")),
        }
    ),
    min_size=4,
    max_size=12,
)  # fmt: skip


def test_no_analyst_decision_file_enforces_a_guarded_action_on_the_month(
    pipeline_month: PipelineMonth, tmp_path: Path
) -> None:
    """Done-when (issue 24): random analyst decision files (any action, any status, any time,
    signed by a registered analyst, by another, forged or unsigned) over a generated month's
    real recommendations never make a break-glass account or an allowlisted entity above its
    cap blocked or isolated, nor a shadow policy enforced; feedback applies them, recommend
    re-applies them.

    Two dates are re-recommended with the user their policies treat most severely listed as
    break-glass and the host or IP they treat most severely allowlisted, so each guardrail
    has targets whose policy asks for a severe action; decisions accumulate over the
    examples."""
    from jobs.governance.decisions import AnalystDecisionIn, sign_decision
    from jobs.governance.feedback import run_feedback
    from jobs.stages.recommend.stage import run_recommend
    from tests.test_recommend import analyst_key, signed_decisions, write_registry

    ctx = month_copy(pipeline_month, tmp_path)
    write_registry(ctx.settings)
    log = ctx.lake.read("gold.decision_log").select(
        "run_date", "policy_id", "target_type", "target_id", "policy_action", "status"
    )
    # two dates: the first with a shadow decision, and the one whose hosts and IPs get the
    # most severe actions (the generated month has few of either)
    by_day: dict[date, list[dict[str, Any]]] = {}
    for r in log.where(F.col("policy_action") != "allow").collect():
        by_day.setdefault(r["run_date"], []).append(r.asDict())

    def severity_on(d: date, types: tuple[str, ...]) -> int:
        return sum(
            SEVERITY[r["policy_action"]] ** 2 for r in by_day[d] if r["target_type"] in types
        )

    shadow_day = min(d for d, rows in by_day.items() if any(r["status"] == "shadow" for r in rows))
    severe_day = max(sorted(by_day), key=lambda d: severity_on(d, ("host", "ip")))
    days = sorted({shadow_day, severe_day})
    rows = [r for d in days for r in by_day[d]]
    severest = sorted(rows, key=lambda r: (-SEVERITY[r["policy_action"]], r["target_id"]))
    user = next(r for r in severest if r["target_type"] == "user"
                and r["policy_id"] not in SHADOW_POLICIES)  # fmt: skip
    other = next(r for r in severest if r["target_type"] in ("host", "ip"))
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    rules = _yaml(policies / "guardrails.yaml")
    rules["break_glass"]["accounts"].append(user["target_id"])
    rules["allowlist"]["entries"].append(
        {
            "entity_type": other["target_type"],
            "entity_id": other["target_id"],
            "reason": "issue 24 property test",
            "owner": "soc@corp.example",
        }
    )
    (policies / "guardrails.yaml").write_text(yaml.safe_dump(rules))
    types = account_types(ctx)
    run_recommend(ctx, days, policies_dir=policies)

    def day_recs() -> list[dict[str, Any]]:
        return [r.asDict() for r in ctx.lake.read_dates("gold.policy_recommendations", days)
                .select("rec_id", "run_date", "policy_id", "target_type", "target_id",
                        "action", "status", "override_action").collect()]  # fmt: skip

    recs = day_recs()
    statuses = {r["status"] for r in recs}
    assert {"approved", "alert_only"} <= statuses  # shadow decisions stay in the log
    guarded = {r["target_id"] for r in recs if r["status"] == "alert_only"}
    assert {user["target_id"], other["target_id"]} <= guarded
    assert guardrail_violations(recs, rules, types) == []
    pool = sorted(r["rec_id"] for r in recs)
    start = datetime.combine(days[0], datetime.min.time(), UTC)
    now = datetime.combine(days[-1], datetime.min.time(), UTC) + timedelta(days=2)
    files = iter(range(1_000))

    def at(drawn: float | int) -> datetime:
        if isinstance(drawn, float):
            return start + (now - start) * drawn
        return start + timedelta(minutes=drawn)

    @settings(
        max_examples=int(os.environ.get("POLICYLAKE_MONTH_PROPERTY_EXAMPLES", "5")),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(drawn=drawn_decisions)
    def feed(drawn: list[dict[str, Any]]) -> None:
        lines = []
        for d in drawn:
            row = {"rec_id": pool[d["rec"] % len(pool)], "decision": d["decision"],
                   "analyst": d["analyst"],
                   "decided_at": at(d["at"]).isoformat(),
                   "verdict": d["verdict"], "reason": "drawn by hypothesis"}  # fmt: skip
            if d["decision"] == "override":
                row["override_action"] = d["action"]
            parsed = AnalystDecisionIn.model_validate(row)
            registered = [a for a in ANALYSTS[:2] if a != d["analyst"]]
            if d["signer"] == "own" and d["analyst"] in ANALYSTS[:2]:
                row["signature"] = sign_decision(analyst_key(d["analyst"]), parsed)
            elif d["signer"] == "other":
                row["signature"] = sign_decision(analyst_key(registered[0]), parsed)
            elif d["signer"] == "forged":
                row["signature"] = base64.b64encode(b"\0" * 64).decode()
            lines.append(row)
        path = signed_decisions(tmp_path / f"drawn-{next(files)}.jsonl", lines, sign=False)
        run_feedback(ctx, path, run_date=now.date(), now=now)
        assert guardrail_violations(day_recs(), rules, types) == []

    feed()
    accepted = ctx.lake.read("ops.analyst_decisions").count()
    assert accepted > 0  # some drawn decisions were valid and applied
    run_recommend(ctx, days, policies_dir=policies)
    assert guardrail_violations(day_recs(), rules, types) == []


BLAST_LIMIT = 3  # max_new per run date and domain; max_share 0.5 is looser here
MODEL_GATE = {
    "id": "model-gate",
    "version": "1.0.0",
    "owner": "soc@corp.example",
    "description": "Blocks users on overall risk alone (a tier that names no signal).",
    "domain": "identity",
    "mode": "enforce",
    "applies_to": ["user"],
    "tiers": [{"name": "very-high", "when": "risk >= 95", "action": "block", "valid_for_hours": 6}],
    "tests": [
        {"name": "very high risk blocks", "input": {"risk": 99}, "expect": "block"},
        {"name": "lower risk is allowed", "input": {"risk": 50}, "expect": "allow"},
    ],
}  # fmt: skip


def test_a_registered_model_scoring_everyone_1_blocks_no_more_than_the_limit(
    pipeline_month: PipelineMonth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Done-when (issue 24): a real champion in a real MLflow store that scores every session
    1.0, weighted so that its score alone makes risk 100, with policies that block users and
    isolate hosts on risk alone (an unreviewed policy edit): over the month's last two days,
    score and recommend keep the automatic isolate/block actions of each run date and domain
    within guardrails.yaml's blast-radius limit; the rest wait in pending_approval and the
    metrics raise a blast_radius alert. The model's first day is degraded evidence (a new
    champion); the second day its evidence counts and the limit is what holds."""
    from sklearn.dummy import DummyClassifier

    from jobs.model import estimators
    from jobs.model.registry import Champion, load_champion
    from jobs.model.train import run_train
    from jobs.stages.metrics.families import alert_metrics, blast_radius_metrics, dates_frame
    from jobs.stages.recommend.stage import run_recommend
    from jobs.stages.score.stage import run_score
    from tests.test_enforcement_safety import MODEL_WATCH

    ctx = month_copy(pipeline_month, tmp_path, scoring={"model_points": 100.0})
    first, last = pipeline_month.dates[0], pipeline_month.dates[-1]

    # `policylake train` registers and promotes it: a constant classifier (a scikit-learn
    # type skops loads without widening the trusted list) fitted on the month's labels
    def always_malicious(name: str, random_state: int = 0, **params: Any) -> Any:
        return DummyClassifier(strategy="constant", constant=1)

    monkeypatch.setattr(estimators, "make_estimator", always_malicious)
    trained = run_train(ctx, first, last, estimator="gradient_boosting",
                        ground_truth=tmp_path / "ground_truth.jsonl")  # fmt: skip
    monkeypatch.undo()
    assert trained.promoted and trained.champion_version == trained.model_version
    loaded = load_champion(ctx.settings)
    assert isinstance(loaded, Champion) and loaded.version == trained.model_version
    model = loaded.model
    probe = pd.DataFrame(np.random.default_rng(0).normal(0, 5, (50, len(estimators.FEATURES))),
                         columns=list(estimators.FEATURES))  # fmt: skip
    assert set(estimators.risk_scores(model, probe).tolist()) == {1.0}

    days = pipeline_month.dates[-2:]
    run_score(ctx, days)
    scored = (
        ctx.lake.read_dates("gold.session_scores", days)
        .agg(F.min("model_score"), F.max("risk"), F.min("risk"), F.count("*"))
        .first()
    )
    assert scored is not None and scored[0] == 1.0 and scored[3] > 0
    assert (scored[1], scored[2]) == (100, 100)  # everyone

    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    rules = _yaml(policies / "guardrails.yaml")
    rules["blast_radius"] = {"actions": ["isolate", "block"], "max_new": BLAST_LIMIT,
                             "max_share": 0.5}  # fmt: skip
    (policies / "guardrails.yaml").write_text(yaml.safe_dump(rules))
    for policy in (MODEL_WATCH, MODEL_GATE):
        (policies / f"{policy['id']}.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    result = run_recommend(ctx, days, policies_dir=policies)

    recs = [r.asDict() for r in ctx.lake.read_dates("gold.policy_recommendations", days)
            .select("run_date", "domain", "policy_id", "target_id", "action", "status",
                    "override_action").collect()]  # fmt: skip
    counts: dict[tuple[date, str], int] = {}
    for r in recs:
        if enforceable(r) in ("isolate", "block"):
            counts[(r["run_date"], r["domain"])] = counts.get((r["run_date"], r["domain"]), 0) + 1
    assert max(counts.values()) <= BLAST_LIMIT, counts
    # the second day the limit is what held: everyone is at 100 and the gates ask for more
    assert counts[(days[1], "identity")] == BLAST_LIMIT
    assert counts[(days[1], "endpoint")] == BLAST_LIMIT
    high = [r for r in recs if r["action"] in ("isolate", "block") and not enforceable(r)]
    assert high and {r["status"] for r in high} <= {"pending_approval", "shadow"}
    gated = [r for r in high if r["run_date"] == days[1] and r["policy_id"] in
             (MODEL_WATCH["id"], MODEL_GATE["id"])]  # fmt: skip
    assert len(gated) > 2 * BLAST_LIMIT and {r["status"] for r in gated} == {"pending_approval"}

    log = ctx.lake.read_dates("gold.decision_log", days).select(
        "run_date", "domain", "target_type", "target_id", "guardrails", "status"
    )
    held: dict[tuple[date, str], set[tuple[str, str]]] = {}
    for r in log.collect():
        if "blast_radius" in json.loads(r["guardrails"]):
            assert r["status"] == "pending_approval", r
            held.setdefault((r["run_date"], r["domain"]), set()).add(
                (r["target_type"], r["target_id"])
            )
    assert result.details["blast_radius_held"] > 0
    alerts = alert_metrics(blast_radius_metrics(log), dates_frame(ctx.spark, days))
    fired = {
        (r["run_date"], r["dimensions"].get("domain")): r["value"]
        for r in alerts.where(F.col("metric") == "alert").collect()
    }
    assert fired == {k: float(len(v)) for k, v in held.items()}
    assert {(days[1], "identity"), (days[1], "endpoint")} <= set(fired)
