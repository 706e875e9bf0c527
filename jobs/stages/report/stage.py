"""Report stage: one self-contained HTML page per date for security leads, readable offline.

Reads only small aggregates: gold.metrics_daily (the date, plus the history the charts
need) and the top-N entities of gold.entity_risk with their recommendations. Charts are
inline SVG drawn here; there is no JavaScript, no external resource (a Content-Security-
Policy forbids both), and every value is HTML-escaped: entity ids, reasons and source
names come from telemetry an attacker can shape.

Layout: `<paths.reports_dir>/<run_date>/report.html`, written to a temporary file and
renamed, so a reader never sees half a page. Same inputs, same bytes.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from pyspark.sql import Window
from pyspark.sql import functions as F

from jobs.core.config import ReportSettings
from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PipelineError
from jobs.core.lake import dates_predicate
from jobs.core.tables import ENTITY_RISK, METRICS_DAILY, POLICY_RECOMMENDATIONS
from jobs.stages.report.render import MetricPoint, ReportData, TopEntity, render_report

REPORT_FILE = "report.html"
# Metrics the charts need over the history window (everything else: the report date only).
HISTORY_METRICS = ("recommendations", "analyst_decisions", "alerts_total")


# --- the stage entry --------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _top_entities(ctx: RunContext, dates: Sequence[date], n: int) -> dict[date, list[TopEntity]]:
    """The `n` riskiest entities of each date with their recommendations (n x dates rows)."""
    lake = ctx.lake
    if not lake.exists(ENTITY_RISK):
        return {}
    rank = Window.partitionBy("run_date").orderBy(
        F.col("risk").desc(), F.col("risk_today").desc(), "entity_type", "entity_id"
    )
    top = (
        lake.read_dates(ENTITY_RISK, dates)
        .where(F.col("risk") > 0)
        .withColumn("rank", F.row_number().over(rank))
        .where(F.col("rank") <= n)
        .select(
            "run_date",
            "rank",
            "entity_type",
            "entity_id",
            "risk",
            "risk_today",
            "sessions",
            "reasons",
        )
    )
    if lake.exists(POLICY_RECOMMENDATIONS):
        actions = (
            lake.read_dates(POLICY_RECOMMENDATIONS, dates)
            .groupBy(
                "run_date",
                F.col("target_type").alias("entity_type"),
                F.col("target_id").alias("entity_id"),
            )
            .agg(
                F.sort_array(
                    F.collect_set(
                        F.concat("action", F.lit(" ("), "status", F.lit(", "), "domain", F.lit(")"))
                    )
                ).alias("actions")
            )
        )
        top = top.join(actions, ["run_date", "entity_type", "entity_id"], "left")
    else:
        top = top.withColumn("actions", F.array().cast("array<string>"))
    out: dict[date, list[TopEntity]] = defaultdict(list)
    for r in top.orderBy("run_date", "rank").collect():  # n per date
        out[r["run_date"]].append(
            TopEntity(
                rank=int(r["rank"]),
                entity_type=str(r["entity_type"]),
                entity_id=str(r["entity_id"]),
                risk=int(r["risk"]),
                risk_today=int(r["risk_today"] or 0),
                sessions=int(r["sessions"] or 0),
                reasons=tuple(r["reasons"] or ()),
                actions=tuple(r["actions"] or ()),
            )
        )
    return out


def _metric_points(ctx: RunContext, dates: Sequence[date], history_days: int) -> list[MetricPoint]:
    """The dates' metric rows, plus the charted metrics of the history window before them."""
    start = min(dates) - timedelta(days=history_days - 1)
    rows = (
        ctx.lake.read(METRICS_DAILY)
        .where((F.col("run_date") >= F.lit(start)) & (F.col("run_date") <= F.lit(max(dates))))
        .where(F.expr(dates_predicate("run_date", dates)) | F.col("metric").isin(*HISTORY_METRICS))
        .collect()  # the aggregate table itself: a few hundred rows per date
    )
    return [
        MetricPoint(r["run_date"], r["metric"], dict(r["dimensions"] or {}), float(r["value"]))
        for r in rows
    ]


def run_report(ctx: RunContext, dates: list[date]) -> StageResult:
    """Stage `report`: write `<reports_dir>/<date>/report.html` for each date."""
    settings = ctx.settings
    cfg: ReportSettings = settings.report
    dates = sorted(set(dates))
    if not dates:
        raise PipelineError("report: no dates")
    if not ctx.lake.exists(METRICS_DAILY):
        raise PipelineError(f"report: {METRICS_DAILY} does not exist; run the metrics stage first")
    points = _metric_points(ctx, dates, cfg.history_days)
    have = {p.run_date for p in points}  # a metrics run always writes `alerts_total`
    absent = [d.isoformat() for d in dates if d not in have]
    if absent:
        raise PipelineError(
            f"report: no metrics for {', '.join(absent)}; run the metrics stage for them first"
        )
    top = _top_entities(ctx, dates, cfg.top_entities)
    written: list[str] = []
    for day in dates:
        first = day - timedelta(days=cfg.history_days - 1)
        data = ReportData(
            run_date=day,
            metrics=tuple(p for p in points if first <= p.run_date <= day),
            top=tuple(top.get(day, [])),
            history_days=cfg.history_days,
        )
        path = Path(settings.paths.reports_dir) / day.isoformat() / REPORT_FILE
        _write_atomically(path, render_report(data, settings.metrics))
        written.append(str(path))
    return StageResult(
        stage="report",
        dates=dates,
        rows={"reports": len(written)},
        details={"report": written[-1], "reports": written},
    )
