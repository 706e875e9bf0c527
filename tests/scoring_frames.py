"""Hand-built silver events and baselines for the scoring tests (tiny, explicit rows)."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from jobs.core.tables import BASELINES, SILVER_EVENTS

DAY = date(2026, 10, 20)  # a Tuesday
_uid = itertools.count(1)


def at(hh: int, mm: int = 0, ss: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day) + timedelta(hours=hh, minutes=mm, seconds=ss)


def event(**kw: Any) -> dict[str, Any]:
    """A silver.events row: every column None unless given; run_date from event_time's day."""
    row: dict[str, Any] = {f.name: None for f in SILVER_EVENTS.schema.fields}
    row.update(source="idp", class_name="authentication", activity_name="logon", status="success")
    row.update(kw)
    if row["event_time"] is None:
        row["event_time"] = at(10)
    if row["run_date"] is None:
        row["run_date"] = row["event_time"].date()
    if row["event_uid"] is None:
        row["event_uid"] = f"e{next(_uid):06d}"
    return row


def signin(user: str, when: datetime, ip: str = "198.51.100.7", **kw: Any) -> dict[str, Any]:
    """A successful IdP sign-in of `user` (geo columns given by the caller)."""
    base = {
        "user_id": user,
        "user_name_raw": user,
        "user_type": "human",
        "peer_group": "sales/account_executive",
        "src_ip": ip,
        "event_time": when,
        "src_is_internal": False,
        "src_is_known_egress": False,
    }
    base.update(kw)
    return event(**base)


def events_df(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    return spark.createDataFrame(rows, SILVER_EVENTS.schema)


def history(*items: str, last_seen: date | None = None, days: int = 5) -> dict[str, dict[str, Any]]:
    """An ITEM_HISTORY map: each item last seen `last_seen` (default: the day before DAY)."""
    seen = last_seen or DAY - timedelta(days=1)
    return {
        i: {
            "first_seen": seen - timedelta(days=days),
            "last_seen": seen,
            "days": days,
            "events": 10 * days,
        }
        for i in items
    }


def baseline(entity_id: str, entity_type: str = "user", **kw: Any) -> dict[str, Any]:
    """A gold.baselines row for DAY: not learning, compared with its peer group."""
    row: dict[str, Any] = {f.name: None for f in BASELINES.schema.fields}
    peer = kw.pop(
        "peer_group", "sales/account_executive" if entity_type != "host" else "workstation"
    )
    row.update(
        run_date=DAY,
        entity_type=entity_type,
        entity_id=entity_id,
        peer_group=peer,
        tz="UTC",
        in_learning=False,
        compare_to_type="peer_group",
        compare_to=peer,
        first_seen=DAY - timedelta(days=60),
        last_seen=DAY - timedelta(days=1),
        days_observed=30,
        days_active_to_date=60,
    )
    if entity_type == "host":  # hosts are compared with themselves (peers come from score)
        row.update(peer_group=None, compare_to_type="host", compare_to=entity_id)
    row.update(kw)
    return row


def peer(group: str, **kw: Any) -> dict[str, Any]:
    row = baseline(group, "peer_group", peer_group=group, **kw)
    row.update(compare_to_type="peer_group", compare_to=group, tz=None)
    return row


def baselines_df(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    return spark.createDataFrame(rows, BASELINES.schema)


def work_hours(start: int = 9, end: int = 18, per_hour: int = 10) -> list[int]:
    """A 168-bucket hour-of-week histogram with activity Monday-Friday start..end."""
    buckets = [0] * 168
    for day in range(5):
        for hour in range(start, end):
            buckets[day * 24 + hour] = per_hour
    return buckets


def fired(signal_rows: DataFrame, views: DataFrame, key: str = "entity_id") -> set[tuple[str, str]]:
    """{(view key, signal name)} for every fired signal (views: any frame with session_id, key)."""
    rows = (
        signal_rows.join(views.select("session_id", key).distinct(), "session_id")
        .select(key, "signal.name")
        .collect()
    )
    return {(r[0], r[1]) for r in rows}


def details(signal_rows: DataFrame) -> list[str]:
    return sorted(r[0] for r in signal_rows.select("signal.detail").collect())
