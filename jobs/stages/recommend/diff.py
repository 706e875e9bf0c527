"""`policy diff`: replay a past date under changed policies and list what would change.

The replay reads gold.entity_risk as it was when that date's recommendations were
written: every recommend run records `entity_risk_version` in the Delta commit metadata
of gold.decision_log (written on every run, unlike the recommendations MERGE, which
adds no version when nothing changed), so the latest commit that covered the date
names the version to time-travel to. Dates never recommended fall back to the current
version, and the result says which basis it used.

Old side: gold.decision_log for the date (the engine's action and status, before any
analyst decision). New side: the same engine over the changed policy folder. Both are
compared per (target_type, target_id, domain), keeping each side's most severe action.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.core.context import RunContext
from jobs.core.errors import PipelineError
from jobs.core.tables import DECISION_LOG, ENTITY_RISK
from jobs.policy.vocabulary import ACTIONS
from jobs.stages.recommend.decisions import evaluate, load_policies_or_fail
from jobs.stages.recommend.inputs import degraded_sources_by_date

KEY = ["target_type", "target_id", "domain"]


@dataclass
class PolicyDiff:
    run_date: date
    entity_risk_version: int
    basis: str  # "as written" | "current (no recorded version)"
    counts: dict[str, int] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    policies: str = ""

    @property
    def changed(self) -> int:
        return sum(self.counts.values())


def recorded_entity_risk_version(ctx: RunContext, run_date: date) -> int | None:
    """The entity_risk version the latest recommend run covering `run_date` read."""
    if not ctx.lake.exists(DECISION_LOG):
        return None
    history = (
        DeltaTable.forPath(ctx.spark, ctx.lake.path(DECISION_LOG))
        .history()
        .where(F.col("userMetadata").isNotNull())
        .select("version", "userMetadata")
        .orderBy(F.col("version").desc())
        .collect()
    )
    for row in history:
        try:
            meta = json.loads(row["userMetadata"])
        except (TypeError, ValueError):
            continue
        if isinstance(meta, dict) and run_date.isoformat() in meta.get("dates", []):
            version = meta.get("entity_risk_version")
            return int(version) if version is not None else None
    return None


def _severity() -> Any:
    return F.array_position(F.array(*[F.lit(a) for a in ACTIONS]), F.col("action"))


def strongest_per_key(decisions: DataFrame) -> DataFrame:
    """Non-allow decisions, the most severe per (target_type, target_id, domain)."""
    order = Window.partitionBy(*KEY).orderBy(_severity().desc(), F.col("policy_id"))
    return (
        decisions.where(F.col("action") != "allow")
        .withColumn("_n", F.row_number().over(order))
        .where("_n = 1")
        .select(*KEY, "action", "status", "policy_id", "risk")
    )


def compare(old: DataFrame, new: DataFrame) -> DataFrame:
    """Rows that differ: added, removed, or changed action/status."""
    o = strongest_per_key(old).select(
        *KEY, *[F.col(c).alias(f"old_{c}") for c in ("action", "status", "policy_id", "risk")]
    )
    n = strongest_per_key(new).select(
        *KEY, *[F.col(c).alias(f"new_{c}") for c in ("action", "status", "policy_id", "risk")]
    )
    joined = o.join(n, KEY, "full_outer")
    change = (
        F.when(F.col("old_action").isNull(), F.lit("added"))
        .when(F.col("new_action").isNull(), F.lit("removed"))
        .when(F.col("old_action") != F.col("new_action"), F.lit("action changed"))
        .when(~F.col("old_status").eqNullSafe(F.col("new_status")), F.lit("status changed"))
    )
    return joined.withColumn("change", change).where(F.col("change").isNotNull())


def diff_date(
    ctx: RunContext, run_date: date, policies_dir: Path | str, limit: int = 200
) -> PolicyDiff:
    """Replay `run_date` under the policies in `policies_dir` against what was decided."""
    policy_set = load_policies_or_fail(Path(policies_dir))
    lake = ctx.lake
    if not lake.exists(ENTITY_RISK):
        raise PipelineError(f"policy diff: {ENTITY_RISK} does not exist in {lake.root}")
    version = recorded_entity_risk_version(ctx, run_date)
    basis = "as written"
    if version is None:
        version, basis = (
            lake.version(ENTITY_RISK),
            "current (no recorded version)",
        )
    entity_risk = lake.read(ENTITY_RISK, version=version).where(
        F.col("run_date") == F.lit(run_date)
    )
    new = evaluate(entity_risk, policy_set, degraded_sources_by_date(ctx, [run_date]))
    if lake.exists(DECISION_LOG):
        old = lake.read(DECISION_LOG).where(F.col("run_date") == F.lit(run_date))
    else:
        old = new.limit(0)
    diff = compare(old, new).cache()
    try:
        counts = {r["change"]: r["count"] for r in diff.groupBy("change").count().collect()}
        rows = [r.asDict() for r in diff.orderBy("change", *KEY).limit(limit).collect()]
    finally:
        diff.unpersist()
    return PolicyDiff(run_date, version, basis, counts, rows, policy_set.summary())
