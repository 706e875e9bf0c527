"""Timestamps in the spellings real feeds use, from integer epoch microseconds.

Formatting through `datetime` costs microseconds per call; at ten million events a day
that dominates, so these build the strings with integer arithmetic and cached day parts.
Local time comes from IANA zones (DST included); offsets are cached per zone and UTC hour.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "US_PER_DAY",
    "US_PER_HOUR",
    "bsd_syslog",
    "day_of",
    "day_start_us",
    "iso_offset_ms",
    "iso_utc_ms",
    "iso_utc_s",
    "iso_utc_us",
    "local_naive",
    "rfc3339_local_us",
    "utc_offset_s",
    "zeek_epoch",
    "zeek_open_close",
]

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def day_start_us(day: date) -> int:
    """Epoch microseconds of 00:00 UTC on `day`."""
    return (day.toordinal() - _EPOCH_ORDINAL) * US_PER_DAY


def day_of(ts_us: int) -> date:
    """The UTC date of a timestamp: which date folder an on-time event belongs to."""
    return date.fromordinal(_EPOCH_ORDINAL + ts_us // US_PER_DAY)


@functools.lru_cache(maxsize=8192)
def _day_parts(day_number: int) -> tuple[str, str]:
    d = date.fromordinal(_EPOCH_ORDINAL + day_number)
    return d.isoformat(), f"{_MONTHS[d.month - 1]} {d.day:2d}"


# "HH:MM:SS" for every second of a day: one list lookup instead of three divmods per stamp
_CLOCK = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]


def _parts(ts_us: int) -> tuple[str, str, int]:
    """(YYYY-MM-DD, HH:MM:SS, microseconds) of a UTC (or already shifted) timestamp."""
    seconds, micros = divmod(ts_us, US_PER_SECOND)
    day_number, second_of_day = divmod(seconds, 86400)
    return _day_parts(day_number)[0], _CLOCK[second_of_day], micros


def iso_utc_us(ts_us: int) -> str:
    day, clock, us = _parts(ts_us)
    return f"{day}T{clock}.{us:06d}Z"


def iso_utc_ms(ts_us: int) -> str:
    day, clock, us = _parts(ts_us)
    return f"{day}T{clock}.{us // 1000:03d}Z"


def iso_utc_s(ts_us: int) -> str:
    day, clock, _ = _parts(ts_us)
    return f"{day}T{clock}Z"


def _offset_text(offset_s: int) -> str:
    sign = "+" if offset_s >= 0 else "-"
    hours, minutes = divmod(abs(offset_s) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def iso_offset_ms(ts_us: int, offset_s: int) -> str:
    """ISO 8601 in local wall time with its offset (same instant as the `Z` form)."""
    day, clock, us = _parts(ts_us + offset_s * US_PER_SECOND)
    return f"{day}T{clock}.{us // 1000:03d}{_offset_text(offset_s)}"


def rfc3339_local_us(ts_us: int, offset_s: int) -> str:
    """rsyslog's high-precision RFC 3339 timestamp in host local time."""
    day, clock, us = _parts(ts_us + offset_s * US_PER_SECOND)
    return f"{day}T{clock}.{us:06d}{_offset_text(offset_s)}"


def local_naive(ts_us: int, offset_s: int) -> str:
    """`YYYY-MM-DD HH:MM:SS` wall time without zone, as NXLog writes EventTime."""
    day, clock, _ = _parts(ts_us + offset_s * US_PER_SECOND)
    return f"{day} {clock}"


def bsd_syslog(ts_us: int, offset_s: int) -> str:
    """`Mmm dd HH:MM:SS` (RFC 3164): host local time, no year, day padded with a space."""
    seconds = (ts_us + offset_s * US_PER_SECOND) // US_PER_SECOND
    day_number, second_of_day = divmod(seconds, 86400)
    return f"{_day_parts(day_number)[1]} {_CLOCK[second_of_day]}"


def zeek_epoch(ts_us: int) -> str:
    """Zeek's `time` type: epoch seconds with six decimals."""
    seconds, micros = divmod(ts_us, US_PER_SECOND)
    return f"{seconds}.{micros:06d}"


def zeek_open_close(ts_us: int) -> str:
    """Zeek's #open/#close stamp, `YYYY-MM-DD-HH-MM-SS`."""
    day, clock, _ = _parts(ts_us)
    return f"{day}-{clock.replace(':', '-')}"


@functools.lru_cache(maxsize=65536)
def _offset_for_hour(tz: str, hour_index: int) -> int:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(hours=hour_index)
    offset = moment.astimezone(ZoneInfo(tz)).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def utc_offset_s(tz: str, ts_us: int) -> int:
    """UTC offset of zone `tz` at `ts_us` (zones here change offset on whole UTC hours)."""
    return _offset_for_hour(tz, ts_us // US_PER_HOUR)
