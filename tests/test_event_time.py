"""Vendor timestamps -> UTC: every spelling the feeds use, host zones, BSD syslog's missing year."""

from __future__ import annotations

from datetime import date

from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.quality.event_time import event_offset_hours, host_timezones, parse_event_time

D = date(2026, 10, 1)

# (case, text, run_date, host zone, expected UTC or None)
CASES = [
    ("okta utc", "2026-10-01T08:00:01.123Z", D, None, "2026-10-01 08:00:01.123000"),
    ("okta offset", "2026-10-01T10:00:01.123+02:00", D, None, "2026-10-01 08:00:01.123000"),
    ("offset without colon", "2026-10-01T03:00:01-0500", D, None, "2026-10-01 08:00:01.000000"),
    ("cloudtrail", "2026-10-01T08:00:01Z", D, None, "2026-10-01 08:00:01.000000"),
    ("zeek epoch", "1727769600.123456", D, None, "2024-10-01 08:00:00.123456"),
    ("zeek epoch integer", "1727769600", D, None, "2024-10-01 08:00:00.000000"),
    ("pcap-relative epoch", "19.981745", D, None, "1970-01-01 00:00:19.981745"),
    ("zeek iso", "2026-10-01T08:00:01.123456Z", D, None, "2026-10-01 08:00:01.123456"),
    ("windows 7 digits", "2026-10-01T08:00:01.1234567Z", D, None, "2026-10-01 08:00:01.123456"),
    (
        "zone overrides host",
        "2026-10-01T08:00:01Z",
        D,
        "Asia/Kolkata",
        "2026-10-01 08:00:01.000000",
    ),
    ("eventtime summer", "2026-10-01 10:00:01", D, "Europe/Berlin", "2026-10-01 08:00:01.000000"),
    ("eventtime winter", "2026-12-01 09:00:01", D, "Europe/Berlin", "2026-12-01 08:00:01.000000"),
    ("eventtime india", "2026-10-01 13:30:01", D, "Asia/Kolkata", "2026-10-01 08:00:01.000000"),
    ("eventtime unknown host", "2026-10-01 08:00:01", D, None, "2026-10-01 08:00:01.000000"),
    (
        "rfc3339 rsyslog",
        "2026-10-01T10:00:01.123456+02:00",
        D,
        "Europe/Berlin",
        "2026-10-01 08:00:01.123456",
    ),
    ("bsd new york", "Oct  1 04:00:01", D, "America/New_York", "2026-10-01 08:00:01.000000"),
    (
        "bsd two digit day",
        "Oct 10 04:00:01",
        date(2026, 10, 10),
        "America/New_York",
        "2026-10-10 08:00:01.000000",
    ),
    (
        "bsd dec in jan folder",
        "Dec 31 23:59:58",
        date(2027, 1, 1),
        None,
        "2026-12-31 23:59:58.000000",
    ),
    (
        "bsd jan in dec folder",
        "Jan  1 00:00:01",
        date(2026, 12, 31),
        None,
        "2027-01-01 00:00:01.000000",
    ),
    (
        "bsd wrap crosses zone",
        "Dec 31 19:30:00",
        date(2027, 1, 1),
        "America/New_York",
        "2027-01-01 00:30:00.000000",
    ),
    ("bsd leap day", "Feb 29 12:00:00", date(2028, 2, 29), None, "2028-02-29 12:00:00.000000"),
    ("padded", "  2026-10-01T08:00:01Z ", D, None, "2026-10-01 08:00:01.000000"),
    ("missing", None, D, None, None),
    ("empty", "", D, None, None),
    ("bad iso", "2026-13-45T25:61:61Z", D, None, None),
    ("not a date", "not-a-date", D, None, None),
    ("slashes", "31/02/2026 25:00", D, None, None),
    ("zero date", "0000-00-00T00:00:00Z", D, None, None),
    ("bad epoch", "xx.yy", D, None, None),
    ("letter o epoch", "17O9000000.1", D, None, None),
    ("dotted epoch", "1.7.9.0", D, None, None),
    ("bad bsd", "Foo 99 99:99:99", D, None, None),
    ("bad bsd day", "Dec 45 25:61:99", D, None, None),
    ("bad rfc3339", "2026-13-45T99:99:99.000000+00:00", D, None, None),
    ("no seconds", "2026-10-01T08:00Z", D, None, None),
    ("feb 29 non leap", "Feb 29 12:00:00", D, None, None),
]


def test_parse_event_time_every_spelling(spark) -> None:  # type: ignore[no-untyped-def]
    rows = [(c, t, d, z) for c, t, d, z, _ in CASES]
    df = spark.createDataFrame(rows, "case string, text string, run_date date, tz string")
    parsed = parse_event_time(F.col("text"), F.col("run_date"), F.col("tz"))
    actual = df.select("case", F.date_format(parsed, "yyyy-MM-dd HH:mm:ss.SSSSSS").alias("utc"))
    expected = spark.createDataFrame([(c, e) for c, _, _, _, e in CASES], "case string, utc string")
    assertDataFrameEqual(actual, expected)


def test_event_offset_hours_measures_from_run_date_midnight_utc(spark) -> None:  # type: ignore[no-untyped-def]
    df = spark.createDataFrame(
        [
            ("late", "2026-09-30T22:00:00Z"),
            ("on time", "2026-10-01T12:30:00Z"),
            ("skewed", "2026-10-02T00:10:00Z"),
        ],
        "case string, text string",
    )
    offset = event_offset_hours(parse_event_time(F.col("text"), F.lit(D)), F.lit(D))
    actual = df.select("case", F.round(offset, 4).alias("hours"))
    expected = spark.createDataFrame(
        [("late", -2.0), ("on time", 12.5), ("skewed", 24.1667)], "case string, hours double"
    )
    assertDataFrameEqual(actual, expected)


def test_host_timezones_index_every_spelling_and_drop_unknown_zones(spark) -> None:  # type: ignore[no-untyped-def]
    assets = spark.createDataFrame(
        [
            ("WS-1", "WS-1.corp.example", "Europe/Berlin"),
            ("web-02", "web-02.corp.example", "Mars/Olympus_Mons"),
            ("db-3", None, "UTC"),
        ],
        "asset_id string, fqdn string, timezone string",
    )
    expected = spark.createDataFrame(
        [("ws-1", "Europe/Berlin"), ("ws-1.corp.example", "Europe/Berlin"), ("db-3", "UTC")],
        "host_key string, host_tz string",
    )
    assertDataFrameEqual(host_timezones(assets), expected)
