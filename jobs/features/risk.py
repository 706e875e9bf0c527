"""Risk bands: how a 0-100 risk reads (low, medium, high), the same in scores, metrics and
the report."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from jobs.core.config import ScoringSettings


def risk_band(risk: Column, cfg: ScoringSettings) -> Column:
    """`high` from `band_high`, `medium` from `band_medium`, else `low`."""
    return (
        F.when(risk >= cfg.band_high, "high")
        .when(risk >= cfg.band_medium, "medium")
        .otherwise("low")
    )
