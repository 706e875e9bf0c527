"""Score stage: sessions with explainable signals, a model score, risk 0-100 and reasons.

silver.events (+ gold.baselines, ops.source_status, the MLflow champion)
  -> gold.session_scores   one row per session / entity-day view
  -> gold.entity_risk      one row per user, host, service account and IP, with decay
  -> ops.model_evidence    one row per date: the model version and file digest scored with,
                           or why none (docs/scoring.md, "Model evidence")

Risk of a session = its signals' points plus the model's points, capped at 100. Risk of an
entity for a day combines that day's evidence (each signal counted once, at its strongest)
with the days before, decayed with a half-life (docs/scoring.md). Only `run_score` does I/O.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PipelineError, ReferenceDataError
from jobs.core.lake import conform, dates_predicate
from jobs.core.spark import Checkpoints
from jobs.core.tables import (
    BASELINES,
    ENTITY_RISK,
    MODEL_EVIDENCE,
    SESSION_SCORES,
    SILVER_EVENTS,
    SOURCE_STATUS,
    Table,
)
from jobs.detections.compiler import CompiledRule, compile_rules
from jobs.detections.evaluate import usable_rules
from jobs.detections.rules import load_rules, resolve_rules_dirs
from jobs.governance.audit import audit_key
from jobs.governance.privacy import Pseudonymizer, resolve_pseudonyms
from jobs.model.registry import Champion, RegistryUnavailableError, load_champion
from jobs.reference.files import asset_inventory, identity_directory, network_ranges
from jobs.stages.score.detections import detection_matches, detection_signals, rule_catalogue
from jobs.stages.score.model_evidence import (
    CHAMPION,
    INCOMPATIBLE,
    NONE,
    UNAVAILABLE,
    ModelUse,
    evidence_rows,
)
from jobs.stages.score.risk import (
    decayed_entity_risk,
    degraded_sources,
    entity_day_risk,
    entity_metadata,
    history_window_days,
    score_sessions,
)
from jobs.stages.score.views import build_views, session_frame, signal_rows

log = logging.getLogger(__name__)


def _read_or_empty(ctx: RunContext, table: Table, dates: list[date]) -> DataFrame:
    lake = ctx.lake
    if lake.exists(table):
        return conform(lake.read_dates(table, dates), table)
    return ctx.spark.createDataFrame([], table.schema)


def _reference(ctx: RunContext) -> tuple[DataFrame | None, DataFrame | None, list[str] | None]:
    """Directory, inventory and the offices' egress CIDRs; None for whatever is missing."""
    found: list[DataFrame | None] = []
    for read in (identity_directory, asset_inventory):
        try:
            df = read(ctx.spark, ctx.settings)
            df.schema  # noqa: B018 - resolve the path now, not at the first action
            found.append(df)
        except ReferenceDataError:
            found.append(None)
    try:
        ranges = network_ranges(ctx.spark, ctx.settings)
        # a handful of reference rows, not events
        office = [
            r[0] for r in ranges.where(F.col("kind") == "corporate_egress").select("cidr").collect()
        ]
    except ReferenceDataError:  # missing file: every known egress is ignored
        office = None
    return found[0], found[1], office


def _detection_rules(ctx: RunContext) -> tuple[list[CompiledRule], list[str]]:
    """The configured Sigma rules, compiled; notes name what was left out and why."""
    cfg = ctx.settings.detections
    if not cfg.enabled:
        return [], ["detections are turned off (detections.enabled)"]
    loaded = load_rules(resolve_rules_dirs(cfg.rules_dirs))
    compiled = compile_rules(loaded.rules)
    failed = [f for f in [*loaded.failures, *compiled.failures] if f.ingested]
    notes = [f"rule {f.name} skipped: {f.reason}" for f in failed]
    return compiled.rules, notes


def _history_days(baselines: DataFrame) -> DataFrame:
    """(run_date, entity_type, entity_id, history_days): days since each entity was first seen."""
    return baselines.select(
        "run_date",
        "entity_type",
        "entity_id",
        F.datediff(F.col("run_date"), F.col("first_seen")).alias("history_days"),
    )


def choose_model(ctx: RunContext) -> tuple[Champion | None, ModelUse]:
    """The champion to score with (resolved once, checked, loaded) and how to record it.

    A registry that cannot be reached fails the stage, unless `scoring.registry_unavailable`
    is `signals_only`: then the dates are scored on signals alone and recorded as degraded.
    A champion that is not what training registered (`UntrustedModelError`) always fails.
    """
    cfg = ctx.settings.scoring
    try:
        found = load_champion(ctx.settings, audit_key())
    except RegistryUnavailableError as exc:
        if cfg.registry_unavailable != "signals_only":
            raise RegistryUnavailableError(
                f"score: {exc} (scoring.registry_unavailable: signals_only scores without the "
                "model, recorded as degraded model evidence)"
            ) from exc
        log.warning("score: %s; scoring on signals alone (degraded model evidence)", exc)
        return None, ModelUse(
            cfg.model_name,
            UNAVAILABLE,
            f"registry unreachable ({exc}); scored on signals alone "
            "(scoring.registry_unavailable: signals_only)",
        )
    if isinstance(found, Champion):
        signed = "signed" if found.signed else "unsigned: POLICYLAKE_AUDIT_KEY not set"
        return found, ModelUse(
            found.name,
            CHAMPION,
            f"scored with {found.name} v{found.version} (sha256 {found.digest[:12]}.., {signed})",
            found.version,
            found.digest,
            found.signed,
        )
    return None, ModelUse(found.name, INCOMPATIBLE if found.incompatible else NONE, found.reason)


def _previous_evidence(ctx: RunContext, first: date) -> dict[str, object] | None:
    """The latest ops.model_evidence row before `first` (one small row), or None."""
    if not ctx.lake.exists(MODEL_EVIDENCE):
        return None
    before = ctx.lake.read(MODEL_EVIDENCE).where(F.col("run_date") < F.lit(first))
    latest = before.orderBy(F.col("run_date").desc()).limit(1).collect()
    return latest[0].asDict() if latest else None


def run_score(ctx: RunContext, dates: list[date]) -> StageResult:
    """Stage `score`: read silver/baselines/status and the champion, write both gold tables."""
    settings = ctx.settings
    cfg = settings.scoring
    lake = ctx.lake
    dates = sorted(set(dates))
    if not lake.exists(SILVER_EVENTS):
        raise PipelineError("score: silver.events does not exist; run normalize first")
    lookback = dates[0] - timedelta(days=1)
    events = conform(lake.read_dates(SILVER_EVENTS, [lookback, *dates]), SILVER_EVENTS)
    baselines = _read_or_empty(ctx, BASELINES, dates)
    status = _read_or_empty(ctx, SOURCE_STATUS, dates)
    accounts, assets, office_egress = _reference(ctx)
    # with privacy.pseudonymize on, both tables are written with identifiers tokenized, their
    # ops.pseudonyms rows first (docs/privacy.md)
    protect = Pseudonymizer.for_run(ctx, accounts, assets)

    def write(df: DataFrame, table: Table) -> None:
        if protect is None:
            lake.replace_dates(df, table, dates)
            return
        with protect.pseudonymized(df, table, dates) as protected:
            lake.replace_dates(protected, table, dates)

    owners = host_groups = None
    if assets is not None:
        owners = assets.where(
            (F.col("asset_type") == "workstation") & F.col("owner").contains("@")
        ).select("asset_id", F.lower("owner").alias("user_id"))
        host_groups = assets.select(
            "asset_id",
            F.concat(F.lit("hosts/"), F.coalesce("asset_type", F.lit("unknown"))).alias(
                "peer_group"
            ),
        )
    champion, use = choose_model(ctx)
    model = champion.model if champion is not None else None
    version = champion.version if champion is not None else None
    history_days = _history_days(baselines)  # read after the checkpoints below are released
    rules, notes = _detection_rules(ctx)
    today = events.where(F.expr(dates_predicate("run_date", dates)))
    usable = usable_rules(today, rules)
    notes += usable.skipped + [f"rule {f.name} skipped: {f.reason}" for f in usable.failures]

    # Checkpoint the shared intermediates: every signal reads them, and each is then one leaf
    # for the planner, which would otherwise re-plan the sessionisation in each branch.
    with Checkpoints() as keep:
        views = build_views(events, dates, cfg, keep=keep)
        baselines = keep(baselines)
        rows = signal_rows(views, events, baselines, dates, cfg, office_egress, host_groups)
        if usable.rules:
            matches = keep(detection_matches(today, usable.rules))
            catalogue = rule_catalogue(ctx.spark, usable.rules, settings.detections)
            rows = rows.unionByName(
                detection_signals(matches, catalogue, views.auth, settings.detections)
            )
        signals = keep(rows)
        scored = score_sessions(
            session_frame(views), signals, degraded_sources(status), cfg, model, version
        )
        write(conform(scored, SESSION_SCORES), SESSION_SCORES)

    written = lake.read_dates(SESSION_SCORES, dates)
    if protect is not None:  # entity risk joins owners and history on real ids
        written = resolve_pseudonyms(lake, written, SESSION_SCORES, text=False)
    day = entity_day_risk(written, owners, cfg, history_days)
    window = history_window_days(cfg)
    if lake.exists(ENTITY_RISK):
        start = dates[0] - timedelta(days=window)
        history = (
            lake.read(ENTITY_RISK)
            .where((F.col("run_date") >= F.lit(start)) & (F.col("run_date") < F.lit(dates[0])))
            .select("run_date", "entity_type", "entity_id", "risk_today", "reasons")
        )
        history = resolve_pseudonyms(lake, history, ENTITY_RISK, text=False)
    else:
        history = day.select("run_date", "entity_type", "entity_id", "risk_today", "reasons").limit(
            0
        )
    risk = decayed_entity_risk(day, history, dates, cfg, entity_metadata(day, accounts, assets))
    write(conform(risk, ENTITY_RISK), ENTITY_RISK)
    evidence = evidence_rows(use, dates, _previous_evidence(ctx, dates[0]))
    lake.replace_rows(evidence, MODEL_EVIDENCE, dates)

    high = F.sum(F.when(F.col("risk") >= cfg.band_high, 1).otherwise(0))
    # one row each: the rows written and how many are in the high band
    n_sessions, high_sessions = (
        lake.read_dates(SESSION_SCORES, dates).agg(F.count(F.lit(1)), high).collect()[0]
    )
    n_entities, high_entities = (
        lake.read_dates(ENTITY_RISK, dates).agg(F.count(F.lit(1)), high).collect()[0]
    )
    return StageResult(
        stage="score",
        dates=dates,
        rows={
            "session_scores": int(n_sessions),
            "entity_risk": int(n_entities),
            MODEL_EVIDENCE.name: len(evidence),
        },
        details={
            "model_version": version,
            "model_digest": use.digest,
            "model_evidence": use.status,
            "model_degraded_dates": [r["run_date"].isoformat() for r in evidence if r["degraded"]],
            "high_risk_sessions": int(high_sessions or 0),
            "high_risk_entities": int(high_entities or 0),
            "detection_rules": len(usable.rules),
            "detection_notes": "; ".join(notes[:5])
            + (f" (+{len(notes) - 5} more)" if len(notes) > 5 else ""),
        },
    )
