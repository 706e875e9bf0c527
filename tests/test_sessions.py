"""Sessionization (inactivity gap, keys, determinism) and the entity-day views."""

from __future__ import annotations

from datetime import timedelta

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.stages.score import sessions as session_views
from tests.scoring_frames import DAY, at, event, events_df, signin


def _signins() -> list[dict[str, object]]:
    return [
        signin("a@x", at(9, 0), device_id="d1"),
        signin("a@x", at(9, 20), device_id="d1", status="failure"),
        signin("a@x", at(9, 49), device_id="d1"),  # 29 min gap: same session
        signin("a@x", at(10, 30), device_id="d1"),  # 41 min gap: a new session
        signin("a@x", at(9, 5), device_id="d2"),  # another device: its own session
        signin("a@x", at(9, 6), device_id="d1", ip="203.0.113.1"),  # another IP: its own
        signin("b@x", at(9, 1), device_id="d1"),  # another user: its own
        signin("a@x", at(9, 10, day=DAY + timedelta(days=1)), device_id="d1"),  # next run date
        event(source="zeek_conn", class_name="network", device_id="d1"),  # not authentication
    ]


def test_sessions_split_on_gap_and_keys(spark: SparkSession) -> None:
    sessions = session_views.auth_sessions(
        session_views.sessionize(events_df(spark, _signins()), gap_minutes=30)
    )
    expected = spark.createDataFrame(
        [
            ("a@x", "d1", "198.51.100.7", at(9, 0), at(9, 49), 3, 1),
            ("a@x", "d1", "198.51.100.7", at(10, 30), at(10, 30), 1, 0),
            ("a@x", "d2", "198.51.100.7", at(9, 5), at(9, 5), 1, 0),
            ("a@x", "d1", "203.0.113.1", at(9, 6), at(9, 6), 1, 0),
            ("b@x", "d1", "198.51.100.7", at(9, 1), at(9, 1), 1, 0),
            (
                "a@x",
                "d1",
                "198.51.100.7",
                at(9, 10, day=DAY + timedelta(days=1)),
                at(9, 10, day=DAY + timedelta(days=1)),
                1,
                0,
            ),
        ],
        "user_id string, device_id string, src_ip string, session_start timestamp, session_end timestamp, "
        "event_count long, failure_count long",
    )
    got = sessions.select(*expected.columns)
    assertDataFrameEqual(got, expected)


def test_gap_is_configurable(spark: SparkSession) -> None:
    ev = events_df(spark, _signins())
    counts = {
        gap: session_views.auth_sessions(session_views.sessionize(ev, gap)).count()
        for gap in (15, 30, 60)
    }
    # 15 min splits 9:00|9:20|9:49; 60 min joins 9:49 and 10:30
    assert counts == {15: 8, 30: 6, 60: 5}


def test_session_ids_are_deterministic_and_unique(spark: SparkSession) -> None:
    ev = events_df(spark, _signins())
    first = session_views.auth_sessions(session_views.sessionize(ev, 30)).select(
        "session_id", "session_start"
    )
    again = session_views.auth_sessions(
        session_views.sessionize(ev.orderBy(F.rand(seed=3)), 30)
    ).select("session_id", "session_start")
    assertDataFrameEqual(first, again)
    ids = [r[0] for r in first.collect()]
    assert len(set(ids)) == len(ids) == 6 and all(len(i) == 32 for i in ids)


def test_entity_day_views(spark: SparkSession) -> None:
    rows = [
        event(
            source="windows",
            class_name="process",
            activity_name="launch",
            device_id="ws-1",
            parent_process_name="a.exe",
            process_name="b.exe",
            event_time=at(8),
        ),
        event(
            source="windows",
            class_name="process",
            activity_name="launch",
            device_id="ws-1",
            parent_process_name="a.exe",
            process_name="c.exe",
            event_time=at(9),
        ),
        # a process opening another (Sysmon 10) is an event of the host (a detection on it
        # needs the host's view) but not a process run on it
        event(
            source="windows",
            class_name="process",
            activity_name="access",
            device_id="ws-1",
            event_time=at(9),
        ),
        event(
            source="windows",
            class_name="authentication",
            user_id="u@x",
            dst_host="ws-1",
            device_id="ws-9",
            status="failure",
            event_time=at(10),
        ),
        event(
            source="zeek_conn",
            class_name="network",
            device_id="ws-1",
            src_ip="10.0.0.1",
            dst_ip="1.1.1.1",
            dst_port=443,
            bytes_out=100,
            bytes_in=10,
            src_is_internal=True,
            status="success",
        ),
        event(
            source="zeek_conn",
            class_name="network",
            device_id="ws-1",
            src_ip="10.0.0.1",
            dst_ip="10.0.0.2",
            dst_port=445,
            bytes_out=50,
            bytes_in=0,
            src_is_internal=True,
            status="success",
        ),
        event(
            source="zeek_conn",
            class_name="network",
            src_ip="45.0.0.1",
            dst_ip="10.0.0.1",
            dst_port=23,
            bytes_out=0,
            bytes_in=0,
            status="failure",
        ),
        event(
            source="zeek_dns",
            class_name="dns",
            device_id="ws-1",
            src_ip="10.0.0.1",
            dns_query="a.example",
            dns_rcode="NOERROR",
        ),
        event(
            source="zeek_dns",
            class_name="dns",
            device_id="ws-1",
            src_ip="10.0.0.1",
            dns_query="b.example",
            dns_rcode="NXDOMAIN",
        ),
        event(
            source="cloudtrail",
            class_name="api",
            user_id="svc@x",
            user_type="service",
            cloud_action="CreateAccessKey",
            cloud_region="us-east-1",
        ),
        event(
            source="cloudtrail",
            class_name="api",
            user_id="svc@x",
            user_type="service",
            cloud_action="GetObject",
            cloud_region="eu-west-1",
            status="failure",
        ),
    ]
    ev = events_df(spark, rows)
    host = session_views.host_days(ev).select(
        "entity_id", "event_count", "failure_count", "process_count", "logon_count", "process_pairs"
    )
    assertDataFrameEqual(host, spark.createDataFrame([("ws-1", 4, 1, 2, 1, 2)], host.schema))
    net = session_views.network_days(ev).select(
        "entity_type",
        "entity_id",
        "event_count",
        "failure_count",
        "bytes_out_external",
        "bytes_out",
        "dst_endpoints",
    )
    assertDataFrameEqual(
        net,
        spark.createDataFrame(
            [("host", "ws-1", 2, 0, 100, 150, 2), ("ip", "45.0.0.1", 1, 1, 0, 0, 1)], net.schema
        ),
    )
    dns = session_views.dns_days(ev).select(
        "entity_id", "event_count", "failure_count", "distinct_queries"
    )
    assertDataFrameEqual(dns, spark.createDataFrame([("ws-1", 2, 1, 2)], dns.schema))
    cloud = session_views.cloud_days(ev, ("CreateAccessKey",)).select(
        "entity_type", "entity_id", "event_count", "failure_count", "iam_writes", "regions"
    )
    assertDataFrameEqual(
        cloud, spark.createDataFrame([("service_account", "svc@x", 2, 1, 1, 2)], cloud.schema)
    )
    # every view has a distinct, kind-scoped id
    ids = [
        r[0]
        for v in (
            session_views.host_days(ev),
            session_views.network_days(ev),
            session_views.dns_days(ev),
        )
        for r in v.select("session_id").collect()
    ]
    assert len(set(ids)) == len(ids) == 4


def test_an_unknown_account_has_one_key_in_its_dns_and_netbios_spellings(
    spark: SparkSession,
) -> None:
    spellings = [
        ("THESHIRE.LOCAL\\pgustavo", "unknown:theshire\\pgustavo"),  # Kerberos logon (4624)
        ("THESHIRE\\pgustavo", "unknown:theshire\\pgustavo"),  # Sysmon, most Security events
        ("corp.example.com\\Ann", "unknown:corp\\ann"),
        ("ann@corp.example.com", "unknown:ann@corp.example.com"),  # a UPN stays a UPN
        ("ann", "unknown:ann"),
        ("WS01$", "unknown:ws01$"),
    ]
    frame = spark.createDataFrame(
        [(None, raw) for raw, _ in spellings], "user_id string, user_name_raw string"
    ).union(
        spark.createDataFrame(
            [("u-1", "THESHIRE.LOCAL\\ann")], "user_id string, user_name_raw string"
        )
    )
    keys = [r[0] for r in frame.select(session_views.user_key(frame)).collect()]
    assert keys == [key for _, key in spellings] + ["u-1"]  # the directory's id wins
