"""Drift: population stability of model features and baseline statistics against a reference
(the distribution a model logged at training, or the trailing days of the same day type).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
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
)

from jobs.core.config import MetricsSettings
from jobs.features.calendar import day_type, day_type_column
from jobs.model import estimators as risk_model
from jobs.stages.metrics.families import metric_rows, union_all

# Shares below this count as this in the PSI (an empty bin would make it infinite).
PSI_EPSILON = 1e-4
# Values are binned at this many decimals (half to even), as jobs/model/drift_reference.py logs the reference.
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
    window's observations (integer arithmetic, as jobs.model.train.feature_reference), duplicates
    dropped; expected shares are the window's own shares in those bins.
    """
    w = F.broadcast(windows.withColumnRenamed("run_date", "_target"))
    day = histogram["run_date"]
    pooled = (
        histogram.join(
            w,
            (day >= F.col("ref_start"))
            & (day <= F.col("ref_end"))
            & ((F.col("day_type") == "all") | (F.col("day_type") == day_type_column(day))),
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
    """The reference jobs.model.train logged for a model version, for each of `dates`: with
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
    return union_all(
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
