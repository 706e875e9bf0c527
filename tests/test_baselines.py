"""Baselines: entity_daily from hand-built silver events, profiles from hand-built entity_daily.

Expected values are worked out by hand in the comments; frames are compared whole.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from jobs.core.config import BaselineSettings
from jobs.core.context import RunContext
from jobs.core.lake import Lake
from jobs.core.tables import BASELINE_ITEM_SETS, BASELINES, ENTITY_DAILY, SILVER_EVENTS
from jobs.reference.files import ASSET_INVENTORY, IDENTITY_DIRECTORY
from jobs.stages.baselines.entity_daily import entity_daily
from jobs.stages.baselines.profiles import (
    WINDOW_OF_GROUP,
    advance_baselines,
    full_baselines,
    observations,
)
from jobs.stages.baselines.stage import _stored_windows, run_baselines
from tests.conftest import PipelineMonth, test_settings

MON = date(2026, 10, 5)  # a Monday; New York is UTC-4 and London UTC+1 that week
D0 = date(2026, 10, 1)


def day(n: int) -> date:
    return D0 + timedelta(days=n)


def event(run_date: date, at: datetime, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {f.name: None for f in SILVER_EVENTS.schema.fields}
    row.update(
        run_date=run_date,
        event_uid=f"{at.isoformat()}-{sorted(fields.items())}",
        source="test",
        event_time=at,
    )
    row.update(fields)
    return row


def silver(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    return spark.createDataFrame(rows, SILVER_EVENTS.schema)


def hours(**buckets: int) -> list[int]:
    """168 counts from h<bucket>=count keywords."""
    out = [0] * 168
    for key, count in buckets.items():
        out[int(key[1:])] = count
    return out


def daily(run_date: date, entity_type: str, entity_id: str, **fields: Any) -> dict[str, Any]:
    """An entity_daily row with zero counters and empty sets unless given."""
    row: dict[str, Any] = {
        "run_date": run_date,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "peer_group": None,
        "tz": "UTC",
        "events": 0,
        "failures": 0,
        "signins": 0,
        "signin_failures": 0,
        "privileged_actions": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "first_event_time": None,
        "last_event_time": None,
        "hour_of_week": hours(),
        **{name: {} for name in BASELINE_ITEM_SETS},
    }
    row.update(fields)
    return row


def daily_frame(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    return spark.createDataFrame(rows, ENTITY_DAILY.schema)


def collected(df: DataFrame) -> list[dict[str, Any]]:
    keys = [c for c in ("run_date", "entity_type", "entity_id") if c in df.columns]
    return [r.asDict(recursive=True) for r in df.orderBy(*keys).collect()]


def by_id(df: DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["entity_type"], r["entity_id"]): r for r in collected(df)}


def seen(first: date, last: date, days: int, events: int) -> dict[str, Any]:
    return {"first_seen": first, "last_seen": last, "days": days, "events": events}


def fold(
    spark: SparkSession,
    rows: list[dict[str, Any]],
    start: date,
    end: date,
    settings: BaselineSettings,
) -> dict[date, DataFrame]:
    """baselines(start..end) the incremental way: start from the (empty) state before any day."""
    obs = observations(daily_frame(spark, rows)).cache()
    state = full_baselines(obs, start, settings).localCheckpoint()
    out = {start: state}
    target = start
    while target < end:
        target += timedelta(days=1)
        state = advance_baselines(state, obs, target, settings).localCheckpoint()
        out[target] = state
    return out


SMALL = BaselineSettings(
    habit_window_days=4,
    country_device_window_days=6,
    host_window_days=8,
    learning_period_days=3,
    learning_min_signins=5,
)


# --- gold.entity_daily ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def monday_events(spark: SparkSession) -> DataFrame:
    at = lambda h, m=0, d=MON: datetime(d.year, d.month, d.day, h, m)  # noqa: E731
    sunday = MON - timedelta(days=1)
    rows = [
        # e1, e2: IdP sign-in, then a failed one, from alice's workstation (09:15 New York)
        event(MON, at(13, 15), class_name="authentication", activity_name="logon", status="success",
              user_id="alice", user_type="human", peer_group="stale/group", device_id="ws-nyc-1",
              src_ip="203.0.113.5", src_country="US", src_city="New York", src_asn=7922, app_name="slack"),
        event(MON, at(13, 16), class_name="authentication", activity_name="logon", status="failure",
              user_id="alice", user_type="human", device_id="ws-nyc-1",
              src_ip="203.0.113.5", src_country="US", src_city="New York", src_asn=7922, app_name="slack"),
        # e3: late-arriving Sunday 23:30 UTC privileged logon to srv-1 (Sunday 19:30 NY, Monday 00:30 London)
        event(MON, at(23, 30, sunday), class_name="authentication", activity_name="logon", status="success",
              user_id="alice", user_type="human", device_id="ws-nyc-1", dst_host="srv-1",
              src_ip="10.0.0.5", is_privileged=True),
        # e4: a process alice ran on srv-1 (10:00 NY, 15:00 London)
        event(MON, at(14, 0), class_name="process", activity_name="launch", status="success",
              user_id="alice", device_id="srv-1", process_name=r"C:\Windows\System32\CMD.EXE",
              parent_process_name=r"C:\Windows\explorer.exe"),
        # e5: a flow ws-nyc-1 -> srv-1, 1000 bytes sent, 50 back (10:05 NY, 15:05 London)
        event(MON, at(14, 5), class_name="network", activity_name="connection", status="success",
              device_id="ws-nyc-1", dst_host="srv-1", src_ip="10.0.0.5", bytes_out=1000, bytes_in=50),
        # e6: a failed privileged cloud call by a service account silver calls human (20:00 UTC)
        event(MON, at(20, 0), class_name="api", activity_name="api_call", status="failure",
              user_id="svc-deploy", user_type="human", cloud_service="iam", cloud_action="CreateUser",
              src_ip="198.51.100.7", src_country="IE", src_city="Dublin", src_asn=16509, is_privileged=True),
        # e7: no account, no host: belongs to no entity
        event(MON, at(7, 0), class_name="dns", activity_name="query", src_ip="192.0.2.1", dns_query="x.example"),
        # e8: an account the directory does not know; silver says service (08:00 UTC)
        event(MON, at(8, 0), class_name="dns", activity_name="query", status="success",
              user_id="bob", user_type="service", peer_group="ops/batch", src_ip="10.1.1.1"),
    ]  # fmt: skip
    return silver(spark, rows)


def test_entity_daily_counts_every_statistic_in_local_time(
    spark: SparkSession, monday_events: DataFrame
) -> None:
    accounts = spark.createDataFrame(
        [
            ("alice", "human", "eng/dev", "America/New_York"),
            ("svc-deploy", "service", "it/service", "UTC"),
        ],
        "user_id string, account_type string, peer_group string, timezone string",
    )
    hosts = spark.createDataFrame(
        [("srv-1", "Europe/London"), ("ws-nyc-1", "America/New_York")],
        "asset_id string, timezone string",
    )
    got = collected(entity_daily(monday_events, accounts, hosts))
    first = datetime(2026, 10, 4, 23, 30)
    expected = [
        daily(MON, "host", "srv-1", tz="Europe/London", events=3, signins=1, privileged_actions=1,
              bytes_in=1000, bytes_out=50,  # the flow's target receives what the source sent
              first_event_time=first, last_event_time=datetime(2026, 10, 5, 14, 5),
              hour_of_week=hours(h0=1, h15=2), src_ips={"10.0.0.5": 2}, devices={"ws-nyc-1": 2},
              process_pairs={"explorer.exe>cmd.exe": 1}, users={"alice": 2}),
        daily(MON, "host", "ws-nyc-1", tz="America/New_York", events=4, failures=1, privileged_actions=1,
              bytes_in=50, bytes_out=1000, first_event_time=first, last_event_time=datetime(2026, 10, 5, 14, 5),
              hour_of_week=hours(h9=2, h10=1, h163=1), src_countries={"US": 2}, src_cities={"US/New York": 2},
              src_asns={"7922": 2}, src_ips={"10.0.0.5": 2, "203.0.113.5": 2}, dst_hosts={"srv-1": 2},
              apps={"slack": 2}, users={"alice": 3}),
        daily(MON, "service_account", "bob", peer_group="ops/batch", events=1,
              first_event_time=datetime(2026, 10, 5, 8), last_event_time=datetime(2026, 10, 5, 8),
              hour_of_week=hours(h8=1), src_ips={"10.1.1.1": 1}),
        daily(MON, "service_account", "svc-deploy", peer_group="it/service", events=1, failures=1,
              privileged_actions=1, first_event_time=datetime(2026, 10, 5, 20),
              last_event_time=datetime(2026, 10, 5, 20), hour_of_week=hours(h20=1), src_countries={"IE": 1},
              src_cities={"IE/Dublin": 1}, src_asns={"16509": 1}, src_ips={"198.51.100.7": 1},
              cloud_actions={"iam:CreateUser": 1}),
        daily(MON, "user", "alice", peer_group="eng/dev", tz="America/New_York", events=4, failures=1, signins=2,
              signin_failures=1, privileged_actions=1, first_event_time=first,
              last_event_time=datetime(2026, 10, 5, 14), hour_of_week=hours(h9=2, h10=1, h163=1),
              src_countries={"US": 2}, src_cities={"US/New York": 2}, src_asns={"7922": 2},
              src_ips={"10.0.0.5": 1, "203.0.113.5": 2}, devices={"srv-1": 1, "ws-nyc-1": 3},
              dst_hosts={"srv-1": 1}, apps={"slack": 2}, process_pairs={"explorer.exe>cmd.exe": 1}),
    ]  # fmt: skip
    assert got == expected


def test_entity_daily_without_reference_uses_silver_and_utc(
    spark: SparkSession, monday_events: DataFrame
) -> None:
    got = entity_daily(monday_events).select(
        "entity_type", "entity_id", "peer_group", "tz", "hour_of_week"
    )
    summary = [
        (
            r["entity_type"],
            r["entity_id"],
            r["peer_group"],
            r["tz"],
            [h for h, n in enumerate(r["hour_of_week"]) if n],
        )
        for r in collected(got)
    ]
    # UTC buckets: Sunday 23:30 -> 6*24+23 = 167; Monday 13:xx -> 13, 14:xx -> 14
    assert summary == [
        ("host", "srv-1", None, "UTC", [14, 167]),
        ("host", "ws-nyc-1", None, "UTC", [13, 14, 167]),
        ("service_account", "bob", "ops/batch", "UTC", [8]),
        ("user", "alice", "stale/group", "UTC", [13, 14, 167]),
        ("user", "svc-deploy", None, "UTC", [20]),
    ]


# --- gold.baselines: statistics, windows, incremental == full ------------------------------

LAST = 9  # baselines for days 1..LAST, folded incrementally and recomputed in full


def _hand_history() -> list[dict[str, Any]]:
    return [
        # u1, u2: robust statistics (target day 4: the habit window is days 0..3)
        daily(day(0), "user", "u1", events=5, bytes_out=10, bytes_in=1, signins=2, hour_of_week=hours(h9=2),
              apps={"slack": 2}),
        daily(day(1), "user", "u1", events=7, bytes_out=20, bytes_in=1, privileged_actions=2, signins=1,
              hour_of_week=hours(h9=1, h10=4)),
        daily(day(2), "user", "u1", events=9, bytes_out=30, bytes_in=1, failures=1,
              hour_of_week=hours(h10=1), apps={"slack": 1, "zoom": 5}),
        daily(day(3), "user", "u1", events=100, bytes_out=1000, bytes_in=1, failures=5, privileged_actions=3,
              hour_of_week=hours(h11=1)),
        daily(day(0), "user", "u2", events=4, bytes_out=4),
        daily(day(1), "user", "u2", events=1, bytes_out=1),
        daily(day(3), "user", "u2", events=7, bytes_out=7),
        # u3: every kind of item seen once, on day 0
        daily(day(0), "user", "u3", events=1, hour_of_week=hours(h1=1), apps={"a": 1}, src_countries={"US": 1},
              devices={"d": 1}, dst_hosts={"h": 1}),
        # u4: app "a" on days 0, 4 (gap 4 = the habit window: same streak) and 8 (gap 4 again), then
        # u5: on days 0 and 5 (gap 5: a new streak)
        *[daily(day(d), "user", "u4", events=1, apps={"a": 1}) for d in (0, 4, 8)],
        *[daily(day(d), "user", "u5", events=1, apps={"a": 1}) for d in (0, 5)],
    ]  # fmt: skip


def _random_history(days: int, seed: int = 11) -> list[dict[str, Any]]:
    """Sparse activity with gaps, moves between peer groups and items coming and going."""
    rng = random.Random(seed)
    entities = [
        ("user", "r1"),
        ("user", "r2"),
        ("user", "r3"),
        ("service_account", "s1"),
        ("host", "h1"),
    ]
    vocab = {name: [f"{name[:3]}{i}" for i in range(4)] for name in BASELINE_ITEM_SETS}
    rows = []
    for d in range(days):
        for etype, eid in entities:
            if rng.random() < 0.3:
                continue
            sets = {
                name: {item: rng.randint(1, 4) for item in vocab[name] if rng.random() < 0.25}
                for name in BASELINE_ITEM_SETS
            }
            buckets = {f"h{rng.randrange(168)}": rng.randint(1, 5) for _ in range(3)}
            peer = rng.choice(["eng/dev", "eng/dev", "sales/ae", None]) if etype != "host" else None
            rows.append(
                daily(day(d), etype, eid, peer_group=peer, tz=rng.choice(["UTC", "Europe/Berlin"]),
                      events=rng.randint(1, 50), failures=rng.randint(0, 3), signins=rng.randint(0, 3),
                      privileged_actions=rng.choice([0, 0, 1]), bytes_in=rng.randint(0, 10**6),
                      bytes_out=rng.randint(0, 10**9), hour_of_week=hours(**buckets), **sets)
            )  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def folded(
    spark: SparkSession,
) -> tuple[dict[date, list[dict[str, Any]]], dict[date, list[dict[str, Any]]]]:
    """(incremental, full) baselines of days 1..LAST, each as collected rows."""
    rows = _hand_history() + _random_history(LAST)
    states = fold(spark, rows, day(0), day(LAST), SMALL)
    obs = observations(daily_frame(spark, rows)).cache()
    incremental = {d: collected(states[d]) for d in states if d > day(0)}
    full = {d: collected(full_baselines(obs, d, SMALL)) for d in incremental}
    return incremental, full


def test_full_baselines_of_many_dates_are_each_dates_own(spark: SparkSession, folded: Any) -> None:
    """The fallback recomputes every date that needs it in one query: the same rows as one
    recompute per date."""
    _, full = folded
    rows = _hand_history() + _random_history(LAST)
    obs = observations(daily_frame(spark, rows))
    together = collected(full_baselines(obs, sorted(full), SMALL))
    assert together == [r for d in sorted(full) for r in full[d]]


def _row(rows: list[dict[str, Any]], entity_id: str) -> dict[str, Any]:
    return next(r for r in rows if r["entity_type"] == "user" and r["entity_id"] == entity_id)


def test_baseline_statistics_by_hand(folded: Any) -> None:
    incremental, full = folded
    u1, u2 = _row(full[day(4)], "u1"), _row(full[day(4)], "u2")
    assert u1["hour_of_week"] == hours(h9=3, h10=5, h11=1)
    assert u1["apps"] == {"slack": seen(day(0), day(2), 2, 3), "zoom": seen(day(2), day(2), 1, 5)}
    # bytes_out 10, 20, 30, 1000: median (20+30)/2 = 25; |x-25| = 15, 5, 5, 975 -> MAD (5+15)/2 = 10
    # events 5, 7, 9, 100: median 8; deviations 3, 1, 1, 92 -> MAD 2
    # failures 0, 0, 1, 5: median 0.5; deviations .5, .5, .5, 4.5 -> MAD .5
    assert (u1["bytes_out_median"], u1["bytes_out_mad"]) == (25.0, 10.0)
    assert (u1["events_median"], u1["events_mad"]) == (8.0, 2.0)
    assert (u1["failures_median"], u1["failures_mad"]) == (0.5, 0.5)
    assert (u1["bytes_in_median"], u1["bytes_in_mad"]) == (1.0, 0.0)
    assert (u1["privileged_actions_total"], u1["privileged_days"], u1["days_observed"]) == (5, 2, 4)
    assert (
        u1["first_seen"],
        u1["last_seen"],
        u1["days_active_to_date"],
        u1["signins_to_date"],
    ) == (day(0), day(3), 4, 3)
    # u2: 4, 1, 7 -> median 4; deviations 0, 3, 3 -> MAD 3
    assert (u2["events_median"], u2["events_mad"], u2["days_observed"]) == (4.0, 3.0, 3)
    assert [v["day"] for v in u2["daily_values"]] == [day(0), day(1), day(3)]
    # a day later day 0 has left the habit window: 20, 30, 1000 -> median 30, MAD 10
    u1_next = _row(full[day(5)], "u1")
    assert (u1_next["bytes_out_median"], u1_next["bytes_out_mad"], u1_next["days_observed"]) == (
        30.0,
        10.0,
        3,
    )
    assert u1_next["apps"] == {
        "slack": seen(day(0), day(2), 1, 1),
        "zoom": seen(day(2), day(2), 1, 5),
    }
    assert _row(incremental[day(4)], "u1") == u1


def test_item_windows_expire_at_exactly_n_days(folded: Any) -> None:
    incremental, _ = folded
    for k in range(1, LAST + 1):
        b = _row(incremental[day(k)], "u3")
        assert (bool(b["apps"]), bool(b["daily_values"]), sum(b["hour_of_week"]) > 0) == (
            k <= 4,
        ) * 3, k
        assert bool(b["src_countries"]) == bool(b["devices"]) == (k <= 6), k
        assert bool(b["dst_hosts"]) == (k <= 8), k
        assert b["last_seen"] == day(0)  # the entity itself never expires
    assert _row(incremental[day(8)], "u3")["dst_hosts"] == {"h": seen(day(0), day(0), 1, 1)}


def test_first_seen_restarts_after_a_gap_longer_than_the_window(folded: Any) -> None:
    incremental, _ = folded
    assert _row(incremental[day(5)], "u4")["apps"] == {"a": seen(day(0), day(4), 1, 1)}
    assert _row(incremental[day(9)], "u4")["apps"] == {"a": seen(day(0), day(8), 1, 1)}
    assert _row(incremental[day(5)], "u5")["apps"] == {}
    assert _row(incremental[day(6)], "u5")["apps"] == {"a": seen(day(5), day(5), 1, 1)}


def test_incremental_equals_full_recompute_every_day(folded: Any) -> None:
    incremental, full = folded
    assert sum(len(rows) for rows in full.values()) > 80
    for d in full:
        assert incremental[d] == full[d], d
    # the random history really exercised expiry and streak restarts
    rows = [r for d in full for r in full[d] if r["entity_id"].startswith(("r", "s", "h"))]
    assert any(v["first_seen"] > day(0) for r in rows for v in r["dst_hosts"].values())
    assert any(
        v["last_seen"] < d - timedelta(days=4)
        for d in full
        for r in full[d]
        for v in r["devices"].values()
    )


# --- learning period and peer groups ------------------------------------------------------


def test_learning_period_falls_back_to_the_peer_group(spark: SparkSession) -> None:
    rows = []
    for d in range(10):
        rows += [
            daily(day(d), "user", "veteran", peer_group="eng/dev", events=1, signins=1),
            daily(day(d), "user", "quiet", peer_group="eng/dev", events=1),  # never signs in
            daily(day(d), "user", "loner", events=1),  # no peer group
            daily(day(d), "host", "old-host", events=1),
        ]
    rows += [
        daily(day(9), "user", "newcomer", peer_group="eng/dev", events=1, signins=9),
        daily(day(8), "host", "new-host", events=1),
        daily(
            day(7), "user", "boundary", peer_group="eng/dev", events=1, signins=5
        ),  # 3 days, 5 sign-ins
    ]
    obs = observations(daily_frame(spark, rows))
    got = {
        k: (r["in_learning"], r["compare_to_type"], r["compare_to"])
        for k, r in by_id(full_baselines(obs, day(10), SMALL)).items()
    }
    assert got == {
        ("user", "veteran"): (False, "user", "veteran"),
        ("user", "quiet"): (True, "peer_group", "eng/dev"),  # 0 < 5 sign-ins
        ("user", "loner"): (True, "user", "loner"),  # learning, but no peers to fall back to
        ("user", "newcomer"): (True, "peer_group", "eng/dev"),  # 1 day < 3
        ("user", "boundary"): (False, "user", "boundary"),  # exactly 3 days and 5 sign-ins
        ("host", "old-host"): (False, "host", "old-host"),  # hosts have no sign-in minimum
        ("host", "new-host"): (True, "host", "new-host"),
        ("peer_group", "eng/dev"): (False, "peer_group", "eng/dev"),
    }
    relaxed = SMALL.model_copy(update={"learning_period_days": 0, "learning_min_signins": 0})
    assert full_baselines(obs, day(10), relaxed).where("in_learning").count() == 0


def test_peer_group_profile_is_built_from_member_days(spark: SparkSession) -> None:
    rows = [
        daily(day(0), "user", "m1", peer_group="eng/dev", events=2, bytes_out=100, signins=1,
              hour_of_week=hours(h9=2), apps={"slack": 2}),
        daily(day(0), "user", "m2", peer_group="eng/dev", events=4, bytes_out=300, signins=2,
              hour_of_week=hours(h9=1, h10=3), apps={"slack": 1, "jira": 3}),
        daily(day(1), "user", "m2", peer_group="eng/dev", events=6, bytes_out=1000,
              hour_of_week=hours(h10=6), apps={"jira": 1}),
        # m3 moves from eng/dev to sales/ae: each day counts for the group it was in that day
        daily(day(0), "user", "m3", peer_group="eng/dev", events=10, bytes_out=200, hour_of_week=hours(h12=10)),
        daily(day(1), "user", "m3", peer_group="sales/ae", events=1, bytes_out=5, hour_of_week=hours(h12=1)),
        daily(day(1), "service_account", "svc", peer_group="it/service", events=3, hour_of_week=hours(h1=3)),
        daily(day(1), "host", "h1", events=8, hour_of_week=hours(h1=8)),
    ]  # fmt: skip
    full = by_id(full_baselines(observations(daily_frame(spark, rows)), day(2), SMALL))
    assert sorted(k for k in full if k[0] == "peer_group") == [
        ("peer_group", "eng/dev"), ("peer_group", "it/service"), ("peer_group", "sales/ae")
    ]  # fmt: skip
    eng = full[("peer_group", "eng/dev")]
    assert eng["hour_of_week"] == hours(h9=3, h10=9, h12=10)
    assert eng["apps"] == {"jira": seen(day(0), day(1), 2, 4), "slack": seen(day(0), day(0), 1, 3)}
    # member-days: events 2, 4, 10, 6 -> median 5, deviations 3, 1, 5, 1 -> MAD 2
    # bytes_out 100, 300, 200, 1000 -> median 250, deviations 150, 50, 50, 750 -> MAD 100
    assert (eng["events_median"], eng["events_mad"]) == (5.0, 2.0)
    assert (eng["bytes_out_median"], eng["bytes_out_mad"]) == (250.0, 100.0)
    assert (eng["days_observed"], eng["members_observed"], eng["signins_to_date"]) == (4, 3, 3)
    assert [(v["day"], v["member"]) for v in eng["daily_values"]] == [
        (day(0), "m1"), (day(0), "m2"), (day(0), "m3"), (day(1), "m2")
    ]  # fmt: skip
    assert (eng["first_seen"], eng["last_seen"], eng["peer_group"], eng["tz"]) == (
        day(0),
        day(1),
        None,
        None,
    )
    assert full[("user", "m3")]["peer_group"] == "sales/ae"
    assert full[("peer_group", "sales/ae")]["members_observed"] == 1
    assert full[("user", "m1")]["members_observed"] is None


# --- the stage: replay, range == date by date ----------------------------------------------


def _write_world(workdir: Path) -> None:
    """Reference files with every column, in the order jobs.reference.files reads them."""
    ref = workdir / "reference"
    ref.mkdir(parents=True)
    directory = [
        ("alice", "eng/dev", "human", "America/New_York"),
        ("bob", "eng/dev", "human", "Mars/Olympus"),  # not a zone: hours in UTC
        ("svc", "it/service", "service", "UTC"),
    ]
    lines = [",".join(IDENTITY_DIRECTORY.fieldNames())]
    for user, peer, kind, tz in directory:
        dept, role = peer.split("/")
        lines.append(
            f"{user},{user},{user},{user},{user},{user},{dept},{role},{peer},{kind},false,US,NYC,{tz},9,17,,,2020-01-01"
        )
    (ref / "identity_directory.csv").write_text("\n".join(lines) + "\n")
    (ref / "asset_inventory.csv").write_text(
        ",".join(ASSET_INVENTORY.fieldNames())
        + "\nsrv-1,srv-1.corp,10.0.0.1,server,Linux,high,,it,lon,Europe/London\n"
    )


def _silver_days(spark: SparkSession, days: list[date]) -> DataFrame:
    rows = []
    for n, d in enumerate(days):
        at = datetime(d.year, d.month, d.day, 9 + n, 0)
        rows += [
            event(d, at, class_name="authentication", activity_name="logon", status="success", user_id="alice",
                  device_id=f"ws-{n % 2}", dst_host="srv-1", src_ip=f"203.0.113.{n % 3}", src_country="US",
                  app_name="slack", bytes_out=100 * (n + 1)),
            event(d, at, class_name="api", activity_name="api_call", status="success", user_id="svc",
                  cloud_service="s3", cloud_action="GetObject", is_privileged=n % 2 == 0),
        ]  # fmt: skip
        if n != 1:
            rows.append(event(d, at, class_name="authentication", activity_name="logon", status="failure",
                              user_id="bob", src_ip="198.51.100.9", src_country="BR"))  # fmt: skip
    return silver(spark, rows)


def _context(
    spark: SparkSession, workdir: Path, days: list[date], **baselines: object
) -> RunContext:
    _write_world(workdir)
    settings = test_settings(workdir, baselines={"habit_window_days": 2, "country_device_window_days": 3,
                                                 "host_window_days": 4, **baselines})  # fmt: skip
    ctx = RunContext(spark=spark, settings=settings)
    ctx.lake.replace_dates(_silver_days(spark, days), "silver.events", days)
    return ctx


def _table(lake: Lake, table: str) -> list[dict[str, Any]]:
    return collected(lake.read(table))


def test_stage_replay_and_range_equal_date_by_date(spark: SparkSession, tmp_path: Path) -> None:
    days = [day(0), day(1)]
    ranged = _context(spark, tmp_path / "range", days)
    result = run_baselines(ranged, days)
    assert result.details["paths"] == {
        day(0).isoformat(): "full",
        **{d.isoformat(): "incremental" for d in days[1:]},
    }
    one_by_one = _context(spark, tmp_path / "daily", days)
    paths = [run_baselines(one_by_one, [d]).details["paths"] for d in days]
    # baselines(day 0) is empty (no history), so day 1 on its own recomputes, cheaply
    assert paths == [{day(0).isoformat(): "full"}, {day(1).isoformat(): "full"}]

    tables = {ENTITY_DAILY.name: ENTITY_DAILY.schema, BASELINES.name: BASELINES.schema}
    before = {t: _table(ranged.lake, t) for t in tables}
    for table in tables:
        assert before[table] == _table(one_by_one.lake, table), table
    # replaying the range rewrites the same rows, never duplicates
    run_baselines(ranged, days)
    assert {t: _table(ranged.lake, t) for t in tables} == before
    for table, schema in tables.items():
        stored = ranged.lake.read(table).schema
        assert [(f.name, f.dataType) for f in stored.fields] == [
            (f.name, f.dataType) for f in schema.fields
        ]

    ed = by_id(ranged.lake.read_dates(ENTITY_DAILY.name, [day(0)]))
    assert (ed[("user", "alice")]["tz"], ed[("user", "bob")]["tz"]) == ("America/New_York", "UTC")
    assert ed[("service_account", "svc")]["peer_group"] == "it/service"
    last = by_id(ranged.lake.read_dates(BASELINES.name, [day(1)]))
    # day 0 seen from day 1 (a Thursday: 09:00 UTC is 05:00 in New York, bucket 3*24+5);
    # bob, with no sign-in yet, falls back to his peer group
    assert last[("user", "alice")]["devices"] == {"ws-0": seen(day(0), day(0), 1, 1)}
    assert last[("user", "alice")]["hour_of_week"] == hours(h77=1)
    assert (last[("user", "bob")]["compare_to_type"], last[("user", "bob")]["compare_to"]) == (
        "peer_group", "eng/dev"
    )  # fmt: skip
    assert result.rows == {t: len(before[t]) for t in tables}
    # a single date advances the stored state; with other windows it could not
    after = run_baselines(ranged, [day(2)], rebuild_entity_daily=False)
    assert after.details["paths"] == {day(2).isoformat(): "incremental"}
    small = tuple(int(getattr(SMALL, f)) for f in WINDOW_OF_GROUP.values())
    assert _stored_windows(ranged, [day(1)])[day(1)] != small


# --- integration: generator -> ingest -> validate -> normalize -> baselines ----------------


@pytest.mark.slow
def test_generated_days_reconcile_with_silver(pipeline_month: PipelineMonth) -> None:
    """Every silver event lands in its entities' rows; directory facts reach the profiles."""
    from pyspark.sql import functions as F

    from jobs.reference.files import identity_directory

    ctx, spark = pipeline_month.ctx, pipeline_month.ctx.spark
    dates = pipeline_month.dates[:2]  # the second day's baselines know one day of history
    paths = pipeline_month.results["baselines"].details["paths"]
    first, *rest = pipeline_month.dates
    assert paths[first.isoformat()] == "full"  # nothing before the first day
    assert {paths[d.isoformat()] for d in rest} == {"incremental"}  # then advanced day by day

    silver_rows = ctx.lake.read_dates("silver.events", dates)
    daily_rows = ctx.lake.read_dates(ENTITY_DAILY.name, dates)
    accounts = daily_rows.where(F.col("entity_type") != "host")
    hosts = daily_rows.where(F.col("entity_type") == "host")
    # account events = silver rows with an account; host events = rows per distinct host named
    expected = silver_rows.groupBy("run_date").agg(
        F.count(F.col("user_id")).alias("account_events"),
        F.sum(
            F.size(
                F.array_distinct(
                    F.filter(F.array("dst_host", "device_id"), lambda x: x.isNotNull())
                )
            )
        ).alias("host_events"),
        F.countDistinct("user_id").alias("accounts"),
    )
    got = (
        accounts.groupBy("run_date")
        .agg(F.sum("events").alias("account_events"), F.count(F.lit(1)).alias("accounts"))
        .join(hosts.groupBy("run_date").agg(F.sum("events").alias("host_events")), "run_date")
    )
    assert collected(
        got.select("run_date", "account_events", "host_events", "accounts")
    ) == collected(expected.select("run_date", "account_events", "host_events", "accounts"))
    assert all(sum(r["hour_of_week"]) == r["events"] for r in collected(daily_rows))

    directory = {r["user_id"]: r for r in identity_directory(spark, ctx.settings).collect()}
    for r in collected(accounts):
        person = directory.get(r["entity_id"])
        if person is None:
            continue
        assert r["tz"] == person["timezone"], r["entity_id"]
        assert r["peer_group"] == person["peer_group"], r["entity_id"]
        assert (r["entity_type"] == "service_account") == (person["account_type"] == "service"), r[
            "entity_id"
        ]

    last = collected(ctx.lake.read_dates(BASELINES.name, [dates[-1]]))
    users = [r for r in last if r["entity_type"] == "user" and r["peer_group"] is not None]
    peers = {r["entity_id"] for r in last if r["entity_type"] == "peer_group"}
    assert users and all(r["in_learning"] for r in users)  # one day of history: everyone is new
    assert all(r["compare_to_type"] == "peer_group" and r["compare_to"] in peers for r in users)
    assert any(r["src_countries"] for r in users) and any(r["dst_hosts"] for r in users)
