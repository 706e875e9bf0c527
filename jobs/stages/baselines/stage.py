"""Behavioral baselines: per-entity daily aggregates and the rolling profiles scoring compares to.

`gold.entity_daily` for day D is computed from one day of `silver.events`.
`gold.baselines` for day D is the profile D's activity is judged against, built only from
`entity_daily` of the days before D, incrementally: baselines(D) is baselines(D-1) advanced
by entity_daily(D-1), minus the day that leaves each window. Item sets keep
first/last-seen dates, so adding a day never rescans a window. A full recompute from the
entity_daily history is the fallback when baselines(D-1) is absent; it gives the same rows
(tests assert it), so replays and backfills are exact whichever path a date takes.

Pure transforms: `entity_daily`, `observations`, `advance_baselines`, `full_baselines`.
I/O only in `run_baselines`. Column meanings and costs: docs/baselines.md.
"""

from __future__ import annotations

import zoneinfo
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PipelineError, ReferenceDataError
from jobs.core.lake import conform
from jobs.core.spark import Checkpoints
from jobs.core.tables import BASELINES, ENTITY_DAILY, SILVER_EVENTS, Table
from jobs.reference.files import asset_inventory, identity_directory
from jobs.stages.baselines.entity_daily import entity_daily
from jobs.stages.baselines.profiles import (
    WINDOW_OF_GROUP,
    advance_baselines,
    days_needed,
    full_baselines,
    observations,
)


class BaselinesInputError(PipelineError):
    """The baselines stage cannot find or trust its input."""


# ---------------------------------------------------------------------------------------------
# I/O entry
# ---------------------------------------------------------------------------------------------


def known_zones() -> list[str]:
    """IANA region ids (`area/city`) Spark accepts, plus UTC."""
    regions = {
        z
        for z in zoneinfo.available_timezones()
        if "/" in z and not z.startswith(("posix/", "right/"))
    }
    return sorted(regions | {"UTC"})


def _zone_or_null(col: str) -> Column:
    """The time zone if it is a known region id; a typo must not fail the whole stage."""
    return F.when(F.col(col).isin(*known_zones()), F.col(col))


def _reference(ctx: RunContext) -> tuple[DataFrame | None, DataFrame | None, list[str]]:
    """Directory accounts and inventory hosts with valid time zones; notes on what is missing."""
    notes: list[str] = []
    accounts = hosts = None
    try:
        accounts = identity_directory(ctx.spark, ctx.settings).select(
            "user_id", "account_type", "peer_group", _zone_or_null("timezone").alias("timezone")
        )
    except ReferenceDataError as exc:
        notes.append(f"identity directory unavailable, account hours in UTC: {exc}")
    try:
        hosts = asset_inventory(ctx.spark, ctx.settings).select(
            "asset_id", _zone_or_null("timezone").alias("timezone")
        )
    except ReferenceDataError as exc:
        notes.append(f"asset inventory unavailable, host hours in UTC: {exc}")
    return accounts, hosts, notes


def _stored_windows(ctx: RunContext, days: list[date]) -> dict[date, tuple[int, ...]]:
    """The windows the stored baselines of each of `days` were built with (one small query);
    a day without stored baselines is absent."""
    lake = ctx.lake
    if not lake.exists(BASELINES):
        return {}
    stored = lake.read_dates(BASELINES, days).select("run_date", *WINDOW_OF_GROUP.values())
    return {
        r["run_date"]: tuple(int(v) for v in r[1:])
        for r in stored.dropDuplicates(["run_date"]).collect()
    }


def _empty(ctx: RunContext, table: Table) -> DataFrame:
    return ctx.spark.createDataFrame([], table.schema)


def _entity_daily_history(ctx: RunContext, before: date) -> DataFrame:
    lake = ctx.lake
    if not lake.exists(ENTITY_DAILY):
        return _empty(ctx, ENTITY_DAILY)
    daily = lake.read(ENTITY_DAILY).where(F.col("run_date") < F.lit(before))
    return conform(daily, ENTITY_DAILY)


def run_baselines(
    ctx: RunContext, dates: list[date], *, rebuild_entity_daily: bool = True
) -> StageResult:
    """Write gold.entity_daily for `dates` (one job), then gold.baselines.

    Each date advances the previous date's baselines read from the lake (written moments
    before inside a range), date by date; the dates whose previous baselines are missing, or
    were built with other windows, are recomputed in full from the entity_daily history,
    together, first.
    """
    if not dates:
        raise BaselinesInputError("baselines: no dates to run")
    dates = sorted(set(dates))
    settings = ctx.settings.baselines
    lake = ctx.lake
    result = StageResult(stage="baselines", dates=dates)

    if rebuild_entity_daily:
        if not lake.exists(SILVER_EVENTS):
            raise BaselinesInputError(
                f"{SILVER_EVENTS} not found in {lake.root}; run normalize first"
            )
        events = conform(lake.read_dates(SILVER_EVENTS, dates), SILVER_EVENTS)
        accounts, hosts, notes = _reference(ctx)
        daily = conform(entity_daily(events, accounts, hosts), ENTITY_DAILY)
        lake.replace_dates(daily, ENTITY_DAILY, dates)
        result.rows[ENTITY_DAILY.name] = lake.read_dates(ENTITY_DAILY, dates).count()
        if notes:
            result.details["reference"] = notes

    if lake.exists(ENTITY_DAILY):
        needed = conform(lake.read_dates(ENTITY_DAILY, days_needed(dates, settings)), ENTITY_DAILY)
    else:
        needed = _empty(ctx, ENTITY_DAILY)

    # A date whose previous day this run writes, or whose previous baselines are stored (with
    # these windows), advances them; every other date is recomputed in full from the
    # entity_daily history, all of them in one query and one commit (a lake of scattered
    # days, e.g. lab recordings years apart, is mostly such dates).
    previous = {d: d - timedelta(days=1) for d in dates}
    outside = [d for d in dates if previous[d] not in previous]  # day before not in this run
    stored = _stored_windows(ctx, [previous[d] for d in outside])
    windows = tuple(int(getattr(settings, f)) for f in WINDOW_OF_GROUP.values())
    full = [d for d in outside if stored.get(previous[d]) != windows]
    paths: dict[str, str] = {d.isoformat(): "full" for d in full}
    with Checkpoints() as keep:
        if full:
            history = observations(_entity_daily_history(ctx, max(full)))
            profiles = conform(full_baselines(history, full, settings), BASELINES)
            lake.replace_dates(profiles, BASELINES, full)
        obs = keep(observations(needed))
        for target in dates:
            if target.isoformat() in paths:
                continue
            # written moments before by this run, or stored: the next date reads it back, so a
            # range builds exactly as date-by-date runs do and the plan never grows
            state = conform(lake.read_dates(BASELINES, [previous[target]]), BASELINES)
            profile = conform(advance_baselines(state, obs, target, settings), BASELINES)
            lake.replace_dates(profile, BASELINES, [target])
            paths[target.isoformat()] = "incremental"

    result.rows[BASELINES.name] = lake.read_dates(BASELINES, dates).count()
    result.details["paths"] = dict(sorted(paths.items()))
    return result
