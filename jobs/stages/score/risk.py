"""Risk: a session's signals and model score -> risk 0-100 with reasons; an entity's day of
sessions -> its risk, combined with the decayed risk of the days before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from functools import reduce
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

from jobs.core.config import ABSOLUTE_SIGNALS, DETECTION_SIGNAL_PREFIX, ScoringSettings
from jobs.core.tables import (
    ENTITY_RISK,
    SESSION_SCORES,
    SIGNAL,
)
from jobs.model import estimators as risk_model

MODEL_SIGNAL = "model_score"
SIGNALS = ArrayType(SIGNAL, True)


def _conform_signals(signals: Column) -> Column:
    """Any array of signal structs as `array<SIGNAL>` (files read back mark every field nullable)."""
    return F.transform(
        signals,
        lambda s: F.struct(
            F.coalesce(s["name"], F.lit("")).alias("name"),
            s["value"].cast("double").alias("value"),
            s["threshold"].cast("double").alias("threshold"),
            s["contribution"].cast("double").alias("contribution"),
            s["detail"].cast("string").alias("detail"),
            s["source"].cast("string").alias("source"),
        ),
    ).cast(SIGNALS)


def _sorted_signals(signals: Column) -> Column:
    """Most points first; ties by name so the order is stable."""
    return F.array_sort(
        signals,
        lambda a, b: (
            F.when(a["contribution"] > b["contribution"], -1)
            .when(a["contribution"] < b["contribution"], 1)
            .when(a["name"] < b["name"], -1)
            .when(a["name"] > b["name"], 1)
            .otherwise(0)
        ),
    )


def _model_signal(score: Column, version: Column, cfg: ScoringSettings) -> Column:
    """The champion's score as a pseudo-signal, so a session's points always add up to its risk."""
    span = max(1.0 - cfg.model_floor, 1e-9)
    points = F.round(
        F.lit(cfg.model_points)
        * F.least(F.lit(1.0), F.greatest(F.lit(0.0), (score - cfg.model_floor) / span)),
        1,
    )
    detail = F.concat(
        F.lit("unusual for this kind of activity: model score "),
        F.format_number(score, 2),
        F.lit(" (version "),
        F.coalesce(version, F.lit("?")),
        F.lit(", adds points above "),
        F.format_number(F.lit(cfg.model_floor), 2),
        F.lit(")"),
    )
    return F.when(
        score.isNotNull() & (points > 0),
        F.struct(
            F.lit(MODEL_SIGNAL).alias("name"),
            score.cast("double").alias("value"),
            F.lit(cfg.model_floor).cast("double").alias("threshold"),
            points.cast("double").alias("contribution"),
            detail.alias("detail"),
            F.lit("model").alias("source"),
        ),
    )


def apply_model(sessions: DataFrame, model: Any, version: str | None) -> DataFrame:
    """Add `model_score` (0..1) and `model_version` with the model broadcast to the executors.

    Runs distributed with `mapInPandas` over the feature maps: nothing but the model crosses
    between driver and executors. With no model, both columns are null.
    """
    if model is None:
        return sessions.withColumn("model_score", F.lit(None).cast("double")).withColumn(
            "model_version", F.lit(None).cast("string")
        )
    spark = sessions.sparkSession
    shipped = spark.sparkContext.broadcast(model)
    inputs = sessions.select(
        "session_id", *[F.col("features")[name].alias(name) for name in risk_model.FEATURES]
    )
    out_schema = StructType(
        [
            StructField("session_id", StringType(), False),
            StructField("model_score", DoubleType(), True),
        ]
    )

    def score_batches(batches: Any) -> Any:
        fitted = shipped.value
        for batch in batches:
            frame = batch[list(risk_model.FEATURES)].astype("float64").fillna(0.0)
            yield pd.DataFrame(
                {
                    "session_id": batch["session_id"],
                    "model_score": risk_model.risk_scores(fitted, frame),
                }
            )

    scored = inputs.mapInPandas(score_batches, out_schema)
    return sessions.join(scored, "session_id", "left").withColumn("model_version", F.lit(version))


def degraded_sources(source_status: DataFrame) -> DataFrame:
    """(run_date, degraded_sources): the sources not `ok` that day (degraded or missing)."""
    return source_status.groupBy("run_date").agg(
        F.sort_array(F.collect_set(F.when(F.col("status") != "ok", F.col("source")))).alias(
            "degraded_sources"
        )
    )


def _reasons(signals: Column, n: int) -> Column:
    return F.transform(F.slice(signals, 1, n), lambda s: s["detail"])


def score_sessions(
    sessions: DataFrame,
    signals: DataFrame,
    degraded: DataFrame,
    cfg: ScoringSettings,
    model: Any = None,
    model_version: str | None = None,
) -> DataFrame:
    """Sessions with signals, model score, risk and reasons: `SESSION_SCORES` columns."""
    per_session = (
        signals.groupBy("run_date", "session_id")
        .agg(F.collect_list("signal").alias("_signals"))
        .drop("run_date")
    )
    with_model = apply_model(sessions, model, model_version)
    joined = with_model.join(per_session, "session_id", "left").join(degraded, "run_date", "left")
    model_sig = _model_signal(F.col("model_score"), F.col("model_version"), cfg)
    all_signals = F.filter(
        F.concat(F.coalesce("_signals", F.array().cast(SIGNALS)), F.array(model_sig)),
        lambda s: s.isNotNull(),
    )
    points = F.aggregate(
        F.col("signals"), F.lit(0.0), lambda acc, s: acc + F.coalesce(s["contribution"], F.lit(0.0))
    )
    scored = (
        joined.withColumn("signals", _conform_signals(_sorted_signals(all_signals)))
        .withColumn("risk", F.least(F.lit(100), F.round(points).cast("int")))
        .withColumn("reasons", _reasons(F.col("signals"), cfg.top_reasons))
        .withColumn(
            "degraded_sources", F.coalesce("degraded_sources", F.array().cast("array<string>"))
        )
    )
    return scored.select(*SESSION_SCORES.column_names)


def signal_kind(name: Column) -> Column:
    """absolute (carries risk without history: detections and ABSOLUTE_SIGNALS), behavioural
    (compares with a baseline) or model."""
    return (
        F.when(name == MODEL_SIGNAL, F.lit("model"))
        .when(
            name.startswith(DETECTION_SIGNAL_PREFIX) | name.isin(*sorted(ABSOLUTE_SIGNALS)),
            F.lit("absolute"),
        )
        .otherwise(F.lit("behavioural"))
    )


def _tagged_reasons(signals: Column, history_days: Column, n: int) -> Column:
    """Each top signal's detail with what kind it is and how much history the entity had:
    "... [absolute; 0 days of history]"."""
    days = F.coalesce(history_days, F.lit(0))
    history = F.concat(
        days.cast("string"), F.when(days == 1, F.lit(" day")).otherwise(F.lit(" days"))
    )
    return F.transform(
        F.slice(signals, 1, n),
        lambda s: F.concat(
            s["detail"], F.lit(" ["), signal_kind(s["name"]), F.lit("; "), history,
            F.lit(" of history]"),
        ),
    )  # fmt: skip


def entity_day_risk(
    session_scores: DataFrame,
    owners: DataFrame | None,
    cfg: ScoringSettings,
    history_days: DataFrame | None = None,
) -> DataFrame:
    """Per entity per day: each signal counted once at its strongest, points summed, capped.

    Views of a workstation also count for the user who owns it (`owners`: asset_id, user_id).
    With `history_days` (run_date, entity_type, entity_id, history_days: days since the entity
    was first seen, from its baseline), each reason says which kind of signal it is (absolute
    or behavioural) and how much history the entity had; entities absent from it had none.
    """
    primary = session_scores.select(
        "run_date", "entity_type", "entity_id", "signals", "degraded_sources", "peer_group", "user_type",
        "session_id",
    )  # fmt: skip
    parts = [primary.where(F.col("entity_id").isNotNull())]
    if owners is not None:
        owned = (
            primary.where(F.col("entity_type") == "host")
            .join(owners.select(F.col("asset_id").alias("entity_id"), "user_id"), "entity_id")
            .select(
                "run_date",
                F.lit("user").alias("entity_type"),
                F.col("user_id").alias("entity_id"),
                "signals",
                "degraded_sources",
                F.lit(None).cast("string").alias("peer_group"),
                F.lit(None).cast("string").alias("user_type"),
                "session_id",
            )
        )
        parts.append(owned)
    rows = reduce(DataFrame.unionByName, parts)
    keys = ["run_date", "entity_type", "entity_id"]
    meta = rows.groupBy(*keys).agg(
        F.countDistinct("session_id").cast("long").alias("sessions"),
        F.sort_array(F.array_distinct(F.flatten(F.collect_list("degraded_sources")))).alias(
            "degraded_sources"
        ),
        F.max("peer_group").alias("peer_group"),
        F.max("user_type").alias("user_type"),
    )
    strongest = (
        rows.select(*keys, F.explode("signals").alias("s"))
        .groupBy(*keys, F.col("s.name").alias("_name"))
        .agg(F.max_by("s", F.struct(F.col("s.contribution"), F.col("s.detail"))).alias("s"))
        .groupBy(*keys)
        .agg(F.collect_list("s").alias("signals"))
    )
    points = F.aggregate(
        F.col("signals"), F.lit(0.0), lambda acc, s: acc + F.coalesce(s["contribution"], F.lit(0.0))
    )
    out = (
        meta.join(strongest, keys, "left")
        .withColumn(
            "signals",
            _conform_signals(_sorted_signals(F.coalesce("signals", F.array().cast(SIGNALS)))),
        )
        .withColumn("risk_today", F.least(F.lit(100), F.round(points).cast("int")))
    )
    if history_days is None:
        return out.withColumn("reasons", _reasons(F.col("signals"), cfg.top_reasons))
    history = history_days.select(*keys, F.col("history_days").cast("int").alias("_history"))
    return (
        out.join(history, keys, "left")
        .withColumn(
            "reasons", _tagged_reasons(F.col("signals"), F.col("_history"), cfg.top_reasons)
        )
        .drop("_history")
    )


def history_window_days(cfg: ScoringSettings) -> int:
    """Days after which a risk of 100 has decayed below 1 point: older days cannot matter."""
    return math.ceil(cfg.decay_half_life_days * math.log2(100))


def decayed_entity_risk(
    today: DataFrame,
    history: DataFrame,
    dates: Sequence[date],
    cfg: ScoringSettings,
    entity_meta: DataFrame | None = None,
) -> DataFrame:
    """Entity risk for each of `dates`: that day's evidence combined with earlier days'.

    risk(D) = 100 * (1 - prod_d (1 - r_d/100 * 2^(-(D-d)/half_life))) over the days d <= D
    of the window, r_d = risk_today of day d. One day alone gives its own risk; yesterday's 80
    with nothing new today gives 80 * 2^(-1/h); evidence on several days accumulates but never
    passes 100. `today` holds the scored dates' `entity_day_risk`; `history` the earlier days
    (run_date, entity_type, entity_id, risk_today, reasons) from gold.entity_risk. Computing
    every date from risk_today only makes a backfill equal to running the dates one by one.
    """
    keys = ["entity_type", "entity_id"]
    window = history_window_days(cfg)
    daily = (
        today.select("run_date", *keys, "risk_today", "reasons")
        .unionByName(history.select("run_date", *keys, "risk_today", "reasons"))
        .where(F.col("risk_today") > 0)
    )
    spark = today.sparkSession
    targets = spark.createDataFrame([(d,) for d in sorted(set(dates))], "target date")
    age = F.datediff(F.col("target"), F.col("run_date"))
    weighted = (
        daily.crossJoin(F.broadcast(targets))
        .where((age >= 0) & (age <= window))
        .withColumn("_age", age)
        .withColumn(
            "_p",
            F.least(
                F.lit(0.9999),
                F.col("risk_today")
                / 100.0
                * F.pow(F.lit(2.0), -F.col("_age") / cfg.decay_half_life_days),
            ),
        )
    )
    combined = weighted.groupBy("target", *keys).agg(
        (F.lit(100.0) * (F.lit(1.0) - F.exp(F.sum(F.log1p(-F.col("_p")))))).alias("_risk"),
        F.max_by(
            F.struct("run_date", "reasons", "_p"), F.when(F.col("_age") > 0, F.col("_p"))
        ).alias("_carried"),
    )
    current = today.withColumnRenamed("run_date", "target")
    if entity_meta is not None:
        current = current.drop("peer_group", "user_type")
    out = current.join(combined, ["target", *keys], "full_outer")
    carried_reason = F.when(
        F.col("_carried").isNotNull()
        & (F.round("_risk") > F.coalesce(F.col("risk_today"), F.lit(0))),
        F.concat(
            F.lit("risk carried over from "),
            F.col("_carried.run_date").cast("string"),
            F.lit(": "),
            F.coalesce(
                F.try_element_at(F.col("_carried.reasons"), F.lit(1)), F.lit("earlier activity")
            ),
        ),
    )
    reasons = F.filter(
        F.concat(F.coalesce("reasons", F.array().cast("array<string>")), F.array(carried_reason)),
        lambda r: r.isNotNull(),
    )
    risk = F.least(F.lit(100), F.round(F.coalesce(F.col("_risk"), F.lit(0.0))).cast("int"))
    result = (
        out.withColumn("run_date", F.col("target"))
        .withColumn("risk", F.greatest(risk, F.coalesce(F.col("risk_today"), F.lit(0))))
        .withColumn("risk_today", F.coalesce(F.col("risk_today"), F.lit(0)))
        .withColumn("reasons", reasons)
        .withColumn("signals", F.coalesce("signals", F.array().cast(SIGNALS)))
        .withColumn("sessions", F.coalesce("sessions", F.lit(0).cast("long")))
        .withColumn(
            "degraded_sources", F.coalesce("degraded_sources", F.array().cast("array<string>"))
        )
        .where((F.col("risk") > 0) | (F.col("sessions") > 0))
    )
    if entity_meta is not None:
        result = result.join(entity_meta, keys, "left")
    for name, dtype in (
        ("peer_group", "string"),
        ("user_type", "string"),
        ("is_privileged", "boolean"),
        ("asset_criticality", "string"),
    ):
        if name not in result.columns:
            result = result.withColumn(name, F.lit(None).cast(dtype))
    return result.select(*ENTITY_RISK.column_names)


def entity_metadata(
    day_risk: DataFrame, accounts: DataFrame | None, assets: DataFrame | None
) -> DataFrame:
    """Context policies weigh: account type, privilege, peer group, host criticality."""
    base = day_risk.groupBy("entity_type", "entity_id").agg(
        F.max("peer_group").alias("_pg"), F.max("user_type").alias("_ut")
    )
    out = base
    if accounts is not None:
        acc = accounts.select(
            F.col("user_id").alias("entity_id"),
            F.col("peer_group").alias("_dir_pg"),
            F.col("account_type").alias("_dir_type"),
            F.col("privileged").cast("boolean").alias("_dir_priv"),
        )
        out = out.join(acc, "entity_id", "left")
    else:
        out = (
            out.withColumn("_dir_pg", F.lit(None).cast("string"))
            .withColumn("_dir_type", F.lit(None).cast("string"))
            .withColumn("_dir_priv", F.lit(None).cast("boolean"))
        )
    if assets is not None:
        out = out.join(
            assets.select(
                F.col("asset_id").alias("entity_id"), F.col("criticality").alias("_crit")
            ),
            "entity_id",
            "left",
        )
    else:
        out = out.withColumn("_crit", F.lit(None).cast("string"))
    is_account = F.col("entity_type").isin("user", "service_account")
    user_type = F.coalesce("_dir_type", "_ut")
    return out.select(
        "entity_type",
        "entity_id",
        F.when(is_account, F.coalesce("_dir_pg", "_pg")).alias("peer_group"),
        F.when(is_account, user_type).alias("user_type"),
        F.when(
            is_account, F.coalesce(F.col("_dir_priv"), user_type.isin("admin", "break_glass"))
        ).alias("is_privileged"),
        F.when(F.col("entity_type") == "host", F.col("_crit")).alias("asset_criticality"),
    )
