"""Recommend stage: gold.entity_risk -> policies + guardrails -> recommendations and decision log.

Extract: gold.entity_risk for the dates (at a recorded Delta version), the day's
degraded/missing sources (ops.source_status; no row means degraded) and model
(ops.model_evidence), and analyst decisions. Transform: `mapInPandas` evaluates every
applicable policy for every entity on the executors (policies are small picklable objects;
no entity row is collected to the driver), then the blast-radius limit holds back the
run's automatic isolate/block beyond `guardrails.yaml`'s limit.
Load: gold.decision_log (one row per entity and policy, allow included) replaces the
dates; gold.policy_recommendations (non-allow only, Change Data Feed on) is MERGEd on
rec_id and rewrites only rows that changed, so re-running a date emits no changes to
CDF consumers. The whole policy set is loaded and checked before any read: one
broken file stops the stage with a one-line error and nothing is written.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from pyspark.sql import functions as F

from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PipelineError, ReferenceDataError
from jobs.core.lake import dates_predicate
from jobs.core.spark import Checkpoints
from jobs.core.tables import (
    ANALYST_DECISIONS,
    DECISION_LOG,
    ENTITY_RISK,
    POLICY_RECOMMENDATIONS,
    PSEUDONYMS,
)
from jobs.governance.audit import audit_key_for, record_chain, refuse_chain_gaps
from jobs.governance.decisions import latest_decisions, record_refusals, refusals_from_frame
from jobs.governance.privacy import resolve_pseudonyms
from jobs.reference.files import asset_inventory, identity_directory
from jobs.stages.recommend.decisions import (
    conform_loose,
    decision_log_frame,
    evaluate,
    limit_blast_radius,
    policy_set_for,
    resolved_recommendations,
    unresolved_pseudonyms,
)
from jobs.stages.recommend.inputs import degraded_sources_by_date
from jobs.stages.recommend.recommendations import merge_recommendations

COMMIT_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
# what `refusals_from_frame` needs of an overruled override
OVERRULED_COLUMNS = ("run_date", "rec_id", "status", "policy_mode", "ceiling",
                     "analyst_override_action", "analyst_name", "analyst_decided_at",
                     "analyst_source_file")  # fmt: skip


# --- I/O ------------------------------------------------------------------------------


def require_reference_data(ctx: RunContext) -> None:
    """Stop unless the identity directory and the asset inventory are there (privileged
    accounts and asset criticality decide what waits for approval), or
    `policy.allow_missing` names the missing one: missing reference data fails closed."""
    allowed = set(ctx.settings.policy.allow_missing)
    for name, read in (
        ("identity_directory", identity_directory),
        ("asset_inventory", asset_inventory),
    ):
        if name in allowed:
            continue
        try:
            read(ctx.spark, ctx.settings).schema  # noqa: B018 - resolve the path now
        except ReferenceDataError as exc:
            raise PipelineError(
                f"recommend: {exc}; without it privileged accounts and critical assets are "
                f"not recognised, so nothing is decided (policy.allow_missing: [{name}] runs "
                "without it)"
            ) from None


def run_recommend(
    ctx: RunContext, dates: list[date], *, policies_dir: Path | str | None = None
) -> StageResult:
    """Stage entry: evaluate policies over gold.entity_risk for `dates`, write both outputs."""
    policy_set = policy_set_for(ctx.settings, policies_dir)
    # a bad (or, in prod, missing) POLICYLAKE_AUDIT_KEY, or a chain that would link over
    # days the lake lost, stop the stage before any write (docs/audit.md)
    audit_key_for(ctx.settings)
    refuse_chain_gaps(ctx, dates, ctx.accept_audit_gap)
    require_reference_data(ctx)
    lake, spark = ctx.lake, ctx.spark
    if not lake.exists(ENTITY_RISK):
        raise PipelineError(f"recommend: {ENTITY_RISK} does not exist; run the score stage first")
    risk_version = lake.version(ENTITY_RISK)
    entity_risk = conform_loose(
        lake.read(ENTITY_RISK, version=risk_version).where(dates_predicate("run_date", dates)),
        ENTITY_RISK.schema,
        f"recommend: {ENTITY_RISK.name} input",
    )
    # pseudonymized entity risk gets its real ids back before policies and guardrails
    # (allowlists, break-glass) see it; outputs keep real ids (docs/privacy.md)
    entity_risk = resolve_pseudonyms(lake, entity_risk, ENTITY_RISK)
    degraded = degraded_sources_by_date(ctx, dates)
    with Checkpoints() as keep:
        decisions = keep(
            limit_blast_radius(
                evaluate(entity_risk, policy_set, degraded), policy_set.guardrails.blast_radius
            )
        )
        # One small aggregate (dates x actions x statuses) answers every check and count.
        summary = (
            decisions.groupBy("run_date", "action", "status")
            .agg(
                F.count(F.lit(1)).alias("n"),
                F.array_distinct(F.flatten(F.collect_list("expired_exceptions"))).alias("expired"),
                unresolved_pseudonyms().alias("unresolved"),
                F.sum(
                    F.when(F.col("guardrails").contains('"blast_radius":'), 1).otherwise(0)
                ).alias("held"),
            )
            .collect()
        )
        unresolved = sum(int(r["unresolved"] or 0) for r in summary)
        if unresolved:
            raise PipelineError(
                f"recommend: {unresolved} decision(s) are about pseudonym tokens that "
                f"{PSEUDONYMS} does not resolve, so allowlists, exceptions and break-glass "
                "accounts cannot match them; nothing written (re-run score with the key that "
                "made the tokens)"
            )
        # A quiet day (no scored entity falls under any policy) is not an error: the date's
        # decision log and recommendations become empty, and the result says so.
        quiet = sorted(d.isoformat() for d in set(dates) - {r["run_date"] for r in summary})
        latest = None
        if lake.exists(ANALYST_DECISIONS):
            latest = latest_decisions(lake.read_dates(ANALYST_DECISIONS, dates))
        resolved = resolved_recommendations(decisions, latest)
        recs = conform_loose(
            resolved, POLICY_RECOMMENDATIONS.schema, "recommend: gold.policy_recommendations output"
        )
        statuses: dict[str, int] = {}
        overruled_count = 0
        for r in resolved.groupBy("status", "_refused").count().collect():  # a handful
            statuses[r["status"]] = statuses.get(r["status"], 0) + r["count"]
            overruled_count += r["count"] if r["_refused"] else 0
        # an earlier override the guardrails overrule now (a new break-glass account, a policy
        # moved to shadow): the engine's status stands and the refusal is recorded
        overruled = (
            refusals_from_frame(
                resolved.where("_refused").select(*OVERRULED_COLUMNS).collect(), "recommend"
            )
            if overruled_count
            else []
        )
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
            lake.replace_dates(decision_log_frame(decisions), DECISION_LOG, dates)
            merge_recommendations(lake, recs, dates)
        finally:
            spark.conf.unset(COMMIT_METADATA_CONF)
    record_refusals(lake, overruled)
    # hash-chain the decision log just written (docs/audit.md)
    chain = record_chain(ctx, dates)

    actions: dict[str, int] = {}
    for r in summary:
        actions[r["action"]] = actions.get(r["action"], 0) + r["n"]
    expired = sorted({e for r in summary for e in r["expired"]})
    expired_register = sorted(e.id for e in policy_set.exceptions if not e.active_on(max(dates)))
    return StageResult(
        stage="recommend",
        dates=list(dates),
        rows={
            POLICY_RECOMMENDATIONS.name: sum(statuses.values()),
            DECISION_LOG.name: sum(actions.values()),
        },
        details={
            "policies": policy_set.summary(),
            "entity_risk_version": risk_version,
            "actions": actions,
            "statuses": statuses,
            "pending_approval": statuses.get("pending_approval", 0),
            "overrides_overruled": len(overruled),
            # isolate/block the blast-radius limit sent to pending_approval (docs/policies.md)
            "blast_radius_held": sum(int(r["held"] or 0) for r in summary),
            "expired_exceptions": ",".join(expired_register) or "none",
            "expired_exceptions_matched": expired,
            "audit_chain": chain,  # audit: dates chained, relinked, heads
            "quiet_dates": ",".join(quiet) or "none",
            "note": (
                f"no scored entity falls under any policy on {', '.join(quiet)}: "
                "no recommendations for those dates"
                if quiet
                else ""
            ),
        },
    )
