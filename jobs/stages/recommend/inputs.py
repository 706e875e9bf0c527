"""What recommend (and `policy diff`, replaying a date) read besides entity risk."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pyspark.sql import functions as F

from jobs.core.context import RunContext
from jobs.core.tables import SOURCE_STATUS


def degraded_sources_by_date(ctx: RunContext, dates: Sequence[date]) -> dict[str, list[str]]:
    """Sources ops.source_status marks degraded or missing, per date (a handful of rows)."""
    if not ctx.lake.exists(SOURCE_STATUS):
        return {}
    rows = (
        ctx.lake.read_dates(SOURCE_STATUS, dates)
        .where(F.col("status").isin("degraded", "missing"))
        .select(F.date_format("run_date", "yyyy-MM-dd").alias("d"), "source")
        .distinct()
        .collect()
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["d"], []).append(r["source"])
    return {k: sorted(v) for k, v in out.items()}
