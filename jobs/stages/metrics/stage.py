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
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    StructType,
)

from jobs.core.config import MetricsSettings, ScoringSettings, Settings
from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PipelineError, ReferenceDataError
from jobs.core.lake import conform, dates_predicate, require_columns
from jobs.core.spark import Checkpoints
from jobs.core.tables import (
    ANALYST_DECISIONS,
    BASELINES,
    DECISION_LOG,
    DQ_RESULTS,
    ENTITY_DAILY,
    ENTITY_RISK,
    METRICS_DAILY,
    POLICY_RECOMMENDATIONS,
    RECONCILIATION,
    REFUSED_DECISIONS,
    SESSION_SCORES,
    SOURCE_STATUS,
    Table,
)
from jobs.model.labels import read_ground_truth
from jobs.model.registry import load_feature_reference
from jobs.reference.files import asset_inventory, identity_directory
from jobs.stages.metrics.drift import (
    BASELINE_STATISTICS,
    WINDOWS,
    baseline_values,
    drift_metrics,
    feature_values,
    logged_reference,
    reference_from_history,
    trailing_windows,
    value_histogram,
)
from jobs.stages.metrics.families import (
    SCENARIOS,
    alert_metrics,
    analyst_decision_metrics,
    analyst_incidents,
    blast_radius_metrics,
    conform_metrics,
    confusion_metrics,
    coverage_metrics,
    dates_frame,
    entity_days,
    ground_truth_incidents,
    ground_truth_units,
    recommendation_metrics,
    reference_metrics,
    refused_decision_metrics,
    risk_metrics,
    source_metrics,
    time_to_detect,
    union_all,
    verdict_units,
)

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
    guardrails: DataFrame | None = None  # run_date, domain, target, guardrails (decision log)
    refused: DataFrame | None = None  # run_date, rule (ops.refused_decisions)


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
    if inputs.guardrails is not None:
        families.append(blast_radius_metrics(inputs.guardrails))
    if inputs.refused is not None:
        families.append(refused_decision_metrics(inputs.refused, dates))
    if inputs.population is not None and inputs.entity_daily is not None:
        families.append(coverage_metrics(inputs.entity_daily, inputs.population, dates))
    if inputs.source_status is not None or inputs.dq_results is not None:
        spark = dates.sparkSession
        families.append(
            source_metrics(
                inputs.source_status
                if inputs.source_status is not None
                else spark.createDataFrame([], SOURCE_STATUS.schema),
                inputs.dq_results
                if inputs.dq_results is not None
                else spark.createDataFrame([], DQ_RESULTS.schema),
                inputs.reconciliation
                if inputs.reconciliation is not None
                else spark.createDataFrame([], RECONCILIATION.schema),
            )
        )
    if inputs.dq_results is not None:
        families.append(reference_metrics(inputs.dq_results))
    return conform_metrics(union_all(families).join(F.broadcast(dates), "run_date"))


# --- the stage entry -----------------------------------------------------------------------


def _columns(table: Table, names: Sequence[str]) -> StructType:
    return StructType([f for f in table.schema.fields if f.name in names])


def _read(
    ctx: RunContext,
    table: Table,
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
    return require_columns(df, _columns(table, names), f"metrics: {table}")


def _or_empty(
    ctx: RunContext, df: DataFrame | None, table: Table, names: Sequence[str]
) -> DataFrame:
    return df if df is not None else ctx.spark.createDataFrame([], _columns(table, names))


def _ground_truth(ctx: RunContext) -> DataFrame | None:
    """The generator's scenarios, when `paths.ground_truth` is a local file that exists."""
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
    dates_df = dates_frame(spark, dates)

    def read(table: Table, names: Sequence[str], start: date = first) -> DataFrame | None:
        return _read(ctx, table, names, start, last)

    rec_cols = ("run_date", "action", "domain", "status")
    log_cols = ("run_date", "target_id", "action", "policy_mode")
    score_cols = ("run_date", "session_kind", "risk", "model_version")
    recommendations = _or_empty(
        ctx,
        read(POLICY_RECOMMENDATIONS, rec_cols),
        POLICY_RECOMMENDATIONS,
        rec_cols,
    )
    decision_log = _or_empty(
        ctx, read(DECISION_LOG, log_cols, window_start), DECISION_LOG, log_cols
    )
    scores = read(
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
        read(ENTITY_RISK, ("run_date", "entity_type", "risk")),
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
        feature_reference = union_all([feature_reference, *logged])
    baseline_reference = reference_from_history(baseline_hist, baseline_windows, cfg.psi_bins)

    # All analyst decisions (a human-sized table): a decision made on D may concern a
    # recommendation of any earlier date, so no date range would give bulk = date by date.
    analyst = (
        conform(ctx.lake.read(ANALYST_DECISIONS), ANALYST_DECISIONS)
        if ctx.lake.exists(ANALYST_DECISIONS)
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
        entity_daily=_materialize(keep, read(ENTITY_DAILY, ("run_date", "entity_id"))),
        guardrails=read(
            DECISION_LOG, ("run_date", "domain", "target_type", "target_id", "guardrails")
        ),
        refused=read(REFUSED_DECISIONS, ("run_date", "rule")),
        source_status=_materialize(keep, read(SOURCE_STATUS, ("run_date", "source", "status"))),
        dq_results=_materialize(
            keep,
            read(
                DQ_RESULTS,
                ("run_date", "source", "suite", "expectation", "success", "critical", "details"),
            ),
        ),
        reconciliation=_materialize(
            keep,
            read(
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
    ctx.lake.replace_dates(metrics, METRICS_DAILY, dates)

    written = ctx.lake.read_dates(METRICS_DAILY, dates)
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
        rows={METRICS_DAILY.name: sum(counts.values())},
        details={
            "metrics": len(counts),
            "alerts": len(alerts),
            "alert_conditions": sorted({r["dimensions"].get("condition", "") for r in alerts}),
            "drift_reference": ",".join(references),
            "ground_truth": inputs.scenarios is not None,
        },
    )
