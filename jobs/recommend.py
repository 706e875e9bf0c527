"""Recommend stage: gold.entity_risk -> policies + guardrails -> recommendations and decision log.

Extract: gold.entity_risk for the dates (at a recorded Delta version), the day's
degraded/missing sources (ops.source_status) and analyst decisions. Transform:
`mapInPandas` evaluates every applicable policy for every entity on the executors
(policies are small picklable objects; no entity row is collected to the driver).
Load: gold.decision_log (one row per entity and policy, allow included) replaces the
dates; gold.policy_recommendations (non-allow only, Change Data Feed on) is MERGEd on
rec_id and rewrites only rows that changed, so re-running a date emits no changes to
CDF consumers. The whole policy set is loaded and checked before any read: one
broken file stops the stage with a one-line error and nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, StringType, StructField, StructType

from jobs.audit import audit_key, record_chain
from jobs.feedback import ANALYST_DECISIONS_TABLE, apply_analyst_decisions, latest_decisions
from jobs.lake import dates_predicate, require_columns
from jobs.pipeline import PipelineError, RunContext, StageResult
from jobs.policy.engine import DECISIONS_DDL, decide_partitions
from jobs.policy.schema import PolicyLoadError, PolicySet, load_policy_set, resolve_policies_dir
from jobs.privacy import resolve_pseudonyms
from jobs.schemas import DECISION_LOG, ENTITY_RISK, POLICY_RECOMMENDATIONS, SIGNAL
from jobs.spark import Checkpoints

ENTITY_RISK_TABLE = "gold.entity_risk"
SOURCE_STATUS_TABLE = "ops.source_status"
RECOMMENDATIONS_TABLE = "gold.policy_recommendations"
DECISION_LOG_TABLE = "gold.decision_log"
# CDF on from the first commit; no deletion vectors, so delta-rs and DuckDB read every version.
RECOMMENDATIONS_PROPERTIES = {
    "delta.enableChangeDataFeed": "true",
    "delta.enableDeletionVectors": "false",
}
COMMIT_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"


def load_policies_or_fail(directory: Path) -> PolicySet:
    try:
        return load_policy_set(directory)
    except PolicyLoadError as exc:
        raise PipelineError(f"recommend: policy set not loaded, nothing written: {exc}") from None


# --- transforms (pure) ----------------------------------------------------------------


def engine_input(entity_risk: DataFrame) -> DataFrame:
    """gold.entity_risk as the engine reads it: arrays as JSON text, run_date as ISO text."""
    return entity_risk.select(
        F.date_format("run_date", "yyyy-MM-dd").alias("run_date"),
        "entity_type",
        "entity_id",
        "risk",
        "risk_today",
        F.to_json(F.coalesce("reasons", F.array().cast("array<string>"))).alias("reasons_json"),
        F.to_json(F.coalesce("signals", F.array().cast(ArrayType(SIGNAL)))).alias("signals_json"),
        "sessions",
        F.to_json(F.coalesce("degraded_sources", F.array().cast("array<string>"))).alias(
            "degraded_sources_json"
        ),
        "peer_group",
        "user_type",
        "is_privileged",
        "asset_criticality",
    )


def _nullable(data_type: DataType) -> DataType:
    if isinstance(data_type, StructType):
        return StructType(
            [StructField(f.name, _nullable(f.dataType), True) for f in data_type.fields]
        )
    if isinstance(data_type, ArrayType):
        return ArrayType(_nullable(data_type.elementType), True)
    return data_type


def conform(df: DataFrame, schema: StructType, where: str) -> DataFrame:
    """`require_columns` up to nullability: Delta reads nested fields back as nullable, and
    from_json makes them nullable, so `signals[].name NOT NULL` cannot be compared exactly."""
    loose = StructType([StructField(f.name, _nullable(f.dataType), True) for f in schema.fields])
    have = StructType([StructField(f.name, _nullable(f.dataType), True) for f in df.schema.fields])
    return require_columns(
        df.select([F.col(f.name).cast(f.dataType) for f in have.fields]), loose, where
    )


def evaluate(
    entity_risk: DataFrame, policy_set: PolicySet, degraded_by_date: Mapping[str, Sequence[str]]
) -> DataFrame:
    """One row per (entity, applicable policy), typed; evaluated on the executors."""
    run = decide_partitions(
        policy_set.compiled, policy_set.guardrails, policy_set.exceptions, degraded_by_date
    )
    return (
        engine_input(entity_risk)
        .mapInPandas(run, DECISIONS_DDL)
        .withColumn("run_date", F.to_date("run_date"))
        .withColumn("signals", F.from_json("signals_json", ArrayType(SIGNAL)))
        .withColumn(
            "exceptions_checked", F.from_json("exceptions_checked_json", ArrayType(StringType()))
        )
        .withColumn(
            "expired_exceptions", F.from_json("expired_exceptions_json", ArrayType(StringType()))
        )
        .drop("signals_json", "exceptions_checked_json", "expired_exceptions_json")
    )


def decision_log_frame(decisions: DataFrame) -> DataFrame:
    return conform(decisions, DECISION_LOG, "recommend: gold.decision_log output")


def recommendations_frame(decisions: DataFrame, latest: DataFrame | None = None) -> DataFrame:
    """Non-allow decisions, one row per rec_id, with validity times and analyst status.

    Several policies can reach the same action for the same target on a day (identity
    and cloud both `block` a user): rec_id is the same, so they become one row, owned by
    the enforcing (non-shadow) policy of the first domain, with every domain in `domains`.
    """
    acted = decisions.where(F.col("action") != "allow")
    primary = Window.partitionBy("rec_id").orderBy(
        (F.col("policy_mode") == "shadow").asc(),
        F.col("domain_rank").asc(),
        F.col("policy_id").asc(),
    )
    valid_from = F.to_timestamp(F.date_add("run_date", 1))
    recs = (
        acted.withColumn(
            "domains",
            F.array_sort(F.collect_set("domain").over(Window.partitionBy("rec_id"))),
        )
        .withColumn("_n", F.row_number().over(primary))
        .where("_n = 1")
        .withColumn("valid_from", valid_from)
        .withColumn(
            "valid_until",
            F.timestamp_seconds(
                F.unix_timestamp(valid_from) + F.col("valid_for_hours").cast("long") * 3600
            ),
        )
    )
    return conform(
        apply_analyst_decisions(recs, latest),
        POLICY_RECOMMENDATIONS,
        "recommend: gold.policy_recommendations output",
    )


# --- I/O ------------------------------------------------------------------------------


def latest_version(spark: SparkSession, path: str) -> int:
    """The table's current Delta version (recorded so readers can time-travel to it)."""
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])  # type: ignore[index]


def degraded_sources_by_date(ctx: RunContext, dates: Sequence[date]) -> dict[str, list[str]]:
    """Sources ops.source_status marks degraded or missing, per date (a handful of rows)."""
    if not ctx.lake.exists(SOURCE_STATUS_TABLE):
        return {}
    rows = (
        ctx.lake.read_dates(SOURCE_STATUS_TABLE, dates)
        .where(F.col("status").isin("degraded", "missing"))
        .select(F.date_format("run_date", "yyyy-MM-dd").alias("d"), "source")
        .distinct()
        .collect()
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["d"], []).append(r["source"])
    return {k: sorted(v) for k, v in out.items()}


def ensure_recommendations_table(spark: SparkSession, path: str) -> None:
    from delta.tables import DeltaTable

    builder = (
        DeltaTable.createIfNotExists(spark)
        .location(path)
        .addColumns(POLICY_RECOMMENDATIONS)
        .partitionedBy("run_date")
    )
    for key, value in RECOMMENDATIONS_PROPERTIES.items():
        builder = builder.property(key, value)
    builder.execute()


def merge_recommendations(
    spark: SparkSession,
    path: str,
    recs: DataFrame,
    dates: Sequence[date],
) -> None:
    """MERGE the dates' recommendations: insert new, update changed, delete gone; untouched rows stay.

    The source holds only rows that differ from the table: new or changed ones, and ones
    that left the dates' result marked `_gone` (a `whenNotMatchedBySource` clause would
    make Delta rewrite every file of the dates). An unchanged re-run therefore rewrites
    no file and adds no version, so CDF consumers see nothing.
    """
    from delta.tables import DeltaTable

    ensure_recommendations_table(spark, path)
    columns = [f.name for f in POLICY_RECOMMENDATIONS.fields]
    changed = " OR ".join(
        f"NOT (t.{c} <=> s.{c})" for c in columns if c not in ("rec_id", "run_date")
    )
    in_dates = dates_predicate("t.run_date", dates)
    current = (
        spark.read.format("delta")
        .load(path)
        .where(dates_predicate("run_date", dates))
        .select(*columns)
    )
    # Only new, changed and withdrawn rows enter the MERGE: Delta rewrites every file holding
    # a row the source matches, so unchanged rows must not be in the source at all.
    changed_or_new = recs.select(*columns).exceptAll(current)
    gone = current.select("rec_id", "run_date").join(recs.select("rec_id"), "rec_id", "left_anti")
    source = changed_or_new.withColumn("_gone", F.lit(False)).unionByName(
        gone.withColumn("_gone", F.lit(True)), allowMissingColumns=True
    )
    values: dict[str, str | Column] = {c: f"s.{c}" for c in columns}
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(source.alias("s"), f"t.rec_id = s.rec_id AND t.run_date = s.run_date AND {in_dates}")
        .whenMatchedDelete(condition="s._gone")
        .whenMatchedUpdate(condition=f"NOT s._gone AND ({changed})", set=values)
        .whenNotMatchedInsert(condition="NOT s._gone", values=values)
        .execute()
    )


def run_recommend(
    ctx: RunContext, dates: list[date], *, policies_dir: Path | str | None = None
) -> StageResult:
    """Stage entry: evaluate policies over gold.entity_risk for `dates`, write both outputs."""
    directory = resolve_policies_dir(ctx.settings, policies_dir)
    policy_set = load_policies_or_fail(directory)
    audit_key()  # audit (jobs/audit.py): a bad POLICYLAKE_AUDIT_KEY stops before any write
    lake, spark = ctx.lake, ctx.spark
    if not lake.exists(ENTITY_RISK_TABLE):
        raise PipelineError(
            f"recommend: {ENTITY_RISK_TABLE} does not exist; run the score stage first"
        )
    risk_version = latest_version(spark, lake.path(ENTITY_RISK_TABLE))
    entity_risk = conform(
        lake.read(ENTITY_RISK_TABLE, version=risk_version).where(
            dates_predicate("run_date", dates)
        ),
        ENTITY_RISK,
        f"recommend: {ENTITY_RISK_TABLE} input",
    )
    # BEGIN privacy (jobs/privacy.py): pseudonymized entity risk gets its real ids back before
    # policies and guardrails (allowlists, break-glass) see it; outputs keep real ids
    entity_risk = resolve_pseudonyms(lake, entity_risk, ENTITY_RISK_TABLE)
    # END privacy
    degraded = degraded_sources_by_date(ctx, dates)
    with Checkpoints() as keep:
        decisions = keep(evaluate(entity_risk, policy_set, degraded))
        # One small aggregate (dates x actions x statuses) answers every check and count.
        summary = (
            decisions.groupBy("run_date", "action", "status")
            .agg(
                F.count(F.lit(1)).alias("n"),
                F.array_distinct(F.flatten(F.collect_list("expired_exceptions"))).alias("expired"),
            )
            .collect()
        )
        absent = sorted(d.isoformat() for d in set(dates) - {r["run_date"] for r in summary})
        if absent:
            raise PipelineError(
                f"recommend: {ENTITY_RISK_TABLE} has no entity a policy applies to on "
                f"{', '.join(absent)}; run the score stage first"
            )
        latest = None
        if lake.exists(ANALYST_DECISIONS_TABLE):
            latest = latest_decisions(lake.read_dates(ANALYST_DECISIONS_TABLE, dates))
        recs = recommendations_frame(decisions, latest)
        statuses = {r["status"]: r["count"] for r in recs.groupBy("status").count().collect()}
        metadata = {
            "stage": "recommend",
            "dates": sorted(d.isoformat() for d in dates),
            "entity_risk_version": risk_version,
            "policies": {p.compiled.id: p.compiled.version for p in policy_set.policies},
        }
        # Both commits carry `metadata` (Delta userMetadata) so `policy diff` can replay the
        # entity_risk version they read. The log goes first: every recommendation a
        # consumer sees already has its explanation.
        spark.conf.set(COMMIT_METADATA_CONF, json.dumps(metadata, sort_keys=True))
        try:
            lake.replace_dates(decision_log_frame(decisions), DECISION_LOG_TABLE, dates)
            merge_recommendations(spark, lake.path(RECOMMENDATIONS_TABLE), recs, dates)
        finally:
            spark.conf.unset(COMMIT_METADATA_CONF)
    # BEGIN audit (jobs/audit.py, docs/audit.md): hash-chain the decision log just written
    chain = record_chain(ctx, dates)
    # END audit

    actions: dict[str, int] = {}
    for r in summary:
        actions[r["action"]] = actions.get(r["action"], 0) + r["n"]
    expired = sorted({e for r in summary for e in r["expired"]})
    expired_register = sorted(e.id for e in policy_set.exceptions if not e.active_on(max(dates)))
    return StageResult(
        stage="recommend",
        dates=list(dates),
        rows={
            RECOMMENDATIONS_TABLE: sum(statuses.values()),
            DECISION_LOG_TABLE: sum(actions.values()),
        },
        details={
            "policies": policy_set.summary(),
            "entity_risk_version": risk_version,
            "actions": actions,
            "statuses": statuses,
            "pending_approval": statuses.get("pending_approval", 0),
            "expired_exceptions": ",".join(expired_register) or "none",
            "expired_exceptions_matched": expired,
            "audit_chain": chain,  # audit: dates chained, relinked, heads
        },
    )
