"""The frame the suites look at: bronze rows plus UTC event time, host time zone, the day's
volume, and whether the row parsed and typed (so the suite applies).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.core.config import Settings
from jobs.core.lake import Lake, conform
from jobs.core.tables import BRONZE, PARSED
from jobs.quality.event_time import event_offset_hours, host_timezones, parse_event_time
from jobs.quality.suites import Suite
from jobs.reference.files import asset_inventory

MISSING_TEXT = ("", "-")


# ---------------------------------------------------------------------------------------
# Rows -> the frame the suites look at
# ---------------------------------------------------------------------------------------


def present_text(col: Column) -> Column:
    trimmed = F.trim(col)
    return F.when(trimmed.isin(*MISSING_TEXT), F.lit(None).cast("string")).otherwise(trimmed)


def key_text(*columns: Column) -> Column:
    """Several values as one key: the separator escaped and a missing value marked, so values
    an attacker chooses (`ws01|x` + `y` vs `ws01` + `x|y`, `` vs null) never make two events
    one key."""
    return F.concat_ws(
        "|",
        *[
            F.coalesce(F.regexp_replace(c.cast("string"), r"([\\|])", r"\\$1"), F.lit("\\N"))
            for c in columns
        ],
    )


# The event's content, for events without a record number (docs/data_quality.md).
CONTENT_KEY_PREFIX = "sha256:"


def windows_event_key() -> Column:
    """The de-duplication key of a Windows event (`_event_key`).

    With a record number: host, channel and record number (`hostname|channel|record_number`,
    the event log's own key). Without one (OTRF's PowerShell exports, some shippers): a
    SHA-256 of the event's content, the JSON text of `{hostname, channel, provider,
    event_id, event_time_us (UTC microseconds), event_data (its entries sorted by key)}`, so
    two deliveries of the same event have one key whatever order their fields came in.
    """
    record = F.col("record_number")
    content = F.to_json(
        F.struct(
            F.col("hostname").alias("hostname"),
            F.col("channel").alias("channel"),
            F.col("provider").alias("provider"),
            F.col("event_id").alias("event_id"),
            F.unix_micros(F.col("event_time")).alias("event_time_us"),
            F.array_sort(F.map_entries(F.col("event_data"))).alias("event_data"),
        )
    )
    by_record = key_text(F.col("hostname"), F.col("channel"), record)
    by_content = F.concat(F.lit(CONTENT_KEY_PREFIX), F.sha2(content, 256))
    return F.when(record.isNotNull(), by_record).otherwise(by_content)


def host_column(source: str) -> Column | None:
    if source == "windows":
        return F.col("hostname")
    if source == "sshd":
        return F.col("host")
    return None


def prepare_rows(
    bronze: DataFrame,
    source: str,
    host_tz: DataFrame | None,
    volume: DataFrame | None = None,
) -> DataFrame:
    """Bronze rows plus what the suites need beyond bronze: `event_time` (UTC),
    `event_time_offset_hours`, `_event_time_text`, `_host_tz`, `_day_rows`, `_day_min_rows`,
    `_event_key` (Windows: the de-duplication key, `windows_event_key`) and `_candidate`
    (parsed and typed, so the suite applies).

    Windows reads `EventTime` (host local time) only when `@timestamp` is absent; a present
    but unparseable `@timestamp` stays unparseable (the record is suspect).
    """
    df = bronze
    host = host_column(source)
    if host is not None and host_tz is not None:
        tz = host_tz.select(
            F.col("host_key").alias("_host_key"), F.col("host_tz").alias("_host_tz")
        )
        df = df.withColumn("_host_key", F.lower(F.trim(host))).join(
            F.broadcast(tz), "_host_key", "left"
        )
        df = df.drop("_host_key")
    else:
        df = df.withColumn("_host_tz", F.lit(None).cast("string"))
    text = present_text(F.col("event_time_raw"))
    if source == "windows":
        text = F.coalesce(text, present_text(F.col("event_time_local")))
    df = df.withColumn("_event_time_text", text)
    df = df.withColumn(
        "event_time",
        parse_event_time(F.col("_event_time_text"), F.col("run_date"), F.col("_host_tz")),
    )
    df = df.withColumn(
        "event_time_offset_hours", event_offset_hours(F.col("event_time"), F.col("run_date"))
    )
    if volume is not None:
        df = df.join(
            F.broadcast(volume.select("run_date", "_day_rows", "_day_min_rows")), "run_date", "left"
        )
    else:
        df = df.withColumn("_day_rows", F.lit(None).cast("long")).withColumn(
            "_day_min_rows", F.lit(None).cast("double")
        )
    if source == "windows":
        df = df.withColumn("_event_key", windows_event_key())
    cast_errors = F.coalesce(F.size(F.col("_cast_errors")), F.lit(0))
    return df.withColumn("_candidate", (F.col("_parse_status") == PARSED) & (cast_errors <= 0))


def under_test(rows: DataFrame, suite: Suite) -> DataFrame:
    """The rows a suite applies to (`_candidate`), narrowed to the columns its expectations
    look at plus the run date and the event time's offset (the clock skew's histogram):
    the counts and Great Expectations read nothing else."""
    columns = dict.fromkeys(("run_date", *suite.columns, "event_time_offset_hours"))
    return rows.where(F.col("_candidate")).select(*columns)


# ---------------------------------------------------------------------------------------
# Volume and per-date counts
# ---------------------------------------------------------------------------------------


def delivered_counts(bronze: DataFrame) -> dict[date, dict[str, int]]:
    """Per run date: bronze rows, unparseable rows and rows with cast errors."""
    rows = (
        bronze.groupBy("run_date")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum((F.col("_parse_status") != PARSED).cast("long")).alias("unparseable"),
            F.sum(
                (
                    (F.col("_parse_status") == PARSED)
                    & (F.coalesce(F.size("_cast_errors"), F.lit(0)) > 0)
                ).cast("long")
            ).alias("cast_errors"),
        )
        .collect()
    )
    return {
        r["run_date"]: {
            "rows": int(r["rows"]),
            "unparseable": int(r["unparseable"] or 0),
            "cast_errors": int(r["cast_errors"] or 0),
        }
        for r in rows
    }


# ---------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------


def read_bronze(
    lake: Lake, source: str, dates: Sequence[date], first: date | None = None
) -> DataFrame:
    """`bronze.<source>` for `dates` (or every date from `first` to the last of `dates`),
    or an empty frame of its schema if the table does not exist."""
    table = BRONZE[source]
    if not lake.exists(table):
        return lake.spark.createDataFrame([], table.schema)
    if first is None:
        df = lake.read_dates(table, dates)
    else:
        df = lake.read(table).where(F.col("run_date").between(F.lit(first), F.lit(max(dates))))
    return conform(df, table)


def reference_host_timezones(spark: SparkSession, settings: Settings) -> DataFrame:
    return host_timezones(asset_inventory(spark, settings))
