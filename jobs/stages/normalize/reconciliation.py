"""Reconciliation: bronze rows = events + quarantined + duplicates, per source and date."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

# ---------------------------------------------------------------------------------------
# Reconciliation
# ---------------------------------------------------------------------------------------


def reconcile(
    raw: Mapping[tuple[str, date], int],
    events: Mapping[tuple[str, date], int],
    quarantined: Mapping[tuple[str, date], int],
    duplicates: Mapping[tuple[str, date], int],
    sources: Sequence[str],
    dates: Sequence[date],
) -> list[dict[str, Any]]:
    """RECONCILIATION rows: raw = events + quarantined + duplicates per (source, date)."""
    out = []
    for source in sources:
        for d in dates:
            k = (source, d)
            r, e, q, dup = (
                raw.get(k, 0),
                events.get(k, 0),
                quarantined.get(k, 0),
                duplicates.get(k, 0),
            )
            out.append(
                {
                    "run_date": d,
                    "source": source,
                    "raw_rows": r,
                    "events": e,
                    "quarantined": q,
                    "duplicates": dup,
                    "balanced": r == e + q + dup,
                }
            )
    return out


def counts_by_source_date(df: DataFrame, *extra: str) -> dict[tuple[Any, ...], int]:
    return {
        tuple(row[c] for c in ("source", "run_date", *extra)): int(row["n"])
        for row in df.groupBy("source", "run_date", *extra)
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    }
