"""Each signal on hand-built frames: fires past its threshold, stays silent at or below it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.core.config import ScoringSettings
from jobs.stages.score import sessions as session_views
from jobs.stages.score import signals
from tests.scoring_frames import (
    DAY,
    at,
    baseline,
    baselines_df,
    details,
    event,
    events_df,
    fired,
    history,
    peer,
    signin,
    work_hours,
)

CFG = ScoringSettings()
PEER = "sales/account_executive"
NYC = {"src_country": "US", "src_city": "New York", "src_lat": 40.71, "src_lon": -74.01}
NEAR = {"src_country": "US", "src_city": "Morristown", "src_lat": 40.71, "src_lon": -74.54}  # 45 km
SAO_PAULO = {"src_country": "BR", "src_city": "Sao Paulo", "src_lat": -23.55, "src_lon": -46.63}
BOSTON = {"src_country": "US", "src_city": "Boston", "src_lat": 42.36, "src_lon": -71.06}  # 306 km


def _auth(
    spark: SparkSession, rows: list[dict[str, Any]]
) -> tuple[DataFrame, DataFrame, DataFrame]:
    ev = events_df(spark, rows)
    sz = session_views.sessionize(ev, CFG.session_gap_minutes)
    return ev, sz, session_views.auth_sessions(sz)


# --- impossible travel -------------------------------------------------------------------


def test_impossible_travel_fires_above_speed_and_ignores_short_hops_and_vpn(
    spark: SparkSession,
) -> None:
    rows = [
        # fast: New York then Sao Paulo 40 minutes later (7,680 km)
        signin("fast@x", at(9), ip="1.0.0.1", **NYC),
        signin("fast@x", at(9, 40), ip="1.0.0.2", **SAO_PAULO),
        # slow: New York then Boston 30 minutes later (306 km -> 612 km/h)
        signin("slow@x", at(9), ip="1.0.0.3", **NYC),
        signin("slow@x", at(9, 30), ip="1.0.0.4", **BOSTON),
        # short: New York then 45 km away one minute later (2,700 km/h, but under 50 km)
        signin("short@x", at(9), ip="1.0.0.5", **NYC),
        signin("short@x", at(9, 1), ip="1.0.0.6", **NEAR),
        # vpn: a VPN gateway in New York, then Sao Paulo: the gateway says nothing
        signin("vpn@x", at(9), ip="203.0.113.9", src_is_known_egress=True, **NYC),
        signin("vpn@x", at(9, 40), ip="1.0.0.7", **SAO_PAULO),
        # office: the New York office egress, then Sao Paulo: the office anchors the user
        signin("office@x", at(9), ip="198.51.100.5", src_is_known_egress=True, **NYC),
        signin("office@x", at(9, 40), ip="1.0.0.8", **SAO_PAULO),
        # failed sign-ins do not count as having been there
        signin("failed@x", at(9), ip="1.0.0.9", status="failure", **NYC),
        signin("failed@x", at(9, 40), ip="1.0.0.10", **SAO_PAULO),
    ]
    _, sz, auth = _auth(spark, rows)
    out = signals.impossible_travel(sz, CFG, office_egress=["198.51.100.0/28"])
    assert fired(out, auth) == {("fast@x", "impossible_travel"), ("office@x", "impossible_travel")}
    assert details(out)[0].startswith("sign-in from Sao Paulo, Brazil 7,6")
    assert "40 minutes earlier" in details(out)[0]
    # without the office ranges every known egress address is ignored
    assert fired(signals.impossible_travel(sz, CFG), auth) == {("fast@x", "impossible_travel")}


def test_impossible_travel_threshold_and_lookback_day(spark: SparkSession) -> None:
    # 7,680 km in 8.5 h = 903 km/h (fires); in 8.6 h = 893 km/h (does not)
    yesterday = DAY - timedelta(days=1)
    rows = [
        signin("over@x", at(23, 0, day=yesterday), ip="1.0.0.1", **NYC),
        signin("over@x", at(7, 30), ip="1.0.0.2", **SAO_PAULO),
        signin("under@x", at(23, 0, day=yesterday), ip="1.0.0.3", **NYC),
        signin("under@x", at(7, 36), ip="1.0.0.4", **SAO_PAULO),
    ]
    _, sz, auth = _auth(spark, rows)
    out = signals.impossible_travel(sz, CFG)
    today = auth.where(auth.run_date == DAY)
    assert fired(out, today) == {("over@x", "impossible_travel")}
    value, threshold = (
        out.join(today, "session_id").select("signal.value", "signal.threshold").first()
    )
    assert 900 < value < 910 and threshold == 900.0


# --- new country / new device ------------------------------------------------------------


def test_new_country_own_history_peer_fallback_and_egress(spark: SparkSession) -> None:
    rows = [
        signin("known@x", at(10), **NYC),  # US seen: silent
        signin("new@x", at(10), **SAO_PAULO),  # BR unseen: fires
        signin("learner@x", at(10), ip="1.0.0.2", src_country="GB"),  # peers know GB: silent
        signin("learner2@x", at(10), ip="1.0.0.3", **SAO_PAULO),  # peers never saw BR: fires
        signin("egress@x", at(10), src_is_known_egress=True, **SAO_PAULO),  # egress: silent
        signin("nobase@x", at(10), **SAO_PAULO),  # no baseline, peers unknown: silent
        signin("failed@x", at(10), status="failure", **SAO_PAULO),  # failure: silent
    ]
    for r in rows:
        if r["user_id"] == "nobase@x":
            r["peer_group"] = "legal/counsel"
    base = [
        baseline(u, src_countries=history("US"))
        for u in ("known@x", "new@x", "egress@x", "failed@x")
    ]
    base += [
        baseline(u, in_learning=True, src_countries=history("US"))
        for u in ("learner@x", "learner2@x")
    ]
    base.append(peer(PEER, src_countries=history("US", "GB")))
    _, sz, auth = _auth(spark, rows)
    out = signals.new_country(sz, baselines_df(spark, base), CFG)
    assert fired(out, auth) == {("new@x", "new_country"), ("learner2@x", "new_country")}
    assert details(out) == [
        "first sign-in from Brazil for its peer group sales/account_executive in 90 days",
        "first sign-in from Brazil for this account in 90 days",
    ]


def test_new_device_window(spark: SparkSession) -> None:
    rows = [
        signin("recent@x", at(10), device_id="dev-1"),  # seen yesterday: silent
        signin("stale@x", at(10), device_id="dev-1"),  # last seen 40 days ago: fires
        signin("never@x", at(10), device_id="dev-9"),  # never seen: fires
        signin("edge@x", at(10), device_id="dev-1"),  # last seen exactly 30 days ago: silent
        signin("nohist@x", at(10), device_id="dev-1"),  # no device history at all: silent
    ]
    base = [
        baseline("recent@x", devices=history("dev-1")),
        baseline("stale@x", devices=history("dev-1", last_seen=DAY - timedelta(days=40))),
        baseline("never@x", devices=history("dev-1")),
        baseline("edge@x", devices=history("dev-1", last_seen=DAY - timedelta(days=30))),
        baseline("nohist@x"),
    ]
    _, _, auth = _auth(spark, rows)
    out = signals.new_device(auth, baselines_df(spark, base), CFG)
    assert fired(out, auth) == {("stale@x", "new_device"), ("never@x", "new_device")}


# --- off hours / privileged ----------------------------------------------------------------


def test_off_hours_needs_rare_hour_for_user_and_peers(spark: SparkSession) -> None:
    night = at(3)  # Tuesday 03:00 UTC
    rows = [
        signin("owl@x", night),  # user and peers never active at 3am: fires
        signin("shift@x", night, peer_group="it/night_shift"),  # peers work nights: silent
        signin("day@x", at(10)),  # a working hour: silent
        signin("learner@x", night),  # learning: peers' habits on both sides: fires
    ]
    nights = work_hours(0, 6)
    base = [
        baseline("owl@x", hour_of_week=work_hours()),
        baseline("shift@x", hour_of_week=work_hours(), peer_group="it/night_shift"),
        baseline("day@x", hour_of_week=work_hours()),
        baseline("learner@x", in_learning=True, hour_of_week=nights),  # own history ignored
        peer(PEER, hour_of_week=work_hours()),
        peer("it/night_shift", hour_of_week=nights),
    ]
    _, _, auth = _auth(spark, rows)
    out = signals.off_hours(auth, baselines_df(spark, base), CFG)
    assert fired(out, auth) == {("owl@x", "off_hours"), ("learner@x", "off_hours")}
    assert any("Tuesday 03:00 UTC" in d for d in details(out))


def test_privileged_anomaly_without_baseline_or_off_hours(spark: SparkSession) -> None:
    rows = [
        signin("novice@x", at(10), is_privileged=True),  # no privileged baseline: fires
        signin("admin@x", at(10), is_privileged=True),  # usual privileged work: silent
        signin("admin2@x", at(3), is_privileged=True),  # privileged at 3am: fires
        signin("plain@x", at(10)),  # nothing privileged: silent
    ]
    base = [
        baseline(u, hour_of_week=work_hours(), privileged_actions_total=pt)
        for u, pt in (("novice@x", 0), ("admin@x", 40), ("admin2@x", 40), ("plain@x", 0))
    ]
    base.append(peer(PEER, hour_of_week=work_hours(), privileged_actions_total=0))
    _, _, auth = _auth(spark, rows)
    out = signals.privileged_anomaly(auth, baselines_df(spark, base), CFG)
    assert fired(out, auth) == {
        ("novice@x", "privileged_anomaly"),
        ("admin2@x", "privileged_anomaly"),
    }


# --- failures: spray and brute force ---------------------------------------------------------


def _failures(user_ids: list[str], ip: str, start: Any, step_s: int = 30) -> list[dict[str, Any]]:
    return [
        signin(u, start + timedelta(seconds=i * step_s), ip=ip, status="failure")
        for i, u in enumerate(user_ids)
    ]


def test_password_spray_threshold_known_accounts_and_nat(spark: SparkSession) -> None:
    spray = _failures([f"u{i}@x" for i in range(10)], "9.9.9.9", at(10))  # 10 accounts: fires
    below = _failures([f"v{i}@x" for i in range(9)], "8.8.8.8", at(10))  # 9: silent
    # internet noise against accounts that do not exist: not a spray on the organisation
    noise = [
        dict(r, user_id=None, user_name_raw=f"root{i}")
        for i, r in enumerate(_failures([f"n{i}" for i in range(12)], "7.7.7.7", at(10)))
    ]
    # an office NAT: 10 users mistype, 30 others sign in fine: not a spray
    nat = _failures([f"w{i}@x" for i in range(10)], "6.6.6.6", at(10))
    nat += [signin(f"ok{i}@x", at(10, 5 + i % 50), ip="6.6.6.6") for i in range(30)]
    # one account of the sprayed list then gets in from the spraying address
    win = [signin("u3@x", at(10, 20), ip="9.9.9.9")]
    _, sz, auth = _auth(spark, spray + below + noise + nat + win)
    sources = session_views.auth_sources(sz)
    out = signals.password_spray(sz, sources, CFG)
    assert fired(out, sources) == {("9.9.9.9", "password_spray")}
    victim = auth.where((auth.user_id == "u3@x") & (auth.success_count > 0))
    assert fired(out, victim) == {("u3@x", "password_spray")}
    assert len(details(out)) == 2


def test_brute_force_threshold(spark: SparkSession) -> None:
    n = CFG.brute_force_min_failures
    rows = _failures(["target@x"] * n, "5.5.5.5", at(10), step_s=20)  # n in 5 min: fires
    rows += _failures(["near@x"] * (n - 1), "5.5.5.6", at(10), step_s=20)  # n-1: silent
    rows += _failures(["slow@x"] * n, "5.5.5.7", at(1), step_s=40 * 60)  # spread over 10 h: silent
    _, sz, auth = _auth(spark, rows)
    sources = session_views.auth_sources(sz)
    out = signals.brute_force(sz, sources, CFG)
    assert fired(out, auth) == {("target@x", "brute_force")}
    assert fired(out, sources) == {("5.5.5.5", "brute_force")}


# --- hosts reached ---------------------------------------------------------------------------


def _logon(user: str, host: str, when: Any) -> dict[str, Any]:
    return signin(
        user,
        when,
        ip="10.0.0.5",
        source="windows",
        device_id="ws-1",
        dst_host=host,
        src_is_internal=True,
    )


def test_first_time_host_access_and_lateral_fan_out(spark: SparkSession) -> None:
    k = CFG.lateral_new_hosts
    rows = [_logon("mover@x", f"srv-{i}", at(14, i)) for i in range(k)]  # k new hosts: both
    rows += [
        _logon("curious@x", f"srv-{i}", at(14, i)) for i in range(k - 1)
    ]  # k-1: first-time only
    rows += [_logon("usual@x", "fs-01", at(9))]  # known host: silent
    rows += [_logon("learner@x", "fs-01", at(9)), _logon("learner@x", "db-9", at(9, 5))]
    base = [
        baseline(u, dst_hosts=history("fs-01", "dc-01"))
        for u in ("mover@x", "curious@x", "usual@x")
    ]
    base.append(baseline("learner@x", in_learning=True, dst_hosts=history()))
    base.append(peer(PEER, dst_hosts=history("fs-01", "dc-01")))
    _, sz, auth = _auth(spark, rows)
    b = baselines_df(spark, base)
    first = signals.first_time_host_access(sz, b, CFG)
    fan = signals.lateral_fan_out(sz, b, CFG)
    assert fired(first, auth) == {
        ("mover@x", "first_time_host_access"),
        ("curious@x", "first_time_host_access"),
        ("learner@x", "first_time_host_access"),  # db-9: none of its peers reached it
    }
    assert fired(fan, auth) == {("mover@x", "lateral_fan_out")}


# --- network -------------------------------------------------------------------------------


def _flow(host: str | None, src_ip: str, dst_ip: str, bytes_out: int, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "source": "zeek_conn", "class_name": "network", "activity_name": "connection", "device_id": host,
        "src_ip": src_ip, "dst_ip": dst_ip, "dst_port": 443, "bytes_out": bytes_out, "bytes_in": 1000,
        "src_is_internal": host is not None,
    }  # fmt: skip
    return event(**{**row, **kw})


def test_exfiltration_volume_own_and_peer_baselines_with_floor(spark: SparkSession) -> None:
    mb = 1_000_000
    rows = [
        _flow("ws-big", "10.0.0.1", "1.2.3.4", 900 * mb),  # far above own and peers: fires
        _flow("ws-heavy", "10.0.0.2", "1.2.3.4", 900 * mb),  # its own normal: silent
        _flow("ws-small", "10.0.0.3", "1.2.3.4", 20 * mb),  # above baselines, under floor: silent
        _flow("ws-new", "10.0.0.4", "1.2.3.4", 900 * mb),  # learning: peers decide: fires
        _flow("ws-int", "10.0.0.5", "10.9.9.9", 900 * mb),  # internal destination: silent
    ]
    base = [
        baseline("ws-big", "host", bytes_out_median=5e6, bytes_out_mad=1e6),
        baseline("ws-heavy", "host", bytes_out_median=800e6, bytes_out_mad=100e6),
        baseline("ws-small", "host", bytes_out_median=1e6, bytes_out_mad=1e5),
        baseline("ws-new", "host", in_learning=True, bytes_out_median=1e9, bytes_out_mad=1e9),
        baseline("ws-int", "host", bytes_out_median=1e6, bytes_out_mad=1e5),
        peer("hosts/workstation", bytes_out_median=4e6, bytes_out_mad=2e6),
    ]
    network = session_views.network_days(events_df(spark, rows)).withColumn(
        "peer_group", F.lit("hosts/workstation")
    )
    out = signals.exfiltration_volume(network, baselines_df(spark, base), CFG)
    assert fired(out, network) == {
        ("ws-big", "exfiltration_volume"),
        ("ws-new", "exfiltration_volume"),
    }
    assert any(
        d.startswith("sent 900.0 MB to the internet today; usual 5.0 MB") for d in details(out)
    )


def test_host_peer_baselines_median_and_mad(spark: SparkSession) -> None:
    def days(*values: int) -> list[dict[str, Any]]:
        return [{"day": DAY - timedelta(days=i + 1), "member": None, "events": 1, "failures": 0,
                 "bytes_in": 0, "bytes_out": v, "privileged_actions": 0} for i, v in enumerate(values)]  # fmt: skip

    b = baselines_df(
        spark,
        [
            baseline("ws-1", "host", daily_values=days(1, 2, 3)),
            baseline("ws-2", "host", daily_values=days(10, 100)),
        ],
    )
    groups = spark.createDataFrame(
        [("ws-1", "hosts/workstation"), ("ws-2", "hosts/workstation")],
        "asset_id string, peer_group string",
    )
    row = (
        signals.host_peer_baselines(b, groups)
        .select(
            "entity_type",
            "entity_id",
            "bytes_out_median",
            "bytes_out_mad",
            "days_observed",
            "members_observed",
        )
        .first()
    )
    # member-days 1, 2, 3, 10, 100: median 3; deviations 2, 1, 0, 7, 97: MAD 2
    assert tuple(row) == ("peer_group", "hosts/workstation", 3.0, 2.0, 5, 2)


def test_inbound_scan(spark: SparkSession) -> None:
    k = CFG.scan_min_targets
    probe = [
        _flow(None, "45.1.1.1", "10.0.0.9", 0, dst_port=1000 + i, bytes_in=0, status="failure")
        for i in range(k)
    ]
    few = [
        _flow(None, "45.1.1.2", "10.0.0.9", 0, dst_port=1000 + i, bytes_in=0) for i in range(k - 1)
    ]
    answered = [
        _flow(None, "45.1.1.3", "10.0.0.9", 500, dst_port=1000 + i, bytes_in=900, status="success")
        for i in range(k)
    ]
    network = session_views.network_days(events_df(spark, probe + few + answered))
    assert fired(signals.inbound_scan(network, CFG), network) == {("45.1.1.1", "inbound_scan")}


# --- endpoints and cloud ---------------------------------------------------------------------


def _proc(host: str, parent: str, child: str) -> dict[str, Any]:
    return event(
        source="windows", class_name="process", activity_name="launch", device_id=host,
        parent_process_name=parent, process_name=child, user_id="a@x",
    )  # fmt: skip


def test_rare_process_pair_host_and_fleet(spark: SparkSession) -> None:
    rows = [
        _proc(
            "ws-1", r"C:\Windows\System32\cmd.exe", r"C:\Windows\System32\vssadmin.exe"
        ),  # rare: fires
        _proc(
            "ws-1", r"C:\Windows\explorer.exe", r"C:\Program Files\Office\WINWORD.EXE"
        ),  # known here
        _proc(
            "ws-2", r"C:\Windows\explorer.exe", r"C:\Windows\System32\cmd.exe"
        ),  # common in fleet
    ]
    fleet = ("explorer.exe>winword.exe", "explorer.exe>cmd.exe")
    base = [baseline(f"ws-{i}", "host", process_pairs=history(*fleet)) for i in range(1, 5)]
    base[1]["process_pairs"] = history("explorer.exe>winword.exe")
    hosts = session_views.host_days(events_df(spark, rows))
    out = signals.rare_process_pair(events_df(spark, rows), baselines_df(spark, base), CFG)
    assert fired(out, hosts) == {("ws-1", "rare_process_pair")}
    assert details(out) == [
        "cmd.exe started vssadmin.exe on ws-1: never on this host, on 0 host(s) of the fleet in the baseline window"
    ]


def _api(principal: str, action: str, **kw: Any) -> dict[str, Any]:
    return event(
        source="cloudtrail", class_name="api", activity_name="api_call", user_id=principal,
        user_type=kw.pop("user_type", "service"), cloud_service="iam", cloud_action=action, **kw,
    )  # fmt: skip


def test_risky_iam_change_only_for_principals_without_iam_writes(spark: SparkSession) -> None:
    rows = [
        _api("svc-ci@x", "CreateAccessKey"),
        _api("svc-ci@x", "AttachUserPolicy"),  # no IAM writes in baseline: fires
        _api("svc-iam@x", "CreateAccessKey"),  # does IAM work routinely: silent
        _api("svc-read@x", "ListUsers"),  # not a write: silent
        _api("new@x", "CreateUser"),  # no baseline at all: fires
    ]
    base = [
        baseline("svc-ci@x", "service_account", cloud_actions=history("s3:GetObject")),
        baseline("svc-iam@x", "service_account", cloud_actions=history("iam:CreateAccessKey")),
        baseline("svc-read@x", "service_account", cloud_actions=history("iam:ListUsers")),
    ]
    ev = events_df(spark, rows)
    cloud = session_views.cloud_days(ev, CFG.iam_write_actions)
    out = signals.risky_iam_change(ev, baselines_df(spark, base), CFG)
    assert fired(out, cloud) == {("svc-ci@x", "risky_iam_change"), ("new@x", "risky_iam_change")}
    value, contribution = (
        out.join(cloud.where(cloud.entity_id == "svc-ci@x"), "session_id")
        .select("signal.value", "signal.contribution")
        .first()
    )
    assert value == 2 and contribution == pytest.approx(
        CFG.signal_points["risky_iam_change"] * 1.25
    )


def test_contribution_grows_with_value_and_is_capped(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1.0,), (2.0,), (4.0,), (1000.0,)], "v double")
    got = [
        r[0]
        for r in df.select(
            signals.contribution("brute_force", F.col("v"), F.lit(1.0), CFG, True)
        ).collect()
    ]
    base = CFG.signal_points["brute_force"]
    assert got == [base, base * 1.25, base * 1.5, base * 1.5]


def test_unsolicited_inbound_only_to_hosts_not_internet_facing(spark: SparkSession) -> None:
    rows = [
        _flow(
            None, "45.2.2.1", "10.0.0.9", 0, dst_host="ws-9", bytes_in=0, status="failure"
        ),  # fires
        _flow(
            None,
            "45.2.2.2",
            "10.0.0.7",
            0,
            dst_host="bastion-1",
            asset_tags=["internet-facing", "ssh"],
        ),
        _flow("ws-3", "10.0.0.3", "10.0.0.9", 500, dst_host="ws-9"),  # internal to internal
        _flow(None, "45.2.2.3", "1.2.3.4", 0),  # outside to outside
        _flow(
            None, "198.51.100.1", "10.0.0.9", 0, dst_host="ws-9", src_is_known_egress=True
        ),  # our egress
    ]
    network = session_views.network_days(events_df(spark, rows))
    out = signals.unsolicited_inbound(network, CFG)
    assert fired(out, network) == {("45.2.2.1", "unsolicited_inbound")}
    assert details(out) == [
        "45.2.2.1 opened 1 connection(s) from outside to internal hosts that are not internet-facing"
    ]


# --- remote execution (lateral movement on its target) -----------------------------------------


def _win(
    host: str, when: Any, channel: str, event_id: int, data: dict[str, str], **kw: Any
) -> dict[str, Any]:
    """A Windows event logged by `host` (a logon / share access names the host as target)."""
    where = {"dst_host": host} if event_id in (4624, 5145) else {"device_id": host}
    return event(
        source="windows", class_name=kw.pop("class_name", "other"), activity_name="other",
        event_time=when, channel=channel, event_id=event_id, event_data=data, **where, **kw,
    )  # fmt: skip


def _network_logon(
    host: str, user: str, logon_id: str, when: Any, ip: str = "10.1.2.5"
) -> dict[str, Any]:
    return _win(
        host, when, "Security", 4624, {"TargetLogonId": logon_id, "LogonType": "3"},
        class_name="authentication", logon_type=3, user_id=user, user_name_raw=user, src_ip=ip,
    )  # fmt: skip


def _spawn(
    host: str, parent: str, child: str, logon_id: str, when: Any, line: str = ""
) -> dict[str, Any]:
    return _win(
        host, when, "Microsoft-Windows-Sysmon/Operational", 1, {"LogonId": logon_id},
        class_name="process", parent_process_name=parent, process_name=child, command_line=line,
    )  # fmt: skip


def test_remote_execution_follows_the_logon_session_not_the_clock(spark: SparkSession) -> None:
    from jobs.stages.score import lateral

    share = r"\\*\C$"
    rows = [
        # ws-1: WMI runs a process in alice's network logon session (logged a second before it)
        _network_logon("ws-1", "alice", "0xA11CE", at(9, 0, 1)),
        _spawn(
            "ws-1",
            r"C:\Windows\System32\wbem\WmiPrvSE.exe",
            r"C:\Windows\Temp\tool.exe",
            "0xa11ce",
            at(9),
        ),
        # ws-2: a process of another session right after bob's network logon: not his doing
        _network_logon("ws-2", "bob", "0xB0B", at(9)),
        _spawn(
            "ws-2", r"C:\Windows\explorer.exe", r"C:\Windows\System32\cmd.exe", "0xCAFE", at(9, 1)
        ),
        # ws-3: carol's session only queries the service control manager: access, not execution
        _network_logon("ws-3", "carol", "0xC0", at(9)),
        _win(
            "ws-3",
            at(9),
            "Security",
            5145,
            {"ShareName": r"\\*\IPC$", "RelativeTargetName": "svcctl", "SubjectLogonId": "0xc0"},
        ),
        # ws-4: dave copies a tool to C$ and a service (System 7045, no logon id) follows in 2 min
        _network_logon("ws-4", "dave", "0xD4", at(9)),
        _win(
            "ws-4",
            at(9),
            "Security",
            5145,
            {
                "ShareName": share,
                "RelativeTargetName": r"ProgramData\t.exe",
                "AccessList": "%%4417",
                "SubjectLogonId": "0xD4",
            },
        ),
        _win(
            "ws-4",
            at(9, 2),
            "System",
            7045,
            {"ServiceName": "updater", "ImagePath": r"C:\ProgramData\t.exe"},
        ),
        # ws-5: the machine account's own logon and a service 30 minutes after erin's: nothing
        _network_logon("ws-5", "WS-5$", "0x55", at(9)),
        _spawn(
            "ws-5",
            r"C:\Windows\System32\wbem\WmiPrvSE.exe",
            r"C:\Windows\System32\cmd.exe",
            "0x55",
            at(9),
        ),
        _network_logon("ws-5", "erin", "0xE", at(9)),
        _win("ws-5", at(9, 30), "System", 7045, {"ServiceName": "late", "ImagePath": r"C:\x.exe"}),
        # ws-6: a loopback network logon is the host itself
        _network_logon("ws-6", "frank", "0xF", at(9), ip="127.0.0.1"),
        _spawn(
            "ws-6",
            r"C:\Windows\System32\wbem\WmiPrvSE.exe",
            r"C:\Windows\System32\cmd.exe",
            "0xf",
            at(9),
        ),
    ]
    ev = events_df(spark, rows)
    hosts = session_views.host_days(ev)
    _, _, auth = _auth(spark, [r for r in rows if r["class_name"] == "authentication"])
    out = lateral.remote_execution(ev, auth, CFG)
    assert fired(out, hosts) == {
        ("ws-1", "remote_execution"),
        ("ws-3", "remote_service_access"),
        ("ws-4", "remote_execution"),
    }
    on_host = {
        d.split(" on ws-")[-1][0]: d
        for d in details(out.join(hosts.select("session_id"), "session_id"))
    }
    assert "started a process through WMI" in on_host["1"] and "T1047" in on_host["1"]
    assert "from 10.1.2.5" in on_host["1"] and "alice" in on_host["1"]
    assert (
        "T1021.002" in on_host["4"]
        and "T1570" in on_host["4"]
        and "installed a service (updater)" in on_host["4"]
    )
    points = {r["name"]: r["contribution"] for r in out.select("signal.*").collect()}
    assert points == {"remote_execution": 80.0, "remote_service_access": 40.0}
    # the account is credited on its sign-in sessions too
    assert ("alice", "remote_execution") in fired(out, auth, key="user_key")
