"""Decisions: every applicable policy evaluated for every entity on the executors, then the
decision-log rows and the recommendation rows they make.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, StringType, StructField, StructType

from jobs.core.errors import PipelineError
from jobs.core.lake import require_columns
from jobs.core.tables import DECISION_LOG, POLICY_RECOMMENDATIONS, SIGNAL
from jobs.governance.decisions import action_of, apply_analyst_decisions, severity
from jobs.governance.privacy import TOKEN_ID_PATTERN
from jobs.policy.engine import DECISIONS_DDL, decide_partitions
from jobs.policy.schema import (
    BlastRadius,
    PolicyLoadError,
    PolicySet,
    load_policy_set,
    resolve_policies_dir,
)
from jobs.policy.vocabulary import DOMAINS


def load_policies_or_fail(directory: Path, require_guardrails: bool = True) -> PolicySet:
    try:
        return load_policy_set(directory, require_guardrails=require_guardrails)
    except PolicyLoadError as exc:
        raise PipelineError(f"recommend: policy set not loaded, nothing written: {exc}") from None


def policy_set_for(settings: Any, override: Path | str | None = None) -> PolicySet:
    """The configured policy set, or a one-line PipelineError: a configured folder that is
    missing, or a missing guardrails.yaml, stops recommend unless `policy.allow_missing`
    names it (fail closed)."""
    allowed = set(settings.policy.allow_missing) if settings is not None else set()
    try:
        directory = resolve_policies_dir(settings, override)
    except PolicyLoadError as exc:
        raise PipelineError(f"recommend: policy set not loaded, nothing written: {exc}") from None
    return load_policies_or_fail(directory, require_guardrails="guardrails" not in allowed)


def unresolved_pseudonyms() -> Column:
    """An aggregate: decisions whose account or host id is still a pseudonym token (guardrail
    patterns, exceptions and break-glass accounts can only match real ids)."""
    token = F.col("target_type").isin("user", "service_account", "host") & F.col("target_id").rlike(
        TOKEN_ID_PATTERN
    )
    return F.sum(F.when(token, 1).otherwise(0))


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


def conform_loose(df: DataFrame, schema: StructType, where: str) -> DataFrame:
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


APPROVED_BECAUSE = '"status":"approved","status_because":"no approval required"}'


def limit_blast_radius(decisions: DataFrame, rules: BlastRadius) -> DataFrame:
    """Automatically approved isolate/block beyond the run's limit wait for an analyst.

    Per run date and domain the limit is on entities: the lower of `max_new` and
    `max_share` x the entities the domain's policies evaluated (rounded up). Entities with
    an approved decision whose action is in `rules.actions` are ranked by risk (then type
    and id); the decisions of those past the limit get `pending_approval`, a `blast_radius`
    member in `guardrails` (what the metrics stage counts and alerts on) and a sentence in
    `reason`. Only those candidates are ranked: the shuffle is over the few high-impact
    decisions, not every entity.
    """
    target = ["run_date", "domain", "target_type", "target_id"]
    spark = decisions.sparkSession
    limits = spark.createDataFrame(
        [(d, *rules.limit(d)) for d in DOMAINS], "domain string, max_new int, max_share double"
    )
    entities = (
        decisions.select(*target)
        .distinct()
        .groupBy("run_date", "domain")
        .agg(F.count(F.lit(1)).alias("entities"))
        .join(F.broadcast(limits), "domain")
        .withColumn(
            "limit",
            F.least(F.col("max_new"), F.ceil(F.col("entities") * F.col("max_share")).cast("int")),
        )
    )
    candidate = (F.col("status") == "approved") & F.col("action").isin(list(rules.actions))
    rank = Window.partitionBy("run_date", "domain").orderBy(
        F.col("risk").desc(), "target_type", "target_id"
    )
    held = (
        decisions.where(candidate)
        .groupBy(*target)
        .agg(F.max("risk").alias("risk"))
        .withColumn("rank", F.row_number().over(rank))
        .join(F.broadcast(entities.select("run_date", "domain", "limit", "entities")),
              ["run_date", "domain"])
        .where(F.col("rank") > F.col("limit"))
        .select(*target, "rank", "limit", "entities", F.lit(True).alias("_held"))
    )  # fmt: skip
    joined = decisions.join(held, target, "left").withColumn(
        "_held", F.coalesce(F.col("_held"), F.lit(False)) & candidate
    )
    because = F.format_string(
        "blast-radius limit: at most %d automatic %s per run date in %s (of %d entities); "
        "this was number %d by risk",
        F.col("limit"),
        F.lit("/".join(rules.actions)),
        F.col("domain"),
        F.col("entities"),
        F.col("rank"),
    )
    tail = F.to_json(
        F.struct(
            F.struct(
                F.col("limit").alias("limit"),
                F.col("rank").alias("rank"),
                F.col("entities").alias("entities"),
            ).alias("blast_radius"),
            F.lit("pending_approval").alias("status"),
            because.alias("status_because"),
        )
    )
    prefix = F.expr(f"substring(guardrails, 1, length(guardrails) - {len(APPROVED_BECAUSE)})")
    guardrails = F.concat(prefix, F.expr("substring(_tail, 2)"))
    sentence = F.concat(F.lit("status pending_approval ("), because, F.lit(")"))
    reason = F.when(
        F.col("reason").contains("status approved (no approval required)"),
        F.regexp_replace("reason", r"status approved \(no approval required\)", sentence),
    ).otherwise(F.concat("reason", F.lit(" Then "), sentence, F.lit(".")))
    held_now = F.col("_held")
    # the engine writes guardrails as sorted compact JSON, so an approved decision's ends with
    # APPROVED_BECAUSE; anything else is still held, with the member added at the end
    rewritten = F.when(F.col("guardrails").endswith(APPROVED_BECAUSE), guardrails).otherwise(
        F.concat(F.expr("substring(guardrails, 1, length(guardrails) - 1)"), F.lit(","),
                 F.expr("substring(_tail, 2)"))
    )  # fmt: skip
    return (
        joined.withColumn("_tail", tail)
        .withColumn("reason", F.when(held_now, reason).otherwise(F.col("reason")))
        .withColumn("guardrails", F.when(held_now, rewritten).otherwise(F.col("guardrails")))
        .withColumn(
            "status", F.when(held_now, F.lit("pending_approval")).otherwise(F.col("status"))
        )
        .drop("_held", "_tail", "rank", "limit", "entities")
    )


def decision_log_frame(decisions: DataFrame) -> DataFrame:
    return conform_loose(decisions, DECISION_LOG.schema, "recommend: gold.decision_log output")


def resolved_recommendations(decisions: DataFrame, latest: DataFrame | None = None) -> DataFrame:
    """Non-allow decisions, one row per rec_id, with validity times and analyst status; the
    analyst columns and `_refused` (an override the guardrails overrule) are still there.

    Several policies can reach the same action for the same target on a day (identity
    and cloud both `block` a user): rec_id is the same, so they become one row, owned by
    the enforcing (non-shadow) policy of the first domain, with every domain in `domains`
    and the lowest `ceiling` of them (what an override may reach).
    """
    acted = decisions.where(F.col("action") != "allow")
    by_rec = Window.partitionBy("rec_id")
    primary = by_rec.orderBy(
        (F.col("policy_mode") == "shadow").asc(),
        F.col("domain_rank").asc(),
        F.col("policy_id").asc(),
    )
    valid_from = F.to_timestamp(F.date_add("run_date", 1))
    recs = (
        acted.withColumn("domains", F.array_sort(F.collect_set("domain").over(by_rec)))
        .withColumn("_lowest", F.min(severity(F.col("ceiling"))).over(by_rec))
        .withColumn("_unknown", F.max(F.col("ceiling").isNull().cast("int")).over(by_rec))
        .withColumn("_n", F.row_number().over(primary))
        .where("_n = 1")
        .withColumn("ceiling", F.when(F.col("_unknown") == 0, action_of(F.col("_lowest"))))
        .withColumn("valid_from", valid_from)
        .withColumn(
            "valid_until",
            F.timestamp_seconds(
                F.unix_timestamp(valid_from) + F.col("valid_for_hours").cast("long") * 3600
            ),
        )
    )
    return apply_analyst_decisions(recs, latest)


def recommendations_frame(decisions: DataFrame, latest: DataFrame | None = None) -> DataFrame:
    """`resolved_recommendations` as gold.policy_recommendations holds them."""
    return conform_loose(
        resolved_recommendations(decisions, latest),
        POLICY_RECOMMENDATIONS.schema,
        "recommend: gold.policy_recommendations output",
    )
