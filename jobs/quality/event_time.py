"""Event timestamps as vendors write them -> UTC, as Spark expressions (no Python UDFs).

Shared by `validate` (is the time parseable, and inside the run date's window?) and
`normalize` (silver `event_time`), so both stages agree on every row. The spelling of the
text decides how it is read, whatever the source:

| spelling                                   | example                              | read as |
|--------------------------------------------|--------------------------------------|---------|
| epoch seconds (Zeek `ts`)                  | `1727769600.123456`                  | UTC |
| ISO 8601 / RFC 3339 with `Z` or an offset  | `2026-10-01T08:00:01.123+02:00`      | the instant it names |
| ISO 8601 without a zone (NXLog `EventTime`)| `2026-10-01 08:00:01`                | wall time in the host's zone |
| BSD syslog (RFC 3164), no year             | `Dec 31 23:59:58`, `Jan  1 00:00:01` | wall time in the host's zone, year from the run date |

A host whose zone is unknown (not in the asset inventory) is read as UTC. BSD syslog has
no year: the run date's year is used, moved one year back (or forward) when that puts
the event more than half a year after (or before) the run date, so `Dec 31` lines in the
`Jan 1` folder land in December of the previous year. Anything else is null: the caller
quarantines it.
"""

from __future__ import annotations

from zoneinfo import available_timezones

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

__all__ = [
    "BSD_SYSLOG",
    "EPOCH",
    "ISO_NAIVE",
    "ISO_ZONED",
    "event_offset_hours",
    "host_timezones",
    "parse_event_time",
    "valid_timezone",
]

EPOCH = r"^\d{1,11}(\.\d{1,9})?$"
ISO_ZONED = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|z|[+-]\d{2}:?\d{2})$"
ISO_NAIVE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?$"
BSD_SYSLOG = r"^[A-Z][a-z]{2} +\d{1,2} +\d{2}:\d{2}:\d{2}$"

_US_PER_HOUR = 3_600_000_000
_HALF_YEAR_DAYS = 183


def _utc_from_wall(wall: Column, tz: Column) -> Column:
    """Wall-clock time in zone `tz` (null: UTC) -> the UTC instant."""
    return F.to_utc_timestamp(wall, F.coalesce(tz, F.lit("UTC")))


def _epoch(text: Column) -> Column:
    micros = (text.try_cast("decimal(21,9)") * F.lit(1_000_000)).cast("long")
    return F.timestamp_micros(micros)


def _bsd(text: Column, run_date: Column, tz: Column) -> Column:
    """`Mmm d HH:MM:SS` with the year that puts it nearest the run date, in the host zone."""
    squeezed = F.regexp_replace(text, r" +", " ")
    stamp = F.concat(F.year(run_date).cast("string"), F.lit(" "), squeezed)
    wall = F.try_to_timestamp(stamp, F.lit("yyyy MMM d HH:mm:ss"))
    days_after = F.datediff(F.to_date(wall), run_date)
    wall = (
        F.when(days_after > _HALF_YEAR_DAYS, wall - F.make_ym_interval(F.lit(1), F.lit(0)))
        .when(days_after < -_HALF_YEAR_DAYS, wall + F.make_ym_interval(F.lit(1), F.lit(0)))
        .otherwise(wall)
    )
    return _utc_from_wall(wall, tz)


def parse_event_time(text: Column, run_date: Column, tz: Column | None = None) -> Column:
    """The UTC instant of a vendor timestamp, or null if it is missing or unparseable.

    `tz` is the IANA zone of the host that wrote the line (used only for spellings
    without a zone); `run_date` supplies the year of BSD syslog stamps.
    """
    zone = tz if tz is not None else F.lit(None).cast("string")
    trimmed = F.trim(text)
    return (
        F.when(trimmed.rlike(EPOCH), _epoch(trimmed))
        .when(trimmed.rlike(ISO_ZONED), trimmed.try_cast("timestamp"))
        .when(trimmed.rlike(ISO_NAIVE), _utc_from_wall(trimmed.try_cast("timestamp"), zone))
        .when(trimmed.rlike(BSD_SYSLOG), _bsd(trimmed, run_date, zone))
        .otherwise(F.lit(None).cast("timestamp"))
    )


def event_offset_hours(event_time: Column, run_date: Column) -> Column:
    """Hours from 00:00 UTC of the run date to the event (negative: delivered late)."""
    start = F.unix_micros(F.to_timestamp(run_date))
    return (F.unix_micros(event_time) - start) / F.lit(float(_US_PER_HOUR))


def valid_timezone(tz: Column) -> Column:
    """`tz` when it is an IANA zone Spark and Python both know, else null.

    An unknown zone name would make `to_utc_timestamp` fail the whole job, so reference
    data is checked before it is used.
    """
    known = sorted(z for z in available_timezones() if "/" in z or z == "UTC")
    return F.when(tz.isin(known), tz)


def host_timezones(assets: DataFrame) -> DataFrame:
    """(host_key, host_tz): every spelling of a host (asset id, FQDN, short name), lower case."""
    tz = valid_timezone(F.trim(F.col("timezone")))
    keys = F.array_distinct(
        F.array(
            F.lower(F.trim(F.col("asset_id"))),
            F.lower(F.trim(F.col("fqdn"))),
            F.lower(F.split(F.trim(F.col("fqdn")), r"\.").getItem(0)),
        )
    )
    return (
        assets.select(F.explode(keys).alias("host_key"), tz.alias("host_tz"))
        .where(
            F.col("host_key").isNotNull() & (F.col("host_key") != "") & F.col("host_tz").isNotNull()
        )
        .groupBy("host_key")
        .agg(F.min("host_tz").alias("host_tz"))  # deterministic if two rows disagree
    )
