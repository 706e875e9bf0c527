"""The volume gate: a day's delivered rows against the trailing median of the same day type."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession

from jobs.core.config import ValidationSettings
from jobs.features.calendar import day_type


@dataclass(frozen=True)
class Volume:
    run_date: date
    rows: int
    history_median: float | None
    history_days: int
    min_rows: float | None
    basis: str = "days"  # what the history counts: weekdays, weekend days or days


# How far back `same_day_type` looks for enough days of the same type (7 weekend days).
SAME_TYPE_LOOKBACK_DAYS = 35


def volume_lookback_days(validation: ValidationSettings) -> int:
    if validation.volume_compare == "same_day_type":
        return max(validation.volume_history_days, SAME_TYPE_LOOKBACK_DAYS)
    return validation.volume_history_days


def volume_rows(
    counts: Mapping[date, Mapping[str, int]], dates: Sequence[date], validation: ValidationSettings
) -> list[Volume]:
    """The volume gate's inputs per date: delivered rows vs the trailing median.

    The history is the last `volume_history_days` delivered days before the date, of the
    same day type (weekday / weekend: office telemetry drops by 80% at weekends) unless
    `volume_compare` is `all_days` (then: the calendar days of that window). Days with no
    delivery do not count (an outage is not normal volume). With fewer than
    `volume_min_history_days` days of history the gate is skipped (`min_rows` None).
    """
    out = []
    same_type = validation.volume_compare == "same_day_type"
    for d in dates:
        history: list[int] = []
        for i in range(1, volume_lookback_days(validation) + 1):
            h = d - timedelta(days=i)
            if len(history) >= validation.volume_history_days:
                break
            if same_type and day_type(h) != day_type(d):
                continue
            if h in counts and counts[h]["rows"] > 0:
                history.append(counts[h]["rows"])
        median = float(statistics.median(history)) if history else None
        enough = len(history) >= validation.volume_min_history_days
        min_rows = (
            validation.volume_drop_ratio * median if (median is not None and enough) else None
        )
        basis = (
            ("weekend days" if day_type(d) == "weekend" else "weekdays") if same_type else "days"
        )
        out.append(
            Volume(d, counts.get(d, {}).get("rows", 0), median, len(history), min_rows, basis)
        )
    return out


def volume_frame(spark: SparkSession, volumes: Sequence[Volume]) -> DataFrame:
    return spark.createDataFrame(
        [(v.run_date, v.rows, v.min_rows) for v in volumes],
        "run_date date, _day_rows long, _day_min_rows double",
    )
