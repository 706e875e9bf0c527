"""Time keys: the hour of week an event falls in (local time) and the type of a day."""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column
from pyspark.sql import functions as F

WEEKDAY, WEEKEND = "weekday", "weekend"


def hour_of_week(event_time: Column, tz: Column) -> Column:
    """0..167 with Monday 00:00-00:59 = 0, in `tz` (UTC when null), as an int.

    Baselines count events per bucket; scoring looks a session's bucket up in them.
    """
    local = F.from_utc_timestamp(event_time, F.coalesce(tz, F.lit("UTC")))
    return (F.weekday(local) * 24 + F.hour(local)).cast("int")


def day_type(day: date) -> str:
    """`weekend` on Saturday and Sunday, else `weekday` (office telemetry falls ~80% at
    weekends, so volumes and drift compare a day with days of its own type)."""
    return WEEKEND if day.weekday() >= 5 else WEEKDAY


def day_type_column(day: Column) -> Column:
    """`day_type` of a date column."""
    return F.when(F.dayofweek(day).isin(1, 7), F.lit(WEEKEND)).otherwise(F.lit(WEEKDAY))
