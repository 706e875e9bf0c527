"""Metrics stage: gold.metrics_daily, the long table BI dashboards and the daily report read.

One row per (run_date, metric, dimensions) with a double `value` (docs/metrics.md lists
every metric). Each family is a pure `DataFrame -> DataFrame` function returning rows in
that layout; `run_metrics` reads the lake, picks the drift references and writes.

Every value of date D depends only on data of D or of a window ending at D (never on the
other dates of a run), so a backfill equals running the dates one by one, and
`Lake.replace_dates` makes a re-run give the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import reduce
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DateType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from jobs import model as risk_model
from jobs.config import MetricsSettings, ScoringSettings, Settings
from jobs.lake import dates_predicate, require_columns
from jobs.pipeline import PipelineError, RunContext, StageResult
from jobs.schemas import (
    ANALYST_DECISIONS,
    BASELINES,
    DECISION_LOG,
    DQ_RESULTS,
    ENTITY_DAILY,
    ENTITY_RISK,
    METRIC_DIMENSIONS,
    METRICS_DAILY,
    POLICY_RECOMMENDATIONS,
    RECONCILIATION,
    SESSION_SCORES,
    SOURCE_STATUS,
)
from jobs.score import risk_band
from jobs.spark import Checkpoints

__all__ = [
    "BASELINE_STATISTICS",
    "METRICS_TABLE",
    "MetricsInputs",
    "alert_metrics",
    "analyst_decision_metrics",
    "analyst_incidents",
    "baseline_values",
    "compute_metrics",
    "confusion_metrics",
    "coverage_metrics",
    "day_type",
    "drift_metrics",
    "entity_days",
    "family_metrics",
    "feature_values",
    "ground_truth_incidents",
    "ground_truth_units",
    "logged_reference",
    "metric_rows",
    "psi_rows",
    "recommendation_metrics",
    "reference_from_history",
    "risk_metrics",
    "run_metrics",
    "source_metrics",
    "time_to_detect",
    "trailing_windows",
    "value_histogram",
    "verdict_units",
]

METRICS_TABLE = "gold.metrics_daily"
# No deletion vectors: every reader (delta-rs, DuckDB) reads every version.
METRICS_PROPERTIES = {"delta.enableDeletionVectors": "false"}
# Shares below this count as this in the PSI (an empty bin would make it infinite).
PSI_EPSILON = 1e-4
# Values are binned at this many decimals (half to even), as jobs/train.py logs the reference.
DRIFT_DECIMALS = 3
# Baseline statistics whose distribution over entities is compared (on the log1p scale).
# Counts that grow with the history (days_observed, privileged_actions_total) and the
# medians of rare small integers (failures) drift by construction, so they are not compared.
BASELINE_STATISTICS = (
    "events_median",
    "events_mad",
    "bytes_in_median",
    "bytes_in_mad",
    "bytes_out_median",
    "bytes_out_mad",
)
POSITIVE_VERDICTS = ("true_positive", "malicious", "confirmed", "tp", "compromised")
NEGATIVE_VERDICTS = ("false_positive", "benign", "fp", "expected", "authorized")
RISK_BUCKETS = 10  # entity_risk_histogram: 0-9, 10-19, ..., 90-100

HISTOGRAM = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("name", StringType(), False),
        StructField("value", DoubleType(), False),
        StructField("n", LongType(), False),
    ]
)
REFERENCE = StructType(
    [
        StructField("run_date", DateType(), False),  # the date compared with this reference
        StructField("name", StringType(), False),
        StructField("reference", StringType(), False),  # model_v<version> | trailing_<n>d
        StructField("edges", ArrayType(DoubleType(), False), False),
        StructField("expected", ArrayType(DoubleType(), False), False),
        StructField("observations", LongType(), False),
    ]
)
WINDOWS = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("ref_start", DateType(), False),
        StructField("ref_end", DateType(), False),
        StructField("reference", StringType(), False),
        StructField("day_type", StringType(), False),  # all | weekday | weekend
    ]
)
SCENARIOS = StructType(
    [
        StructField("incident_id", StringType(), False),
        StructField("entity_id", StringType(), False),
        StructField("start", TimestampType(), False),
        StructField("end", TimestampType(), False),
    ]
)


# --- the long layout ---------------------------------------------------------------------


def metric_rows(
    df: DataFrame, metric: str, value: Column, dims: Mapping[str, Column | str] | None = None
) -> DataFrame:
    """`df` (with run_date) as metric rows; dimension values null become 'none'."""
    pairs: list[Column] = []
    for key, col in sorted((dims or {}).items()):
        column = F.lit(col) if isinstance(col, str) else col
        pairs += [F.lit(key), F.coalesce(column.cast("string"), F.lit("none"))]
    dimensions = F.create_map(*pairs) if pairs else F.create_map()
    return df.select(
        F.col("run_date").cast("date").alias("run_date"),
        F.lit(metric).alias("metric"),
        dimensions.cast(METRIC_DIMENSIONS).alias("dimensions"),
        value.cast("double").alias("value"),
    )


def conform_metrics(df: DataFrame) -> DataFrame:
    """Canonical rows: dimension keys sorted, no null/NaN values, the declared schema."""
    out = df.where(F.col("value").isNotNull() & ~F.isnan("value")).select(
        "run_date",
        "metric",
        F.map_from_entries(F.array_sort(F.map_entries("dimensions")))
        .cast(METRIC_DIMENSIONS)
        .alias("dimensions"),
        "value",
    )
    return require_columns(out, METRICS_DAILY, "metrics: gold.metrics_daily output")


def _union(frames: Sequence[DataFrame]) -> DataFrame:
    return reduce(DataFrame.unionByName, frames)


def _dates_frame(spark: SparkSession, dates: Sequence[date]) -> DataFrame:
    return spark.createDataFrame([(d,) for d in sorted(set(dates))], "run_date date")


def _windowed(units: DataFrame, dates: DataFrame, days: int) -> DataFrame:
    """Each unit once per target date whose window [target - days + 1, target] holds it."""
    targets = F.broadcast(dates.select(F.col("run_date").alias("_target")))
    joined = units.join(
        targets,
        (F.col("run_date") <= F.col("_target"))
        & (F.col("run_date") > F.date_sub(F.col("_target"), days)),
    )
    return joined.drop("run_date").withColumnRenamed("_target", "run_date")


def _count_if(cond: Column) -> Column:
    return F.sum(F.when(cond, 1).otherwise(0)).cast("long")


# --- recommendations and analyst decisions ----------------------------------------------


def recommendation_metrics(recommendations: DataFrame, dates: DataFrame) -> DataFrame:
    """`recommendations` per action, domain and status; `recommendations_total` (0 included)."""
    counts = recommendations.groupBy("run_date", "action", "domain", "status").count()
    totals = dates.join(recommendations.groupBy("run_date").count(), "run_date", "left").withColumn(
        "count", F.coalesce("count", F.lit(0))
    )
    return metric_rows(
        counts,
        "recommendations",
        F.col("count"),
        {"action": F.col("action"), "domain": F.col("domain"), "status": F.col("status")},
    ).unionByName(metric_rows(totals, "recommendations_total", F.col("count")))


def analyst_decision_metrics(decisions: DataFrame, dates: DataFrame) -> DataFrame:
    """Decisions analysts made on each date (UTC day of `decided_at`): counts, rates, latency.

    Latency runs from the recommendation's `valid_from` (the end of its run date, when it
    was first available) to the decision.
    """
    made = decisions.select(
        F.to_date("decided_at").alias("run_date"),
        "decision",
        (
            (
                F.unix_timestamp("decided_at")
                - F.unix_timestamp(F.to_timestamp(F.date_add("run_date", 1)))
            )
            / 3600.0
        ).alias("hours"),
    ).join(F.broadcast(dates), "run_date")
    per_kind = made.groupBy("run_date", "decision").agg(
        F.count(F.lit(1)).alias("n"),
        F.mean("hours").alias("mean"),
        F.median("hours").alias("median"),
        F.max("hours").alias("max"),
    )
    totals = made.groupBy("run_date").agg(F.count(F.lit(1)).alias("total"))
    rates = per_kind.join(totals, "run_date")
    rate_rows = [
        metric_rows(
            rates.where(F.col("decision") == kind),
            f"{name}_rate",
            F.col("n") / F.col("total"),
        )
        for kind, name in (
            ("approve", "approval"),
            ("override", "override"),
            ("reject", "rejection"),
        )
    ]
    # a rate of 0 when analysts decided that day but made no decision of that kind
    zero_rates = [
        metric_rows(
            totals.join(
                per_kind.where(F.col("decision") == kind).select("run_date"),
                "run_date",
                "left_anti",
            ),
            f"{name}_rate",
            F.lit(0.0),
        )
        for kind, name in (
            ("approve", "approval"),
            ("override", "override"),
            ("reject", "rejection"),
        )
    ]
    latency = [
        metric_rows(
            per_kind,
            "approval_latency_hours",
            F.col(stat),
            {"decision": F.col("decision"), "stat": stat},
        )
        for stat in ("mean", "median", "max")
    ]
    all_days = dates.join(totals, "run_date", "left").withColumn(
        "total", F.coalesce("total", F.lit(0))
    )
    return _union(
        [
            metric_rows(per_kind, "analyst_decisions", F.col("n"), {"decision": F.col("decision")}),
            metric_rows(all_days, "analyst_decisions_total", F.col("total")),
            *rate_rows,
            *zero_rates,
            *latency,
        ]
    )


# --- detection quality: precision, recall, false-positive rate, time to detect ----------


def entity_days(decision_log: DataFrame) -> DataFrame:
    """(run_date, target_id, detected): every entity the policies evaluated that day, and
    whether an enforcing (non-shadow) policy recommended anything but `allow`."""
    acted = (F.col("action") != "allow") & (F.coalesce("policy_mode", F.lit("enforce")) != "shadow")
    return decision_log.groupBy("run_date", "target_id").agg(F.max(acted).alias("detected"))


def _verdict_label(verdict: Column) -> Column:
    v = F.lower(F.trim(verdict))
    return F.when(v.isin(*POSITIVE_VERDICTS), 1).when(v.isin(*NEGATIVE_VERDICTS), 0)


def _latest_verdicts(decisions: DataFrame) -> DataFrame:
    """The latest verdict per recommendation (rec_id, run_date, target_id, label)."""
    order = Window.partitionBy("rec_id").orderBy(
        F.col("decided_at").desc(), F.col("decision_id").desc()
    )
    return (
        decisions.where(_verdict_label(F.col("verdict")).isNotNull())
        .withColumn("_n", F.row_number().over(order))
        .where("_n = 1")
        .select("rec_id", "run_date", "target_id", _verdict_label(F.col("verdict")).alias("label"))
    )


def verdict_units(decisions: DataFrame, days: DataFrame) -> DataFrame:
    """Entity-days analysts labelled (a true positive on any of its recommendations wins),
    with whether the enforcing policies acted on them: (run_date, target_id, label, detected)."""
    labels = (
        _latest_verdicts(decisions)
        .groupBy("run_date", "target_id")
        .agg(F.max("label").alias("label"))
    )
    return labels.join(days, ["run_date", "target_id"], "left").select(
        "run_date", "target_id", "label", F.coalesce("detected", F.lit(False)).alias("detected")
    )


def ground_truth_incidents(scenarios: DataFrame, owners: DataFrame | None) -> DataFrame:
    """(incident_id, target_id, start, end, primary): a scenario's own entity (primary), and
    for a host also the user who owns it (asset inventory `owner`), whom entity risk charges
    with the host's evidence: acting on the owner is not a false alarm."""
    direct = scenarios.select(
        "incident_id",
        F.col("entity_id").alias("target_id"),
        "start",
        "end",
        F.lit(True).alias("primary"),
    )
    if owners is None:
        return direct
    owned = scenarios.join(
        owners.select(F.col("asset_id").alias("entity_id"), "user_id"), "entity_id"
    ).select(
        "incident_id",
        F.col("user_id").alias("target_id"),
        "start",
        "end",
        F.lit(False).alias("primary"),
    )
    return direct.unionByName(owned)


def ground_truth_units(incidents: DataFrame, days: DataFrame, followup_days: int) -> DataFrame:
    """Entity-days labelled by the ground truth: (run_date, target_id, label, detected).

    1 for a primary target from its incident's start date to its end date (missed when no
    enforcing policy acted: a false negative); a related target (a host's owner) is 1 when
    acted on and left out otherwise; 0 for every other entity-day the policies evaluated,
    except the `followup_days` after an incident of that entity ended (left out: entity
    risk decays over days, so acting on it then is neither right nor wrong).
    """
    spans = incidents.select(
        "target_id",
        "primary",
        F.explode(F.sequence(F.to_date("start"), F.to_date("end"))).alias("run_date"),
    )
    incident_days = spans.groupBy("run_date", "target_id").agg(F.max("primary").alias("primary"))
    followups = incidents.select(
        "target_id",
        F.explode(
            F.sequence(F.date_add(F.to_date("end"), 1), F.date_add(F.to_date("end"), followup_days))
        ).alias("run_date"),
    ).where(F.lit(followup_days > 0))
    keys = ["run_date", "target_id"]
    negatives = (
        days.select(*keys)
        .join(incident_days, keys, "left_anti")
        .join(followups.distinct(), keys, "left_anti")
        .withColumn("label", F.lit(0))
        .withColumn("primary", F.lit(True))
    )
    units = (
        incident_days.withColumn("label", F.lit(1))
        .unionByName(negatives)
        .join(days, keys, "left")
        .withColumn("detected", F.coalesce("detected", F.lit(False)))
    )
    return units.where(F.col("primary") | F.col("detected")).select(*keys, "label", "detected")


def confusion_metrics(
    units: DataFrame, dates: DataFrame, window_days: int, labels: str
) -> DataFrame:
    """Precision, recall and false-positive rate over the labelled entity-days of the window.

    precision = TP / (TP + FP), recall = TP / (TP + FN), false-positive rate = FP / (FP + TN);
    a rate whose denominator is 0 is left out. `detection_outcomes` has the four counts.
    """
    label, detected = F.col("label") == 1, F.col("detected")
    counts = (
        _windowed(units, dates, window_days)
        .groupBy("run_date")
        .agg(
            _count_if(label & detected).alias("tp"),
            _count_if(~label & detected).alias("fp"),
            _count_if(label & ~detected).alias("fn"),
            _count_if(~label & ~detected).alias("tn"),
        )
    )
    dims = {"labels": labels, "window_days": str(window_days)}

    def ratio(num: str, *den: str) -> Column:
        total = reduce(lambda a, b: a + b, [F.col(d) for d in den])
        return F.when(total > 0, F.col(num) / total)

    outcomes = [
        metric_rows(counts, "detection_outcomes", F.col(col), {**dims, "outcome": name})
        for col, name in (
            ("tp", "true_positive"),
            ("fp", "false_positive"),
            ("fn", "false_negative"),
            ("tn", "true_negative"),
        )
    ]
    return _union(
        [
            *outcomes,
            metric_rows(counts, "detection_precision", ratio("tp", "tp", "fp"), dims),
            metric_rows(counts, "detection_recall", ratio("tp", "tp", "fn"), dims),
            metric_rows(counts, "detection_false_positive_rate", ratio("fp", "fp", "tn"), dims),
        ]
    )


def analyst_incidents(decisions: DataFrame, risky_sessions: DataFrame) -> DataFrame:
    """Incidents analysts confirmed (a true-positive verdict), starting at the first session
    with risk of the target that day (its run date's midnight when none is recorded).

    `risky_sessions`: (run_date, entity_id, start) of sessions with risk > 0.
    """
    confirmed = _latest_verdicts(decisions).where(F.col("label") == 1)
    first = risky_sessions.groupBy("run_date", F.col("entity_id").alias("target_id")).agg(
        F.min("start").alias("_first")
    )
    return confirmed.join(first, ["run_date", "target_id"], "left").select(
        F.col("rec_id").alias("incident_id"),
        "target_id",
        F.coalesce("_first", F.to_timestamp("run_date")).alias("start"),
        F.coalesce("_first", F.to_timestamp("run_date")).alias("end"),
    )


def time_to_detect(
    incidents: DataFrame, days: DataFrame, dates: DataFrame, window_days: int, labels: str
) -> DataFrame:
    """Incidents that started in the window, detected or not by the target date, and the
    mean hours from their start to the first enforcing recommendation on any of their
    targets (available at the end of its run date: `valid_from`)."""
    starts = incidents.groupBy("incident_id").agg(F.min("start").alias("start"))
    hits = (
        incidents.join(days.where("detected"), "target_id")
        .where(F.col("run_date") >= F.to_date("start"))
        .groupBy("incident_id")
        .agg(F.min("run_date").alias("first_detection"))
    )
    per_incident = starts.join(hits, "incident_id", "left").withColumn(
        "run_date", F.to_date("start")
    )
    windowed = _windowed(per_incident, dates, window_days).withColumn(
        "_detected",
        F.col("first_detection").isNotNull() & (F.col("first_detection") <= F.col("run_date")),
    )
    hours = (
        F.unix_timestamp(F.to_timestamp(F.date_add("first_detection", 1)))
        - F.unix_timestamp("start")
    ) / 3600.0
    summary = windowed.groupBy("run_date").agg(
        _count_if(F.col("_detected")).alias("detected"),
        _count_if(~F.col("_detected")).alias("undetected"),
        F.mean(F.when(F.col("_detected"), hours)).alias("mttd"),
    )
    dims = {"labels": labels, "window_days": str(window_days)}
    return _union(
        [
            metric_rows(summary, "incidents", F.col("detected"), {**dims, "state": "detected"}),
            metric_rows(summary, "incidents", F.col("undetected"), {**dims, "state": "undetected"}),
            metric_rows(summary, "mean_time_to_detect_hours", F.col("mttd"), dims),
        ]
    )


# --- coverage, telemetry and data quality -------------------------------------------------


def coverage_metrics(entity_daily: DataFrame, population: DataFrame, dates: DataFrame) -> DataFrame:
    """Share of each population (critical assets, privileged users) with telemetry that day.

    `population`: (population, entity_id); `entity_daily`: (run_date, entity_id) of every
    entity silver.events saw that day (gold.entity_daily).
    """
    seen = entity_daily.select("run_date", "entity_id").distinct().withColumn("_seen", F.lit(True))
    members = F.broadcast(dates).crossJoin(population.distinct())
    flagged = members.join(seen, ["run_date", "entity_id"], "left")
    counts = flagged.groupBy("run_date", "population").agg(
        _count_if(F.col("_seen").isNotNull()).alias("covered"),
        F.count(F.lit(1)).alias("members"),
    )
    return _union(
        [
            metric_rows(
                counts,
                "policy_coverage",
                F.col("covered") / F.col("members"),
                {"population": F.col("population")},
            ),
            metric_rows(
                counts,
                "policy_coverage_entities",
                F.col("covered"),
                {"population": F.col("population"), "state": "covered"},
            ),
            metric_rows(
                counts,
                "policy_coverage_entities",
                F.col("members") - F.col("covered"),
                {"population": F.col("population"), "state": "uncovered"},
            ),
        ]
    )


def source_metrics(
    source_status: DataFrame, dq_results: DataFrame, reconciliation: DataFrame
) -> DataFrame:
    """Per source: status, telemetry gaps, data-quality pass rates and failed gates, volumes.

    A gap is a source `missing` or `degraded` in ops.source_status; a failed gate is a
    critical expectation that failed (what makes a source degraded).
    """
    src = {"source": F.col("source")}
    status = metric_rows(
        source_status, "source_status", F.lit(1), {**src, "status": F.col("status")}
    )
    gaps = metric_rows(
        source_status.where(F.col("status") != "ok"),
        "telemetry_gap",
        F.lit(1),
        {**src, "status": F.col("status")},
    )
    suites = dq_results.groupBy(
        "run_date", "source", F.coalesce("suite", F.lit("none")).alias("suite")
    ).agg(
        F.count(F.lit(1)).alias("n"),
        _count_if(F.col("success")).alias("passed"),
    )
    gates = dq_results.groupBy("run_date", "source").agg(
        _count_if(F.col("critical") & ~F.col("success")).alias("failed_critical")
    )
    suite_dims = {**src, "suite": F.col("suite")}
    volume = [
        metric_rows(reconciliation, "telemetry_rows", F.col(col), {**src, "kind": col})
        for col in ("raw_rows", "events", "quarantined", "duplicates")
    ]
    return _union(
        [
            status,
            gaps,
            metric_rows(suites, "dq_pass_rate", F.col("passed") / F.col("n"), suite_dims),
            metric_rows(suites, "dq_expectations_failed", F.col("n") - F.col("passed"), suite_dims),
            metric_rows(gates, "dq_gate_failed", F.col("failed_critical"), src),
            *volume,
            metric_rows(
                reconciliation, "reconciliation_balanced", F.col("balanced").cast("int"), src
            ),
        ]
    )


# --- risk and the model -------------------------------------------------------------------


def risk_metrics(
    session_scores: DataFrame, entity_risk: DataFrame, cfg: ScoringSettings
) -> DataFrame:
    """Sessions per kind and band, entities per type and band, the entity risk histogram,
    and the model version in use (sessions it scored; `none` when no model scored them)."""
    sessions = session_scores.withColumn("band", risk_band(F.col("risk"), cfg))
    entities = entity_risk.withColumn("band", risk_band(F.col("risk"), cfg))
    low = F.least(F.floor(F.col("risk") / 10) * 10, F.lit((RISK_BUCKETS - 1) * 10)).cast("int")
    bucket = F.concat(
        F.lpad(low.cast("string"), 2, "0"),
        F.lit("-"),
        F.when(low == (RISK_BUCKETS - 1) * 10, F.lit("100")).otherwise(
            F.lpad((low + 9).cast("string"), 2, "0")
        ),
    )
    return _union(
        [
            metric_rows(
                sessions.groupBy("run_date", "session_kind").count(),
                "sessions_scored",
                F.col("count"),
                {"session_kind": F.col("session_kind")},
            ),
            metric_rows(
                sessions.groupBy("run_date", "band").count(),
                "sessions_by_risk_band",
                F.col("count"),
                {"band": F.col("band")},
            ),
            metric_rows(
                entities.groupBy("run_date", "entity_type", "band").count(),
                "entities_by_risk_band",
                F.col("count"),
                {"band": F.col("band"), "entity_type": F.col("entity_type")},
            ),
            metric_rows(
                entities.groupBy("run_date", bucket.alias("bucket")).count(),
                "entity_risk_histogram",
                F.col("count"),
                {"bucket": F.col("bucket")},
            ),
            metric_rows(
                session_scores.groupBy("run_date", "model_version").count(),
                "model_version_in_use",
                F.col("count"),
                {"model_version": F.col("model_version")},
            ),
        ]
    )


# --- drift: population stability index against a reference -------------------------------


def feature_values(session_scores: DataFrame) -> DataFrame:
    """(run_date, name, value) of every model feature of every session (absent = 0)."""
    return session_scores.select(
        "run_date",
        F.explode(
            F.array(
                *[
                    F.struct(
                        F.lit(name).alias("name"),
                        F.coalesce(F.col("features")[name], F.lit(0.0)).alias("value"),
                    )
                    for name in risk_model.FEATURES
                ]
            )
        ).alias("f"),
    ).select("run_date", "f.name", "f.value")


def baseline_values(baselines: DataFrame) -> DataFrame:
    """(run_date, name, log1p(value)) of each baseline statistic of each entity out of its
    learning period (profiles still forming drift by construction; peer groups and nulls
    left out). Quantile bins do not care about the scale; the log makes the 0.001 binning
    resolution meaningful for byte counts."""
    stats = [
        F.struct(
            F.lit(name).alias("name"),
            F.log1p(F.greatest(F.col(name).cast("double"), F.lit(0.0))).alias("value"),
        )
        for name in BASELINE_STATISTICS
    ]
    return (
        baselines.where((F.col("entity_type") != "peer_group") & ~F.col("in_learning"))
        .select("run_date", F.explode(F.array(*stats)).alias("f"))
        .select("run_date", "f.name", "f.value")
        .where(F.col("value").isNotNull())
    )


def value_histogram(values: DataFrame) -> DataFrame:
    """(run_date, name, value, n): observations per value, at DRIFT_DECIMALS."""
    return (
        values.groupBy("run_date", "name", F.bround("value", DRIFT_DECIMALS).alias("value"))
        .agg(F.count(F.lit(1)).alias("n"))
        .select(*HISTOGRAM.fieldNames())
    )


def day_type(day: date) -> str:
    return "weekend" if day.weekday() >= 5 else "weekday"


def _day_type(col: Column) -> Column:
    return F.when(F.dayofweek(col).isin(1, 7), "weekend").otherwise("weekday")


def trailing_windows(
    dates: Sequence[date], days: int, same_day_type: bool
) -> list[tuple[date, date, date, str, str]]:
    """(run_date, first day, last day, label, day type) of each date's trailing reference:
    the `days` days before it, only those of its own day type when `same_day_type`."""
    out = []
    for d in dates:
        kind = day_type(d) if same_day_type else "all"
        label = f"trailing_{days}d" + (f"_{kind}" if same_day_type else "")
        out.append((d, d - timedelta(days=days), d - timedelta(days=1), label, kind))
    return out


def _bin(edges: Column, value: Column) -> Column:
    """Right-closed bins: the number of edges below the value."""
    return F.size(F.filter(edges, lambda e: value > e))


def _shares(binned: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Per `keys`: the share of observations in each bin 0..size(edges) (edges kept)."""
    per_bin = binned.groupBy(*keys, "edges", "_bin").agg(F.sum("n").alias("_n"))
    return (
        per_bin.groupBy(*keys, "edges")
        .agg(
            F.sum("_n").alias("observations"),
            F.map_from_entries(F.collect_list(F.struct("_bin", "_n"))).alias("_counts"),
        )
        .withColumn(
            "shares",
            F.transform(
                F.sequence(F.lit(0), F.size("edges")),
                lambda i: (
                    F.coalesce(F.col("_counts")[i], F.lit(0)).cast("double") / F.col("observations")
                ),
            ),
        )
        .drop("_counts")
    )


def reference_from_history(histogram: DataFrame, windows: DataFrame, bins: int) -> DataFrame:
    """Reference bins per (run_date, name) from the histogram days inside each date's window.

    Edge k (1..bins-1) is the smallest value whose cumulative count reaches k/bins of the
    window's observations (integer arithmetic, as jobs.train.feature_reference), duplicates
    dropped; expected shares are the window's own shares in those bins.
    """
    w = F.broadcast(windows.withColumnRenamed("run_date", "_target"))
    day = histogram["run_date"]
    pooled = (
        histogram.join(
            w,
            (day >= F.col("ref_start"))
            & (day <= F.col("ref_end"))
            & ((F.col("day_type") == "all") | (F.col("day_type") == _day_type(day))),
        )
        .groupBy(F.col("_target").alias("run_date"), "reference", "name", "value")
        .agg(F.sum("n").alias("n"))
    )
    part = Window.partitionBy("run_date", "name")
    ordered = part.orderBy("value").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    ranked = (
        pooled.withColumn("_cum", F.sum("n").over(ordered))
        .withColumn("_total", F.sum("n").over(part))
        .withColumn("_prev", F.col("_cum") - F.col("n"))
    )
    # levels k with prev < k*total/bins <= cum, i.e. floor(prev*bins/total) < k <= floor(cum*bins/total)
    hi = F.least(F.expr(f"(_cum * {bins}) div _total"), F.lit(bins - 1))
    lo = F.least(F.expr(f"(_prev * {bins}) div _total"), F.lit(bins - 1))
    edges = ranked.groupBy("run_date", "reference", "name").agg(
        F.array_sort(F.collect_list(F.when(hi > lo, F.col("value")))).alias("edges")
    )
    binned = pooled.join(edges, ["run_date", "reference", "name"]).withColumn(
        "_bin", _bin(F.col("edges"), F.col("value"))
    )
    return (
        _shares(binned, ["run_date", "reference", "name"])
        .withColumnRenamed("shares", "expected")
        .select(*REFERENCE.fieldNames())
    )


def logged_reference(
    spark: SparkSession,
    dates: Sequence[date],
    version: str,
    reference: Mapping[str, Any],
    same_day_type: bool,
) -> DataFrame:
    """The reference jobs.train logged for a model version, for each of `dates`: with
    `same_day_type`, the training rows of the date's own day type when it logged them."""
    rows = []
    for d in dates:
        label, part = f"model_v{version}", reference
        typed = (reference.get("day_types") or {}).get(day_type(d)) if same_day_type else None
        if typed and typed.get("rows", 0) > 0:
            label, part = f"model_v{version}_{day_type(d)}", typed
        rows += [
            (
                d,
                name,
                label,
                [float(e) for e in spec["edges"]],
                [float(s) for s in spec["shares"]],
                int(part.get("rows", 0)),
            )
            for name, spec in sorted(part.get("features", {}).items())
            if name in risk_model.FEATURES
        ]
    return spark.createDataFrame(rows, REFERENCE)


def psi_rows(
    histogram: DataFrame,
    reference: DataFrame,
    cfg: MetricsSettings,
    metric: str,
    dimension: str,
) -> DataFrame:
    """PSI = sum over bins of (a - e) * ln(a / e), shares floored at PSI_EPSILON; level
    `alert` at psi_alert, `warning` at psi_warning, else `ok`."""
    binned = histogram.join(
        reference.select("run_date", "name", "edges"), ["run_date", "name"]
    ).withColumn("_bin", _bin(F.col("edges"), F.col("value")))
    current = _shares(binned, ["run_date", "name"]).drop("edges", "observations")
    joined = current.join(reference, ["run_date", "name"])
    eps = F.lit(PSI_EPSILON)
    psi = F.aggregate(
        F.zip_with(
            "shares",
            "expected",
            lambda a, e: (
                (F.greatest(a, eps) - F.greatest(e, eps))
                * F.log(F.greatest(a, eps) / F.greatest(e, eps))
            ),
        ),
        F.lit(0.0),
        lambda acc, x: acc + x,
    )
    scored = joined.withColumn("psi", psi)
    level = (
        F.when(F.col("psi") >= cfg.psi_alert, "alert")
        .when(F.col("psi") >= cfg.psi_warning, "warning")
        .otherwise("ok")
    )
    return metric_rows(
        scored,
        metric,
        F.col("psi"),
        {dimension: F.col("name"), "level": level, "reference": F.col("reference")},
    )


def drift_metrics(
    histogram: DataFrame,
    reference: DataFrame,
    dates: DataFrame,
    cfg: MetricsSettings,
    family: str,
) -> DataFrame:
    """PSI rows of one family (`model_feature` or `baseline_statistic`), and which reference
    each date used (`drift_reference`: its observations; `none` with 0 when there was none)."""
    metric, dimension = (
        ("feature_psi", "feature") if family == "model_feature" else ("baseline_psi", "statistic")
    )
    current = histogram.join(F.broadcast(dates), "run_date")
    used = reference.groupBy("run_date", "reference").agg(F.max("observations").alias("obs"))
    missing = dates.join(used, "run_date", "left_anti")
    return _union(
        [
            psi_rows(current, reference, cfg, metric, dimension),
            metric_rows(
                used,
                "drift_reference",
                F.col("obs"),
                {"family": family, "reference": F.col("reference")},
            ),
            metric_rows(
                missing, "drift_reference", F.lit(0), {"family": family, "reference": "none"}
            ),
        ]
    )


# --- alerts: what the report's banner shows -----------------------------------------------


def alert_metrics(metrics: DataFrame, dates: DataFrame) -> DataFrame:
    """`alert` rows for drift at the alert level, a source gap, or a failed data-quality gate,
    and `alerts_total` per date (0 included). Derived from the other rows, so the banner of
    the report and the table always agree."""
    dims = F.col("dimensions")
    drift = metrics.where(
        F.col("metric").isin("feature_psi", "baseline_psi") & (dims["level"] == "alert")
    ).select(
        "run_date",
        F.lit("alert").alias("metric"),
        F.create_map(
            F.lit("condition"),
            F.lit("drift"),
            F.lit("family"),
            F.when(F.col("metric") == "feature_psi", "model_feature").otherwise(
                "baseline_statistic"
            ),
            F.lit("name"),
            F.coalesce(dims["feature"], dims["statistic"]),
            F.lit("reference"),
            dims["reference"],
        ).alias("dimensions"),
        "value",
    )
    gaps = metrics.where(F.col("metric") == "telemetry_gap").select(
        "run_date",
        F.lit("alert").alias("metric"),
        F.create_map(
            F.lit("condition"),
            F.lit("source_gap"),
            F.lit("source"),
            dims["source"],
            F.lit("status"),
            dims["status"],
        ).alias("dimensions"),
        "value",
    )
    gates = metrics.where((F.col("metric") == "dq_gate_failed") & (F.col("value") > 0)).select(
        "run_date",
        F.lit("alert").alias("metric"),
        F.create_map(
            F.lit("condition"), F.lit("dq_gate_failed"), F.lit("source"), dims["source"]
        ).alias("dimensions"),
        "value",
    )
    alerts = _union([drift, gaps, gates]).withColumn(
        "dimensions", F.col("dimensions").cast(METRIC_DIMENSIONS)
    )
    totals = dates.join(alerts.groupBy("run_date").count(), "run_date", "left").withColumn(
        "count", F.coalesce("count", F.lit(0))
    )
    return alerts.unionByName(metric_rows(totals, "alerts_total", F.col("count")))


# --- all families ---------------------------------------------------------------------------


@dataclass
class MetricsInputs:
    """What the families read; None = the table or file does not exist (family skipped)."""

    recommendations: DataFrame  # run_date, action, domain, status (the dates)
    decision_log: DataFrame  # run_date, target_id, action, policy_mode (window before the dates)
    session_scores: DataFrame  # run_date, session_kind, risk, model_version (the dates)
    entity_risk: DataFrame  # run_date, entity_type, risk (the dates)
    feature_histogram: DataFrame  # HISTOGRAM of model features (dates + reference days)
    feature_reference: DataFrame  # REFERENCE per date (logged by the model, or trailing)
    baseline_histogram: DataFrame  # HISTOGRAM of baseline statistics
    baseline_reference: DataFrame  # REFERENCE per date
    analyst_decisions: DataFrame | None = None  # ANALYST_DECISIONS columns
    risky_sessions: DataFrame | None = None  # run_date, entity_id, start (risk > 0, window)
    scenarios: DataFrame | None = None  # SCENARIOS (the ground truth)
    owners: DataFrame | None = None  # asset_id, user_id (workstation owners)
    population: DataFrame | None = None  # population, entity_id
    entity_daily: DataFrame | None = None  # run_date, entity_id (the dates)
    source_status: DataFrame | None = None
    dq_results: DataFrame | None = None
    reconciliation: DataFrame | None = None


def compute_metrics(
    inputs: MetricsInputs, dates: DataFrame, cfg: MetricsSettings, scoring: ScoringSettings
) -> DataFrame:
    """Every family for `dates` (a frame of run_date), plus the alerts derived from them."""
    base = family_metrics(inputs, dates, cfg, scoring)
    return conform_metrics(base.unionByName(alert_metrics(base, dates)))


def family_metrics(
    inputs: MetricsInputs, dates: DataFrame, cfg: MetricsSettings, scoring: ScoringSettings
) -> DataFrame:
    """Every metric family for `dates` except the alerts (`alert_metrics` derives those)."""
    window = cfg.verdict_window_days
    days = entity_days(inputs.decision_log)
    families = [
        recommendation_metrics(inputs.recommendations, dates),
        risk_metrics(inputs.session_scores, inputs.entity_risk, scoring),
        drift_metrics(
            inputs.feature_histogram, inputs.feature_reference, dates, cfg, "model_feature"
        ),
        drift_metrics(
            inputs.baseline_histogram, inputs.baseline_reference, dates, cfg, "baseline_statistic"
        ),
    ]
    if inputs.analyst_decisions is not None:
        families += [
            analyst_decision_metrics(inputs.analyst_decisions, dates),
            confusion_metrics(
                verdict_units(inputs.analyst_decisions, days), dates, window, "analyst_verdicts"
            ),
        ]
        if inputs.risky_sessions is not None:
            families.append(
                time_to_detect(
                    analyst_incidents(inputs.analyst_decisions, inputs.risky_sessions),
                    days,
                    dates,
                    window,
                    "analyst_verdicts",
                )
            )
    if inputs.scenarios is not None:
        incidents = ground_truth_incidents(inputs.scenarios, inputs.owners)
        families += [
            confusion_metrics(
                ground_truth_units(incidents, days, cfg.incident_followup_days),
                dates,
                window,
                "ground_truth",
            ),
            time_to_detect(incidents, days, dates, window, "ground_truth"),
        ]
    if inputs.population is not None and inputs.entity_daily is not None:
        families.append(coverage_metrics(inputs.entity_daily, inputs.population, dates))
    if inputs.source_status is not None or inputs.dq_results is not None:
        spark = dates.sparkSession
        families.append(
            source_metrics(
                inputs.source_status
                if inputs.source_status is not None
                else spark.createDataFrame([], SOURCE_STATUS),
                inputs.dq_results
                if inputs.dq_results is not None
                else spark.createDataFrame([], DQ_RESULTS),
                inputs.reconciliation
                if inputs.reconciliation is not None
                else spark.createDataFrame([], RECONCILIATION),
            )
        )
    return conform_metrics(_union(families).join(F.broadcast(dates), "run_date"))


# --- the stage entry -----------------------------------------------------------------------


def _columns(schema: StructType, names: Sequence[str]) -> StructType:
    return StructType([f for f in schema.fields if f.name in names])


def _read(
    ctx: RunContext,
    table: str,
    schema: StructType,
    names: Sequence[str],
    start: date,
    end: date,
) -> DataFrame | None:
    """`names` of `table` between two run dates, checked against the declared schema."""
    if not ctx.lake.exists(table):
        return None
    df = ctx.lake.read(table).where(
        (F.col("run_date") >= F.lit(start)) & (F.col("run_date") <= F.lit(end))
    )
    return require_columns(df, _columns(schema, names), f"metrics: {table}")


def _or_empty(
    ctx: RunContext, df: DataFrame | None, schema: StructType, names: Sequence[str]
) -> DataFrame:
    return df if df is not None else ctx.spark.createDataFrame([], _columns(schema, names))


def _ground_truth(ctx: RunContext) -> DataFrame | None:
    """The generator's scenarios, when `paths.ground_truth` is a local file that exists."""
    from jobs.train import read_ground_truth

    path = ctx.settings.paths.ground_truth
    if "://" in path or not Path(path).is_file():
        return None

    def ts(value: str) -> datetime:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)

    rows = [
        (
            f"{sc.get('scenario', 'incident')}|{sc['entity_id']}|{sc['start']}",
            str(sc["entity_id"]),
            ts(sc["start"]),
            ts(sc["end"]),
        )
        for sc in read_ground_truth(Path(path))
    ]
    return ctx.spark.createDataFrame(rows, SCENARIOS)


def _reference_population(ctx: RunContext) -> tuple[DataFrame | None, DataFrame | None]:
    """(population, owners) from the directory and inventory; None when a file is missing."""
    from jobs.reference import ReferenceDataError, asset_inventory, identity_directory

    try:
        assets = asset_inventory(ctx.spark, ctx.settings)
        accounts = identity_directory(ctx.spark, ctx.settings)
        assets.schema  # noqa: B018 - resolve the paths now
        accounts.schema  # noqa: B018
    except ReferenceDataError:
        return None, None
    population = (
        assets.where(F.lower(F.trim("criticality")) == "critical")
        .select(F.lit("critical_assets").alias("population"), F.col("asset_id").alias("entity_id"))
        .unionByName(
            accounts.where(F.col("privileged")).select(
                F.lit("privileged_users").alias("population"),
                F.lower(F.col("user_id")).alias("entity_id"),
            )
        )
        .distinct()
    )
    owners = assets.where(
        (F.col("asset_type") == "workstation") & F.col("owner").contains("@")
    ).select("asset_id", F.lower("owner").alias("user_id"))
    return population, owners


def _materialize(keep: Checkpoints, df: DataFrame | None) -> Any:
    """Compute a small intermediate once and cut its lineage: every family reads it, and the
    union of all families would otherwise re-plan (and re-read) each input many times."""
    return None if df is None else keep(df)


def _versions_in_use(session_scores: DataFrame) -> dict[date, str]:
    """The model version that scored most sessions of each date (dates without one absent)."""
    counts = (
        session_scores.where(F.col("model_version").isNotNull())
        .groupBy("run_date", "model_version")
        .count()
        .collect()  # one row per (date, version): a handful
    )
    best: dict[date, tuple[int, str]] = {}
    for r in counts:
        key = (int(r["count"]), str(r["model_version"]))
        if r["run_date"] not in best or key > best[r["run_date"]]:
            best[r["run_date"]] = key
    return {d: v for d, (_, v) in best.items()}


def _model_references(
    ctx: RunContext, dates: Sequence[date], versions: Mapping[date, str]
) -> dict[date, tuple[str, dict[str, Any]]]:
    """Per date, the logged reference of the version in use, else of the champion."""
    from jobs.train import load_feature_reference

    loaded: dict[str | None, tuple[str, dict[str, Any]] | None] = {}
    out: dict[date, tuple[str, dict[str, Any]]] = {}
    for d in dates:
        for version in ([versions[d]] if d in versions else []) + [None]:
            if version not in loaded:
                loaded[version] = load_feature_reference(ctx.settings, version)
            found = loaded[version]
            if found is not None:
                out[d] = found
                break
    return out


def run_metrics(ctx: RunContext, dates: list[date]) -> StageResult:
    """Stage `metrics`: read the day's tables (and the windows before), write gold.metrics_daily."""
    with Checkpoints() as keep:
        return _run_metrics(ctx, dates, keep)


def _run_metrics(ctx: RunContext, dates: list[date], keep: Checkpoints) -> StageResult:
    settings: Settings = ctx.settings
    cfg = settings.metrics
    spark = ctx.spark
    dates = sorted(set(dates))
    if not dates:
        raise PipelineError("metrics: no dates to compute")
    first, last = dates[0], dates[-1]
    window_start = first - timedelta(days=cfg.verdict_window_days - 1)
    trailing_start = first - timedelta(days=cfg.drift_reference_days)
    dates_df = _dates_frame(spark, dates)

    def read(
        table: str, schema: StructType, names: Sequence[str], start: date = first
    ) -> DataFrame | None:
        return _read(ctx, table, schema, names, start, last)

    rec_cols = ("run_date", "action", "domain", "status")
    log_cols = ("run_date", "target_id", "action", "policy_mode")
    score_cols = ("run_date", "session_kind", "risk", "model_version")
    recommendations = _or_empty(
        ctx,
        read("gold.policy_recommendations", POLICY_RECOMMENDATIONS, rec_cols),
        POLICY_RECOMMENDATIONS,
        rec_cols,
    )
    decision_log = _or_empty(
        ctx, read("gold.decision_log", DECISION_LOG, log_cols, window_start), DECISION_LOG, log_cols
    )
    scores = read(
        "gold.session_scores",
        SESSION_SCORES,
        (*score_cols, "features", "entity_id", "session_start"),
        min(window_start, trailing_start),
    )
    scores = _or_empty(
        ctx, scores, SESSION_SCORES, (*score_cols, "features", "entity_id", "session_start")
    )
    in_dates = F.expr(dates_predicate("run_date", dates))
    session_scores = _materialize(keep, scores.where(in_dates).select(*score_cols))
    decision_log = _materialize(keep, decision_log)
    entity_risk = _or_empty(
        ctx,
        read("gold.entity_risk", ENTITY_RISK, ("run_date", "entity_type", "risk")),
        ENTITY_RISK,
        ("run_date", "entity_type", "risk"),
    )

    # Drift references: the model version in use that day (else the champion) when it logged
    # its training distribution; otherwise the trailing days before the date.
    versions = _versions_in_use(session_scores)
    model_refs = _model_references(ctx, dates, versions)
    trailing_dates = [d for d in dates if d not in model_refs]
    by_version: dict[str, tuple[list[date], dict[str, Any]]] = {}
    for d, (version, ref) in sorted(model_refs.items()):
        by_version.setdefault(version, ([], ref))[0].append(d)
    same_type = cfg.drift_compare == "same_day_type"
    logged = [logged_reference(spark, ds, v, ref, same_type) for v, (ds, ref) in by_version.items()]
    # Baseline statistics: the profiles of the model's training window (rolling profiles do
    # not follow the day type), or the trailing days.
    windows = [
        (d, date.fromisoformat(ref["start"]), date.fromisoformat(ref["end"]), f"model_v{v}", "all")
        for d, (v, ref) in model_refs.items()
        if ref.get("start") and ref.get("end")
    ]
    windows += trailing_windows(
        [d for d in dates if d not in {w[0] for w in windows}], cfg.drift_reference_days, False
    )
    feature_windows = spark.createDataFrame(
        trailing_windows(trailing_dates, cfg.drift_reference_days, same_type), WINDOWS
    )
    baseline_windows = spark.createDataFrame(windows, WINDOWS)
    baseline_start = min([w[1] for w in windows] + [trailing_start])
    baselines = _or_empty(
        ctx,
        read(
            "gold.baselines",
            BASELINES,
            ("run_date", "entity_type", "in_learning", *BASELINE_STATISTICS),
            baseline_start,
        ),
        BASELINES,
        ("run_date", "entity_type", "in_learning", *BASELINE_STATISTICS),
    )
    feature_hist = _materialize(
        keep,
        value_histogram(feature_values(scores.where(F.col("run_date") >= F.lit(trailing_start)))),
    )
    baseline_hist = _materialize(keep, value_histogram(baseline_values(baselines)))
    feature_reference = reference_from_history(feature_hist, feature_windows, cfg.psi_bins)
    if logged:
        feature_reference = _union([feature_reference, *logged])
    baseline_reference = reference_from_history(baseline_hist, baseline_windows, cfg.psi_bins)

    # All analyst decisions (a human-sized table): a decision made on D may concern a
    # recommendation of any earlier date, so no date range would give bulk = date by date.
    analyst = (
        require_columns(
            ctx.lake.read("ops.analyst_decisions"),
            ANALYST_DECISIONS,
            "metrics: ops.analyst_decisions",
        )
        if ctx.lake.exists("ops.analyst_decisions")
        else None
    )
    risky = None
    if analyst is not None:
        analyst = _materialize(keep, analyst)
        risky = _materialize(
            keep,
            scores.where((F.col("risk") > 0) & (F.col("run_date") >= F.lit(window_start)))
            .select("run_date", "entity_id", F.col("session_start").alias("start"))
            .where(F.col("entity_id").isNotNull() & F.col("start").isNotNull()),
        )
    population, owners = _reference_population(ctx)
    inputs = MetricsInputs(
        recommendations=recommendations,
        decision_log=decision_log,
        session_scores=session_scores,
        entity_risk=entity_risk,
        feature_histogram=feature_hist,
        feature_reference=_materialize(keep, feature_reference),
        baseline_histogram=baseline_hist,
        baseline_reference=_materialize(keep, baseline_reference),
        analyst_decisions=analyst,
        risky_sessions=risky,
        scenarios=_ground_truth(ctx),
        owners=owners,
        population=population,
        entity_daily=_materialize(
            keep, read("gold.entity_daily", ENTITY_DAILY, ("run_date", "entity_id"))
        ),
        source_status=_materialize(
            keep, read("ops.source_status", SOURCE_STATUS, ("run_date", "source", "status"))
        ),
        dq_results=_materialize(
            keep,
            read(
                "ops.dq_results", DQ_RESULTS, ("run_date", "source", "suite", "success", "critical")
            ),
        ),
        reconciliation=_materialize(
            keep,
            read(
                "ops.reconciliation",
                RECONCILIATION,
                (
                    "run_date",
                    "source",
                    "raw_rows",
                    "events",
                    "quarantined",
                    "duplicates",
                    "balanced",
                ),
            ),
        ),
    )
    base = _materialize(keep, family_metrics(inputs, dates_df, cfg, settings.scoring))
    metrics = conform_metrics(base.unionByName(alert_metrics(base, dates_df)))
    ctx.lake.replace_dates(metrics, METRICS_TABLE, dates, properties=METRICS_PROPERTIES)

    written = ctx.lake.read_dates(METRICS_TABLE, dates)
    summary = written.groupBy("metric").count().collect()  # one row per metric name
    alerts = (
        written.where(F.col("metric") == "alert")
        .select("run_date", "dimensions")
        .orderBy("run_date")
        .collect()  # alert rows only: a handful
    )
    counts = {r["metric"]: int(r["count"]) for r in summary}
    references = sorted({f"model_v{v}" for v, _ in model_refs.values()}) + (
        [f"trailing_{cfg.drift_reference_days}d"] if trailing_dates else []
    )
    return StageResult(
        stage="metrics",
        dates=dates,
        rows={METRICS_TABLE: sum(counts.values())},
        details={
            "metrics": len(counts),
            "alerts": len(alerts),
            "alert_conditions": sorted({r["dimensions"].get("condition", "") for r in alerts}),
            "drift_reference": ",".join(references),
            "ground_truth": inputs.scenarios is not None,
        },
    )
