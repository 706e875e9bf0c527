"""The analyst feedback job: decision files -> `ops.analyst_decisions`, then the statuses of
the recommendations they decide, at once (enforcement polls them).

Files come from `policylake feedback --file` or the drop folder
`<paths.analyst_decisions>/<YYYY-MM-DD>/` (the feedback DAG). Every file is validated as a
whole before any is recorded (`jobs.governance.decisions`); then each decision is
authenticated against the operator's key registry, bounded in time and checked against the
guardrails, and refused decisions go to `ops.refused_decisions` instead. A
recommendation's status is re-derived from the engine's status (gold.decision_log) and the
latest accepted decision of all time, and written by the recommendations table's own writer.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from jobs.core.context import RunContext, StageResult
from jobs.core.lake import dates_predicate
from jobs.core.tables import (
    ANALYST_DECISIONS,
    DECISION_LOG,
    POLICY_RECOMMENDATIONS,
    REFUSED_DECISIONS,
)
from jobs.governance.decisions import (
    MAX_ERRORS_SHOWN,
    AnalystDecisionIn,
    FeedbackError,
    RefusedDecision,
    action_of,
    authenticate,
    guardrail_refusal,
    latest_decisions,
    load_analyst_registry,
    override_allowed,
    parse_decision_lines,
    record_decisions,
    record_refusals,
    refused,
    resolved_status,
    severity,
    time_refusal,
)
from jobs.policy.vocabulary import SEVERITY
from jobs.stages.recommend.recommendations import update_statuses


def _ceilings(ctx: RunContext, rec_ids: list[str], dates: list[date]) -> dict[str, Any]:
    """Per rec_id: the owning policy's engine status and mode, and the lowest ceiling of the
    policies that reached it (from gold.decision_log: a handful of rows per decision)."""
    spark = ctx.spark
    wanted = spark.createDataFrame([(r,) for r in rec_ids], "rec_id string")
    rows = (
        ctx.lake.read(DECISION_LOG)
        .where(dates_predicate("run_date", dates))
        .join(wanted, "rec_id")
        .select(
            "rec_id",
            "policy_id",
            "status",
            "policy_mode",
            F.get_json_object("guardrails", "$.ceiling").alias("ceiling"),
        )
        .collect()
    )
    out: dict[str, Any] = {}
    for r in rows:
        out.setdefault(r["rec_id"], []).append(r.asDict())
    return out


def run_feedback(
    ctx: RunContext,
    path: Path | str,
    run_date: date | None = None,
    now: datetime | None = None,
) -> StageResult:
    """Ingest an analyst decisions file (CSV or JSON lines) and update recommendation statuses.

    `run_date` dates the refusals (the drop folder's day; default the UTC day of `now`);
    `now` bounds `decided_at` (default the wall clock)."""
    path = Path(path)
    settings = ctx.settings
    lines = parse_decision_lines(path)
    registry = load_analyst_registry(settings.paths)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    run_date = run_date or now.date()
    skew = timedelta(minutes=settings.feedback.max_clock_skew_minutes)
    source = str(path)
    refusals: list[RefusedDecision] = []
    checked: list[tuple[int, AnalystDecisionIn]] = []
    for line, d in lines:
        why = authenticate(d, registry) or time_refusal(d, now, skew, None)
        if why is None:
            checked.append((line, d))
        else:
            refusals.append(refused(line, d, why, run_date, source))

    lake, spark = ctx.lake, ctx.spark
    if not lake.exists(POLICY_RECOMMENDATIONS):
        raise FeedbackError(
            f"{POLICY_RECOMMENDATIONS.name} does not exist yet; run the recommend stage first"
        )
    known: dict[str, Any] = {}
    if checked:
        wanted = spark.createDataFrame(
            [(d.rec_id,) for _, d in checked], "rec_id string"
        ).distinct()
        known = {
            r["rec_id"]: r
            for r in lake.read(POLICY_RECOMMENDATIONS)
            .join(wanted, "rec_id")
            .select(
                "rec_id", "run_date", "target_type", "target_id", "action", "policy_id",
                "valid_from",
            )
            .collect()  # at most one row per line of the analyst's file
        }  # fmt: skip
    unknown = [(line, d.rec_id) for line, d in checked if d.rec_id not in known]
    if unknown:
        shown = ", ".join(f"line {i}: {rid[:12]}..." for i, rid in unknown[:MAX_ERRORS_SHOWN])
        more = (
            f" (+{len(unknown) - MAX_ERRORS_SHOWN} more)" if len(unknown) > MAX_ERRORS_SHOWN else ""
        )
        raise FeedbackError(
            f"{path}: rec_id not found in {POLICY_RECOMMENDATIONS.name}: {shown}{more}"
        )
    dates: list[date] = sorted({r["run_date"] for r in known.values()})
    policies = _ceilings(ctx, sorted(known), dates) if known else {}
    accepted: list[AnalystDecisionIn] = []
    for line, d in checked:
        rec = known[d.rec_id]
        rows = policies.get(d.rec_id, [])
        owner = next((r for r in rows if r["policy_id"] == rec["policy_id"]), None)
        ceilings = [r["ceiling"] for r in rows]
        ceiling = (
            None if not ceilings or None in ceilings else min(ceilings, key=lambda c: SEVERITY[c])
        )
        why = time_refusal(d, now, skew, rec["valid_from"]) or guardrail_refusal(
            d.decision,
            d.override_action,
            owner["status"] if owner else "unknown",
            owner["policy_mode"] if owner else None,
            ceiling,
        )
        if why is None:
            accepted.append(d)
        else:
            refusals.append(refused(line, d, why, run_date, source))
    record_refusals(lake, refusals)

    changed_recs = 0
    if accepted:
        rows_df = spark.createDataFrame(
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
                    source,
                )
                for d in accepted
            ],
            ANALYST_DECISIONS.schema,
        )
        record_decisions(lake, rows_df)
        changed_recs = _refresh_statuses(ctx, {d.rec_id: known[d.rec_id] for d in accepted})
    counts: dict[str, int] = {}
    for d in accepted:
        counts[d.decision] = counts.get(d.decision, 0) + 1
        if d.verdict:
            counts[d.verdict] = counts.get(d.verdict, 0) + 1
    rules: dict[str, int] = {}
    for r in refusals:
        rules[r.rule] = rules.get(r.rule, 0) + 1
    return StageResult(
        stage="feedback",
        dates=sorted({known[d.rec_id]["run_date"] for d in accepted}),
        rows={
            ANALYST_DECISIONS.name: len(accepted),
            POLICY_RECOMMENDATIONS.name: changed_recs,
            REFUSED_DECISIONS.name: len(refusals),
        },
        details={"file": source, **counts, "refused": len(refusals), "refused_rules": rules},
    )


def _refresh_statuses(ctx: RunContext, touched_recs: dict[str, Any]) -> int:
    """Re-derive the status of every recommendation these decisions touch: the engine's
    status (decision log, owning policy) plus the latest accepted decision of all time,
    an override only within the policy's mode and the target's ceiling."""
    lake, spark = ctx.lake, ctx.spark
    dates: list[date] = sorted({r["run_date"] for r in touched_recs.values()})
    touched = spark.createDataFrame(
        [(rid, r["run_date"], r["policy_id"]) for rid, r in touched_recs.items()],
        "rec_id string, run_date date, policy_id string",
    )
    history = lake.read(ANALYST_DECISIONS).join(touched.select("rec_id"), "rec_id")
    log = lake.read(DECISION_LOG).where(dates_predicate("run_date", dates))
    lowest = (
        log.join(touched.select("rec_id", "run_date"), ["rec_id", "run_date"])
        .groupBy("rec_id", "run_date")
        .agg(
            F.min(severity(F.get_json_object("guardrails", "$.ceiling"))).alias("_lowest"),
            F.max(F.get_json_object("guardrails", "$.ceiling").isNull().cast("int")).alias(
                "_unknown"
            ),
        )
    )
    ceiling = F.when(F.col("_unknown") == 0, action_of(F.col("_lowest")))
    ok = override_allowed(
        F.col("policy_mode"), F.col("status"), ceiling, F.col("analyst_override_action")
    )
    updated = (
        log.join(touched, ["rec_id", "run_date", "policy_id"])
        .join(lowest, ["rec_id", "run_date"])
        .join(latest_decisions(history), "rec_id")
        .select(
            "rec_id",
            "run_date",
            resolved_status(F.col("status"), F.col("analyst_decision"), ok).alias("status"),
            F.when((F.col("analyst_decision") == "override") & ok, F.col("analyst_override_action"))
            .cast("string")
            .alias("override_action"),
        )
    )
    return update_statuses(lake, updated, dates)
