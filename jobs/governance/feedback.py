"""The analyst feedback job: decision files -> `ops.analyst_decisions`, then the statuses of
the recommendations they decide, at once (enforcement polls them).

Files come from `policylake feedback --file` or the drop folder
`<raw_root>/analyst_decisions/<YYYY-MM-DD>/` (the feedback DAG). Every file is validated
as a whole before any is recorded (`jobs.governance.decisions`). A recommendation's status
is re-derived from the engine's status (gold.decision_log) and the latest decision of all
time, and written by the recommendations table's own writer.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pyspark.sql import functions as F

from jobs.core.context import RunContext, StageResult
from jobs.core.lake import dates_predicate
from jobs.core.tables import ANALYST_DECISIONS, DECISION_LOG, POLICY_RECOMMENDATIONS
from jobs.governance.decisions import (
    MAX_ERRORS_SHOWN,
    FeedbackError,
    latest_decisions,
    parse_decisions,
    record_decisions,
    resolved_status,
)
from jobs.stages.recommend.recommendations import update_statuses


def run_feedback(ctx: RunContext, path: Path | str) -> StageResult:
    """Ingest an analyst decisions file (CSV or JSON lines) and update recommendation statuses."""
    path = Path(path)
    decisions = parse_decisions(path)
    lake, spark = ctx.lake, ctx.spark
    if not lake.exists(POLICY_RECOMMENDATIONS):
        raise FeedbackError(
            f"{POLICY_RECOMMENDATIONS.name} does not exist yet; run the recommend stage first"
        )
    wanted = spark.createDataFrame([(d.rec_id,) for d in decisions], "rec_id string").distinct()
    known = {
        r["rec_id"]: r
        for r in lake.read(POLICY_RECOMMENDATIONS)
        .join(wanted, "rec_id")
        .select("rec_id", "run_date", "target_type", "target_id", "action", "policy_id")
        .collect()  # at most one row per line of the analyst's file
    }
    unknown = [(i, d.rec_id) for i, d in enumerate(decisions) if d.rec_id not in known]
    if unknown:
        shown = ", ".join(f"row {i + 1}: {rid[:12]}..." for i, rid in unknown[:MAX_ERRORS_SHOWN])
        more = (
            f" (+{len(unknown) - MAX_ERRORS_SHOWN} more)" if len(unknown) > MAX_ERRORS_SHOWN else ""
        )
        raise FeedbackError(
            f"{path}: rec_id not found in {POLICY_RECOMMENDATIONS.name}: {shown}{more}"
        )
    rows = spark.createDataFrame(
        [
            (
                d.decision_id,
                d.rec_id,
                known[d.rec_id]["run_date"],
                d.decision,
                d.override_action,
                d.verdict,
                d.analyst,
                d.reason,
                d.decided_at,
                known[d.rec_id]["target_type"],
                known[d.rec_id]["target_id"],
                known[d.rec_id]["action"],
                known[d.rec_id]["policy_id"],
                str(path),
            )
            for d in decisions
        ],
        ANALYST_DECISIONS.schema,
    )
    dates: list[date] = sorted({r["run_date"] for r in known.values()})
    record_decisions(lake, rows)

    # Re-derive the status of every recommendation these decisions touch: the engine's
    # status (decision log, owning policy) plus the latest decision of all time.
    touched = spark.createDataFrame(
        [(rid, r["run_date"], r["policy_id"]) for rid, r in known.items()],
        "rec_id string, run_date date, policy_id string",
    )
    history = lake.read(ANALYST_DECISIONS).join(touched.select("rec_id"), "rec_id")
    updated = (
        lake.read(DECISION_LOG)
        .where(dates_predicate("run_date", dates))
        .join(touched, ["rec_id", "run_date", "policy_id"])
        .join(latest_decisions(history), "rec_id")
        .select(
            "rec_id",
            "run_date",
            resolved_status(F.col("status"), F.col("analyst_decision")).alias("status"),
            F.when(F.col("analyst_decision") == "override", F.col("analyst_override_action"))
            .cast("string")
            .alias("override_action"),
        )
    )
    changed_recs = update_statuses(lake, updated, dates)
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d.decision] = counts.get(d.decision, 0) + 1
        if d.verdict:
            counts[d.verdict] = counts.get(d.verdict, 0) + 1
    return StageResult(
        stage="feedback",
        dates=dates,
        rows={ANALYST_DECISIONS.name: len(decisions), POLICY_RECOMMENDATIONS.name: changed_recs},
        details={"file": str(path), **counts},
    )
