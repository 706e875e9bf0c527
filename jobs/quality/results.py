"""`ops.dq_results`: the rows of a suite's outcome per date, and the one writer of the table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from jobs.core.lake import Lake
from jobs.core.tables import DQ_RESULTS
from jobs.quality.rules import mostly_success
from jobs.quality.suites import (
    GEO_DATABASE_CURRENT,
    GEOLOCATION,
    INGEST_MOSTLY,
    PARSER_RULE,
    QUARANTINE_SHARE_RULE,
    QUARANTINED,
    REFERENCE_SUITE,
    TYPE_CHECK_RULE,
    Suite,
    resolve_kwargs,
)
from jobs.reference.geo import GeoDatabase

# ---------------------------------------------------------------------------------------
# Results, status
# ---------------------------------------------------------------------------------------


def dq_result_rows(
    suite: Suite,
    source: str,
    dates: Sequence[date],
    counts: Mapping[date, Mapping[str, Any]],
    params: Mapping[str, Any],
    delivered: Mapping[date, Mapping[str, int]] | None = None,
    max_quarantine_share: float | None = None,
) -> list[dict[str, Any]]:
    """`ops.dq_results` rows: per date, the ingest checks, every rule of the suite and (with
    `delivered` and `max_quarantine_share`) the share of the day's rows normalize will
    quarantine."""
    out: list[dict[str, Any]] = []
    for d in dates:
        day = counts.get(d, {})
        if delivered is not None:
            got = delivered.get(d, {"rows": 0, "unparseable": 0, "cast_errors": 0})
            for name, bad in (
                (PARSER_RULE, got["unparseable"]),
                (TYPE_CHECK_RULE, got["cast_errors"]),
            ):
                out.append(
                    {
                        "run_date": d,
                        "source": source,
                        "suite": suite.name,
                        "expectation": name,
                        "column": None,
                        "success": mostly_success(got["rows"], bad, INGEST_MOSTLY),
                        "unexpected_count": bad,
                        "element_count": got["rows"],
                        "critical": True,
                        "details": json.dumps(
                            {"mostly": INGEST_MOSTLY, "considered": got["rows"]}, sort_keys=True
                        ),
                    }
                )
        rows = int(day.get("rows", 0))
        for rule in suite.rules:
            considered, unexpected = day.get(rule.name, (0, 0))
            details = {
                "kwargs": resolve_kwargs(rule.kwargs, params, rule.name),
                "mostly": rule.mostly,
                "considered": considered,
                "unexpected_percent": round(100.0 * unexpected / considered, 4)
                if considered
                else 0.0,
                "row_level": rule.row_level,
            }
            out.append(
                {
                    "run_date": d,
                    "source": source,
                    "suite": suite.name,
                    "expectation": rule.name,
                    "column": ",".join(rule.columns) or None,
                    "success": mostly_success(considered, unexpected, rule.mostly),
                    "unexpected_count": unexpected,
                    "element_count": rows,
                    "critical": rule.critical,
                    "details": json.dumps(details, sort_keys=True, default=str),
                }
            )
        if delivered is not None and max_quarantine_share is not None:
            out.append(
                quarantine_share_row(
                    suite.name,
                    source,
                    d,
                    delivered.get(d, {"rows": 0, "unparseable": 0, "cast_errors": 0}),
                    int(day.get(QUARANTINED, 0)),
                    max_quarantine_share,
                )
            )
    return out


def quarantine_share_row(
    suite: str,
    source: str,
    day: date,
    delivered: Mapping[str, int],
    row_level: int,
    limit: float,
) -> dict[str, Any]:
    """The day's quarantined share (critical): unparseable lines, rows with cast errors and
    rows failing a row-level expectation, over every delivered row. What is quarantined is
    broken, so a day above the limit marks the source degraded."""
    rows = int(delivered["rows"])
    quarantined = int(delivered["unparseable"]) + int(delivered["cast_errors"]) + row_level
    share = quarantined / rows if rows else 0.0
    details = {
        "limit": limit,
        "share": round(share, 6),
        "considered": rows,
        PARSER_RULE: int(delivered["unparseable"]),
        TYPE_CHECK_RULE: int(delivered["cast_errors"]),
        "row_level": row_level,
    }
    return {
        "run_date": day,
        "source": source,
        "suite": suite,
        "expectation": QUARANTINE_SHARE_RULE,
        "column": None,
        "success": share <= limit,
        "unexpected_count": quarantined,
        "element_count": rows,
        "critical": True,
        "details": json.dumps(details, sort_keys=True),
    }


def geo_database_rows(
    database: GeoDatabase, dates: Sequence[date], max_age_days: int
) -> list[dict[str, Any]]:
    """Per date, whether the addresses were located with the user's own, current database.

    Fails (not critical: the signals still run, on older data) when the packaged database is
    in use, or when the database was built more than `max_age_days` before the date. The age
    is counted from the run date, not the wall clock, so re-running a date gives the same row.
    """
    rows = []
    for d in dates:
        age = max(0, database.age_days(d))
        stale = database.bundled or age > max_age_days
        details = {
            "database_type": database.database_type,
            "build_date": database.build_date.isoformat(),
            "age_days": age,
            "max_age_days": max_age_days,
            "bundled": database.bundled,
            "path": database.path,
            "asn": database.asn,
        }
        rows.append(
            {
                "run_date": d,
                "source": GEOLOCATION,
                "suite": REFERENCE_SUITE,
                "expectation": GEO_DATABASE_CURRENT,
                "column": "src_country,src_city,src_lat,src_lon",
                "success": not stale,
                "unexpected_count": None,
                "element_count": None,
                "critical": False,
                "details": json.dumps(details, sort_keys=True),
            }
        )
    return rows


def write_dq_results(
    lake: Lake,
    rows: Sequence[Mapping[str, Any]],
    dates: Sequence[date],
    suites: Iterable[str],
    sources: Iterable[str] | None = None,
) -> None:
    """Replace the rows of `suites` (and of `sources`, when given) for `dates` in
    `ops.dq_results`, in one commit; other suites' and sources' rows stay as they are.

    The one writer of the table: ingest (suite `ingest`), validate (the source suites) and
    normalize (`silver_events`) each replace only their own rows, with `replaceWhere`.
    """
    # suite and source names come from the suite files and SOURCES, never from data
    where = f"suite IN ({', '.join(repr(s) for s in sorted(set(suites)))})"
    if sources is not None:
        where += f" AND source IN ({', '.join(repr(s) for s in sorted(set(sources)))})"
    lake.replace_rows(rows, DQ_RESULTS, dates, where=where)
