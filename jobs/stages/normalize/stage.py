"""Normalize: bronze -> `silver.events` (one OCSF-aligned schema), `silver.quarantine`,
and `ops.reconciliation`.

Every bronze row of a (source, date) ends in exactly one place:

1. `silver.quarantine` with rule `parser` (unparseable line), `type_check` (a field had the
   wrong type), or the first row-level expectation of the source's suite it fails
   (e.g. `windows.expect_column_values_to_not_be_null(event_time)`), with a reason;
2. the duplicate count: a later delivery of an event already seen that date (same source
   and vendor key: the columns of the suite's `meta.dedup` expectation; the first by
   file and line is kept);
3. `silver.events`, mapped per source, then enriched (directory, asset inventory,
   geolocation of the distinct source addresses, network ranges).

`ops.reconciliation` checks bronze rows = events + quarantined + duplicates per source and
date; if that fails the stage raises instead of writing silver. The written events are
also checked against the `silver_events` suite (a critical failure stops the stage).
docs/normalization.md maps every column per source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from functools import reduce
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    StructType,
)

from jobs.core.context import PhaseClock, RunContext, StageResult
from jobs.core.errors import PipelineError
from jobs.core.lake import conform
from jobs.core.spark import Checkpoints
from jobs.core.tables import DQ_RESULTS, RECONCILIATION, SILVER_EVENTS, SILVER_QUARANTINE
from jobs.quality.gx import run_name, runner_for
from jobs.quality.results import dq_result_rows, geo_database_rows, write_dq_results
from jobs.quality.rows import prepare_rows, read_bronze, reference_host_timezones
from jobs.quality.suites import (
    REFERENCE_SUITE,
    SILVER_SUITE,
    daily_counts,
    load_suite,
    suite_parameters,
    suites_dir,
)
from jobs.reference.files import asset_inventory, identity_directory, network_ranges, user_aliases
from jobs.stages.normalize.enrichment import enrich, geo_database, geo_table
from jobs.stages.normalize.mapping import MAPPED, map_source
from jobs.stages.normalize.reconciliation import counts_by_source_date, reconcile
from jobs.stages.normalize.routing import DUPLICATE, EVENT, quarantine_frame, route_rows

# ---------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------


# Distinct source addresses up to which the located addresses (~100 bytes each) are broadcast
# to the events; beyond (a hostile day of spoofed sources) the join shuffles instead.
GEO_BROADCAST_ROWS = 200_000


def _empty(schema: StructType, spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], schema)


def run_normalize(ctx: RunContext, dates: list[date]) -> StageResult:
    """The `normalize` stage over `dates` (all configured sources in one pass)."""
    dates = sorted(set(dates))
    result = StageResult(stage="normalize", dates=dates)
    if not dates:
        return result
    spark, settings, lake = ctx.spark, ctx.settings, ctx.lake
    sources = list(settings.ingest.sources)
    directory = suites_dir(settings)
    params = suite_parameters(settings.validation)
    ranges = [
        (r["cidr"], (r["kind"] or "").strip().lower())
        for r in network_ranges(spark, settings).collect()
    ]
    # Open the configured databases here first: a missing or wrong file stops the stage with
    # one line before any Spark work, and the day's data-quality rows name the database used.
    geo_rows = geo_database_rows(geo_database(settings), dates, settings.geo.max_age_days)

    clock = PhaseClock()
    raw_counts: dict[tuple[str, date], int] = {}
    dup_counts: dict[tuple[str, date], int] = {}
    mapped_parts: list[DataFrame] = []
    quarantine_parts: list[DataFrame] = []
    route_parts: list[DataFrame] = []
    with Checkpoints() as keep:
        host_tz = keep(reference_host_timezones(spark, settings))
        assets = keep(asset_inventory(spark, settings))
        for source in sources:
            suite = load_suite(directory, source)
            bronze = read_bronze(lake, source, dates)
            rows = prepare_rows(bronze, source, host_tz, None)
            routed = keep(route_rows(rows, suite, params))
            route_parts.append(routed.select("source", "run_date", "_route"))
            quarantine_parts.append(quarantine_frame(routed))
            mapped_parts.append(
                map_source(routed.where(F.col("_route") == EVENT), source, suite.dedup_key)
            )
        if route_parts:  # every source's routes counted in one job
            routes = reduce(DataFrame.unionByName, route_parts)
            for (src, d, route), n in counts_by_source_date(routes, "_route").items():
                raw_counts[(src, d)] = raw_counts.get((src, d), 0) + n
                if route == DUPLICATE:
                    dup_counts[(src, d)] = n
        mapped = (
            reduce(DataFrame.unionByName, mapped_parts) if mapped_parts else _empty(MAPPED, spark)
        )
        quarantine = (
            reduce(DataFrame.unionByName, quarantine_parts)
            if quarantine_parts
            else _empty(SILVER_QUARANTINE.schema, spark)
        )
        clock.mark("read_and_route")
        # the distinct source addresses, located once; joined by broadcast unless a hostile
        # day has so many that they would not fit the driver comfortably
        geo = keep(geo_table(mapped, settings, ranges))
        if geo.count() <= GEO_BROADCAST_ROWS:
            geo = F.broadcast(geo)
        events = enrich(
            mapped, user_aliases(spark, settings), identity_directory(spark, settings), assets, geo
        )
        events = keep(conform(events, SILVER_EVENTS))
        quarantine = keep(conform(quarantine, SILVER_QUARANTINE))
        event_counts = {(s, d): n for (s, d), n in counts_by_source_date(events).items()}
        quarantine_counts: dict[tuple[str, date], int] = {}
        by_rule: dict[str, int] = {}
        for (s, d, rule), n in counts_by_source_date(quarantine, "rule").items():
            quarantine_counts[(s, d)] = quarantine_counts.get((s, d), 0) + n
            by_rule[f"{s}:{rule}"] = by_rule.get(f"{s}:{rule}", 0) + n
        clock.mark("map_and_enrich")
        recon = reconcile(raw_counts, event_counts, quarantine_counts, dup_counts, sources, dates)
        lake.replace_rows(recon, RECONCILIATION, dates)
        broken = [r for r in recon if not r["balanced"]]
        if broken:
            first = broken[0]
            raise PipelineError(
                f"normalize: reconciliation failed for {len(broken)} source/date(s), e.g. "
                f"{first['source']} {first['run_date']}: {first['raw_rows']} bronze rows != "
                f"{first['events']} events + {first['quarantined']} quarantined + {first['duplicates']} duplicates"
            )
        clock.mark("reconcile")
        silver_rows = check_silver_contract(ctx, events, dates, params, geo_rows)
        clock.mark("silver_contract")
        # one date: each partition's rows are that date's already, so Delta's optimized write
        # would only shuffle every event once more; a range needs it (files per date)
        several = len(dates) > 1
        lake.replace_dates(events, SILVER_EVENTS, dates, optimize_write=several)
        lake.replace_dates(quarantine, SILVER_QUARANTINE, dates, optimize_write=several)
        clock.mark("write")
        result.rows = {
            SILVER_EVENTS.name: sum(event_counts.values()),
            SILVER_QUARANTINE.name: sum(quarantine_counts.values()),
            "duplicates": sum(dup_counts.values()),
            RECONCILIATION.name: len(recon),
            DQ_RESULTS.name: silver_rows,
        }
        result.details["quarantine_by_rule"] = by_rule
        result.details["seconds"] = clock.seconds
    return result


def check_silver_contract(
    ctx: RunContext,
    events: DataFrame,
    dates: list[date],
    params: Mapping[str, Any],
    reference_rows: Sequence[Mapping[str, Any]] = (),
) -> int:
    """The `silver_events` suite on what is about to be written, per source and date.

    Its results join `ops.dq_results` (suite `silver_events`), in the same commit as
    `reference_rows` (suite `reference`: the geolocation database the events were located
    with); a critical failure raises: it means the normalization is wrong, not the data.
    """
    settings = ctx.settings
    suite = load_suite(suites_dir(settings), SILVER_SUITE)
    counts = daily_counts(events, suite.rules, params, by=("source", "run_date"))
    totals: dict[str, tuple[int, int]] = {}
    for value in counts.values():
        for rule in suite.rules:
            c, u = value[rule.name]
            tc, tu = totals.get(rule.name, (0, 0))
            totals[rule.name] = (tc + c, tu + u)
    gx = runner_for(settings)
    checked = sum(int(v["rows"]) for v in counts.values())
    gx.keep_results(suite, events, totals, checked, params, f"{run_name(dates)} silver")
    rows: list[dict[str, Any]] = []
    for source in sorted({k[0] for k in counts}):
        per_date = {k[1]: v for k, v in counts.items() if k[0] == source}
        rows += dq_result_rows(suite, source, [d for d in dates if d in per_date], per_date, params)
    write_dq_results(ctx.lake, [*rows, *reference_rows], dates, [SILVER_SUITE, REFERENCE_SUITE])
    gx.build_docs()
    failed = sorted({r["expectation"] for r in rows if r["critical"] and not r["success"]})
    if failed:
        raise PipelineError(f"normalize: silver.events breaks its contract: {', '.join(failed)}")
    return len(rows) + len(reference_rows)
