"""Validate: Great Expectations suites over bronze -> `ops.dq_results`, `ops.source_status`.

The suites in `expectations/` (one per source, plus `silver_events` for the silver contract)
are the single definition of what "valid" means:

- Great Expectations runs each source's suite once over the whole date range (one Spark
  batch per source, not one per source and date: see docs/data_quality.md for why and the
  timings) and renders Data Docs;
- every expectation the platform supports is also translated into a per-row Spark
  predicate (`row_check`). Grouping those by `run_date` gives the per-date results in
  `ops.dq_results`, and the stage fails if their totals differ from what GX counted, so
  the per-date numbers and the quarantine (`jobs.stages.normalize.stage`) always match the suite;
- expectations marked `meta.row_level` drive quarantine; `meta.critical` ones mark the
  source `degraded` for a date they fail; `meta.dedup` names the de-duplication key;
- per date, the share of the rows normalize will quarantine (`quarantine_share`: parser,
  type check and row-level expectations together) marks the source degraded above
  `validation.max_quarantine_share`, and each source's clock is compared with the other
  sources' (`clock_skew`, informational: `jobs/stages/validate/skew.py`).

Editing a suite file changes what is validated and quarantined with no code change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from jobs.core.config import Settings
from jobs.core.context import PhaseClock, RunContext, StageResult
from jobs.core.lake import Lake
from jobs.core.spark import Checkpoints
from jobs.core.tables import DQ_RESULTS, SOURCE_STATUS
from jobs.quality.gx import GreatExpectationsRunner, run_name, runner_for
from jobs.quality.results import dq_result_rows, write_dq_results
from jobs.quality.rows import (
    delivered_counts,
    prepare_rows,
    read_bronze,
    reference_host_timezones,
    under_test,
)
from jobs.quality.suites import (
    QUARANTINE_SHARE_RULE,
    Suite,
    daily_counts,
    load_suites,
    suite_parameters,
    suites_dir,
)
from jobs.stages.validate.skew import Histograms, clock_skew_rows, collect_histograms, time_bins
from jobs.stages.validate.volume import Volume, volume_frame, volume_lookback_days, volume_rows


def rows_per_date(bronze: DataFrame) -> list[Row]:
    """(run_date, n) per date: a count by the partition column alone reads no data pages."""
    return bronze.groupBy("run_date").agg(F.count(F.lit(1)).alias("n")).collect()


def source_status_rows(
    source: str,
    dates: Sequence[date],
    results: Sequence[Mapping[str, Any]],
    volumes: Sequence[Volume],
) -> list[dict[str, Any]]:
    """`ok`, `degraded` (a critical expectation failed, volume included) or `missing`."""
    by_date: dict[date, list[Mapping[str, Any]]] = {}
    for r in results:
        by_date.setdefault(r["run_date"], []).append(r)
    vol = {v.run_date: v for v in volumes}
    out = []
    for d in dates:
        v = vol.get(d)
        if v is None or v.rows == 0:
            out.append(
                {
                    "run_date": d,
                    "source": source,
                    "status": "missing",
                    "reasons": [f"no {source} data delivered for {d.isoformat()}"],
                }
            )
            continue
        reasons = []
        for r in by_date.get(d, []):
            if not r["critical"] or r["success"]:
                continue
            if (
                r["expectation"].endswith("(_day_rows,_day_min_rows)")
                and v.history_median is not None
            ):
                reasons.append(
                    f"volume: {v.rows} rows < {v.min_rows:g} "
                    f"({v.history_median:g} median of the last {v.history_days} delivered {v.basis})"
                )
            elif r["expectation"] == QUARANTINE_SHARE_RULE:
                details = json.loads(r["details"])
                reasons.append(
                    f"quarantine: {r['unexpected_count']} of {r['element_count']} rows "
                    f"({100.0 * details['share']:.2f}%) quarantined, above the "
                    f"{100.0 * details['limit']:g}% limit"
                )
            else:
                share = (
                    100.0
                    * r["unexpected_count"]
                    / max(json.loads(r["details"]).get("considered", 0), 1)
                )
                reasons.append(
                    f"{r['expectation']}: {r['unexpected_count']} unexpected ({share:.2f}%)"
                )
        out.append(
            {
                "run_date": d,
                "source": source,
                "status": "degraded" if reasons else "ok",
                "reasons": reasons,
            }
        )
    return out


def validate_source(
    lake: Lake,
    suite: Suite,
    source: str,
    dates: list[date],
    settings: Settings,
    host_tz: DataFrame,
    gx: GreatExpectationsRunner | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], Histograms]:
    """One source over `dates`: dq rows, status rows, a summary, and the event times'
    histogram per date (for the clock skew against the other sources)."""
    v = settings.validation
    params = suite_parameters(v)
    clock = PhaseClock()
    # one read (one Delta snapshot) for the volume history and the dates themselves; the
    # history needs rows per date only, which Parquet's footers give without reading a column
    window = read_bronze(lake, source, dates, min(dates) - timedelta(days=volume_lookback_days(v)))
    history = {r["run_date"]: {"rows": int(r["n"])} for r in rows_per_date(window)}
    bronze = window.where(F.col("run_date").isin(list(dates))).drop("raw")
    delivered = delivered_counts(bronze)
    volumes = volume_rows(history, dates, v)
    clock.mark("volume")
    rows = prepare_rows(bronze, source, host_tz, volume_frame(lake.spark, volumes))
    with Checkpoints() as keep:
        candidates = keep(under_test(rows, suite))
        counts = daily_counts(candidates, suite.rules, params)
        histograms = collect_histograms(time_bins(candidates))
        clock.mark("row_predicates")
        per_date = {key[0]: value for key, value in counts.items()}
        totals = {
            rule.name: (
                sum(c[rule.name][0] for c in per_date.values()),
                sum(c[rule.name][1] for c in per_date.values()),
            )
            for rule in suite.rules
        }
        n_rows = sum(int(c["rows"]) for c in per_date.values())
        if gx is not None:
            gx.keep_results(
                suite, candidates, totals, n_rows, params, f"{run_name(dates)} {source}"
            )
            clock.mark("great_expectations")
    results = dq_result_rows(
        suite, source, dates, per_date, params, delivered, v.max_quarantine_share
    )
    status = source_status_rows(source, dates, results, volumes)
    summary = {
        "rows": n_rows,
        "seconds": clock.seconds,
        "failed_critical": sorted(
            {r["expectation"] for r in results if r["critical"] and not r["success"]}
        ),
    }
    return results, status, summary, histograms


def run_validate(ctx: RunContext, dates: list[date]) -> StageResult:
    """The `validate` stage: every configured source's suite over `dates`."""
    dates = sorted(set(dates))
    result = StageResult(stage="validate", dates=dates)
    if not dates:
        return result
    settings = ctx.settings
    lake = ctx.lake
    sources = list(settings.ingest.sources)
    suites = load_suites(suites_dir(settings), sources)
    gx = runner_for(settings)
    dq_rows: list[dict[str, Any]] = []
    status_rows: list[dict[str, Any]] = []
    histograms: dict[str, Histograms] = {}
    with Checkpoints() as keep:
        host_tz = keep(reference_host_timezones(ctx.spark, settings))
        for source in sources:
            results, status, summary, histograms[source] = validate_source(
                lake, suites[source], source, dates, settings, host_tz, gx
            )
            dq_rows += results
            status_rows += status
            result.details[source] = summary
    skew = clock_skew_rows(
        histograms, dates, float(settings.validation.clock_skew_tolerance_minutes)
    )
    dq_rows += skew
    result.details["clock_skew_minutes"] = {
        f"{r['source']}@{r['run_date'].isoformat()}": json.loads(r["details"])["skew_minutes"]
        for r in skew
        if not r["success"]
    }
    clock = PhaseClock()
    write_dq_results(lake, dq_rows, dates, sources)
    lake.replace_rows(status_rows, SOURCE_STATUS, dates)
    clock.mark("write")
    docs = gx.build_docs()
    clock.mark("data_docs")
    result.details["seconds"] = clock.seconds
    result.rows = {DQ_RESULTS.name: len(dq_rows), SOURCE_STATUS.name: len(status_rows)}
    result.details["status"] = {
        s: {
            r["run_date"].isoformat(): r["status"]
            for r in status_rows
            if r["source"] == s and r["status"] != "ok"
        }
        for s in sources
    }
    result.details["data_docs"] = str(docs) if docs else None
    return result
