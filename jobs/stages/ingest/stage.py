"""Ingest: raw vendor files -> `bronze.<source>` (typed, with lineage) and `ops.ingest_log`.

Every line of every raw file becomes exactly one bronze row (CloudTrail S3-delivery lines
holding `{"Records": [...]}` become one row per record), parsed or marked `unparseable`
with a reason; nothing is dropped. Zeek TSV header lines are format metadata, not events:
they are counted in `ops.ingest_log.header_lines` instead. Parsers are Spark SQL
expressions only (no Python UDFs), and each source is read in one Spark job for the whole
date range, plus one small aggregate that gives every line its exact 1-based number.
docs/ingest.md describes the rules per format.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import unquote, urlsplit

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PipelineError
from jobs.core.lake import Lake, conform
from jobs.core.tables import BRONZE, INGEST_LOG, PARSED, SEVERAL_ROWS_PER_LINE, UNPARSEABLE, Table
from jobs.quality.results import write_dq_results
from jobs.stages.ingest.checks import (
    CORE_FIELDS,
    INGEST_SUITE,
    FieldCounts,
    delivery_rows,
    drift_messages,
    schema_drift_rows,
)
from jobs.stages.ingest.files import (
    RawFile,
    batch_id,
    batch_ids,
    empty_file_sizes,
    file_blocks,
    file_table,
    list_date_dirs,
    number_lines,
    plan_files,
    raw_listing,
    read_raw_lines,
)
from jobs.stages.ingest.parsers import PARSERS
from jobs.stages.ingest.parsers.zeek import ZEEK_DEFAULT_FIELDS

# ---------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------


@dataclass
class SourceIngest:
    """What one source's ingest wrote, for the stage result and `ops.ingest_log`."""

    source: str
    rows: int = 0
    unparseable: int = 0
    missing: list[date] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)  # ops.dq_results, suite `ingest`


def ingest_source(
    spark: SparkSession, lake: Lake, raw_root: str, source: str, dates: Sequence[date]
) -> SourceIngest:
    """Read `raw/<source>/<date>/` for all `dates` in one job and replace those dates in
    `bronze.<source>` (dates without files are cleared, and reported missing)."""
    table = BRONZE[source]
    result = SourceIngest(source)
    folders = list_date_dirs(spark, raw_root, source, dates)
    files: list[RawFile] = []
    bronze = spark.createDataFrame([], table.schema)
    if folders:
        raw = read_raw_lines(spark, list(folders.values()))
        blocks = [row.asDict() for row in file_blocks(raw, source).collect()]
        empty = empty_file_sizes(spark, raw, {b["_file"] for b in blocks})
        files = plan_files(source, blocks, empty)
    ids = batch_ids(source, files)
    with_lines = [f for f in files if f.blocks]
    if with_lines:
        lines = number_lines(raw, file_table(spark, source, with_lines, ids), source)
        bronze = PARSERS[source](lines)
    bronze = conform(bronze, table)
    # each input split is part of one file of one date folder: its rows are one date's
    # already, so Delta's optimized write would only shuffle every raw line once more
    lake.replace_dates(bronze, table, dates, optimize_write=False)

    delivered = {f.run_date for f in files}
    result.missing = [d for d in dates if d not in delivered]
    counts, fields = _written(lake, table, source, dates, files) if with_lines else ({}, {})
    for f in files:
        rows, unparseable, distinct_lines = counts.get(f.path, (0, 0, 0))
        events = f.lines - f.header_lines
        lines_with_rows = distinct_lines if source in SEVERAL_ROWS_PER_LINE else rows
        if lines_with_rows != events:
            raise PipelineError(
                f"ingest {table}: {f.path} has {events} event lines but {lines_with_rows} "
                "made it into bronze (was the file changed while it was read?)"
            )
        result.rows += rows
        result.unparseable += unparseable
        result.log.append(
            {
                "run_date": f.run_date,
                "source": source,
                "_file": f.path,
                "lines_read": f.lines,
                "header_lines": f.header_lines,
                "rows": rows,
                "unparseable": unparseable,
                "_batch_id": ids[f.run_date],
            }
        )
    result.checks = delivery_rows(source, dates, files, result.log) + schema_drift_rows(
        source, fields
    )
    return result


def _written(
    lake: Lake, table: Table, source: str, dates: Sequence[date], files: Sequence[RawFile]
) -> tuple[dict[str, tuple[int, int, int]], dict[date, FieldCounts]]:
    """What the write put in bronze, read back from the new files in two narrow aggregates:
    per file, rows, unparseable rows and distinct lines (the gate: every event line is in
    bronze) with the parsed rows' cast-error columns, from the lineage columns alone; per
    date, the parsed rows' top-level field names (JSON keys; a Zeek TSV file's own
    `#fields`, Zeek's default order for TSV lines of a file without one), for the
    schema-drift check, read from `raw` only for sources that have one (docs/ingest.md)."""
    written = lake.read_dates(table, dates)
    parsed = F.col("_parse_status") == PARSED
    no_names = F.array().cast("array<string>")
    cast_columns = F.array_distinct(
        F.transform(F.col("_cast_errors"), lambda e: F.split(e, ":", 2).getItem(0))
    )
    # every row once with no column (it counts the row), then once per cast-error column
    cast_column = F.explode(
        F.concat(
            F.array(F.lit(None).cast("string")),
            F.coalesce(F.when(parsed, cast_columns), no_names),
        )
    ).alias("cast_column")
    aggregates = [F.count(F.lit(1)).alias("n")]
    if source in SEVERAL_ROWS_PER_LINE:  # count the lines of those rows
        aggregates.append(F.count_distinct("_line").alias("lines"))
    per_status = (
        written.select("run_date", "_file", "_parse_status", "_line", cast_column)
        .groupBy("run_date", "_file", "_parse_status", "cast_column")
        .agg(*aggregates)
        .collect()
    )
    per_file: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    fields: dict[date, FieldCounts] = defaultdict(FieldCounts)
    tsv = {f.path: f.zeek_fields for f in files if f.zeek_fields is not None}
    for r in per_status:
        n, path, column = int(r["n"]), r["_file"], r["cast_column"]
        if column is not None:  # one row per cast-error column of the parsed rows
            bucket = fields[r["run_date"]].cast_errors
            bucket[column] = bucket.get(column, 0) + n
            continue
        if r["_parse_status"] == PARSED:
            counts = fields[r["run_date"]]
            counts.rows += n
            for name in tsv.get(path) or ():
                counts.fields[name] = counts.fields.get(name, 0) + n
        elif r["_parse_status"] == UNPARSEABLE:
            per_file[path][1] += n
        per_file[path][0] += n
        per_file[path][2] += int(r["lines"]) if source in SEVERAL_ROWS_PER_LINE else n
    if source in CORE_FIELDS:
        for r in _field_names(written.where(parsed), source, list(tsv)).collect():
            counts = fields[r["run_date"]]
            counts.fields[r["name"]] = counts.fields.get(r["name"], 0) + int(r["n"])
    return {p: (c[0], c[1], c[2]) for p, c in per_file.items()}, dict(fields)


def _field_names(parsed: DataFrame, source: str, tsv_files: Sequence[str]) -> DataFrame:
    """(run_date, name, n): how many parsed rows of each date carry each top-level field
    name, for rows not in a Zeek TSV file with its own `#fields` (counted per file)."""
    is_tsv = F.col("_file").isin(list(tsv_files)) if tsv_files else F.lit(False)
    text = F.ltrim(F.col("raw"))
    keys = F.when(~is_tsv & text.startswith("{"), F.json_object_keys(text))
    if source in ZEEK_DEFAULT_FIELDS:
        default = F.array(*[F.lit(n) for n in ZEEK_DEFAULT_FIELDS[source]])
        keys = keys.when(~is_tsv, default)
    return (
        parsed.select("run_date", F.explode(keys).alias("name"))
        .groupBy("run_date", "name")
        .agg(F.count(F.lit(1)).alias("n"))
    )


def write_ingest_checks(
    lake: Lake,
    sources: Sequence[str],
    dates: Sequence[date],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Replace the `ingest` suite rows of `sources` and `dates` in ops.dq_results in one
    commit (other suites' rows, and other sources', are left alone)."""
    write_dq_results(lake, rows, dates, [INGEST_SUITE], sources)


def late_deliveries(
    ctx: RunContext, candidates: Sequence[date], ingested: Sequence[date] = ()
) -> dict[date, list[str]]:
    """Dates among `candidates` that were ingested before and whose raw files changed since
    (a file added, resized or withdrawn), with one reason per source. The delivery's
    `_batch_id` in ops.ingest_log is a hash of the file names and sizes, so comparing the
    current listing's batch id with the logged one tells a changed delivery exactly."""
    lake, spark = ctx.lake, ctx.spark
    if not candidates:
        return {}
    logged: dict[tuple[str, date], tuple[set[str], set[str]]] = {}
    if lake.exists(INGEST_LOG):
        for r in (
            lake.read_dates(INGEST_LOG, candidates)
            .select("run_date", "source", "_file", "_batch_id")
            .collect()
        ):
            names, ids = logged.setdefault((r["source"], r["run_date"]), (set(), set()))
            names.add(unquote(urlsplit(r["_file"]).path.rsplit("/", 1)[-1]))
            ids.add(r["_batch_id"])
    known = sorted(set(ingested) | {d for _, d in logged})
    out: dict[date, list[str]] = {}
    for source in ctx.settings.ingest.sources:
        listing = raw_listing(spark, ctx.settings.paths.raw_root, source, known)
        for day in known:
            now = listing.get(day, [])
            names, ids = logged.get((source, day), (set(), set()))
            current = batch_id(source, day, now) if now else None
            if (current is None and not ids) or (current is not None and ids == {current}):
                continue
            have = {n for n, _ in now}
            what = [f"new file {n}" for n in sorted(have - names)]
            what += [f"withdrawn file {n}" for n in sorted(names - have)]
            if not what:
                what = ["file sizes changed"]
            out.setdefault(day, []).append(f"{source}: {', '.join(what)}")
    return out


def write_ingest_log(
    lake: Lake,
    log: Sequence[Mapping[str, Any]],
    dates: Sequence[date],
    sources: Sequence[str] | None = None,
) -> None:
    """Replace the `ops.ingest_log` rows of `dates` (of `sources` only, when given: the
    Airflow DAG's mapped ingest tasks, one per source, add up to one full ingest). A commit
    racing another task's is retried by `Lake.replace_dates`."""
    where = None
    if sources is not None:  # names from jobs.core.config.SOURCES (validated), not user text
        where = f"source IN ({', '.join(repr(s) for s in sources)})"
    lake.replace_rows(log, INGEST_LOG, dates, where=where)


def run_ingest(
    ctx: RunContext, dates: list[date], sources: Sequence[str] | None = None
) -> StageResult:
    """The `ingest` stage: every configured source over `dates` (or only `sources`, whose
    rows alone are replaced: per-source tasks add up to one full ingest), then
    `ops.ingest_log` and the ingest checks."""
    dates = sorted(set(dates))
    chosen = list(ctx.settings.ingest.sources if sources is None else sources)
    result = StageResult(stage="ingest", dates=dates)
    if not dates:
        return result
    lake = ctx.lake
    log: list[dict[str, Any]] = []
    missing: list[str] = []
    unparseable: dict[str, int] = {}
    drift: list[str] = []
    checks: list[dict[str, Any]] = []
    for source in chosen:
        outcome = ingest_source(ctx.spark, lake, ctx.settings.paths.raw_root, source, dates)
        result.rows[BRONZE[source].name] = outcome.rows
        unparseable[source] = outcome.unparseable
        missing += [f"{source}@{d.isoformat()}" for d in outcome.missing]
        log += outcome.log
        checks += outcome.checks
        drift += drift_messages(outcome.checks)
    write_ingest_checks(lake, chosen, dates, checks)
    write_ingest_log(lake, log, dates, None if sources is None else chosen)
    result.rows[INGEST_LOG.name] = len(log)
    result.details = {
        "unparseable": unparseable,
        "missing": missing,
        "files": len(log),
        "header_lines": sum(int(r["header_lines"]) for r in log),
        "schema_drift": "; ".join(drift) or "none",
    }
    return result
