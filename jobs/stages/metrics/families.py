"""Metric families: each a pure `DataFrame -> DataFrame` function returning rows of
gold.metrics_daily (run_date, metric, dimensions, value) for the dates it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from jobs.core.config import ScoringSettings
from jobs.core.lake import conform
from jobs.core.tables import (
    METRIC_DIMENSIONS,
    METRICS_DAILY,
)
from jobs.features.risk import risk_band
from jobs.policy.vocabulary import NEGATIVE_VERDICTS, POSITIVE_VERDICTS
from jobs.quality.suites import GEO_DATABASE_CURRENT, REFERENCE_SUITE

RISK_BUCKETS = 10  # entity_risk_histogram: 0-9, 10-19, ..., 90-100
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
    return conform(out, METRICS_DAILY)


def union_all(frames: Sequence[DataFrame]) -> DataFrame:
    return reduce(DataFrame.unionByName, frames)


def dates_frame(spark: SparkSession, dates: Sequence[date]) -> DataFrame:
    return spark.createDataFrame([(d,) for d in sorted(set(dates))], "run_date date")


def within_window(units: DataFrame, dates: DataFrame, days: int) -> DataFrame:
    """Each unit once per target date whose window [target - days + 1, target] holds it."""
    targets = F.broadcast(dates.select(F.col("run_date").alias("_target")))
    joined = units.join(
        targets,
        (F.col("run_date") <= F.col("_target"))
        & (F.col("run_date") > F.date_sub(F.col("_target"), days)),
    )
    return joined.drop("run_date").withColumnRenamed("_target", "run_date")


def count_if(cond: Column) -> Column:
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
    return union_all(
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
        within_window(units, dates, window_days)
        .groupBy("run_date")
        .agg(
            count_if(label & detected).alias("tp"),
            count_if(~label & detected).alias("fp"),
            count_if(label & ~detected).alias("fn"),
            count_if(~label & ~detected).alias("tn"),
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
    return union_all(
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
    windowed = within_window(per_incident, dates, window_days).withColumn(
        "_detected",
        F.col("first_detection").isNotNull() & (F.col("first_detection") <= F.col("run_date")),
    )
    hours = (
        F.unix_timestamp(F.to_timestamp(F.date_add("first_detection", 1)))
        - F.unix_timestamp("start")
    ) / 3600.0
    summary = windowed.groupBy("run_date").agg(
        count_if(F.col("_detected")).alias("detected"),
        count_if(~F.col("_detected")).alias("undetected"),
        F.mean(F.when(F.col("_detected"), hours)).alias("mttd"),
    )
    dims = {"labels": labels, "window_days": str(window_days)}
    return union_all(
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
        count_if(F.col("_seen").isNotNull()).alias("covered"),
        F.count(F.lit(1)).alias("members"),
    )
    return union_all(
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
    # reference data checks (the geolocation database) are not a telemetry source's quality:
    # `reference_metrics` reports them
    dq_results = dq_results.where(~F.coalesce(F.col("suite") == REFERENCE_SUITE, F.lit(False)))
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
        count_if(F.col("success")).alias("passed"),
    )
    gates = dq_results.groupBy("run_date", "source").agg(
        count_if(F.col("critical") & ~F.col("success")).alias("failed_critical")
    )
    suite_dims = {**src, "suite": F.col("suite")}
    volume = [
        metric_rows(reconciliation, "telemetry_rows", F.col(col), {**src, "kind": col})
        for col in ("raw_rows", "events", "quarantined", "duplicates")
    ]
    return union_all(
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


def reference_metrics(dq_results: DataFrame) -> DataFrame:
    """`geo_database_age_days` per date: how old the location database that placed the day's
    addresses was (build date to run date), which one (type, build date, bundled) and whether
    normalize found it stale (the packaged 2018 database, or older than geo.max_age_days)."""
    geo = dq_results.where(
        (F.col("suite") == REFERENCE_SUITE) & (F.col("expectation") == GEO_DATABASE_CURRENT)
    )

    def detail(key: str) -> Column:
        return F.get_json_object(F.col("details"), f"$.{key}")

    return metric_rows(
        geo,
        "geo_database_age_days",
        detail("age_days").cast("double"),
        {
            "database_type": detail("database_type"),
            "build_date": detail("build_date"),
            "bundled": detail("bundled"),
            "stale": F.when(F.col("success"), "false").otherwise("true"),
        },
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
    return union_all(
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


# --- guardrails that held actions back -------------------------------------------------------


def blast_radius_metrics(decision_log: DataFrame) -> DataFrame:
    """`blast_radius_held` per date and domain: entities whose isolate/block the run's
    blast-radius limit sent to pending_approval (their decisions' `guardrails` JSON has a
    `blast_radius` member)."""
    held = (
        decision_log.where(F.get_json_object("guardrails", "$.blast_radius.limit").isNotNull())
        .select("run_date", "domain", "target_type", "target_id")
        .distinct()
        .groupBy("run_date", "domain")
        .count()
    )
    return metric_rows(held, "blast_radius_held", F.col("count"), {"domain": F.col("domain")})


def refused_decision_metrics(refused: DataFrame, dates: DataFrame) -> DataFrame:
    """`analyst_decisions_refused` per date and rule (ops.refused_decisions: unauthenticated,
    out of time bounds, or against a guardrail), and `analyst_decisions_refused_total` (0
    included)."""
    per_rule = refused.groupBy("run_date", "rule").count()
    totals = dates.join(refused.groupBy("run_date").count(), "run_date", "left").withColumn(
        "count", F.coalesce("count", F.lit(0))
    )
    return metric_rows(
        per_rule, "analyst_decisions_refused", F.col("count"), {"rule": F.col("rule")}
    ).unionByName(metric_rows(totals, "analyst_decisions_refused_total", F.col("count")))


# --- alerts: what the report's banner shows -----------------------------------------------


def alert_metrics(metrics: DataFrame, dates: DataFrame) -> DataFrame:
    """`alert` rows for drift at the alert level, a source gap, a failed data-quality gate, a
    blast-radius limit that held actions back, or refused analyst decisions, and
    `alerts_total` per date (0 included). Derived from the other rows, so the banner of
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
    held = metrics.where((F.col("metric") == "blast_radius_held") & (F.col("value") > 0)).select(
        "run_date",
        F.lit("alert").alias("metric"),
        F.create_map(
            F.lit("condition"), F.lit("blast_radius"), F.lit("domain"), dims["domain"]
        ).alias("dimensions"),
        "value",
    )
    refused = metrics.where(
        (F.col("metric") == "analyst_decisions_refused_total") & (F.col("value") > 0)
    ).select(
        "run_date",
        F.lit("alert").alias("metric"),
        F.create_map(F.lit("condition"), F.lit("decisions_refused")).alias("dimensions"),
        "value",
    )
    alerts = union_all([drift, gaps, gates, held, refused]).withColumn(
        "dimensions", F.col("dimensions").cast(METRIC_DIMENSIONS)
    )
    totals = dates.join(alerts.groupBy("run_date").count(), "run_date", "left").withColumn(
        "count", F.coalesce("count", F.lit(0))
    )
    return alerts.unionByName(metric_rows(totals, "alerts_total", F.col("count")))
