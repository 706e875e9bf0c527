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
from datetime import UTC, date, datetime, timedelta
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
from tests.conftest import run_command, run_json_command, test_settings

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


DIRECTORY_HEADER = (
    "user_id,display_name,upn,sam_account,email,aliases,department,role,peer_group,"
    "account_type,privileged,home_country,home_city,timezone,work_start_hour,work_end_hour,"
    "devices,manager,created\n"
)
INVENTORY_HEADER = "asset_id,fqdn,ip,asset_type,os,criticality,tags,owner,site,timezone\n"


def write_reference(settings: Any, directory: str = "", inventory: str = "") -> None:
    """The identity directory and asset inventory recommend requires (fail closed): header
    lines plus the rows given (entity risk already carries what the tests need)."""
    folder = Path(settings.paths.reference_root)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "identity_directory.csv").write_text(DIRECTORY_HEADER + directory)
    (folder / "asset_inventory.csv").write_text(INVENTORY_HEADER + inventory)


def write_day_inputs(ctx: RunContext, day: date, **status: str) -> None:
    """ops.source_status (every source ok unless named: `windows="degraded"`) and
    ops.model_evidence (signals only) of a day, as validate and score write them: without them
    recommend treats the evidence as degraded (fail closed)."""
    from jobs.core.config import SOURCES
    from jobs.core.tables import MODEL_EVIDENCE
    from jobs.stages.score.model_evidence import NONE, ModelUse, evidence_rows

    spark = ctx.spark
    rows = [(day, s, status.get(s, "ok"), [] if status.get(s, "ok") == "ok" else ["test"])
            for s in SOURCES]  # fmt: skip
    ctx.lake.replace_dates(
        spark.createDataFrame(rows, SOURCE_STATUS.schema), "ops.source_status", [day]
    )
    run = evidence_rows(ModelUse("policylake-session-risk", NONE, "signals only"), [day], None)
    ctx.lake.replace_dates(
        spark.createDataFrame(
            [tuple(r[c] for c in MODEL_EVIDENCE.column_names) for r in run], MODEL_EVIDENCE.schema
        ),
        MODEL_EVIDENCE,
        [day],
    )


# Analysts with their signing keys (fixed seeds: the same keys every run).
ANALYST_SEEDS = {"ana@corp.example": b"a" * 32, "ben@corp.example": b"b" * 32}


def analyst_key(analyst: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(ANALYST_SEEDS[analyst])


def write_registry(settings: Any, **extra: dict[str, Any]) -> Path:
    """The operator's registry of analyst keys (paths.analyst_keys) for ANALYST_SEEDS."""
    import yaml

    from jobs.governance.decisions import public_key_text

    entries = [
        {"id": name, "public_key": public_key_text(analyst_key(name).public_key()),
         **extra.get(name, {})}
        for name in ANALYST_SEEDS
    ]  # fmt: skip
    path = Path(settings.paths.analyst_keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"analysts": entries}, default_flow_style=False))
    return path


def signed_decisions(path: Path, rows: list[dict[str, Any]], sign: bool = True) -> Path:
    """An analyst decisions file, each row signed by its analyst's key (when it has one)."""
    from jobs.governance.decisions import AnalystDecisionIn, render_decisions, sign_decision

    decisions = []
    for row in rows:
        d = AnalystDecisionIn.model_validate(row)
        if sign and d.analyst in ANALYST_SEEDS and d.signature is None:
            d = d.model_copy(update={"signature": sign_decision(analyst_key(d.analyst), d)})
        decisions.append(d)
    path.write_text(render_decisions(decisions, path.suffix))
    return path


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
    write_reference(ctx.settings)
    lake = ctx.lake
    write_day_inputs(ctx, D1, windows="degraded")
    write_day_inputs(ctx, D2)
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
    write_registry(ctx.settings)
    ana, ben = "ana@corp.example", "ben@corp.example"
    decisions = signed_decisions(
        work / "decisions.csv",
        [
            {"rec_id": pending, "decision": "approve", "verdict": "true_positive",
             "analyst": ana, "decided_at": "2026-10-02T08:00:00Z"},
            {"rec_id": carol, "decision": "approve", "analyst": ana,
             "decided_at": "2026-10-02T08:01:00+00:00"},
            {"rec_id": carol, "decision": "reject", "verdict": "false_positive", "analyst": ben,
             "reason": "admin on a planned trip", "decided_at": "2026-10-02T09:30:00Z"},
            {"rec_id": alice, "decision": "override", "override_action": "limit",
             "verdict": "true_positive", "analyst": ana,
             "reason": "sales lead; limit instead of block", "decided_at": "2026-10-02T08:05:00Z"},
        ],
    )  # fmt: skip
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
    assert scenario.feedback.rows == {
        "ops.analyst_decisions": 4,
        RECS: 3,
        "ops.refused_decisions": 0,
    }
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
    # issue 24, finding 5: the data file is named by its content and named by the manifest;
    # the policy list is pinned to a decision-log version
    assert (
        manifest["file"]
        == result.data_file.name
        == f"policy_recommendations.{result.sha256[:16]}.jsonl"
    )
    assert (result.data_file.parent / "policy_recommendations.jsonl").read_bytes() == data
    assert manifest["decision_log_version"] == version(scenario.ctx, LOG)
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


def test_re_export_never_replaces_the_file_an_earlier_manifest_names(
    scenario: Scenario, spark: SparkSession, tmp_path: Path
) -> None:
    """Issue 24, finding 5: a consumer holding the old manifest still reads the bytes it
    describes after a re-export of a changed table; the new manifest names new bytes."""
    ctx = RunContext(spark, test_settings(tmp_path))
    rows = scenario.ctx.lake.read_dates(RECS, [D1])
    ctx.lake.replace_dates(rows, RECS, [D1])
    first = export_day(ctx, D1, tmp_path / "exports")
    old = json.loads(first.manifest_file.read_text())
    ctx.lake.replace_dates(rows.orderBy("rec_id").limit(5), RECS, [D1])
    second = export_day(ctx, D1, tmp_path / "exports")
    new = json.loads(second.manifest_file.read_text())
    assert (old["rows"], new["rows"]) == (12, 5) and old["file"] != new["file"]
    held = first.data_file.parent / old["file"]
    assert hashlib.sha256(held.read_bytes()).hexdigest() == old["sha256"]
    assert (
        hashlib.sha256((second.data_file.parent / new["file"]).read_bytes()).hexdigest()
        == (new["sha256"])
    )
    assert new["decision_log_version"] is None  # no decision log in this lake: no policies
    ctx.lake.replace_dates(rows.orderBy("rec_id").limit(3), RECS, [D1])
    third = export_day(ctx, D1, tmp_path / "exports")  # drops the first one's file
    names = sorted(p.name for p in first.data_file.parent.glob("policy_recommendations.*"))
    assert names == sorted(["policy_recommendations.jsonl", new["file"], third.data_file.name])


def test_export_runs_under_the_date_lock_and_the_stage_journal(
    scenario: Scenario, tmp_path: Path
) -> None:
    """Issue 24, finding 5: `policylake export` goes through the pipeline runner: it waits
    for no one holding the date (one-line error) and is journalled."""
    from typer.testing import CliRunner

    from jobs.cli.app import app
    from jobs.core.locks import lock_dates
    from jobs.pipeline.journal import FINISHED, StageJournal

    work = Path(scenario.ctx.settings.paths.lake_root).parent
    args = ["export", "--date", D1.isoformat(), "--out", str(tmp_path), "--workdir", str(work)]
    with lock_dates(scenario.ctx.settings.paths.lake_root, [D1], "a recommend run"):
        held = CliRunner().invoke(app, args)
    assert held.exit_code == 1
    assert "2026-10-01 is being processed by another run" in held.output
    assert not (tmp_path / D1.isoformat()).exists()
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    run = StageJournal(scenario.ctx.lake).get("export", D1)
    assert run is not None and run.status == FINISHED


def test_export_and_run_json_name_the_files_and_stages_they_wrote(
    scenario: Scenario,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`export --json` and `run --json` (issue 26): the files, counts and checksums the
    command wrote, a held date's error with the same exit code."""
    from jobs.core.locks import lock_dates

    work = Path(scenario.ctx.settings.paths.lake_root).parent
    out = tmp_path / "out"
    args = ["export", "--date", D1.isoformat(), "--out", str(out), "--workdir", str(work)]
    with lock_dates(scenario.ctx.settings.paths.lake_root, [D1], "a recommend run"):
        code, doc, err = run_json_command(capsys, *args)
    assert code == 1 and (doc["ok"], doc["exit_code"]) == (False, 1)
    assert f"error: {doc['error']}" == err.strip().splitlines()[-1]  # after the progress bar
    assert "2026-10-01 is being processed by another run" in doc["error"]
    assert (doc["dates"], doc["out_dir"], "exports" in doc) == (["2026-10-01"], str(out), False)

    code, stdout, _ = run_command(capsys, *args, "--json")
    doc = json.loads(stdout)
    assert code == 0 and (doc["schema"], doc["ok"]) == ("policylake.cli/export/v1", True)
    rows = recs(scenario.ctx, D1).count()
    (exported,) = doc["exports"]
    assert doc["rows"] == exported["rows"] == rows > 0
    data = Path(exported["data_file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == exported["sha256"]
    manifest_file = Path(exported["manifest"])
    manifest = json.loads(manifest_file.read_text())
    assert manifest_file.parent == out / "2026-10-01"
    assert (manifest["rows"], manifest["sha256"], manifest["table_version"]) == (
        rows,
        exported["sha256"],
        exported["table_version"],
    )
    assert exported["table_version"] == version(scenario.ctx, RECS)

    monkeypatch.setenv("POLICYLAKE__PATHS__EXPORTS_DIR", str(tmp_path / "by-run"))
    run = ["run", "--stage", "export", "--date", "2026-10-01", "--workdir", str(work), "--json"]
    code, stdout, err = run_command(capsys, *run)
    doc = json.loads(stdout)
    assert code == 0 and (doc["schema"], doc["dates"]) == ("policylake.cli/run/v1", ["2026-10-01"])
    (stage,) = doc["stages"]
    assert (stage["stage"], stage["dates"], stage["rows"]) == (
        "export",
        ["2026-10-01"],
        {"exported": rows},
    )
    assert isinstance(stage["seconds"], float) and stage["seconds"] > 0
    (again,) = stage["details"]["exports"]
    assert again["sha256"] == exported["sha256"]  # the same table, the same bytes
    assert Path(again["manifest"]).parent == tmp_path / "by-run" / "2026-10-01"
    assert "run: 2026-10-01 .. 2026-10-01" in err  # the table of stages, on stderr


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
    # tiers[0] is host-detection; the first "risk >= 85 and" is the exfiltration tier's
    assert "endpoint-containment.yaml: tiers[1].when" in message and "nothing written" in message
    assert (version(scenario.ctx, RECS), version(scenario.ctx, LOG)) == before


def test_missing_inputs_stop_recommend_before_anything_is_written(
    scenario: Scenario, tmp_path: Path
) -> None:
    """Issue 24, finding 4: a missing directory, inventory, guardrails file or configured
    policies folder, or ids still pseudonymized, stop the stage (one line, exit 1)."""
    ctx = scenario.ctx
    before = version(ctx, RECS), version(ctx, LOG)
    no_guardrails = tmp_path / "policies"
    shutil.copytree(POLICIES, no_guardrails)
    (no_guardrails / "guardrails.yaml").unlink()
    cases = []
    for missing in ("identity_directory.csv", "asset_inventory.csv"):
        settings = test_settings(tmp_path / missing)
        settings = settings.model_copy(
            update={"paths": settings.paths.model_copy(update={"lake_root": ctx.lake.root})}
        )
        write_reference(settings)
        (Path(settings.paths.reference_root) / missing).unlink()
        cases.append((settings, POLICIES, f"{missing} \\(.*policy.allow_missing: \\["))
    cases.append((ctx.settings, no_guardrails, "guardrails file not found"))
    configured = test_settings(Path(ctx.lake.root).parent, policy={"policies_dir": "/nowhere"})
    cases.append((configured, None, "policy.policies_dir: /nowhere is not a folder"))
    for settings, policies, message in cases:
        with pytest.raises(PipelineError) as info:
            run_recommend(RunContext(ctx.spark, settings), [D1], policies_dir=policies)
        assert re.search(message, str(info.value)) and "\n" not in str(info.value), info.value
    assert (version(ctx, RECS), version(ctx, LOG)) == before

    tokens = RunContext(ctx.spark, test_settings(tmp_path / "tokens"))
    write_reference(tokens.settings)
    token = "u_" + "ab" * 12  # what score writes when pseudonymizing; ops.pseudonyms is gone
    tokens.lake.replace_dates(
        ctx.spark.createDataFrame(
            [risk_row(D1, "user", token, 97, [sig("impossible_travel", "idp")], "break_glass")],
            ENTITY_RISK.schema,
        ),
        "gold.entity_risk",
        [D1],
    )
    with pytest.raises(PipelineError, match=r"\d+ decision\(s\) are about pseudonym tokens"):
        run_recommend(tokens, [D1], policies_dir=POLICIES)
    assert not tokens.lake.exists(LOG) and not tokens.lake.exists(RECS)


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
    path = signed_decisions(
        tmp_path / "d.csv",
        [{"rec_id": "b" * 64, "decision": "approve", "analyst": "ana@corp.example",
          "decided_at": "2026-10-02T08:00:00Z"}],
    )  # fmt: skip
    with pytest.raises(FeedbackError, match="rec_id not found"):
        run_feedback(scenario.ctx, path)


def consumer_example() -> str:
    text = (REPO / "docs" / "policies.md").read_text()
    match = re.search(r"<!-- consumer-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/policies.md lost its consumer example"
    return match.group(1)


def test_documented_duckdb_examples_scan_arrow_tables_not_lazy_datasets() -> None:
    """DuckDB over a lazy delta-rs Arrow dataset aborts about one process in a hundred at
    exit (Arrow's read-ahead threads outlive the interpreter: exit code 134 after a good
    poll), so a poller would see a failed run; the examples materialize an Arrow table."""
    examples = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        for block in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S):
            if "import duckdb" in block and "deltalake" in block:
                examples.append((doc.name, block))
    assert {name for name, _ in examples} >= {"policies.md", "metrics.md"}
    lazy = [name for name, block in examples if "to_pyarrow_dataset(" in block]
    assert not lazy, f"DuckDB examples over a lazy Arrow dataset: {lazy}"


def run_consumer_example(
    scenario: Scenario, tmp_path: Path, now: str, last_seen: int | None = None
) -> dict[str, Any]:
    """The documented consumer's summary line, at `now`, from the cursor `last_seen` (the
    version after day one by default)."""
    script = tmp_path / "consumer.py"
    script.write_text(consumer_example())
    cursor = scenario.versions["day_one"] if last_seen is None else last_seen
    env = {
        **os.environ,
        "POLICYLAKE_LAKE": scenario.ctx.settings.paths.lake_root,
        "POLICYLAKE_LAST_SEEN_VERSION": str(cursor),
        "POLICYLAKE_NOW": now,
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
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_consumer_example_from_docs_runs_without_a_jvm(scenario: Scenario, tmp_path: Path) -> None:
    now = datetime(2026, 10, 3, 1, 0, tzinfo=UTC)
    summary = run_consumer_example(scenario, tmp_path, now.isoformat())
    assert summary["run_date"] == "2026-10-02"
    # what is valid at `now`, restated from the table: approved or overridden, in its window
    naive = now.replace(tzinfo=None)
    valid = sorted(
        r["rec_id"]
        for r in scenario.ctx.lake.read(RECS).collect()
        if r["status"] in ("approved", "overridden") and r["valid_from"] <= naive < r["valid_until"]
    )
    assert summary["enforced_rec_ids"] == valid and summary["to_enforce"] == 2  # alice, eve
    assert summary["cursor"] == version(scenario.ctx, RECS)
    assert set(summary["inserted_rec_ids"]) == {r["rec_id"] for r in scenario.cdf_after_day_two}
    assert summary["resynced"] is False  # a cursor of today is well inside the window
    # no cursor yet: the consumer starts from a snapshot, and takes the current version
    first = run_consumer_example(scenario, tmp_path, now.isoformat(), last_seen=-1)
    assert (first["resynced"], first["change_rows"], first["to_enforce"]) == (True, 0, 2)
    assert first["cursor"] == summary["cursor"]


def test_consumer_example_enforces_nothing_once_every_recommendation_expired(
    scenario: Scenario, tmp_path: Path
) -> None:
    """Issue 24, finding 5: if the pipeline stops, its blocks expire at valid_until instead
    of lasting forever (the example used to enforce the latest run date whatever the time)."""
    summary = run_consumer_example(scenario, tmp_path, "2026-11-01T00:00:00+00:00")
    assert summary["run_date"] == "2026-10-02"
    assert (summary["to_enforce"], summary["enforced_rec_ids"]) == (0, [])


def limit_instead_of_challenge(tmp_path: Path) -> Path:
    """The shipped policies, with identity-sessions' high-risk tier limiting, not challenging."""
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
    return changed


def test_policy_diff_json_lists_the_changes(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`policy diff --json` (issue 26): the replay's counts and changes as the library
    computes them, and the version of gold.entity_risk it read."""
    from jobs.cli.json_output import plain
    from jobs.stages.recommend.diff import diff_date

    changed = limit_instead_of_challenge(tmp_path)
    work = Path(scenario.ctx.settings.paths.lake_root).parent
    args = ["policy", "diff", "--date", "2026-10-01", "--policies", str(changed)]
    code, doc, err = run_json_command(capsys, *args, "--workdir", str(work))
    expected = diff_date(scenario.ctx, D1, changed)
    assert code == 0 and doc["schema"] == "policylake.cli/policy-diff/v1" and doc["ok"]
    assert (doc["run_date"], doc["basis"], doc["entity_risk_version"]) == (
        "2026-10-01",
        expected.basis,
        expected.entity_risk_version,
    )
    assert (doc["changed"], doc["counts"]) == (expected.changed, expected.counts)
    assert doc["changes"] == plain(expected.changes) and doc["changed"] > 0
    assert {
        "change": "action changed",
        "target_id": "dave@corp.example",
        "old_action": "challenge",
        "new_action": "limit",
    }.items() <= next(c for c in doc["changes"] if c["target_id"] == "dave@corp.example").items()
    assert "recommendation(s) would change" in err


def test_policy_diff_replays_the_date_as_it_was_written(scenario: Scenario, tmp_path: Path) -> None:
    """Runs last: it rewrites gold.entity_risk for D1 to prove the replay uses the old version."""
    from typer.testing import CliRunner

    from jobs.cli.policy import policy_app

    ctx = scenario.ctx
    changed = limit_instead_of_challenge(tmp_path)
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


def test_a_quiet_day_completes_with_no_recommendations_and_says_so(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A day whose scored entities fall under no policy is not an error: the stage completes,
    the date has no recommendations, and the result names the quiet date."""
    # no reference files: the point is the entities, not the directory (policy.allow_missing)
    missing = {"allow_missing": ["identity_directory", "asset_inventory"]}
    ctx = RunContext(spark, test_settings(tmp_path, policy=missing))
    quiet = D1 + timedelta(days=9)
    ctx.lake.replace_dates(
        spark.createDataFrame(
            [risk_row(D1, "user", "alice@corp.example", 94, [sig("impossible_travel", "idp")])],
            ENTITY_RISK.schema,
        ),
        "gold.entity_risk",
        [D1],
    )
    ctx.lake.replace_dates(  # scored, but an entity type no policy applies to
        spark.createDataFrame(
            [risk_row(quiet, "peer_group", "finance", 10, [])], ENTITY_RISK.schema
        ),
        "gold.entity_risk",
        [quiet],
    )
    result = run_recommend(ctx, [D1, quiet], policies_dir=POLICIES)
    assert result.details["quiet_dates"] == quiet.isoformat()
    assert "no scored entity falls under any policy" in result.details["note"]
    assert recs(ctx, quiet).count() == 0
    assert recs(ctx, D1).count() > 0  # the other date is decided as usual
    assert ctx.lake.read_dates(LOG, [quiet]).count() == 0
