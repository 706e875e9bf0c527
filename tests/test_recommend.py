"""The recommend stage end to end on hand-built gold.entity_risk frames.

One lake is built per module (two dates, analyst feedback, a re-run, an export) and
each test checks one outcome of it; Spark work is the slow part, so it runs once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PipelineError
from jobs.core.tables import ENTITY_RISK, SOURCE_STATUS
from jobs.governance.decisions import FeedbackError, parse_decisions
from jobs.governance.feedback import run_feedback
from jobs.policy.engine import rec_id
from jobs.stages.export.stage import export_day
from jobs.stages.recommend.decisions import evaluate
from jobs.stages.recommend.stage import run_recommend
from tests.conftest import test_settings

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
D1, D2 = date(2026, 10, 1), date(2026, 10, 2)
RECS, LOG = "gold.policy_recommendations", "gold.decision_log"


def sig(
    name: str, source: str, value: float | None = None, threshold: float | None = None
) -> tuple[Any, ...]:
    return (name, value, threshold, 40.0, f"{name} observed", source)


def risk_row(
    day: date,
    entity_type: str,
    entity_id: str,
    risk: int,
    signals: list[tuple[Any, ...]],
    user_type: str | None = None,
    privileged: bool | None = None,
    criticality: str | None = None,
) -> tuple[Any, ...]:
    return (
        day,
        entity_type,
        entity_id,
        risk,
        risk,
        [f"{s[0]} observed" for s in signals],
        signals,
        2,
        [],
        None,
        user_type,
        privileged,
        criticality,
    )


DAY_ONE = [
    risk_row(
        D1,
        "user",
        "alice@corp.example",
        94,
        [sig("impossible_travel", "idp", 1843.0, 900.0)],
        "human",
        False,
    ),
    risk_row(D1, "user", "bob@corp.example", 12, [], "human", False),
    risk_row(
        D1,
        "user",
        "breakglass01@corp.example",
        95,
        [sig("new_country", "idp")],
        "break_glass",
        True,
    ),
    risk_row(
        D1,
        "host",
        "ws-nyc-00001",
        91,
        [sig("exfiltration_volume", "zeek_conn", 8e9, 1e9)],
        criticality="low",
    ),
    risk_row(
        D1,
        "host",
        "db-nyc-fin01",
        92,
        [sig("exfiltration_volume", "zeek_conn", 6e9, 1e9)],
        criticality="critical",
    ),
    risk_row(
        D1,
        "host",
        "app-nyc-01",
        88,
        [sig("lateral_fan_out", "windows", 9.0, 3.0)],
        criticality="medium",
    ),
    risk_row(D1, "ip", "203.0.113.9", 88, [sig("password_spray", "idp", 140.0, 20.0)]),
    risk_row(
        D1,
        "user",
        "carol@corp.example",
        93,
        [sig("new_country", "idp"), sig("risky_iam_change", "cloudtrail")],
        "admin",
        True,
    ),
    risk_row(
        D1, "user", "maria.garcia@corp.example", 91, [sig("new_country", "idp")], "human", False
    ),
    risk_row(
        D1,
        "host",
        "ws-nyc-00042",
        85,
        [sig("lateral_fan_out", "sshd", 7.0, 3.0)],
        criticality="low",
    ),
    risk_row(
        D1, "user", "dave@corp.example", 72, [sig("risky_iam_change", "cloudtrail")], "human", False
    ),
    risk_row(
        D1,
        "service_account",
        "svc-backup@corp.example",
        80,
        [sig("new_device", "idp")],
        "service",
        True,
    ),
]
DAY_TWO = [
    risk_row(D2, "user", "alice@corp.example", 60, [sig("new_device", "idp")], "human", False),
    risk_row(
        D2,
        "user",
        "eve@corp.example",
        95,
        [sig("impossible_travel", "idp", 2100.0, 900.0)],
        "human",
        False,
    ),
]


@dataclass
class Scenario:
    ctx: RunContext
    day_one: StageResult
    day_two: StageResult
    rerun: StageResult
    feedback: StageResult
    versions: dict[str, int] = field(default_factory=dict)
    cdf_after_day_two: list[dict[str, Any]] = field(default_factory=list)
    cdf_after_rerun: list[dict[str, Any]] = field(default_factory=list)
    recs_before_rerun: list[dict[str, Any]] = field(default_factory=list)
    rerun_metrics: dict[str, str] = field(default_factory=dict)
    export: Any = None


def version(ctx: RunContext, table: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(ctx.spark, ctx.lake.path(table)).history(1).first()["version"])  # type: ignore[index]


def changes_since(ctx: RunContext, start: int) -> list[dict[str, Any]]:
    if start > version(ctx, RECS):
        return []  # no version since: nothing changed
    feed = (
        ctx.spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", start)
        .load(ctx.lake.path(RECS))
    )
    return [
        r.asDict()
        for r in feed.select(
            "_change_type", "_commit_version", "rec_id", "run_date", "status"
        ).collect()
    ]


def recs(ctx: RunContext, day: date) -> DataFrame:
    return ctx.lake.read(RECS).where(F.col("run_date") == F.lit(day))


def rec_of(ctx: RunContext, target_id: str, action: str, day: date = D1) -> dict[str, Any]:
    (row,) = (
        recs(ctx, day)
        .where((F.col("target_id") == target_id) & (F.col("action") == action))
        .collect()
    )
    return row.asDict()


@pytest.fixture(scope="module")
def scenario(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    work = tmp_path_factory.mktemp("recommend")
    ctx = RunContext(spark, test_settings(work))
    lake = ctx.lake
    status = spark.createDataFrame(
        [(D1, "windows", "degraded", ["volume below 0.5 x median"]), (D1, "idp", "ok", [])],
        SOURCE_STATUS.schema,
    )
    lake.replace_dates(status, "ops.source_status", [D1])
    lake.replace_dates(spark.createDataFrame(DAY_ONE, ENTITY_RISK.schema), "gold.entity_risk", [D1])
    day_one = run_recommend(ctx, [D1], policies_dir=POLICIES)
    versions = {"day_one": version(ctx, RECS)}

    lake.replace_dates(spark.createDataFrame(DAY_TWO, ENTITY_RISK.schema), "gold.entity_risk", [D2])
    day_two = run_recommend(ctx, [D2], policies_dir=POLICIES)
    versions["day_two"] = version(ctx, RECS)
    cdf_after_day_two = changes_since(ctx, versions["day_one"] + 1)

    pending = rec_of(ctx, "db-nyc-fin01", "isolate")["rec_id"]
    carol = rec_of(ctx, "carol@corp.example", "block")["rec_id"]
    alice = rec_of(ctx, "alice@corp.example", "block")["rec_id"]
    decisions = work / "decisions.csv"
    decisions.write_text(
        "rec_id,decision,override_action,verdict,analyst,reason,decided_at\n"
        f"{pending},approve,,true_positive,ana@corp.example,,2026-10-02T08:00:00Z\n"
        f"{carol},approve,,,ana@corp.example,,2026-10-02T08:01:00+00:00\n"
        f"{carol},reject,,false_positive,ben@corp.example,admin on a planned trip,2026-10-02T09:30:00Z\n"
        f"{alice},override,limit,true_positive,ana@corp.example,sales lead; limit instead of block,2026-10-02T08:05:00Z\n"
    )
    feedback = run_feedback(ctx, decisions)
    versions["feedback"] = version(ctx, RECS)

    recs_before = sorted((r.asDict() for r in recs(ctx, D1).collect()), key=lambda r: r["rec_id"])
    rerun = run_recommend(ctx, [D1], policies_dir=POLICIES)
    versions["rerun"] = version(ctx, RECS)
    from delta.tables import DeltaTable

    metrics = DeltaTable.forPath(spark, lake.path(RECS)).history(1).first()["operationMetrics"]  # type: ignore[index]
    cdf_after_rerun = changes_since(ctx, versions["feedback"] + 1)
    export = export_day(ctx, D1, work / "exports")
    return Scenario(
        ctx,
        day_one,
        day_two,
        rerun,
        feedback,
        versions,
        cdf_after_day_two,
        cdf_after_rerun,
        recs_before,
        dict(metrics),
        export,
    )


def test_day_one_recommendations(scenario: Scenario, spark: SparkSession) -> None:
    expected = spark.createDataFrame(
        [
            ("alice@corp.example", "identity", "block", "overridden", ["identity"], "limit"),
            (
                "breakglass01@corp.example",
                "identity",
                "challenge",
                "alert_only",
                ["identity"],
                None,
            ),
            ("ws-nyc-00001", "endpoint", "isolate", "approved", ["endpoint"], None),
            (
                "db-nyc-fin01",
                "endpoint",
                "isolate",
                "approved",
                ["endpoint"],
                None,
            ),  # approved by an analyst
            (
                "app-nyc-01",
                "endpoint",
                "challenge",
                "approved",
                ["endpoint"],
                None,
            ),  # windows degraded
            ("203.0.113.9", "network", "block", "approved", ["network"], None),
            ("carol@corp.example", "identity", "block", "rejected", ["cloud", "identity"], None),
            ("maria.garcia@corp.example", "identity", "block", "approved", ["identity"], None),
            ("ws-nyc-00042", "endpoint", "challenge", "approved", ["endpoint"], None),  # exception
            ("dave@corp.example", "identity", "challenge", "approved", ["identity"], None),
            ("dave@corp.example", "cloud", "limit", "shadow", ["cloud"], None),
            ("svc-backup@corp.example", "identity", "challenge", "alert_only", ["identity"], None),
        ],
        "target_id string, domain string, action string, status string, domains array<string>, override_action string",
    )
    actual = recs(scenario.ctx, D1).select(*expected.columns)
    assertDataFrameEqual(actual, expected, checkRowOrder=False)


def test_engine_statuses_before_analysts(scenario: Scenario) -> None:
    assert scenario.day_one.details["statuses"] == {
        "approved": 7,
        "pending_approval": 2,
        "alert_only": 2,
        "shadow": 1,
    }
    assert scenario.day_one.rows == {RECS: 12, LOG: 19}


def test_rec_id_is_sha256_of_target_action_and_date(scenario: Scenario) -> None:
    rows = recs(scenario.ctx, D1).collect()
    for r in rows:
        assert r["rec_id"] == rec_id(r["target_type"], r["target_id"], r["action"], r["run_date"])
    spark_ids = recs(scenario.ctx, D1).select(
        (
            F.sha2(
                F.concat_ws(
                    "|", "target_type", "target_id", "action", F.col("run_date").cast("string")
                ),
                256,
            )
            == F.col("rec_id")
        ).alias("ok")
    )
    assert spark_ids.where("NOT ok").count() == 0
    assert len({r["rec_id"] for r in rows}) == len(rows)


def test_validity_is_end_of_run_date_plus_tier_hours(scenario: Scenario) -> None:
    alice = rec_of(scenario.ctx, "alice@corp.example", "block")
    assert alice["valid_from"] == datetime(2026, 10, 2, 0, 0)
    assert alice["valid_until"] == datetime(2026, 10, 3, 0, 0)  # account-takeover: 24 h
    crit = rec_of(scenario.ctx, "dave@corp.example", "challenge")
    assert crit["valid_until"] == datetime(2026, 10, 2, 12, 0)  # high-risk: 12 h


def test_table_is_created_with_change_data_feed(scenario: Scenario) -> None:
    spark = scenario.ctx.spark
    path = scenario.ctx.lake.path(RECS)
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    assert detail["properties"]["delta.enableChangeDataFeed"] == "true"  # type: ignore[index]
    first = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").first()
    assert first["operation"] == "CREATE TABLE"  # type: ignore[index]
    assert "delta.enableChangeDataFeed" in first["operationParameters"]["properties"]  # type: ignore[index]


def test_every_recommendation_has_a_decision_log_row_naming_signals_and_policy(
    scenario: Scenario,
) -> None:
    ctx = scenario.ctx
    log = ctx.lake.read(LOG).where(F.col("run_date") == F.lit(D1))
    joined = recs(ctx, D1).alias("r").join(log.alias("l"), ["rec_id", "policy_id"], "left")
    rows = joined.select(
        "r.target_id", "r.policy_id", "l.reason", "l.signals", "l.policy_hash"
    ).collect()
    assert len(rows) == 12
    hashes = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in POLICIES.glob("*.yaml")}
    for r in rows:
        assert r["reason"] is not None, r["target_id"]
        assert f"Policy {r['policy_id']} v" in r["reason"]
        for s in r["signals"]:
            assert s["name"] in r["reason"], (r["target_id"], s["name"])
        assert r["policy_hash"] == hashes[r["policy_id"]]


def test_allow_decisions_are_logged_but_not_published(scenario: Scenario) -> None:
    ctx = scenario.ctx
    bob = (
        ctx.lake.read(LOG)
        .where("target_id = 'bob@corp.example'")
        .select("policy_id", "action", "status", "rec_id")
        .collect()
    )
    assert sorted((r["policy_id"], r["action"], r["status"]) for r in bob) == [
        ("cloud-iam", "allow", "no_action"),
        ("identity-sessions", "allow", "no_action"),
    ]
    assert bob[0]["rec_id"] == rec_id("user", "bob@corp.example", "allow", D1)
    assert recs(ctx, D1).where("target_id = 'bob@corp.example'").count() == 0


def test_guardrails_are_explained_in_the_log(scenario: Scenario) -> None:
    log = scenario.ctx.lake.read(LOG).where(F.col("run_date") == F.lit(D1))
    app = log.where("target_id = 'app-nyc-01'").first()
    assert app["policy_action"] == "isolate" and app["action"] == "challenge"  # type: ignore[index]
    assert json.loads(app["guardrails"])["applied"][0]["guardrail"] == "degraded_evidence"  # type: ignore[index]
    assert json.loads(app["inputs"])["day_degraded_sources"] == ["windows"]  # type: ignore[index]
    exc = log.where("target_id = 'ws-nyc-00042'").first()
    assert exc["exceptions_checked"][0].startswith("EXC-2026-031: active until 2026-12-31")  # type: ignore[index]


def test_expired_exceptions_are_ignored_and_reported(scenario: Scenario) -> None:
    details = scenario.day_one.details
    assert details["expired_exceptions"] == "EXC-2026-002"
    assert details["expired_exceptions_matched"] == ["EXC-2026-002"]
    maria = (
        scenario.ctx.lake.read(LOG)
        .where("target_id = 'maria.garcia@corp.example' AND policy_id = 'identity-sessions'")
        .first()
    )
    assert maria["action"] == "block"  # type: ignore[index]
    assert maria["exceptions_checked"] == ["EXC-2026-002: expired 2026-09-30, ignored"]  # type: ignore[index]


def test_cdf_consumer_sees_only_the_new_date_after_day_two(scenario: Scenario) -> None:
    rows = scenario.cdf_after_day_two
    assert {r["_change_type"] for r in rows} == {"insert"}
    assert {r["run_date"] for r in rows} == {D2}
    assert {r["_commit_version"] for r in rows} == {scenario.versions["day_two"]}
    expected = {
        rec_id("user", "alice@corp.example", "challenge", D2),
        rec_id("user", "eve@corp.example", "block", D2),
    }
    assert {r["rec_id"] for r in rows} == expected


def test_analyst_decisions_change_status(scenario: Scenario) -> None:
    assert scenario.feedback.rows == {"ops.analyst_decisions": 4, RECS: 3}
    assert scenario.feedback.details["true_positive"] == 2
    labels = (
        scenario.ctx.lake.read("ops.analyst_decisions")
        .select("target_id", "decision", "verdict", "action")
        .collect()
    )
    assert ("carol@corp.example", "reject", "false_positive", "block") in [tuple(r) for r in labels]
    # the change feed shows the status changes as updates
    changes = changes_since(scenario.ctx, scenario.versions["day_two"] + 1)
    post = {(r["rec_id"], r["status"]) for r in changes if r["_change_type"] == "update_postimage"}
    assert {s for _, s in post} == {"approved", "rejected", "overridden"}


def test_rerun_is_idempotent_and_invisible_to_cdf_consumers(scenario: Scenario) -> None:
    after = sorted(
        (r.asDict() for r in recs(scenario.ctx, D1).collect()), key=lambda r: r["rec_id"]
    )
    assert after == scenario.recs_before_rerun  # analyst statuses survive the re-run
    assert scenario.cdf_after_rerun == []
    # no rewritten file: either no new version at all, or one that added no file
    if scenario.versions["rerun"] != scenario.versions["feedback"]:
        metrics = scenario.rerun_metrics
        assert metrics["numTargetFilesAdded"] == "0", metrics
    assert scenario.rerun.rows == scenario.day_one.rows
    assert scenario.ctx.lake.read(LOG).where(F.col("run_date") == F.lit(D1)).count() == 19


def test_export_manifest_checksum_matches(scenario: Scenario) -> None:
    result = scenario.export
    manifest = json.loads(result.manifest_file.read_text())
    data = result.data_file.read_bytes()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() == result.sha256
    assert manifest["rows"] == len(data.decode().splitlines()) == 12
    assert manifest["run_date"] == "2026-10-01"
    assert manifest["table_version"] == scenario.versions["rerun"]
    assert {p["id"] for p in manifest["policies"]} == {
        "identity-sessions",
        "endpoint-containment",
        "network-edge",
        "cloud-iam",
    }
    first = json.loads(data.decode().splitlines()[0])
    assert list(first)[:3] == ["rec_id", "run_date", "domain"]
    assert first["valid_from"] == "2026-10-02T00:00:00Z"
    again = export_day(scenario.ctx, D1, result.data_file.parent.parent)
    assert again.sha256 == result.sha256


def test_evaluation_runs_distributed_in_map_in_pandas(scenario: Scenario) -> None:
    from jobs.policy.schema import load_policy_set

    frame = evaluate(scenario.ctx.lake.read("gold.entity_risk"), load_policy_set(POLICIES), {})
    plan = frame._jdf.queryExecution().executedPlan().toString()
    assert "MapInPandas" in plan


def test_broken_policy_stops_the_stage_and_writes_nothing(
    scenario: Scenario, tmp_path: Path
) -> None:
    broken = tmp_path / "policies"
    shutil.copytree(POLICIES, broken)
    path = broken / "endpoint-containment.yaml"
    path.write_text(path.read_text().replace("risk >= 85 and", "risk >= 85 an", 1))
    before = version(scenario.ctx, RECS), version(scenario.ctx, LOG)
    with pytest.raises(PipelineError) as info:
        run_recommend(scenario.ctx, [D1], policies_dir=broken)
    message = str(info.value)
    assert "\n" not in message
    assert "endpoint-containment.yaml: tiers[0].when" in message and "nothing written" in message
    assert (version(scenario.ctx, RECS), version(scenario.ctx, LOG)) == before


def test_feedback_file_errors_name_the_lines(tmp_path: Path) -> None:
    good = "a" * 64
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "rec_id": good,
                        "decision": "approve",
                        "analyst": "ana",
                        "decided_at": "2026-10-02T08:00:00Z",
                    }
                ),
                json.dumps(
                    {
                        "rec_id": "nope",
                        "decision": "approve",
                        "analyst": "ana",
                        "decided_at": "2026-10-02T08:00:00Z",
                    }
                ),
                json.dumps(
                    {
                        "rec_id": good,
                        "decision": "override",
                        "analyst": "ana",
                        "reason": "x",
                        "decided_at": "2026-10-02T08:00:00Z",
                    }
                ),
                json.dumps(
                    {
                        "rec_id": good,
                        "decision": "approve",
                        "analyst": "ana",
                        "decided_at": "2026-10-02 08:00",
                    }
                ),
                "{not json",
                json.dumps(
                    {
                        "rec_id": good,
                        "decision": "approve",
                        "analyst": "ana",
                        "decided_at": "2026-10-02T08:00:00Z",
                        "mood": "happy",
                    }
                ),
            ]
        )
    )
    with pytest.raises(FeedbackError) as info:
        parse_decisions(path)
    text = str(info.value)
    assert "5 bad row(s)" in text
    assert "line 2: rec_id" in text
    assert "line 3: override_action is required when decision is override" in text
    assert "line 4: decided_at: needs a time zone" in text
    assert "line 5: not valid JSON" in text
    assert "line 6: mood: unknown column" in text


def test_feedback_for_an_unknown_recommendation_is_refused(
    scenario: Scenario, tmp_path: Path
) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        f"rec_id,decision,analyst,decided_at\n{'b' * 64},approve,ana,2026-10-02T08:00:00Z\n"
    )
    with pytest.raises(FeedbackError, match="rec_id not found"):
        run_feedback(scenario.ctx, path)


def consumer_example() -> str:
    text = (REPO / "docs" / "policies.md").read_text()
    match = re.search(r"<!-- consumer-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/policies.md lost its consumer example"
    return match.group(1)


def test_consumer_example_from_docs_runs_without_a_jvm(scenario: Scenario, tmp_path: Path) -> None:
    script = tmp_path / "consumer.py"
    script.write_text(consumer_example())
    env = {
        **os.environ,
        "POLICYLAKE_LAKE": scenario.ctx.settings.paths.lake_root,
        "POLICYLAKE_LAST_SEEN_VERSION": str(scenario.versions["day_one"]),
        "JAVA_HOME": "/nonexistent",  # prove no JVM is needed
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["run_date"] == "2026-10-02"
    assert summary["to_enforce"] == 2  # alice challenge + eve block, both approved
    assert summary["cursor"] == version(scenario.ctx, RECS)
    assert set(summary["inserted_rec_ids"]) == {r["rec_id"] for r in scenario.cdf_after_day_two}
    assert summary["resynced"] is False  # a cursor of today is well inside the window
    # no cursor yet: the consumer starts from a snapshot, and takes the current version
    done = subprocess.run(
        [sys.executable, str(script)],
        env={**env, "POLICYLAKE_LAST_SEEN_VERSION": "-1"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    first = json.loads(done.stdout.strip().splitlines()[-1])
    assert (first["resynced"], first["change_rows"], first["to_enforce"]) == (True, 0, 2)
    assert first["cursor"] == summary["cursor"]


def test_policy_diff_replays_the_date_as_it_was_written(scenario: Scenario, tmp_path: Path) -> None:
    """Runs last: it rewrites gold.entity_risk for D1 to prove the replay uses the old version."""
    from typer.testing import CliRunner

    from jobs.cli.policy import policy_app

    ctx = scenario.ctx
    changed = tmp_path / "policies"
    shutil.copytree(POLICIES, changed)
    identity = changed / "identity-sessions.yaml"
    text = identity.read_text()
    text = text.replace(
        '  - name: high-risk\n    when: "risk >= 70"\n    action: challenge',
        '  - name: high-risk\n    when: "risk >= 70"\n    action: limit',
    )
    text = text.replace(
        "expect: challenge\n    expect_tier: high-risk", "expect: limit\n    expect_tier: high-risk"
    )
    identity.write_text(text)
    # a later rescoring of D1 must not leak into the replay
    ctx.lake.replace_dates(
        ctx.spark.createDataFrame(
            [risk_row(D1, "user", "bob@corp.example", 99, [sig("impossible_travel", "idp")])],
            ENTITY_RISK.schema,
        ),
        "gold.entity_risk",
        [D1],
    )
    config = tmp_path / "policylake.yaml"
    config.write_text(
        "spark:\n  master: local[2]\n  shuffle_partitions: 2\n  driver_memory: 2g\n"
        f"paths:\n  lake_root: {ctx.settings.paths.lake_root}\n"
    )
    result = CliRunner().invoke(
        policy_app,
        ["diff", "--date", "2026-10-01", "--policies", str(changed), "--config", str(config)],
    )
    assert result.exit_code == 0, result.output
    assert "as written" in result.output
    assert "1 recommendation(s) would change: action changed=1" in result.output
    assert (
        "action changed: user dave@corp.example [identity] challenge/approved -> limit/approved"
        " (identity-sessions)" in result.output
    )
