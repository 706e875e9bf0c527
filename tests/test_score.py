"""Risk calibration, entity roll-up with decay, and the score stage end to end on small frames."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.core.config import ScoringSettings
from jobs.core.tables import ENTITY_RISK, SESSION_SCORES, SIGNAL, SOURCE_STATUS
from jobs.stages.score import risk
from jobs.stages.score import stage as score
from tests.conftest import test_settings
from tests.scoring_frames import (
    DAY,
    at,
    baseline,
    baselines_df,
    events_df,
    history,
    peer,
    signin,
    work_hours,
)

CFG = ScoringSettings()


def _sig(name: str, points: float, detail: str | None = None) -> dict[str, Any]:
    return {"name": name, "value": 1.0, "threshold": 1.0, "contribution": float(points),
            "detail": detail or f"{name} fired", "source": "idp"}  # fmt: skip


def _sessions(spark: SparkSession, ids: list[str]) -> DataFrame:
    rows = [(DAY, i, f"{i}@x", "auth", "user", f"{i}@x") for i in ids]
    df = spark.createDataFrame(
        rows,
        "run_date date, session_id string, user_id string, session_kind string, entity_type string, entity_id string",
    )
    present = set(df.columns)
    return df.select(
        *[F.col(f.name) if f.name in present else F.lit(None).cast(f.dataType).alias(f.name)
          for f in SESSION_SCORES.schema.fields if f.name not in ("signals", "model_score", "model_version", "risk", "reasons", "degraded_sources")]
    )  # fmt: skip


def _signal_rows(spark: SparkSession, rows: list[tuple[str, dict[str, Any]]]) -> DataFrame:
    schema = f"run_date date, session_id string, signal {SIGNAL.simpleString()}"
    return spark.createDataFrame([(DAY, sid, s) for sid, s in rows], schema)


def _no_status(spark: SparkSession) -> DataFrame:
    return risk.degraded_sources(spark.createDataFrame([], SOURCE_STATUS.schema))


def test_session_risk_adds_points_caps_at_100_and_orders_reasons(spark: SparkSession) -> None:
    signals = [
        ("one", _sig("new_device", 30)),
        ("two", _sig("new_device", 30)),
        ("two", _sig("new_country", 50)),
        ("three", _sig("new_device", 30)),
        ("three", _sig("new_country", 50)),
        ("three", _sig("impossible_travel", 90)),
    ]
    out = risk.score_sessions(
        _sessions(spark, ["none", "one", "two", "three"]),
        _signal_rows(spark, signals),
        _no_status(spark),
        CFG,
    )
    got = {r.session_id: (r.risk, r.reasons) for r in out.collect()}
    assert got == {
        "none": (0, []),
        "one": (30, ["new_device fired"]),
        "two": (80, ["new_country fired", "new_device fired"]),
        "three": (100, ["impossible_travel fired", "new_country fired", "new_device fired"]),
    }
    assert (
        out.schema == SESSION_SCORES.schema
        or [f.name for f in out.schema] == SESSION_SCORES.schema.fieldNames()
    )


def test_model_points_are_monotonic_and_bounded(spark: SparkSession) -> None:
    sessions = _sessions(spark, [f"s{i}" for i in range(11)])
    scores = spark.createDataFrame(
        [(f"s{i}", i / 10) for i in range(11)], "session_id string, model_score double"
    )
    with_model = sessions.join(scores, "session_id").withColumn("model_version", F.lit("7"))
    # score_sessions with a precomputed model score: stand in for apply_model
    signals = _signal_rows(spark, [(f"s{i}", _sig("new_country", 50)) for i in range(11)])
    joined = with_model.join(
        signals.groupBy("session_id").agg(F.collect_list("signal").alias("_signals")),
        "session_id",
        "left",
    )
    model_sig = risk._model_signal(F.col("model_score"), F.col("model_version"), CFG)
    points = (
        joined.select("model_score", F.coalesce(model_sig["contribution"], F.lit(0.0)).alias("p"))
        .orderBy("model_score")
        .collect()
    )
    values = [r.p for r in points]
    assert values == sorted(values) and values[0] == 0 and max(values) == CFG.model_points
    assert all(
        p == 0 for r, p in zip(points, values, strict=True) if r.model_score <= CFG.model_floor
    )


def _day_rows(spark: SparkSession, rows: list[tuple[date, str, str, int]]) -> DataFrame:
    return spark.createDataFrame(
        [(d, t, e, r, [f"{e} on {d}"]) for d, t, e, r in rows],
        "run_date date, entity_type string, entity_id string, risk_today int, reasons array<string>",
    )


def _today(spark: SparkSession, rows: list[tuple[date, str, str, int]]) -> DataFrame:
    base = _day_rows(spark, rows)
    return base.select(
        "run_date", "entity_type", "entity_id", "risk_today", "reasons",
        F.lit(1).cast("long").alias("sessions"), F.array().cast("array<string>").alias("degraded_sources"),
        F.lit(None).cast("string").alias("peer_group"), F.lit(None).cast("string").alias("user_type"),
        F.array().cast(f"array<{SIGNAL.simpleString()}>").alias("signals"),
    )  # fmt: skip


def test_decay_halves_after_the_half_life_and_accumulates_bounded(spark: SparkSession) -> None:
    h = CFG.decay_half_life_days  # 3 days
    d = DAY
    history = _day_rows(
        spark,
        [
            (d - timedelta(days=1), "user", "yesterday@x", 80),
            (d - timedelta(days=3), "user", "halflife@x", 80),
            (d - timedelta(days=1), "user", "both@x", 80),
            *[(d - timedelta(days=k), "user", "always@x", 100) for k in range(1, 30)],
            (d - timedelta(days=40), "user", "ancient@x", 100),
        ],
    )
    today = _today(
        spark, [(d, "user", "both@x", 50), (d, "user", "always@x", 100), (d, "user", "quiet@x", 0)]
    )
    out = risk.decayed_entity_risk(today, history, [d], CFG)
    got = {r.entity_id: (r.risk, r.risk_today) for r in out.collect()}
    assert got == {
        "yesterday@x": (round(80 * 2 ** (-1 / h)), 0),
        "halflife@x": (40, 0),
        "both@x": (round(100 * (1 - 0.5 * (1 - 0.8 * 2 ** (-1 / h)))), 50),
        "always@x": (100, 100),
        "quiet@x": (0, 0),  # active today (a session), no risk: still listed
    }
    carried = out.where(F.col("entity_id") == "yesterday@x").first().reasons
    assert carried == [
        f"risk carried over from {d - timedelta(days=1)}: yesterday@x on {d - timedelta(days=1)}"
    ]
    assert [f.name for f in out.schema] == ENTITY_RISK.schema.fieldNames()


def test_backfill_of_two_days_equals_running_them_in_turn(spark: SparkSession) -> None:
    d1, d2 = DAY, DAY + timedelta(days=1)
    today = _today(
        spark, [(d1, "user", "a@x", 60), (d2, "user", "a@x", 30), (d1, "ip", "9.9.9.9", 90)]
    )
    empty = _day_rows(spark, []).limit(0)
    both = risk.decayed_entity_risk(today, empty, [d1, d2], CFG)
    first = risk.decayed_entity_risk(today.where(F.col("run_date") == d1), empty, [d1], CFG)
    second = risk.decayed_entity_risk(
        today.where(F.col("run_date") == d2),
        first.select("run_date", "entity_type", "entity_id", "risk_today", "reasons"),
        [d2],
        CFG,
    )
    assertDataFrameEqual(both, first.unionByName(second))


def test_entity_day_risk_counts_each_signal_once_and_credits_workstation_owners(
    spark: SparkSession,
) -> None:
    signal_type = f"array<{SIGNAL.simpleString()}>"
    rows = [
        ("s1", "user", "a@x", [_sig("new_device", 30, "device A"), _sig("off_hours", 10)]),
        ("s2", "user", "a@x", [_sig("new_device", 30, "device B"), _sig("new_country", 50)]),
        ("s3", "host", "ws-1", [_sig("rare_process_pair", 45)]),
        ("s4", "user", "b@x", [_sig("impossible_travel", 90), _sig("new_country", 50)]),
    ]
    df = spark.createDataFrame(
        [(DAY, sid, t, e, sigs, [], None, None) for sid, t, e, sigs in rows],
        f"run_date date, session_id string, entity_type string, entity_id string, signals {signal_type}, "
        "degraded_sources array<string>, peer_group string, user_type string",
    )
    owners = spark.createDataFrame([("ws-1", "a@x")], "asset_id string, user_id string")
    out = risk.entity_day_risk(df, owners, CFG)
    got = {
        (r.entity_type, r.entity_id): (r.risk_today, r.sessions, [s.name for s in r.signals])
        for r in out.collect()
    }
    assert got == {
        ("user", "a@x"): (100, 3, ["new_country", "rare_process_pair", "new_device", "off_hours"]),
        ("host", "ws-1"): (45, 1, ["rare_process_pair"]),
        ("user", "b@x"): (100, 1, ["impossible_travel", "new_country"]),
    }
    a = out.where(F.col("entity_id") == "a@x").first()
    assert a.reasons == [
        "new_country fired",
        "rare_process_pair fired",
        "device B",
    ]  # ties: the last detail


# --- the stage, end to end -------------------------------------------------------------------


def _lake_inputs(spark: SparkSession, ctx: Any) -> None:
    nyc = {"src_country": "US", "src_city": "New York", "src_lat": 40.71, "src_lon": -74.01}
    far = {"src_country": "BR", "src_city": "Sao Paulo", "src_lat": -23.55, "src_lon": -46.63}
    rows = [
        signin(f"u{i}@x", at(9, i), ip=f"1.0.0.{i}", device_id=f"d{i}", **nyc) for i in range(8)
    ]
    rows += [signin("u1@x", at(11, 30), ip="1.0.1.1", device_id="guo-unknown", **far)]
    rows += [signin(f"u{i}@x", at(14, i), ip="9.9.9.9", status="failure", **far) for i in range(8)]
    rows += [
        signin(f"v{i}@x", at(14, 10 + i), ip="9.9.9.9", status="failure", **far) for i in range(4)
    ]
    rows += [
        signin("u2@x", at(9, 5, day=DAY - timedelta(days=1)), ip="1.0.0.2", device_id="d2", **nyc)
    ]
    ctx.lake.replace_dates(events_df(spark, rows), "silver.events", [DAY - timedelta(days=1), DAY])
    base = [
        baseline(
            f"u{i}@x",
            src_countries=history("US"),
            devices=history(f"d{i}"),
            hour_of_week=work_hours(),
        )
        for i in range(8)
    ]
    base.append(
        peer("sales/account_executive", src_countries=history("US"), hour_of_week=work_hours())
    )
    ctx.lake.replace_dates(baselines_df(spark, base), "gold.baselines", [DAY])
    status = spark.createDataFrame(
        [
            (DAY, "idp", "ok", []),
            (DAY, "windows", "degraded", ["volume drop"]),
            (DAY, "sshd", "missing", ["no files"]),
        ],
        SOURCE_STATUS.schema,
    )
    ctx.lake.replace_dates(status, "ops.source_status", [DAY])


def test_run_score_writes_both_tables_idempotently(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.core.context import RunContext
    from jobs.core.errors import PipelineError

    ctx = RunContext(spark=spark, settings=test_settings(tmp_path))
    _lake_inputs(spark, ctx)
    result = score.run_score(ctx, [DAY])
    sessions = ctx.lake.read("gold.session_scores")
    entities = ctx.lake.read("gold.entity_risk")
    assert result.rows == {
        "session_scores": sessions.count(),
        "entity_risk": entities.count(),
        "ops.model_evidence": 1,
    }
    assert result.details["model_version"] is None  # no champion: signals only
    (evidence,) = ctx.lake.read("ops.model_evidence").collect()
    assert (evidence.run_date, evidence.status, evidence.model_version, evidence.model_digest) == (
        DAY,
        "none",
        None,
        None,
    )
    assert (evidence.changed, evidence.degraded) == (False, True)
    assert "no MLflow store" in evidence.reason

    top = (
        sessions.where(F.col("risk") >= CFG.band_high)
        .select("session_kind", "entity_id", "signals.name")
        .collect()
    )
    assert sorted((r.session_kind, r.entity_id, sorted(r.name)) for r in top) == [
        ("auth", "u1@x", ["impossible_travel", "new_country", "new_device"]),
        ("auth_source", "9.9.9.9", ["password_spray"]),
    ]
    assert (
        sessions.where(
            F.col("model_version").isNotNull() | F.col("model_score").isNotNull()
        ).count()
        == 0
    )
    assert {tuple(r[0]) for r in sessions.select("degraded_sources").distinct().collect()} == {
        ("sshd", "windows")
    }
    risky = {
        (r.entity_type, r.entity_id): r.risk for r in entities.where(F.col("risk") > 0).collect()
    }
    assert risky == {("user", "u1@x"): 100, ("ip", "9.9.9.9"): 91}  # 12 accounts: 85 x 1.07
    reasons = entities.where(F.col("entity_id") == "u1@x").first().reasons
    assert (
        reasons[0].startswith("sign-in from Sao Paulo, Brazil") and len(reasons) == CFG.top_reasons
    )

    before_s = sessions.orderBy("session_id").collect()
    before_e = entities.orderBy("entity_type", "entity_id").collect()
    # re-run the date inside a two-day backfill: its rows come out identical (no duplicates),
    # and the next day, with no new activity for u1, carries the decayed risk
    nxt = DAY + timedelta(days=1)
    ctx.lake.replace_dates(
        events_df(spark, [signin("u5@x", at(9, day=nxt))]), "silver.events", [nxt]
    )
    # ... with a model registry that cannot be reached: the stage fails (one line), unless the
    # settings allow scoring on signals alone, recorded as degraded model evidence
    unreachable = {"paths": {"mlflow_uri": "http://127.0.0.1:9"}}
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    failing = RunContext(spark=spark, settings=test_settings(tmp_path, **unreachable))
    with pytest.raises(
        PipelineError, match=r"^score: model registry http://127.0.0.1:9: .*signals_only"
    ):
        score.run_score(failing, [DAY, nxt])
    assert ctx.lake.read_dates("gold.session_scores", [nxt]).count() == 0  # nothing written
    ctx = RunContext(
        spark=spark,
        settings=test_settings(
            tmp_path, **unreachable, scoring={"registry_unavailable": "signals_only"}
        ),
    )
    result = score.run_score(ctx, [DAY, nxt])
    assert result.details["model_degraded_dates"] == [DAY.isoformat(), nxt.isoformat()]
    evidence = ctx.lake.read("ops.model_evidence").orderBy("run_date").collect()
    assert [(e.run_date, e.status, e.degraded, e.previous_date) for e in evidence] == [
        (DAY, "unavailable", True, None),
        (nxt, "unavailable", True, DAY),
    ]
    assert evidence[0].reason.startswith("registry unreachable (")
    assert (
        ctx.lake.read_dates("gold.session_scores", [DAY]).orderBy("session_id").collect()
        == before_s
    )
    again = (
        ctx.lake.read_dates("gold.entity_risk", [DAY]).orderBy("entity_type", "entity_id").collect()
    )
    assert again == before_e
    carried = (
        ctx.lake.read_dates("gold.entity_risk", [nxt]).where(F.col("entity_id") == "u1@x").first()
    )
    assert carried.risk_today == 0 and carried.risk == round(
        100 * 2 ** (-1 / CFG.decay_half_life_days)
    )
    assert carried.reasons[0].startswith(f"risk carried over from {DAY}: sign-in from Sao Paulo")


def test_model_evidence_records_the_model_and_what_changed_since_the_date_before() -> None:
    from jobs.stages.score.model_evidence import ModelUse, evidence_rows

    d1, d2, d3 = DAY, DAY + timedelta(days=1), DAY + timedelta(days=2)
    v1 = ModelUse("m", "champion", "scored with m v1", "1", "aa" * 32, True)
    v2 = ModelUse("m", "champion", "scored with m v2", "2", "bb" * 32, True)
    none = ModelUse("m", "none", "no champion yet")

    def facts(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
        keys = ("run_date", "status", "model_version", "previous_version", "changed", "degraded")
        return [tuple(r[k] for k in keys) for r in rows]

    first = evidence_rows(none, [d1], None)
    assert facts(first) == [(d1, "none", None, None, False, True)]
    # the champion appears: changed (and so degraded) on its first date, then steady
    second = evidence_rows(v1, [d2, d3], first[0])
    assert facts(second) == [
        (d2, "champion", "1", None, True, True),
        (d3, "champion", "1", "1", False, False),
    ]
    assert second[1]["previous_date"] == d2 and second[1]["model_digest"] == "aa" * 32
    # a new version, or the same version whose file changed, is a change too
    assert facts(evidence_rows(v2, [d3], second[0])) == [(d3, "champion", "2", "1", True, True)]
    refiled = ModelUse("m", "champion", "scored with m v1", "1", "cc" * 32, True)
    assert evidence_rows(refiled, [d3], second[0])[0]["changed"] is True
    # the model goes missing: changed and degraded
    gone = evidence_rows(none, [d3], second[0])
    assert facts(gone) == [(d3, "none", None, "1", True, True)]


def test_run_score_needs_silver(spark: SparkSession, tmp_path: Path) -> None:
    from jobs.core.context import RunContext
    from jobs.core.errors import PipelineError

    with pytest.raises(PipelineError, match=r"silver\.events"):
        score.run_score(RunContext(spark=spark, settings=test_settings(tmp_path)), [DAY])
