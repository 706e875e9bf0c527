"""Analyst decisions (issue 24, finding 1): authenticated, read from their own drop folder,
bounded in time, and never able to bypass a guardrail, by any path.

The rules are tested without Spark first; then one small lake (every status a guardrail
can give: break-glass, allowlisted, excepted, shadow, pending, approved) takes signed and
forged decision files, and a property test throws random files at it.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from typer.testing import CliRunner

from jobs.core.context import RunContext
from jobs.core.errors import ConfigError, PipelineError
from jobs.core.tables import ENTITY_RISK
from jobs.governance.decision_files import analyst_decision_files
from jobs.governance.decisions import (
    AnalystDecisionIn,
    AnalystRegistry,
    FeedbackError,
    authenticate,
    check_decision_folders,
    guardrail_refusal,
    parse_decision_lines,
    public_key_text,
    sign_decision,
    time_refusal,
)
from jobs.governance.feedback import run_feedback
from jobs.policy.vocabulary import ACTIONS
from jobs.stages.metrics.families import dates_frame, refused_decision_metrics
from jobs.stages.recommend.stage import run_recommend
from tests.conftest import test_settings
from tests.test_recommend import (
    ANALYST_SEEDS,
    DAY_ONE,
    POLICIES,
    analyst_key,
    risk_row,
    sig,
    signed_decisions,
    write_day_inputs,
    write_reference,
    write_registry,
)

D1 = date(2026, 10, 1)
ANA, BEN = "ana@corp.example", "ben@corp.example"
NOW = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)  # the feedback runs' clock
RECS, REFUSED = "gold.policy_recommendations", "ops.refused_decisions"


def decision(**changes: Any) -> AnalystDecisionIn:
    row = {"rec_id": "a" * 64, "decision": "approve", "analyst": ANA,
           "decided_at": "2026-10-02T08:00:00Z", **changes}  # fmt: skip
    return AnalystDecisionIn.model_validate(row)


def signed(d: AnalystDecisionIn, by: str | None = None) -> AnalystDecisionIn:
    return d.model_copy(update={"signature": sign_decision(analyst_key(by or d.analyst), d)})


def registry(**extra: dict[str, Any]) -> AnalystRegistry:
    entries = [
        {"id": n, "public_key": public_key_text(analyst_key(n).public_key()), **extra.get(n, {})}
        for n in ANALYST_SEEDS
    ]
    return AnalystRegistry.model_validate({"analysts": entries})


# --- the rules, without Spark -----------------------------------------------------------------


def test_only_a_registered_analysts_valid_signature_authenticates() -> None:
    keys = registry()
    good = signed(decision(decision="override", override_action="limit", reason="why"))
    assert authenticate(good, keys) is None
    assert authenticate(good.model_copy(update={"analyst": "ANA@corp.example"}), keys) is not None

    def rule(d: AnalystDecisionIn, reg: AnalystRegistry = keys) -> str | None:
        why = authenticate(d, reg)
        return why.rule if why else None

    assert rule(decision()) == "unsigned"
    assert rule(signed(decision(), by=BEN)) == "bad_signature"  # ben's key, ana's name
    forged = good.model_copy(update={"override_action": "allow"})  # changed after signing
    assert rule(forged) == "bad_signature"
    later = good.model_copy(update={"decided_at": good.decided_at + timedelta(days=3)})
    assert rule(later) == "bad_signature"  # a signed decision cannot be re-dated
    other_rec = good.model_copy(update={"rec_id": "b" * 64})
    assert rule(other_rec) == "bad_signature"  # ... nor moved to another recommendation
    assert rule(signed(decision(analyst="mallory@corp.example"), by=ANA)) == "unknown_analyst"
    assert rule(good.model_copy(update={"signature": "not base64!"})) == "bad_signature"
    approve_only = registry(**{ANA: {"decisions": ["approve"]}})
    assert rule(good, approve_only) == "not_permitted"
    assert rule(signed(decision()), approve_only) is None
    expired = registry(**{ANA: {"expires": "2026-10-01"}})
    assert rule(signed(decision()), expired) == "key_expired"


def test_decisions_are_bounded_in_time() -> None:
    skew = timedelta(minutes=5)
    valid_from = datetime(2026, 10, 2, 0, 0)  # naive, as Spark returns it: UTC
    at = decision(decided_at="2026-10-02T08:00:00Z")
    now = datetime(2026, 10, 2, 8, 0, tzinfo=UTC)
    assert time_refusal(at, now, skew, valid_from) is None
    assert time_refusal(decision(decided_at="2026-10-02T08:04:59Z"), now, skew, None) is None
    future = time_refusal(decision(decided_at="2026-10-02T08:05:01Z"), now, skew, None)
    assert future is not None and future.rule == "future"
    early = time_refusal(decision(decided_at="2026-10-01T23:59:59Z"), now, skew, valid_from)
    assert early is not None and early.rule == "before_recommendation"


@pytest.mark.parametrize(
    ("kind", "action", "status", "mode", "ceiling", "refused"),
    [
        # approvals and rejections never raise an action: always allowed
        ("approve", None, "pending_approval", "enforce", "block", None),
        ("approve", None, "alert_only", "enforce", "challenge", None),  # no effect on status
        ("approve", None, "shadow", "shadow", "block", None),  # no effect on status
        ("reject", None, "approved", "enforce", "block", None),
        ("reject", None, "shadow", "shadow", "block", None),
        # overrides: never for shadow policies, never above the target's ceiling
        ("override", "block", "shadow", "shadow", "block", "shadow"),
        ("override", "allow", "shadow", "shadow", "block", "shadow"),
        ("override", "block", "alert_only", "enforce", "challenge", "above_ceiling"),  # break-glass
        ("override", "isolate", "alert_only", "enforce", "challenge", "above_ceiling"),  # allowlist
        ("override", "challenge", "alert_only", "enforce", "challenge", None),  # within the cap
        ("override", "block", "approved", "enforce", "isolate", "above_ceiling"),  # domain max
        ("override", "limit", "approved", "enforce", "challenge", "above_ceiling"),  # exception
        ("override", "block", "pending_approval", "enforce", "block", None),
        ("override", "limit", "approved", "enforce", None, "above_ceiling"),  # ceiling unknown
    ],
)
def test_every_transition_an_override_could_use_to_bypass_a_guardrail_is_refused(
    kind: str, action: str | None, status: str, mode: str, ceiling: str | None, refused: str | None
) -> None:
    why = guardrail_refusal(kind, action, status, mode, ceiling)
    assert (why.rule if why else None) == refused


def test_the_registry_and_the_drop_folder_stay_out_of_the_landing_area(tmp_path: Path) -> None:
    base = test_settings(tmp_path).paths

    def paths(**changes: str) -> Any:
        return base.model_copy(update={k: str(tmp_path / v) for k, v in changes.items()})

    check_decision_folders(base)  # the defaults: each its own place
    with pytest.raises(ConfigError, match=r"analyst_keys .* must not be inside"):
        check_decision_folders(paths(analyst_keys="raw/keys.yaml"))
    with pytest.raises(ConfigError, match=r"analyst_keys .* must not be inside"):
        check_decision_folders(paths(analyst_keys="analyst_decisions/keys.yaml"))
    with pytest.raises(ConfigError, match=r"analyst_decisions .* must not be inside"):
        check_decision_folders(paths(analyst_decisions="raw/analyst_decisions"))


def test_symbolic_links_in_the_drop_folder_are_refused(tmp_path: Path) -> None:
    drop = tmp_path / "analyst_decisions"
    day = drop / "2026-10-02"
    day.mkdir(parents=True)
    elsewhere = tmp_path / "raw" / "planted.csv"
    elsewhere.parent.mkdir()
    elsewhere.write_text("rec_id,decision,analyst,decided_at\n")
    (day / "real.csv").write_text("x")
    (day / "planted.csv").symlink_to(elsewhere)
    with pytest.raises(PipelineError, match=r"symbolic link\(s\) refused: planted.csv"):
        analyst_decision_files(str(drop), "2026-10-02")
    (day / "planted.csv").unlink()
    assert [p.name for p in analyst_decision_files(str(drop), "2026-10-02")] == ["real.csv"]
    (drop / "2026-10-03").symlink_to(elsewhere.parent, target_is_directory=True)
    with pytest.raises(PipelineError, match="is a symbolic link"):
        analyst_decision_files(str(drop), "2026-10-03")
    link = tmp_path / "link.csv"
    link.symlink_to(elsewhere)
    with pytest.raises(FeedbackError, match="symbolic link: refused"):
        parse_decision_lines(link)


def test_cli_keygen_and_sign_make_decisions_the_registry_verifies(tmp_path: Path) -> None:
    from jobs.cli.app import app

    runner = CliRunner()
    key = tmp_path / "zoe.pem"
    made = runner.invoke(app, ["analyst", "keygen", "--analyst", "zoe@corp.example",
                               "--out", str(key)])  # fmt: skip
    assert made.exit_code == 0, made.output
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    entry = yaml.safe_load("analysts:\n" + made.output.split("\n", 1)[1])
    reg = AnalystRegistry.model_validate(entry)
    again = runner.invoke(app, ["analyst", "keygen", "--analyst", "z", "--out", str(key)])
    assert again.exit_code == 2  # never overwrites a key
    plain = tmp_path / "d.jsonl"
    plain.write_text(
        '{"rec_id": "' + "c" * 64 + '", "decision": "reject", "analyst": "zoe@corp.example", '
        '"reason": "benign", "decided_at": "2026-10-02T10:00:00+02:00"}\n'
    )
    out = tmp_path / "d.signed.jsonl"
    done = runner.invoke(app, ["analyst", "sign", "--file", str(plain), "--key", str(key),
                               "--analyst", "zoe@corp.example"])  # fmt: skip
    assert done.exit_code == 0, done.output
    ((_, d),) = parse_decision_lines(out)
    assert d.signature and authenticate(d, reg) is None
    wrong = runner.invoke(app, ["analyst", "sign", "--file", str(plain), "--key", str(key),
                                "--analyst", "ana@corp.example"])  # fmt: skip
    assert wrong.exit_code == 2 and "rows of other analysts" in wrong.output


# --- one lake with every guardrail status --------------------------------------------------------

EXTRA = [
    risk_row(D1, "host", "dc01-nyc", 95, [sig("lateral_fan_out", "windows", 9.0, 3.0)],
             criticality="critical"),  # allowlisted (dc*-*): isolate capped, alert_only
    risk_row(D1, "user", "erin@corp.example", 96, [sig("risky_iam_change", "cloudtrail")],
             "human", False),  # cloud-iam block: a shadow policy
]  # fmt: skip


@dataclass
class Guarded:
    ctx: RunContext
    recs: dict[str, dict[str, Any]]  # rec_id -> the engine's recommendation
    policies: Path


def rules_of(policies: Path) -> tuple[dict[str, Any], set[str]]:
    rules = yaml.safe_load((policies / "guardrails.yaml").read_text())
    shadow = {
        p.stem for p in policies.glob("*.yaml")
        if yaml.safe_load(p.read_text()).get("mode") == "shadow"
    }  # fmt: skip
    return rules, shadow


def violations(ctx: RunContext, policies: Path) -> list[tuple[str, str, str, str]]:
    """Enforceable isolate/block on a break-glass account or an allowlisted entity above its
    cap, or anything enforceable from a shadow policy: the guardrails restated from the
    files, not taken from the engine."""
    rules, shadow = rules_of(policies)
    severity = {a: i for i, a in enumerate(ACTIONS)}
    glass = rules["break_glass"]
    listed = rules["allowlist"]
    users = {r[2]: r[10] for r in [*DAY_ONE, *EXTRA]}  # entity id -> user type
    bad = []
    for r in ctx.lake.read_dates(RECS, [D1]).collect():
        action = {"approved": r["action"], "overridden": r["override_action"]}.get(r["status"])
        if action is None:
            continue
        target = r["target_id"]
        if r["policy_id"] in shadow:
            bad.append(("shadow", target, action, r["status"]))
        if action in ("isolate", "block") and (
            users.get(target) in glass["user_types"]
            or any(fnmatch.fnmatchcase(target, p) for p in glass["accounts"])
        ):
            bad.append(("break_glass", target, action, r["status"]))
        capped = any(
            e["entity_type"] == r["target_type"] and fnmatch.fnmatchcase(target, e["entity_id"])
            for e in listed["entries"]
        )
        if capped and severity[action] > severity[listed["max_action"]]:
            bad.append(("allowlist", target, action, r["status"]))
    return bad


@pytest.fixture(scope="module")
def guarded(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Guarded:
    work = tmp_path_factory.mktemp("guarded")
    ctx = RunContext(spark, test_settings(work))
    write_reference(ctx.settings)
    write_registry(ctx.settings)
    write_day_inputs(ctx, D1)
    rows = [*DAY_ONE, *EXTRA]
    ctx.lake.replace_dates(
        spark.createDataFrame(rows, ENTITY_RISK.schema), "gold.entity_risk", [D1]
    )
    policies = work / "policies"
    shutil.copytree(POLICIES, policies)
    run_recommend(ctx, [D1], policies_dir=policies)
    recs = {r["rec_id"]: r.asDict() for r in ctx.lake.read(RECS).collect()}
    assert {r["status"] for r in recs.values()} >= {"approved", "pending_approval",
                                                    "alert_only", "shadow"}  # fmt: skip
    assert violations(ctx, policies) == []
    return Guarded(ctx, recs, policies)


def rec_for(guarded: Guarded, target: str, action: str) -> str:
    return next(k for k, r in guarded.recs.items()
                if r["target_id"] == target and r["action"] == action)  # fmt: skip


def test_refused_decisions_are_recorded_and_never_applied(
    guarded: Guarded, spark: SparkSession, tmp_path: Path
) -> None:
    """Forged, unsigned, misdated and guardrail-breaking decisions land in
    ops.refused_decisions with their rule; the one valid decision is applied."""
    ctx = guarded.ctx
    glass = rec_for(guarded, "breakglass01@corp.example", "challenge")
    shadow = rec_for(guarded, "erin@corp.example", "block")
    backup = rec_for(guarded, "svc-backup@corp.example", "challenge")
    pending = rec_for(guarded, "db-nyc-fin01", "isolate")
    at = "2026-10-02T09:00:00Z"
    rows = [
        {"rec_id": glass, "decision": "override", "override_action": "block", "analyst": ANA,
         "reason": "lock it", "decided_at": at},  # above the break-glass cap
        {"rec_id": shadow, "decision": "override", "override_action": "block", "analyst": ANA,
         "reason": "enforce the shadow policy", "decided_at": at},  # a shadow policy
        {"rec_id": backup, "decision": "override", "override_action": "isolate", "analyst": BEN,
         "reason": "contain", "decided_at": at},  # above the allowlist cap
        {"rec_id": pending, "decision": "approve", "analyst": ANA,
         "decided_at": "2027-01-01T00:00:00Z"},  # dated in the future: always the latest
        {"rec_id": pending, "decision": "approve", "analyst": ANA,
         "decided_at": "2026-10-01T12:00:00Z"},  # before the recommendation existed
        {"rec_id": pending, "decision": "reject", "analyst": "mallory@corp.example",
         "reason": "let me in", "decided_at": at},  # not in the registry
    ]  # fmt: skip
    path = signed_decisions(tmp_path / "mixed.csv", rows)
    unsigned = signed_decisions(
        tmp_path / "unsigned.csv",
        [{"rec_id": pending, "decision": "reject", "analyst": BEN, "reason": "x",
          "decided_at": at}], sign=False,
    )  # fmt: skip
    before = {r["rec_id"]: r["status"] for r in ctx.lake.read(RECS).collect()}
    first = run_feedback(ctx, path, run_date=date(2026, 10, 2), now=NOW)
    second = run_feedback(ctx, unsigned, run_date=date(2026, 10, 2), now=NOW)
    assert first.details["refused"] == 6 and second.details["refused"] == 1
    after = {r["rec_id"]: r["status"] for r in ctx.lake.read(RECS).collect()}
    assert after == before  # nothing refused took effect
    refused = ctx.lake.read(REFUSED).where(F.col("stage") == "feedback")
    got = sorted((r["line"], r["rule"]) for r in refused.collect())
    assert got == [(2, "above_ceiling"), (2, "unsigned"), (3, "shadow"), (4, "above_ceiling"),
                   (5, "future"), (6, "before_recommendation"), (7, "unknown_analyst")]  # fmt: skip
    # re-processing the same files records nothing new
    run_feedback(ctx, path, run_date=date(2026, 10, 2), now=NOW)
    assert ctx.lake.read(REFUSED).where(F.col("stage") == "feedback").count() == 7
    counted = {
        (r["metric"], r["dimensions"].get("rule")): r["value"]
        for r in refused_decision_metrics(
            refused, dates_frame(spark, [date(2026, 10, 2)])
        ).collect()
    }
    assert counted[("analyst_decisions_refused_total", None)] == 7.0
    assert counted[("analyst_decisions_refused", "above_ceiling")] == 2.0
    # the valid decision is applied
    ok = signed_decisions(tmp_path / "ok.csv", [{"rec_id": pending, "decision": "approve",
                                                 "analyst": ANA, "decided_at": at}])  # fmt: skip
    assert run_feedback(ctx, ok, now=NOW).rows[RECS] == 1
    assert ctx.lake.read(RECS).where(F.col("rec_id") == pending).first()["status"] == "approved"  # type: ignore[index]


def test_a_guardrail_added_later_overrules_an_earlier_override(
    guarded: Guarded, tmp_path: Path
) -> None:
    """An override accepted while dave was an ordinary account stops taking effect once he
    is listed as a break-glass account: recommend re-applies the guardrails to every
    recorded decision, keeps the engine's status and records the refusal."""
    ctx = guarded.ctx
    dave = rec_for(guarded, "dave@corp.example", "challenge")
    ok = signed_decisions(tmp_path / "dave.csv", [
        {"rec_id": dave, "decision": "override", "override_action": "block", "analyst": BEN,
         "reason": "contain now", "decided_at": "2026-10-02T10:00:00Z"}])  # fmt: skip
    run_feedback(ctx, ok, now=NOW)
    row = ctx.lake.read(RECS).where(F.col("rec_id") == dave).first()
    assert (row["status"], row["override_action"]) == ("overridden", "block")  # type: ignore[index]
    policies = tmp_path / "policies"
    shutil.copytree(guarded.policies, policies)
    rules = yaml.safe_load((policies / "guardrails.yaml").read_text())
    rules["break_glass"]["accounts"].append("dave@corp.example")
    (policies / "guardrails.yaml").write_text(yaml.safe_dump(rules))
    result = run_recommend(ctx, [D1], policies_dir=policies)
    row = ctx.lake.read(RECS).where(F.col("rec_id") == dave).first()
    assert (row["status"], row["override_action"]) == ("alert_only", None)  # type: ignore[index]
    assert result.details["overrides_overruled"] == 1
    (refusal,) = ctx.lake.read(REFUSED).where(F.col("stage") == "recommend").collect()
    assert (refusal["rec_id"], refusal["rule"], refusal["analyst"]) == (dave, "above_ceiling", BEN)
    run_recommend(ctx, [D1], policies_dir=guarded.policies)  # back as it was, for what follows
    assert violations(ctx, guarded.policies) == []


# --- the property: no decision file breaks a guardrail ------------------------------------------

SIGNERS = ("own", "other", "none")
decisions_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "rec": st.integers(min_value=0, max_value=10_000),
            "decision": st.sampled_from(("approve", "reject", "override")),
            "action": st.sampled_from(ACTIONS),
            "analyst": st.sampled_from((ANA, BEN, "mallory@corp.example")),
            "signer": st.sampled_from(SIGNERS),
            "at": st.datetimes(
                min_value=datetime(2026, 9, 1), max_value=datetime(2027, 3, 1),
                timezones=st.just(UTC),
            ),
            "verdict": st.sampled_from((None, "true_positive", "false_positive")),
        }
    ),
    min_size=1,
    max_size=6,
)  # fmt: skip


@settings(
    max_examples=int(os.environ.get("POLICYLAKE_PROPERTY_EXAMPLES", "10")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=decisions_strategy)
def test_no_decision_file_enforces_a_block_on_a_guarded_target(
    guarded: Guarded, tmp_path_factory: pytest.TempPathFactory, drawn: list[dict[str, Any]]
) -> None:
    """Done-when: random decision files (any action, any status, any time, signed or not)
    never make a break-glass account, an allowlisted entity above its cap or a shadow policy
    enforceable. Decisions accumulate over the examples, as they would over a month."""
    recs = sorted(guarded.recs)
    rows = []
    for d in drawn:
        row = {"rec_id": recs[d["rec"] % len(recs)], "decision": d["decision"],
               "analyst": d["analyst"], "decided_at": d["at"].isoformat(),
               "verdict": d["verdict"], "reason": "drawn by hypothesis"}  # fmt: skip
        if d["decision"] == "override":
            row["override_action"] = d["action"]
        parsed = AnalystDecisionIn.model_validate(row)
        if d["signer"] != "none" and d["analyst"] in ANALYST_SEEDS:
            signer = d["analyst"] if d["signer"] == "own" else next(
                a for a in ANALYST_SEEDS if a != d["analyst"])  # fmt: skip
            row["signature"] = sign_decision(analyst_key(signer), parsed)
        elif d["signer"] != "none":
            row["signature"] = base64.b64encode(b"\0" * 64).decode()
        rows.append(row)
    path = signed_decisions(tmp_path_factory.mktemp("drawn") / "drawn.jsonl", rows, sign=False)
    run_feedback(guarded.ctx, path, now=NOW)
    assert violations(guarded.ctx, guarded.policies) == []


def test_re_running_recommend_after_the_drawn_decisions_keeps_every_guardrail(
    guarded: Guarded,
) -> None:
    """The recommend stage re-applies the recorded decisions: the same guardrails hold."""
    run_recommend(guarded.ctx, [D1], policies_dir=guarded.policies)
    assert violations(guarded.ctx, guarded.policies) == []
