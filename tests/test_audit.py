"""Tamper evidence: the decision log's hash chain, signed heads and `policylake verify`.

One lake is chained per module (two dates through the recommend stage, with the audit
key set, then a re-run of the first date); every tampering test works on its own copy.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from typer.testing import CliRunner

from jobs.core.context import RunContext, StageResult
from jobs.core.errors import ConfigError, PipelineError
from jobs.core.tables import AUDIT_HEADS, DECISION_LOG_CHAIN, ENTITY_RISK
from jobs.governance.audit import (
    AUDIT_KEY_ENV,
    ChainedRow,
    RowChange,
    audit_key,
    audit_key_for,
    build_chain,
    chain_seed,
    compare_rows,
    fold_chain,
    latest_anchored,
    missing_days,
    read_anchor,
    record_chain,
    refuse_chain_gaps,
    row_hashes,
    verify_chain,
    verify_trail,
)
from jobs.stages.recommend.stage import run_recommend
from tests.conftest import run_json_command, test_settings
from tests.test_recommend import POLICIES, risk_row, sig, write_day_inputs, write_reference

D1, D2 = date(2026, 10, 1), date(2026, 10, 2)
LOG = "gold.decision_log"
KEY = "audit-key-for-tests-0123456789abcdef"  # 36 bytes
ANCHOR = "audit_anchor.jsonl"  # paths.audit_anchor, rooted at the workdir
DAY_ONE = [
    risk_row(D1, "user", "alice@corp.example", 94, [sig("impossible_travel", "idp")], "human"),
    risk_row(D1, "user", "bob@corp.example", 12, [], "human", False),
    risk_row(
        D1, "host", "ws-nyc-00001", 91, [sig("exfiltration_volume", "zeek_conn")], criticality="low"
    ),
    risk_row(D1, "ip", "203.0.113.9", 88, [sig("password_spray", "idp")]),
]
DAY_TWO = [
    risk_row(D2, "user", "alice@corp.example", 60, [sig("new_device", "idp")], "human", False),
    risk_row(D2, "user", "eve@corp.example", 95, [sig("impossible_travel", "idp")], "human"),
]


@dataclass
class Chained:
    work: Path
    first: list[Row]  # heads after the two dates
    first_chain: list[Row]
    rerun: StageResult
    again: list[Row]  # heads after re-running D1
    again_chain: list[Row]


def _rows(ctx: RunContext, table: str) -> list[Row]:
    return sorted(ctx.lake.read(table).collect(), key=lambda r: tuple(str(v) for v in r))


@pytest.fixture(scope="module")
def chained(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Chained:
    work = tmp_path_factory.mktemp("audit")
    ctx = RunContext(spark, test_settings(work))
    write_reference(ctx.settings)
    write_day_inputs(ctx, D1)
    write_day_inputs(ctx, D2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(AUDIT_KEY_ENV, KEY)
        ctx.lake.replace_dates(
            spark.createDataFrame(DAY_ONE, ENTITY_RISK.schema), "gold.entity_risk", [D1]
        )
        run_recommend(ctx, [D1], policies_dir=POLICIES)
        ctx.lake.replace_dates(
            spark.createDataFrame(DAY_TWO, ENTITY_RISK.schema), "gold.entity_risk", [D2]
        )
        run_recommend(ctx, [D2], policies_dir=POLICIES)
        first, first_chain = _rows(ctx, AUDIT_HEADS.name), _rows(ctx, DECISION_LOG_CHAIN.name)
        rerun = run_recommend(ctx, [D1], policies_dir=POLICIES)
    return Chained(
        work,
        first,
        first_chain,
        rerun,
        _rows(ctx, AUDIT_HEADS.name),
        _rows(ctx, DECISION_LOG_CHAIN.name),
    )


@pytest.fixture()
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUDIT_KEY_ENV, KEY)


def copy_of(chained: Chained, spark: SparkSession, where: Path) -> RunContext:
    """The lake and its audit anchor (outside the lake), copied to `where`."""
    shutil.copytree(chained.work / "lake", where / "lake")
    shutil.copy(chained.work / ANCHOR, where / ANCHOR)
    return RunContext(spark, test_settings(where))


def position_of(ctx: RunContext, day: date, target_id: str, policy_id: str) -> tuple[int, str]:
    (row,) = (
        ctx.lake.read(DECISION_LOG_CHAIN.name)
        .join(ctx.lake.read(LOG).select("rec_id", "policy_id", "run_date", "target_id"),
              ["rec_id", "policy_id", "run_date"])
        .where((F.col("run_date") == F.lit(day)) & (F.col("target_id") == target_id)
               & (F.col("policy_id") == policy_id))
        .select("position", "rec_id")
        .collect()
    )  # fmt: skip
    return int(row["position"]), str(row["rec_id"])


def tamper_reason(ctx: RunContext, target_id: str, policy_id: str, day: date = D1) -> None:
    from delta.tables import DeltaTable

    DeltaTable.forPath(ctx.spark, ctx.lake.path(LOG)).update(
        condition=(F.col("run_date") == F.lit(day))
        & (F.col("target_id") == target_id)
        & (F.col("policy_id") == policy_id),
        set={"reason": F.lit("nothing to see here")},
    )


# --- the chain, pure --------------------------------------------------------------------------


def h(c: str) -> str:
    return c * 64


def test_chain_is_ordered_deterministically_and_bound_to_date_and_previous_head() -> None:
    rows = [
        ChainedRow("b", "p", h("1")),
        ChainedRow("a", "q", h("2")),
        ChainedRow("a", "p", h("3")),
    ]
    one = build_chain(D1, rows, None, "recommend", None)
    two = build_chain(D1, list(reversed(rows)), None, "recommend", None)
    assert one == two  # same rows in any order: same chain
    assert [(r[1], r[2], r[3]) for r in one.rows] == [(1, "a", "p"), (2, "a", "q"), (3, "b", "p")]
    seed = chain_seed(D1, None)
    assert one.head.head == fold_chain(seed, [h("3"), h("2"), h("1")])[-1] == one.rows[-1][5]
    changed = build_chain(D1, [*rows[:2], ChainedRow("a", "p", h("4"))], None, "recommend", None)
    assert changed.head.head != one.head.head
    other_day = build_chain(D2, rows, None, "recommend", None)
    assert other_day.head.head != one.head.head
    linked = build_chain(D2, rows, one.head, "recommend", None)
    assert linked.head.previous_head == one.head.head and linked.head.previous_date == D1
    assert linked.head.head != other_day.head.head
    signed = build_chain(D1, rows, None, "recommend", KEY.encode())
    assert signed.head.hmac is not None and len(signed.head.hmac) == 64
    assert build_chain(D1, [], None, "recommend", None).head.head == seed  # an empty day


def test_compare_rows_names_changed_deleted_and_inserted_rows() -> None:
    recorded = [(1, "a", "p", h("1")), (2, "b", "p", h("2")), (3, "c", "p", h("3"))]
    now = [ChainedRow("a", "p", h("1")), ChainedRow("b", "p", h("9")), ChainedRow("d", "p", h("4"))]
    assert compare_rows(recorded, now) == [
        RowChange("changed", 2, "b", "p"),
        RowChange("deleted", 3, "c", "p"),
        RowChange("inserted", 3, "d", "p"),
    ]
    assert compare_rows(recorded, [ChainedRow(*r[1:]) for r in recorded]) == []


def test_short_audit_key_is_a_one_line_error_without_the_key() -> None:
    with pytest.raises(ConfigError, match="shorter than 32 bytes") as err:
        audit_key({AUDIT_KEY_ENV: "tooshort-secret"})
    assert "tooshort-secret" not in str(err.value) and "\n" not in str(err.value)
    assert audit_key({}) is None


def test_row_hash_ignores_map_order_and_session_time_zone(spark: SparkSession) -> None:
    from pyspark.sql.types import MapType, StringType, StructField, StructType, TimestampType

    schema = StructType(
        [
            StructField("run_date", StringType()),
            StructField("rec_id", StringType()),
            StructField("policy_id", StringType()),
            StructField("at", TimestampType()),
            StructField("m", MapType(StringType(), StringType())),
        ]
    )
    at = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
    a = spark.createDataFrame([("d", "r", "p", at, {"x": "1", "y": "2"})], schema)
    b = spark.createDataFrame([("d", "r", "p", at, {"y": "2", "x": "1"})], schema)
    before = row_hashes(a, schema)
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        shifted = row_hashes(b, schema).collect()
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    assertDataFrameEqual(spark.createDataFrame(shifted, before.schema), before)
    c = spark.createDataFrame([("d", "r", "p", at, {"x": "1", "y": "3"})], schema)
    assert row_hashes(c, schema).first()["row_hash"] != before.first()["row_hash"]  # type: ignore[index]


# --- the stage: recorded, deterministic, verified ---------------------------------------------


def test_untouched_lake_verifies(chained: Chained, spark: SparkSession, keyed: None) -> None:
    ctx = RunContext(spark, test_settings(chained.work))
    heads = {r["run_date"]: r for r in chained.again}
    for day, rows in ((D1, 6), (D2, 4)):
        result = verify_chain(ctx, day)
        assert result.ok, result.summary()
        assert (
            result.summary() == f"ok: {rows} rows, head {heads[day]['head']} ({day}; HMAC verified)"
        )
    assert heads[D2]["previous_date"] == D1 and heads[D2]["previous_head"] == heads[D1]["head"]


def test_rerunning_a_date_gives_the_same_chain(chained: Chained) -> None:
    assert chained.again == chained.first
    assert chained.again_chain == chained.first_chain
    assert [r["position"] for r in chained.first_chain if r["run_date"] == D1] == [1, 2, 3, 4, 5, 6]
    assert chained.rerun.details["audit_chain"]["chained"] == ["2026-10-01"]
    assert chained.rerun.details["audit_chain"]["relinked"] == []  # D2's seed did not change


def test_changed_reason_is_detected(
    chained: Chained, spark: SparkSession, tmp_path: Path, keyed: None
) -> None:
    ctx = copy_of(chained, spark, tmp_path)
    position, rec = position_of(ctx, D1, "bob@corp.example", "identity-sessions")
    tamper_reason(ctx, "bob@corp.example", "identity-sessions")
    result = verify_chain(ctx, D1)
    assert result.changes == [RowChange("changed", position, rec, "identity-sessions")]
    assert result.problems == []  # the chain itself is intact: the log no longer matches it
    assert result.summary().startswith("FAILED 2026-10-01: 1 changed, 0 deleted, 0 inserted")
    assert verify_chain(ctx, D2).ok  # the next day's link holds: D1's head is unchanged


def test_deleted_row_is_detected(
    chained: Chained, spark: SparkSession, tmp_path: Path, keyed: None
) -> None:
    from delta.tables import DeltaTable

    ctx = copy_of(chained, spark, tmp_path)
    position, rec = position_of(ctx, D1, "ws-nyc-00001", "endpoint-containment")
    DeltaTable.forPath(spark, ctx.lake.path(LOG)).delete(F.col("target_id") == "ws-nyc-00001")
    result = verify_chain(ctx, D1)
    assert result.changes == [RowChange("deleted", position, rec, "endpoint-containment")]
    assert result.rows == 5 and not result.ok


def test_inserted_row_is_detected(
    chained: Chained, spark: SparkSession, tmp_path: Path, keyed: None
) -> None:
    ctx = copy_of(chained, spark, tmp_path)
    forged = (
        ctx.lake.read_dates(LOG, [D1])
        .where("target_id = 'bob@corp.example' AND policy_id = 'identity-sessions'")
        .withColumn("rec_id", F.lit("f" * 64))
        .withColumn("action", F.lit("block"))
    )
    forged.write.format("delta").mode("append").save(ctx.lake.path(LOG))
    result = verify_chain(ctx, D1)
    assert result.changes == [RowChange("inserted", 7, "f" * 64, "identity-sessions")]


def test_deleted_previous_day_is_detected(
    chained: Chained, spark: SparkSession, tmp_path: Path, keyed: None
) -> None:
    from delta.tables import DeltaTable

    ctx = copy_of(chained, spark, tmp_path)
    for table in (AUDIT_HEADS.name, DECISION_LOG_CHAIN.name, LOG):  # the whole day, chain included
        DeltaTable.forPath(spark, ctx.lake.path(table)).delete(F.col("run_date") == F.lit(D1))
    result = verify_chain(ctx, D2)
    assert result.changes == []
    assert result.problems == [
        "link to the previous day broken: the chain head of 2026-10-01 is missing from "
        "ops.audit_heads (day deleted?)"
    ]
    gone = verify_chain(ctx, D1)
    assert gone.problems[0].startswith(
        "no chain recorded: ops.audit_heads has no row for 2026-10-01"
    )


def _forge(ctx: RunContext, key: bytes | None) -> None:
    """What an attacker who can rewrite tables does: change a row, re-chain it consistently."""
    tamper_reason(ctx, "bob@corp.example", "identity-sessions")
    rows = [
        ChainedRow(r["rec_id"], r["policy_id"], r["row_hash"])
        for r in row_hashes(ctx.lake.read_dates(LOG, [D1])).collect()
    ]
    chain = build_chain(D1, rows, None, "recommend", key)
    spark = ctx.spark
    ctx.lake.replace_dates(
        spark.createDataFrame(chain.rows, DECISION_LOG_CHAIN.schema), DECISION_LOG_CHAIN.name, [D1]
    )
    ctx.lake.replace_dates(
        spark.createDataFrame([chain.head.as_row()], AUDIT_HEADS.schema), AUDIT_HEADS.name, [D1]
    )


def anchor_differs(ctx: RunContext, spark: SparkSession) -> str:
    at = latest_anchored(read_anchor(ctx.settings, spark) or [])[D1].recorded_at
    return (
        f"the head differs from the audit anchor's (recorded {at}): rewritten after it was chained"
    )


def test_forged_head_without_the_key_is_detected(
    chained: Chained, spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(AUDIT_KEY_ENV, KEY)
    wrong_key = copy_of(chained, spark, tmp_path / "a")
    _forge(wrong_key, b"the-attackers-own-key-0123456789abcdef")
    result = verify_chain(wrong_key, D1)
    assert result.changes == [] and result.hmac == "bad"
    assert result.problems == [
        "HMAC of the head does not match: head forged or rewritten without the key "
        "(or POLICYLAKE_AUDIT_KEY differs from the recording key)",
        anchor_differs(wrong_key, spark),
    ]
    assert verify_chain(wrong_key, D2).problems == [
        "link to the previous day broken: the head of 2026-10-01 changed after 2026-10-02 "
        "was chained"
    ]
    unsigned = copy_of(chained, spark, tmp_path / "b")
    _forge(unsigned, None)
    assert verify_chain(unsigned, D1).problems == [
        "head is not signed although POLICYLAKE_AUDIT_KEY is set (recorded without the key, "
        "or its HMAC was removed)",
        anchor_differs(unsigned, spark),
    ]
    # Without the key at verification time the HMAC cannot be checked: never "ok" (issue 24,
    # finding 2), and the anchor outside the lake still holds the head that was recorded.
    monkeypatch.delenv(AUDIT_KEY_ENV)
    blind = verify_chain(unsigned, D1)
    assert not blind.ok and blind.intact is False
    assert blind.problems == [anchor_differs(unsigned, spark)]
    assert blind.unchecked == [
        "head is not signed (and POLICYLAKE_AUDIT_KEY is not set to check one)"
    ]


def test_re_chaining_relinks_later_days_but_never_launders_them(
    chained: Chained, spark: SparkSession, tmp_path: Path, keyed: None
) -> None:
    clean = copy_of(chained, spark, tmp_path / "clean")
    tamper_reason(clean, "bob@corp.example", "identity-sessions")  # stands for a legit re-run
    summary = record_chain(clean, [D1])
    assert (summary["relinked"], summary["not_relinked"]) == (["2026-10-02"], [])
    assert verify_chain(clean, D1).ok and verify_chain(clean, D2).ok
    (d2,) = clean.lake.read_dates(AUDIT_HEADS.name, [D2]).collect()
    assert d2["reason"] == "relinked after 2026-10-01 was re-chained"

    dirty = copy_of(chained, spark, tmp_path / "dirty")
    tamper_reason(dirty, "eve@corp.example", "identity-sessions", day=D2)  # tampered later day
    tamper_reason(dirty, "bob@corp.example", "identity-sessions")
    summary = record_chain(dirty, [D1])
    assert (summary["relinked"], summary["not_relinked"]) == ([], ["2026-10-02"])
    later = verify_chain(dirty, D2)
    assert [c.kind for c in later.changes] == ["changed"]
    assert later.problems == [
        "link to the previous day broken: the head of 2026-10-01 changed after 2026-10-02 "
        "was chained"
    ]


def test_cli_verify_exit_codes(
    chained: Chained, spark: SparkSession, tmp_path: Path, keyed: None
) -> None:
    from jobs.cli.app import app

    runner = CliRunner()
    ok = runner.invoke(app, ["verify", "--date", "2026-10-01", "--workdir", str(chained.work)])
    assert ok.exit_code == 0, ok.output
    line, trail = ok.output.splitlines()
    assert line.startswith("ok: 6 rows, head ") and line.endswith("(2026-10-01; HMAC verified)")
    assert trail == "trail ok: 2 chained day(s), 2 in the anchor"

    ctx = copy_of(chained, spark, tmp_path)
    position, rec = position_of(ctx, D1, "bob@corp.example", "identity-sessions")
    tamper_reason(ctx, "bob@corp.example", "identity-sessions")
    bad = runner.invoke(app, ["verify", "--date", "2026-10-01", "--workdir", str(tmp_path)])
    assert bad.exit_code == 1
    assert bad.output.splitlines() == [
        "FAILED 2026-10-01: 1 changed, 0 deleted, 0 inserted row(s)",
        f"  changed row at position {position}: rec_id {rec} policy_id identity-sessions",
        "trail ok: 2 chained day(s), 2 in the anchor",
    ]
    usage = runner.invoke(app, ["verify", "--date", "yesterday", "--workdir", str(tmp_path)])
    assert usage.exit_code == 2


def test_cli_verify_json_gives_each_date_its_verdict_and_the_trail(
    chained: Chained,
    spark: SparkSession,
    tmp_path: Path,
    keyed: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`verify --json` (issue 26): one document with what the human lines say, and the same
    exit codes (0 intact, 1 tampered, 2 bad usage with its one-line error)."""
    code, doc, err = run_json_command(
        capsys, "verify", "--date", "2026-10-01", "--workdir", str(chained.work)
    )
    assert code == 0 and (doc["schema"], doc["ok"], doc["error"]) == (
        "policylake.cli/verify/v1",
        True,
        None,
    )
    (day,) = doc["dates"]
    (head,) = [r for r in chained.again if r["run_date"] == D1]
    rows = RunContext(spark, test_settings(chained.work)).lake.read(LOG)
    assert (day["run_date"], day["ok"], day["hmac"], day["head"]) == (
        "2026-10-01",
        True,
        "verified",
        head["head"],
    )
    assert day["rows"] == rows.where(F.col("run_date") == F.lit(D1)).count()
    assert (day["changes"], day["problems"], day["unchecked"]) == ([], [], [])
    assert doc["trail"]["ok"] and (doc["trail"]["days"], doc["trail"]["anchored"]) == (2, 2)
    assert doc["anchor"] is None
    assert day["summary"] in err and doc["trail"]["summary"] in err  # the human lines: stderr

    ctx = copy_of(chained, spark, tmp_path)
    position, rec = position_of(ctx, D1, "bob@corp.example", "identity-sessions")
    tamper_reason(ctx, "bob@corp.example", "identity-sessions")
    code, doc, _ = run_json_command(
        capsys, "verify", "--date", "2026-10-01", "--workdir", str(tmp_path)
    )
    assert code == 1 and (doc["ok"], doc["exit_code"]) == (False, 1)
    (day,) = doc["dates"]
    assert day["ok"] is False and day["changes"] == [
        {"kind": "changed", "position": position, "rec_id": rec, "policy_id": "identity-sessions"}
    ]
    assert doc["trail"]["ok"] is True

    code, doc, err = run_json_command(
        capsys, "verify", "--date", "yesterday", "--workdir", str(tmp_path)
    )
    assert code == 2 and doc["error"] == err.strip().removeprefix("error: ")
    assert doc["error"].startswith("--date must be a date") and "dates" not in doc


# --- issue 24, finding 2: prod needs the key; the anchor outside the lake ---------------------


def test_prod_requires_the_audit_key_at_start(tmp_path: Path) -> None:
    """`environment: prod` without POLICYLAKE_AUDIT_KEY stops every command before Spark."""
    from jobs.cli.app import app

    prod = test_settings(tmp_path).model_copy(update={"environment": "prod"})
    with pytest.raises(ConfigError, match="environment is prod but POLICYLAKE_AUDIT_KEY"):
        audit_key_for(prod, {})
    assert audit_key_for(prod, {AUDIT_KEY_ENV: KEY}) == KEY.encode()
    assert audit_key_for(test_settings(tmp_path), {}) is None  # dev: optional
    out = CliRunner().invoke(
        app,
        ["verify", "--all", "--workdir", str(tmp_path)],
        env={"POLICYLAKE__ENVIRONMENT": "prod", AUDIT_KEY_ENV: ""},
    )
    assert out.exit_code == 2  # a configuration error: EXIT_USAGE
    assert "environment is prod but POLICYLAKE_AUDIT_KEY is not set" in out.output


def test_every_head_is_appended_to_the_anchor_outside_the_lake(
    chained: Chained, spark: SparkSession, tmp_path: Path
) -> None:
    ctx = RunContext(spark, test_settings(chained.work))
    records = read_anchor(ctx.settings, spark)
    assert records is not None
    assert [(r.kind, r.run_date) for r in records] == [("head", D1), ("head", D2), ("head", D1)]
    heads = {r["run_date"]: r["head"] for r in chained.again}
    assert {d: r.head for d, r in latest_anchored(records).items()} == heads
    inside = test_settings(tmp_path, paths={"audit_anchor": "lake/anchor.jsonl"})
    with pytest.raises(ConfigError, match="is inside the lake"):
        read_anchor(inside, spark)


def test_reordered_chain_rows_are_detected(
    chained: Chained, spark: SparkSession, tmp_path: Path, keyed: None
) -> None:
    ctx = copy_of(chained, spark, tmp_path)
    rows = ctx.lake.read_dates(DECISION_LOG_CHAIN.name, [D1]).collect()
    swap = {1: 2, 2: 1}
    moved = [r.asDict() | {"position": swap.get(r["position"], r["position"])} for r in rows]
    ctx.lake.replace_dates(
        spark.createDataFrame(moved, DECISION_LOG_CHAIN.schema), DECISION_LOG_CHAIN.name, [D1]
    )
    result = verify_chain(ctx, D1)
    assert not result.ok
    assert "ops.decision_log_chain rows reordered at position 2" in " ".join(result.problems)


def _delete_day(ctx: RunContext, day: date) -> None:
    from delta.tables import DeltaTable

    for table in (AUDIT_HEADS.name, DECISION_LOG_CHAIN.name, LOG):  # log, chain and head
        DeltaTable.forPath(ctx.spark, ctx.lake.path(table)).delete(F.col("run_date") == F.lit(day))


def test_a_deleted_day_cannot_be_laundered_by_re_chaining(
    chained: Chained, spark: SparkSession, tmp_path: Path, keyed: None
) -> None:
    """Delete D1 whole, then re-chain D2 so that its link no longer names D1: before the
    anchor, `verify` passed. Now the re-chain refuses, and `verify` names the lost day."""
    ctx = copy_of(chained, spark, tmp_path)
    _delete_day(ctx, D1)
    trail = verify_trail(ctx)
    assert trail.problems == ["day(s) chained but gone from the lake: 2026-10-01"]
    with pytest.raises(PipelineError, match=r"would link over day\(s\) the lake lost: 2026-10-01"):
        record_chain(ctx, [D2])
    assert ctx.lake.read_dates(AUDIT_HEADS.name, [D2]).first()["previous_date"] == D1  # type: ignore[index]
    summary = record_chain(ctx, [D2], accept_gap="INC-42: D1 lost with the old bucket")
    assert summary["gaps_accepted"] == ["2026-10-01"]
    (head,) = ctx.lake.read_dates(AUDIT_HEADS.name, [D2]).collect()
    assert head["previous_date"] is None and "INC-42" in head["reason"]
    assert verify_chain(ctx, D2).ok  # relinked on purpose, the gap logged
    accepted = verify_trail(ctx)
    assert accepted.ok and "2026-10-01 (INC-42: D1 lost with the old bucket" in accepted.summary()
    kinds = [r.kind for r in read_anchor(ctx.settings, spark) or []]
    assert kinds[-2:] == ["gap_accepted", "head"]


def test_a_truncated_tail_is_detected_and_not_chained_over(
    chained: Chained, spark: SparkSession, tmp_path: Path, keyed: None
) -> None:
    """Delete the most recent day: the next night would chain onto D1 as if D2 never was."""
    from jobs.cli.app import app

    ctx = copy_of(chained, spark, tmp_path)
    _delete_day(ctx, D2)
    assert verify_chain(ctx, D1).ok
    trail = verify_trail(ctx)
    assert trail.problems == [
        "tail truncated: the anchor records 2026-10-02 after the lake's last chained day "
        "(2026-10-01)"
    ]
    d3 = date(2026, 10, 3)
    with pytest.raises(PipelineError, match="lake lost: 2026-10-02"):
        refuse_chain_gaps(ctx, [d3], None)
    assert refuse_chain_gaps(ctx, [d3], "restored from backup elsewhere") == [D2]
    out = CliRunner().invoke(app, ["verify", "--all", "--workdir", str(tmp_path)])
    assert out.exit_code == 1
    assert out.output.splitlines()[-1].startswith("FAILED trail: tail truncated")
    assert "FAILED 2026-10-02: " in out.output  # the anchor's date, gone from the lake


def test_verify_exits_non_zero_when_the_head_is_unsigned_or_unchecked(
    chained: Chained, spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.cli.app import app

    monkeypatch.delenv(AUDIT_KEY_ENV, raising=False)
    runner = CliRunner()
    out = runner.invoke(app, ["verify", "--date", "2026-10-01", "--workdir", str(chained.work)])
    assert out.exit_code == 1
    assert out.output.splitlines()[0] == (
        "FAILED 2026-10-01: 0 changed, 0 deleted, 0 inserted row(s); "
        "HMAC not checked: POLICYLAKE_AUDIT_KEY is not set"
    )
    monkeypatch.setenv(AUDIT_KEY_ENV, KEY)
    (tmp_path / "lake").mkdir()
    shutil.copytree(chained.work / "lake", tmp_path / "lake", dirs_exist_ok=True)
    no_anchor = runner.invoke(app, ["verify", "--date", "2026-10-01", "--workdir", str(tmp_path)])
    assert no_anchor.exit_code == 1
    assert "no audit anchor at" in no_anchor.output


def test_missing_days_are_anchored_or_linked_and_not_accepted() -> None:
    d0 = date(2026, 9, 30)
    heads = {d: build_chain(d, [], None, "recommend", None).head for d in (d0, D2)}
    heads[D2] = replace(heads[D2], previous_date=D1)
    assert missing_days(heads, {}, {}) == [D1]  # a surviving head's link names it
    assert missing_days(heads, {}, {D1: "accepted"}) == []
    anchored = dict.fromkeys((d0, D1, D2, date(2026, 10, 3)), None)
    assert missing_days(heads, anchored, {}) == [D1, date(2026, 10, 3)]  # type: ignore[arg-type]


def test_days_chained_before_the_anchor_are_anchored_once_they_verify(
    chained: Chained, spark: SparkSession, tmp_path: Path, keyed: None
) -> None:
    """Upgrading a lake chained before `paths.audit_anchor` existed: `verify
    --anchor-unanchored REASON` adds each day that passes every other check, refuses a day
    that does not, and is a no-op once every day is anchored."""
    from jobs.cli.app import app

    runner = CliRunner()
    shutil.copytree(chained.work / "lake", tmp_path / "lake")  # the lake, no anchor yet
    ctx = RunContext(spark, test_settings(tmp_path))
    tamper_reason(ctx, "eve@corp.example", "identity-sessions", day=D2)
    before = runner.invoke(app, ["verify", "--all", "--workdir", str(tmp_path)])
    assert before.exit_code == 1 and "no audit anchor at" in before.output
    empty = runner.invoke(
        app, ["verify", "--all", "--anchor-unanchored", " ", "--workdir", str(tmp_path)]
    )
    assert empty.exit_code == 2 and not (tmp_path / ANCHOR).exists()

    out = runner.invoke(
        app,
        ["verify", "--all", "--anchor-unanchored", "CHG-7: upgrade", "--workdir", str(tmp_path)],
    )
    assert out.exit_code == 1, out.output
    lines = out.output.splitlines()
    assert lines[:2] == [
        "anchored 2026-10-01: it passed every other check",
        "not anchored 2026-10-02: 1 row(s) differ from the recorded chain",
    ]
    records = read_anchor(ctx.settings, spark) or []
    assert [(r.run_date, r.reason) for r in records] == [
        (D1, "anchored after the fact: CHG-7: upgrade")
    ]
    assert verify_chain(ctx, D1).ok
    assert verify_chain(ctx, D2).problems == [
        "2026-10-02 is not in the audit anchor (chained without it, or its record was removed)"
    ]

    clean = tmp_path / "clean"
    shutil.copytree(chained.work / "lake", clean / "lake")
    args = ["verify", "--all", "--anchor-unanchored", "CHG-8", "--workdir", str(clean)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[-1] == "trail ok: 2 chained day(s), 2 in the anchor"
    again = runner.invoke(app, args)
    assert again.exit_code == 0
    assert again.output.splitlines()[0] == (
        "nothing to anchor: every chained day is in the audit anchor"
    )
    assert len(read_anchor(RunContext(spark, test_settings(clean)).settings, spark) or []) == 2
