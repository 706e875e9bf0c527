"""Normalize: routing (quarantine, dedup), per-source mappings, enrichment, reconciliation."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.core.config import GeoSettings, ValidationSettings
from jobs.core.context import RunContext
from jobs.core.errors import PipelineError
from jobs.core.lake import Lake
from jobs.quality.rows import prepare_rows
from jobs.quality.suites import default_suites_dir, load_suite, suite_parameters
from jobs.reference.files import asset_inventory, identity_directory, user_aliases
from jobs.reference.geo import GeoDatabaseError
from jobs.stages.normalize import stage as normalize_module
from jobs.stages.normalize.enrichment import enrich, geo_table
from jobs.stages.normalize.mapping import map_source
from jobs.stages.normalize.reconciliation import reconcile
from jobs.stages.normalize.routing import DUPLICATE, EVENT, QUARANTINE, RAW_HASH, route_rows
from jobs.stages.normalize.stage import run_normalize
from jobs.stages.normalize.vocabulary import STATUS_VOCABULARY, normalize_status
from tests.bronze_frames import DAY, bronze_frame, bronze_row, idp_row, sshd_row, write_reference
from tests.conftest import PipelineMonth, test_settings

PARAMS = suite_parameters(ValidationSettings())


@pytest.fixture(scope="module")
def reference(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    settings = test_settings(tmp_path_factory.mktemp("reference"))
    write_reference(settings.paths.reference_root)
    return settings


def _normalize_rows(spark: SparkSession, settings, source: str, rows: list[dict]) -> DataFrame:  # type: ignore[no-untyped-def]
    """Route + map + enrich hand-built bronze rows (what the stage does, without the I/O)."""
    from jobs.quality.event_time import host_timezones

    assets = asset_inventory(spark, settings)
    suite = load_suite(default_suites_dir(), source)
    prepared = prepare_rows(bronze_frame(spark, source, rows), source, host_timezones(assets))
    routed = route_rows(prepared, suite, PARAMS)
    mapped = map_source(routed.where(F.col("_route") == EVENT), source, suite.dedup_key)
    geo = geo_table(mapped, settings, [("203.0.113.0/28", "corporate_egress")])
    return enrich(
        mapped, user_aliases(spark, settings), identity_directory(spark, settings), assets, geo
    )


# ---- outcome vocabulary ----------------------------------------------------------------

STATUS_TABLE = [
    ("SUCCESS", "success"), ("success", "success"), ("allowed", "success"), ("granted", "success"),
    ("ALLOW", "success"), ("FAILURE", "failure"), ("denied", "failure"), ("DENY", "failure"),
    ("CHALLENGE", "unknown"), ("SKIPPED", "unknown"), ("0x0", "success"), ("0x00000000", "success"),
    ("0xC000006D", "failure"), ("0xc000006a", "failure"), ("0x18", "failure"),
    ("AUDIT_SUCCESS", "success"), ("AUDIT_FAILURE", "failure"), ("Accepted", "success"),
    ("Failed", "failure"), ("invalid_user", "failure"), ("pam_auth_failure", "failure"),
    ("session_opened", "success"), ("connection_closed", "unknown"), ("SF", "success"),
    ("S1", "success"), ("RSTO", "success"), ("S0", "failure"), ("REJ", "failure"),
    ("RSTOS0", "failure"), ("SH", "failure"), ("OTH", "unknown"), ("NOERROR", "success"),
    ("NXDOMAIN", "failure"), ("SERVFAIL", "failure"), ("AccessDenied", "unknown"),
    ("something new", "unknown"), (None, "unknown"),
]  # fmt: skip


def test_status_vocabulary_table(spark: SparkSession) -> None:
    df = spark.createDataFrame([(t,) for t, _ in STATUS_TABLE], "token string")
    actual = df.select("token", normalize_status(F.col("token")).alias("status"))
    expected = spark.createDataFrame(STATUS_TABLE, "token string, status string")
    assertDataFrameEqual(actual, expected)
    assert set(STATUS_VOCABULARY.values()) == {"success", "failure", "unknown"}


# ---- routing ---------------------------------------------------------------------------


def test_route_rows_precedence_reasons_and_dedup(spark: SparkSession) -> None:
    suite = load_suite(default_suites_dir(), "idp")
    rows = [
        idp_row(1),
        idp_row(2, _parse_status="unparseable", _parse_error="invalid JSON", uuid=None),
        idp_row(3, _cast_errors=["severity: 'x' is not int"]),
        idp_row(
            4, event_time_raw=None, client_ip="not-an-ip"
        ),  # two rules fail: the first in the file wins
        idp_row(5, client_ip="10.0.0.999"),
        idp_row(6, event_time_raw="2026-09-28T08:00:00Z"),  # 72 h before the run date: beyond 48 h
        idp_row(
            7, event_time_raw="2026-09-30T08:00:00Z"
        ),  # late, within tolerance: an event of DAY
        {
            **idp_row(1),
            "_line": 9,
            "_file": "file:/raw/idp/2026-10-01/a.log",
        },  # re-delivery, earlier file
        {**idp_row(1), "_line": 10},  # re-delivery, same file, later line
        {
            **idp_row(4, event_time_raw=None),
            "_line": 11,
        },  # copy of a quarantined row: quarantined again
        idp_row(12, event_time_raw="garbage"),
    ]
    prepared = prepare_rows(bronze_frame(spark, "idp", rows), "idp", None)
    routed = route_rows(prepared, suite, PARAMS)
    actual = routed.select("_file", "_line", "_route", "_rule", "_reason")
    # the raw line travels on with quarantined rows only (silver.quarantine shows it)
    assert prepared.where(F.col("raw").isNull()).count() == 0
    kept = {
        (r["_route"], r["kept"])
        for r in routed.select("_route", F.col("raw").isNotNull().alias("kept")).collect()
    }
    assert kept == {(QUARANTINE, True), (EVENT, False), (DUPLICATE, False)}
    f = "file:/raw/idp/2026-10-01/idp.log"
    nn = "idp.expect_column_values_to_not_be_null(event_time)"
    window = "idp.expect_column_values_to_be_between(event_time_offset_hours)"
    ip = "idp.expect_column_values_to_match_regex(client_ip)"
    expected = spark.createDataFrame(
        [
            (f, 1, DUPLICATE, None, None),
            (f, 2, QUARANTINE, "parser", "invalid JSON"),
            (f, 3, QUARANTINE, "type_check", "severity: 'x' is not int"),
            (f, 4, QUARANTINE, nn, "event_time: timestamp missing"),
            (f, 5, QUARANTINE, ip, "client_ip='10.0.0.999' does not have the expected format"),
            (f, 6, QUARANTINE, window, "event_time_offset_hours='-64.0' is outside [-48.0, 48.0]"),
            (f, 7, EVENT, None, None),
            ("file:/raw/idp/2026-10-01/a.log", 9, EVENT, None, None),
            (f, 10, DUPLICATE, None, None),
            (f, 11, QUARANTINE, nn, "event_time: timestamp missing"),
            (f, 12, QUARANTINE, nn, "event_time: timestamp unparseable 'garbage'"),
        ],
        "_file string, _line long, _route string, _rule string, _reason string",
    )
    assertDataFrameEqual(actual, expected)


def test_records_of_one_cloudtrail_line_with_one_event_id_keep_one_whatever_their_order(
    spark: SparkSession,
) -> None:
    """A delivery line holds several records: within it the record with the smallest hash of
    its raw text is the first delivery, so the kept record does not depend on row order."""
    suite = load_suite(default_suites_dir(), "cloudtrail")
    same = {"event_id": "6f1c2a3b-0000-4000-8000-00000000000a", "event_name": "ListBuckets",
            "event_source": "s3.amazonaws.com", "event_time_raw": "2026-10-01T08:00:00Z"}  # fmt: skip
    records = [
        {**bronze_row("cloudtrail", 1, **same), "raw": f'{{"eventID": "{same["event_id"]}", "n": {n}}}'}
        for n in range(3)
    ]  # fmt: skip
    kept = []
    for rows in (records, records[::-1]):
        routed = route_rows(
            prepare_rows(bronze_frame(spark, "cloudtrail", rows), "cloudtrail", None), suite, PARAMS
        )
        routes = sorted(r["_route"] for r in routed.select("_route").collect())
        assert routes == [DUPLICATE, DUPLICATE, EVENT]
        kept.append(routed.where(F.col("_route") == EVENT).select(RAW_HASH).first()[0])  # type: ignore[index]
    hashes = spark.createDataFrame([(r["raw"],) for r in records], "raw string").select(
        F.xxhash64("raw")
    )
    assert kept[0] == kept[1] == min(h[0] for h in hashes.collect())


def test_editing_a_suite_changes_quarantine_without_code(
    spark: SparkSession, tmp_path: Path
) -> None:
    rows = [idp_row(1), idp_row(2, outcome_result="granted"), idp_row(3, client_ip="10.0.0.999")]
    doc = json.loads((default_suites_dir() / "idp.json").read_text())
    # drop the client_ip format rule, make the outcome vocabulary strict and row-level
    doc["expectations"] = [
        e for e in doc["expectations"] if e["kwargs"].get("column") != "client_ip"
    ]
    for e in doc["expectations"]:
        if e["kwargs"].get("column") == "outcome_result":
            e["kwargs"] = {"column": "outcome_result", "value_set": ["SUCCESS", "FAILURE"]}
            e["meta"] = {"critical": True, "row_level": True}
    (tmp_path / "idp.json").write_text(json.dumps(doc))
    edited = load_suite(tmp_path, "idp")
    prepared = prepare_rows(bronze_frame(spark, "idp", rows), "idp", None)
    before = route_rows(prepared, load_suite(default_suites_dir(), "idp"), PARAMS)
    after = route_rows(prepared, edited, PARAMS)
    pick = ("_line", "_route", "_rule")
    ip_rule = "idp.expect_column_values_to_match_regex(client_ip)"
    set_rule = "idp.expect_column_values_to_be_in_set(outcome_result)"
    assertDataFrameEqual(
        before.select(*pick),
        spark.createDataFrame(
            [(1, EVENT, None), (2, EVENT, None), (3, QUARANTINE, ip_rule)],
            "_line long, _route string, _rule string",
        ),
    )
    assertDataFrameEqual(
        after.select(*pick),
        spark.createDataFrame(
            [(1, EVENT, None), (2, QUARANTINE, set_rule), (3, EVENT, None)],
            "_line long, _route string, _rule string",
        ),
    )


# ---- mappings and enrichment -------------------------------------------------------------

SELECTED = (
    "source", "event_time", "class_name", "activity_name", "status", "status_detail", "user_id",
    "user_type", "peer_group", "device_id", "src_ip", "dst_host", "is_privileged", "asset_criticality",
)  # fmt: skip


def _pick(df: DataFrame, *extra: str) -> DataFrame:
    return df.select(*SELECTED, *extra).withColumn(
        "event_time", F.date_format("event_time", "yyyy-MM-dd HH:mm:ss")
    )


def test_idp_alias_resolution_and_outcomes(spark: SparkSession, reference) -> None:  # type: ignore[no-untyped-def]
    rows = [
        idp_row(1, actor_alternate_id="Jane.Doe@corp.example", event_time_raw="2026-10-01T10:00:00.000+02:00"),
        idp_row(2, actor_alternate_id="CORP\\jdoe", outcome_result="denied"),
        idp_row(3, actor_alternate_id="jane.doe@corp-mail.example", event_type="user.authentication.sso",
                outcome_result="allowed", target_app="Slack"),
        idp_row(4, actor_alternate_id="OTHERDOM\\BSMITH", event_type="user.authentication.auth_via_mfa",
                outcome_result="CHALLENGE", client_ip="203.0.113.5", device_name="WS-LON-002", device_id="guoX"),
        idp_row(5, actor_alternate_id="mallory@evil.example", event_type="user.session.end"),
    ]  # fmt: skip
    actual = _pick(
        _normalize_rows(spark, reference, "idp", rows),
        "app_name",
        "src_is_known_egress",
        "user_name_raw",
    )
    t = "2026-10-01 08:00:0{}"
    expected = spark.createDataFrame(
        [
            (
                "idp",
                "2026-10-01 08:00:00",
                "authentication",
                "logon",
                "success",
                "SUCCESS",
                "jane.doe@corp.example",
                "admin",
                "it/sysadmin",
                None,
                "10.0.0.5",
                None,
                True,
                None,
                None,
                False,
                "Jane.Doe@corp.example",
            ),
            (
                "idp",
                t.format(2),
                "authentication",
                "logon",
                "failure",
                "denied",
                "jane.doe@corp.example",
                "admin",
                "it/sysadmin",
                None,
                "10.0.0.5",
                None,
                True,
                None,
                None,
                False,
                "CORP\\jdoe",
            ),
            (
                "idp",
                t.format(3),
                "authentication",
                "sso",
                "success",
                "allowed",
                "jane.doe@corp.example",
                "admin",
                "it/sysadmin",
                None,
                "10.0.0.5",
                None,
                True,
                None,
                "Slack",
                False,
                "jane.doe@corp-mail.example",
            ),
            (
                "idp",
                t.format(4),
                "authentication",
                "mfa",
                "unknown",
                "CHALLENGE",
                "bob.smith@corp.example",
                "human",
                "sales/account_executive",
                "ws-lon-002",
                "203.0.113.5",
                None,
                False,
                "low",
                None,
                True,
                "OTHERDOM\\BSMITH",
            ),
            (
                "idp",
                t.format(5),
                "authentication",
                "logoff",
                "success",
                "SUCCESS",
                None,
                "unknown",
                None,
                None,
                "10.0.0.5",
                None,
                False,
                None,
                None,
                False,
                "mallory@evil.example",
            ),
        ],
        actual.schema,
    )
    assertDataFrameEqual(actual, expected)


def test_windows_mapping_time_zones_and_privilege(spark: SparkSession, reference) -> None:  # type: ignore[no-untyped-def]
    def win(line: int, **kw: object) -> dict:  # type: ignore[type-arg]
        base = {"hostname": "DC-NYC-01.corp.example", "channel": "Security", "record_number": 1000 + line,
                "event_type": "AUDIT_SUCCESS", "event_time_raw": "2026-10-01T08:00:00.000Z",
                "event_time_local": "2026-10-01 04:00:00"}  # fmt: skip
        base.update(kw)
        return bronze_row("windows", line, **base)

    rows = [
        # network logon on the DC from Jane's workstation (by address)
        win(1, event_id=4624, target_user_name="jdoe", target_domain_name="CORP", logon_type=3,
            ip_address="10.0.1.10", ip_port=50123, workstation_name="-"),
        # failed interactive logon on Bob's workstation; no @timestamp: EventTime in the host's zone
        win(2, event_id=4625, hostname="WS-LON-002.corp.example", target_user_name="bsmith",
            target_domain_name="CORP", logon_type=2, ip_address="127.0.0.1", workstation_name="WS-LON-002",
            status="0xC000006D", sub_status="0xC000006A", event_type="AUDIT_FAILURE",
            event_time_raw=None, event_time_local="2026-10-01 09:30:00"),
        win(3, event_id=4672, subject_user_name="svc-backup", subject_domain_name="CORP"),
        win(4, event_id=4688, hostname="WS-NYC-001.corp.example", subject_user_name="jdoe",
            subject_domain_name="CORP", new_process_name="C:\\Windows\\System32\\cmd.exe",
            parent_process_name="C:\\Windows\\explorer.exe", command_line="cmd /c whoami"),
        win(5, event_id=3, channel="Microsoft-Windows-Sysmon/Operational", event_type="INFO",
            hostname="WS-NYC-001.corp.example", sysmon_user="CORP\\jdoe", image="C:\\chrome.exe",
            source_ip="10.0.1.10", destination_ip="10.0.0.2", destination_port=443),
        # a present but broken @timestamp is not rescued by EventTime
        win(6, event_id=4624, event_time_raw="2026-13-45T25:61:61Z"),
    ]  # fmt: skip
    out = _normalize_rows(spark, reference, "windows", rows)
    actual = _pick(out, "process_name", "dst_ip", "dst_port", "logon_type")
    expected = spark.createDataFrame(
        [
            (
                "windows",
                "2026-10-01 08:00:00",
                "authentication",
                "logon",
                "success",
                "AUDIT_SUCCESS",
                "jane.doe@corp.example",
                "admin",
                "it/sysadmin",
                "ws-nyc-001",
                "10.0.1.10",
                "dc-nyc-01",
                True,
                "critical",
                None,
                None,
                None,
                3,
            ),
            (
                "windows",
                "2026-10-01 08:30:00",
                "authentication",
                "logon",
                "failure",
                "0xC000006A",
                "bob.smith@corp.example",
                "human",
                "sales/account_executive",
                "ws-lon-002",
                "127.0.0.1",
                "ws-lon-002",
                False,
                "low",
                None,
                None,
                None,
                2,
            ),
            (
                "windows",
                "2026-10-01 08:00:00",
                "authentication",
                "privilege_use",
                "success",
                "AUDIT_SUCCESS",
                "svc-backup@corp.example",
                "service",
                "it/service",
                None,
                None,
                "dc-nyc-01",
                True,
                "critical",
                None,
                None,
                None,
                None,
            ),
            (
                "windows",
                "2026-10-01 08:00:00",
                "process",
                "launch",
                "success",
                "AUDIT_SUCCESS",
                "jane.doe@corp.example",
                "admin",
                "it/sysadmin",
                "ws-nyc-001",
                None,
                None,
                True,
                "low",
                "C:\\Windows\\System32\\cmd.exe",
                None,
                None,
                None,
            ),
            (
                "windows",
                "2026-10-01 08:00:00",
                "network",
                "connection",
                "success",
                "INFO",
                "jane.doe@corp.example",
                "admin",
                "it/sysadmin",
                "ws-nyc-001",
                "10.0.1.10",
                "dc-nyc-01",
                True,
                "critical",
                "C:\\chrome.exe",
                "10.0.0.2",
                443,
                None,
            ),
        ],
        actual.schema,
    )
    assertDataFrameEqual(actual, expected)


def _win(line: int, event_id: int | None, channel: str | None, **kw: object) -> dict:  # type: ignore[type-arg]
    base = {"hostname": "WS-NYC-001.corp.example", "channel": channel, "event_id": event_id,
            "record_number": 5000 + line, "event_type": "INFO", "event_time_raw": "2026-10-01T12:00:00.000Z",
            "provider": "P", "event_data": {}, "log_format": "evtx"}  # fmt: skip
    base.update(kw)
    return bronze_row("windows", line, **base)


SYSMON = "Microsoft-Windows-Sysmon/Operational"
PS = "Microsoft-Windows-PowerShell/Operational"


def test_windows_event_families_map_to_ocsf_classes_and_keep_their_data(
    spark: SparkSession, reference
) -> None:  # type: ignore[no-untyped-def]
    lsass = {"SourceImage": "C:\\Windows\\System32\\rundll32.exe", "TargetImage": "C:\\Windows\\System32\\lsass.exe",
             "GrantedAccess": "0x1FFFFF", "SourceUser": "CORP\\jdoe"}  # fmt: skip
    rows = [
        _win(1, 10, SYSMON, event_data=lsass),
        _win(2, 7, SYSMON, image="C:\\Windows\\explorer.exe", sysmon_user="CORP\\jdoe",
             event_data={"ImageLoaded": "C:\\Windows\\System32\\dbghelp.dll"}),
        _win(3, 12, SYSMON, image="C:\\Windows\\regedit.exe", event_data={"EventType": "DeleteKey"}),
        _win(4, 13, SYSMON, image="C:\\Windows\\regedit.exe", event_data={"EventType": "SetValue"}),
        _win(5, 22, SYSMON, image="C:\\chrome.exe", event_data={"QueryName": "Evil.Example", "QueryStatus": "9003"}),
        _win(6, 11, "microsoft-windows-sysmon/operational", image="C:\\x.exe"),  # channel case as written
        _win(7, 4104, PS, event_data={"ScriptBlockText": "IEX (New-Object Net.WebClient)"}),
        _win(8, 7045, "System", event_data={"ServiceName": "x", "ImagePath": "C:\\t\\x.exe"}),
        _win(9, 4720, "Security", event_type="AUDIT_SUCCESS", subject_user_name="jdoe",
             subject_domain_name="CORP", target_user_name="backdoor"),
        _win(10, 4732, "Security", event_type="AUDIT_SUCCESS", subject_user_name="jdoe", subject_domain_name="CORP"),
        _win(11, 1102, "security", event_type="AUDIT_SUCCESS", subject_user_name="jdoe", subject_domain_name="CORP"),
        _win(12, 104, "System", subject_user_name="jdoe", subject_domain_name="CORP"),
        _win(13, 4698, "Security", event_type="AUDIT_SUCCESS", subject_user_name="jdoe", subject_domain_name="CORP"),
        # unknown ids, and a known id in another log: kept as class other, never quarantined
        _win(14, 5156, "Security", event_type="AUDIT_SUCCESS", process_name="C:\\svc.exe",
             event_data={"DestAddress": "10.0.0.2"}),
        _win(15, 1, "System", event_data={"NewTime": "2026-10-01T12:00:00Z"}),
        _win(16, None, None, record_number=None),
    ]  # fmt: skip
    out = _normalize_rows(spark, reference, "windows", rows).orderBy("bronze_line")
    actual = out.select(
        "bronze_line", "class_name", "activity_name", "status", "user_id", "device_id", "process_name",
        "dns_query", "dns_rcode", "is_privileged", "channel", "event_id", "provider", "event_data",
        F.col("event_date").cast("string").alias("event_date"),
    )  # fmt: skip
    jane, ws = "jane.doe@corp.example", "ws-nyc-001"
    rows_expected = [
        (1, "process", "access", "success", jane, ws, None, None, None, True, SYSMON, 10, "P", lsass),
        (2, "module", "load", "success", jane, ws, "C:\\Windows\\explorer.exe", None, None, True, SYSMON, 7, "P",
         {"ImageLoaded": "C:\\Windows\\System32\\dbghelp.dll"}),
        (3, "registry", "delete", "success", None, ws, "C:\\Windows\\regedit.exe", None, None, False, SYSMON, 12, "P",
         {"EventType": "DeleteKey"}),
        (4, "registry", "set_value", "success", None, ws, "C:\\Windows\\regedit.exe", None, None, False, SYSMON, 13,
         "P", {"EventType": "SetValue"}),
        (5, "dns", "query", "failure", None, ws, "C:\\chrome.exe", "evil.example", "NXDOMAIN", False, SYSMON, 22, "P",
         {"QueryName": "Evil.Example", "QueryStatus": "9003"}),
        (6, "file", "create", "success", None, ws, "C:\\x.exe", None, None, False,
         "microsoft-windows-sysmon/operational", 11, "P", {}),
        (7, "script", "script_block", "success", None, ws, None, None, None, False, PS, 4104, "P",
         {"ScriptBlockText": "IEX (New-Object Net.WebClient)"}),
        (8, "service", "install", "success", None, ws, None, None, None, True, "System", 7045, "P",
         {"ServiceName": "x", "ImagePath": "C:\\t\\x.exe"}),
        (9, "account_change", "create", "success", jane, ws, None, None, None, True, "Security", 4720, "P", {}),
        (10, "group_management", "add_member", "success", jane, ws, None, None, None, True, "Security", 4732, "P", {}),
        (11, "event_log", "clear", "success", jane, ws, None, None, None, True, "security", 1102, "P", {}),
        (12, "event_log", "clear", "success", jane, ws, None, None, None, True, "System", 104, "P", {}),
        (13, "scheduled_job", "create", "success", jane, ws, None, None, None, True, "Security", 4698, "P", {}),
        (14, "other", "event_5156", "success", None, ws, "C:\\svc.exe", None, None, False, "Security", 5156, "P",
         {"DestAddress": "10.0.0.2"}),
        (15, "other", "event_1", "unknown", None, ws, None, None, None, False, "System", 1, "P",
         {"NewTime": "2026-10-01T12:00:00Z"}),
        (16, "other", "other", "unknown", None, ws, None, None, None, False, None, None, "P", {}),
    ]  # fmt: skip
    # Jane is an admin in the directory: privileged wherever she is the user
    expected = spark.createDataFrame([(*r, "2026-10-01") for r in rows_expected], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_windows_quarantine_is_for_broken_rows_only(spark: SparkSession) -> None:
    """No host, no usable time: quarantined. No record number, an unknown event ID or
    channel, a clock a few hours ahead: events."""
    suite = load_suite(default_suites_dir(), "windows")
    rows = [
        _win(1, 4624, "Security"),
        _win(2, 4624, "Security", hostname=None),
        _win(3, 4624, "Security", event_time_raw=None),
        _win(4, 4624, "Security", event_time_raw="2026-10-05T12:00:00Z"),  # 4 days ahead
        _win(5, 4624, "Security", record_number=None),
        _win(6, 9999, "Microsoft-Windows-Something/Operational"),
        _win(7, 4624, None),
        _win(8, 4624, "Security", event_time_raw="2026-10-02T05:00:00Z"),  # a clock 5 h ahead
        _win(9, 4624, "Security", event_time_raw="2026-09-30T20:00:00Z"),  # late
    ]
    prepared = prepare_rows(bronze_frame(spark, "windows", rows), "windows", None)
    actual = route_rows(prepared, suite, PARAMS).select("_line", "_route", "_rule")
    window = "windows.expect_column_values_to_be_between(event_time_offset_hours)"
    expected = spark.createDataFrame(
        [
            (1, EVENT, None),
            (2, QUARANTINE, "windows.expect_column_values_to_not_be_null(hostname)"),
            (3, QUARANTINE, "windows.expect_column_values_to_not_be_null(event_time)"),
            (4, QUARANTINE, window),
            (5, EVENT, None),
            (6, EVENT, None),
            (7, EVENT, None),
            (8, EVENT, None),
            (9, EVENT, None),
        ],
        actual.schema,
    )
    assertDataFrameEqual(actual, expected)


def test_windows_dedup_by_record_number_else_by_content(spark: SparkSession) -> None:
    suite = load_suite(default_suites_dir(), "windows")
    assert suite.dedup_key == ("_event_key",)
    data = {"TargetUserName": "jdoe", "LogonType": "3", "IpAddress": "10.0.0.5"}
    reordered = {"IpAddress": "10.0.0.5", "LogonType": "3", "TargetUserName": "jdoe"}
    rows = [
        _win(1, 4624, "Security", event_data=data),
        _win(2, 4624, "Security", event_data=data, record_number=5001),  # the same record again
        _win(3, 4624, "Security", event_data=data, record_number=5001, hostname="WS-2"),  # another host
        # no record number: the content is the key
        _win(4, 4624, "Security", record_number=None, event_data=data),
        _win(5, 4624, "Security", record_number=None, event_data=reordered),  # same content
        _win(6, 4624, "Security", record_number=None, event_data={**data, "LogonType": "10"}),
        _win(7, 4624, "Security", record_number=None, event_data=data, event_time_raw="2026-10-01T12:00:01.000Z"),
        _win(8, 4625, "Security", record_number=None, event_data=data),
        _win(9, 4624, "Security", record_number=None, event_data=data, provider="Q"),
        _win(10, 4624, "Security", record_number=None, event_data=data, hostname="WS-2"),
    ]  # fmt: skip
    prepared = prepare_rows(bronze_frame(spark, "windows", rows), "windows", None)
    routed = route_rows(prepared, suite, PARAMS)
    actual = routed.select("_line", "_route")
    expected = spark.createDataFrame(
        [(1, EVENT), (2, DUPLICATE), (3, EVENT), (4, EVENT), (5, DUPLICATE), (6, EVENT),
         (7, EVENT), (8, EVENT), (9, EVENT), (10, EVENT)],
        actual.schema,
    )  # fmt: skip
    assertDataFrameEqual(actual, expected)
    keys = {r["_line"]: r["_event_key"] for r in routed.collect()}
    assert keys[1] == "WS-NYC-001.corp.example|Security|5001"  # the event log's own key
    assert keys[4].startswith("sha256:") and keys[4] == keys[5]
    # the vendor key of a record stays what it always was: event_uid does not change
    mapped = map_source(routed.where(F.col("_line") == 1), "windows", suite.dedup_key)
    assert mapped.first()["event_key"] == "WS-NYC-001.corp.example|Security|5001"  # type: ignore[index]


def test_network_dns_cloud_and_sshd_mappings(spark: SparkSession, reference) -> None:  # type: ignore[no-untyped-def]
    conn = [bronze_row("zeek_conn", 1, uid="CabcdefghijklmnopQ", orig_h="10.0.1.10", orig_p=50000,
                       resp_h="8.8.8.8", resp_p=443, proto="tcp", conn_state="SF", orig_bytes=1200,
                       resp_bytes=5400, event_time_raw="1790841600.5")]  # fmt: skip
    dns = [bronze_row("zeek_dns", 1, uid="CabcdefghijklmnopQ", orig_h="10.0.1.10", orig_p=50001,
                      resp_h="10.0.0.2", resp_p=53, proto="udp", trans_id=7, query="Example.COM",
                      rcode_name="NXDOMAIN", event_time_raw="2026-10-01T08:00:00.000000Z")]  # fmt: skip
    ct = [
        bronze_row("cloudtrail", 1, event_id="6f1c2a3b-0000-4000-8000-000000000001", event_name="CreateAccessKey",
                   event_source="iam.amazonaws.com", aws_region="us-east-1", source_ip="203.0.113.2",
                   identity_type="AssumedRole", read_only="false",
                   identity_arn="arn:aws:sts::123456789012:assumed-role/Admin/jane.doe@corp.example",
                   request_parameters='{"userName":"svc-ci"}', event_time_raw="2026-10-01T08:00:00Z"),
        bronze_row("cloudtrail", 2, event_id="6f1c2a3b-0000-4000-8000-000000000002", event_name="ListBuckets",
                   event_source="s3.amazonaws.com", aws_region="eu-west-1", source_ip="AWS Internal",
                   identity_type="IAMUser", user_name="bsmith", read_only="true", error_code="AccessDenied",
                   event_time_raw="2026-10-01T08:00:00Z"),
    ]  # fmt: skip
    ssh = [
        sshd_row(1, user="root", ssh_event="failed", auth_method="password", src_ip="8.8.4.4",
                 event_time_raw="Oct  1 10:00:00"),  # web-01 is in Berlin: 08:00 UTC
        sshd_row(2, host="web-02", user="jdoe", event_time_raw="Oct  1 04:00:00"),  # New York
    ]  # fmt: skip
    actual = _pick(
        _normalize_rows(spark, reference, "zeek_conn", conn)
        .unionByName(_normalize_rows(spark, reference, "zeek_dns", dns))
        .unionByName(_normalize_rows(spark, reference, "cloudtrail", ct))
        .unionByName(_normalize_rows(spark, reference, "sshd", ssh)),
        "bytes_out", "dns_query", "cloud_action", "cloud_resource", "src_country",
    )  # fmt: skip
    expected = spark.createDataFrame(
        [
            (
                "zeek_conn",
                "2026-10-01 08:00:00",
                "network",
                "connection",
                "success",
                "SF",
                None,
                "unknown",
                None,
                "ws-nyc-001",
                "10.0.1.10",
                None,
                False,
                "low",
                1200,
                None,
                None,
                None,
                None,
            ),
            (
                "zeek_dns",
                "2026-10-01 08:00:00",
                "dns",
                "query",
                "failure",
                "NXDOMAIN",
                None,
                "unknown",
                None,
                "ws-nyc-001",
                "10.0.1.10",
                "dc-nyc-01",
                False,
                "critical",
                None,
                "example.com",
                None,
                None,
                None,
            ),
            (
                "cloudtrail",
                "2026-10-01 08:00:00",
                "api",
                "api_call",
                "success",
                None,
                "jane.doe@corp.example",
                "admin",
                "it/sysadmin",
                None,
                "203.0.113.2",
                None,
                True,
                None,
                None,
                None,
                "CreateAccessKey",
                "svc-ci",
                None,
            ),
            (
                "cloudtrail",
                "2026-10-01 08:00:00",
                "api",
                "api_call",
                "failure",
                "AccessDenied",
                "bob.smith@corp.example",
                "human",
                "sales/account_executive",
                None,
                None,
                None,
                False,
                None,
                None,
                None,
                "ListBuckets",
                None,
                None,
            ),
            (
                "sshd",
                "2026-10-01 08:00:00",
                "authentication",
                "logon",
                "failure",
                "failed password",
                None,
                "unknown",
                None,
                None,
                "8.8.4.4",
                "web-01",
                True,
                "high",
                None,
                None,
                None,
                None,
                "US",
            ),
            (
                "sshd",
                "2026-10-01 08:00:00",
                "authentication",
                "logon",
                "success",
                "accepted publickey",
                "jane.doe@corp.example",
                "admin",
                "it/sysadmin",
                None,
                "10.1.2.3",
                "web-02",
                True,
                "medium",
                None,
                None,
                None,
                None,
                None,
            ),
        ],
        actual.schema,
    )
    assertDataFrameEqual(actual, expected)


# ---- reconciliation and the stage --------------------------------------------------------


def test_reconcile_balances_each_source_and_date() -> None:
    k = ("idp", DAY)
    rows = reconcile({k: 10}, {k: 7}, {k: 2}, {k: 1}, ["idp", "sshd"], [DAY])
    assert [(r["source"], r["balanced"]) for r in rows] == [("idp", True), ("sshd", True)]
    (bad, _) = reconcile({k: 10}, {k: 8}, {k: 2}, {k: 1}, ["idp", "sshd"], [DAY])
    assert bad["balanced"] is False


def _stage_settings(tmp_path: Path, sources: list[str]):  # type: ignore[no-untyped-def]
    """Settings whose suites live in a tmp folder: the sshd suite there has one more rule."""
    suites = tmp_path / "suites"
    suites.mkdir()
    for name in ("idp", "silver_events"):
        shutil.copy(default_suites_dir() / f"{name}.json", suites)
    doc = json.loads((default_suites_dir() / "sshd.json").read_text())
    doc["expectations"].append(
        {"type": "expect_column_values_to_not_be_in_set", "kwargs": {"column": "user", "value_set": ["root"]},
         "meta": {"critical": False, "row_level": True}}
    )  # fmt: skip
    (suites / "sshd.json").write_text(json.dumps(doc))
    settings = test_settings(
        tmp_path, ingest={"sources": sources}, validation={"suites_dir": str(suites)}
    )
    write_reference(settings.paths.reference_root)
    return settings


def _bronze(spark: SparkSession, lake: Lake) -> None:
    d2 = date(2026, 10, 2)
    idp = [
        idp_row(1),
        idp_row(2),
        {**idp_row(1), "_line": 3},
        idp_row(4, event_time_raw=None),
        idp_row(5, d2),
    ]
    ssh = [
        sshd_row(1),
        sshd_row(2, _parse_status="unparseable", _parse_error="not an sshd syslog line"),
        sshd_row(3, user="root"),  # quarantined only by the rule added to the edited suite
    ]
    lake.replace_dates(bronze_frame(spark, "idp", idp), "bronze.idp", [DAY, d2])
    lake.replace_dates(bronze_frame(spark, "sshd", ssh), "bronze.sshd", [DAY, d2])


def test_run_normalize_writes_balanced_idempotent_tables(
    spark: SparkSession, tmp_path: Path
) -> None:
    settings = _stage_settings(tmp_path, ["idp", "sshd"])
    lake = Lake(spark, settings.paths.lake_root)
    _bronze(spark, lake)
    ctx = RunContext(spark, settings)
    d2 = date(2026, 10, 2)
    run_normalize(ctx, [DAY, d2])
    first = lake.read("silver.events").orderBy("event_uid").collect()
    run_normalize(ctx, [DAY, d2])  # re-running a range gives the same rows, never duplicates
    assertDataFrameEqual(
        lake.read("silver.events"), spark.createDataFrame(first, lake.read("silver.events").schema)
    )
    recon = lake.read("ops.reconciliation").select(
        "run_date", "source", "raw_rows", "events", "quarantined", "duplicates", "balanced"
    )
    expected = spark.createDataFrame(
        [(DAY, "idp", 4, 2, 1, 1, True), (d2, "idp", 1, 1, 0, 0, True), (DAY, "sshd", 3, 1, 2, 0, True),
         (d2, "sshd", 0, 0, 0, 0, True)],
        recon.schema,
    )  # fmt: skip
    assertDataFrameEqual(recon, expected)
    quarantine = lake.read("silver.quarantine").select("source", "rule", "reason", "bronze_line")
    assertDataFrameEqual(
        quarantine,
        spark.createDataFrame(
            [
                (
                    "idp",
                    "idp.expect_column_values_to_not_be_null(event_time)",
                    "event_time: timestamp missing",
                    4,
                ),
                ("sshd", "parser", "not an sshd syslog line", 2),
                (
                    "sshd",
                    "sshd.expect_column_values_to_not_be_in_set(user)",
                    "user='root' is a forbidden value",
                    3,
                ),
            ],
            quarantine.schema,
        ),
    )
    silver_dq = lake.read("ops.dq_results").where(F.col("suite") == "silver_events")
    assert silver_dq.where(~F.col("success")).count() == 0
    assert {r["source"] for r in silver_dq.select("source").distinct().collect()} == {"idp", "sshd"}
    assert (Path(settings.paths.data_docs_dir) / "index.html").is_file()
    # in the same commit: which geolocation database placed the addresses (the bundled one)
    geo = lake.read("ops.dq_results").where(F.col("suite") == "reference").collect()
    assert sorted((r["run_date"], r["source"], r["expectation"], r["success"]) for r in geo) == [
        (DAY, "geolocation", "geo_database_current", False),
        (d2, "geolocation", "geo_database_current", False),
    ]
    details = json.loads(geo[0]["details"])
    assert (details["bundled"], details["build_date"]) == (True, "2018-07-03")


def test_run_normalize_stops_on_a_missing_geo_database_before_writing(
    spark: SparkSession, tmp_path: Path
) -> None:
    settings = _stage_settings(tmp_path, ["idp"])
    missing = tmp_path / "GeoIP2-City.mmdb"
    settings = settings.model_copy(update={"geo": GeoSettings(database=str(missing))})
    lake = Lake(spark, settings.paths.lake_root)
    _bronze(spark, lake)
    with pytest.raises(GeoDatabaseError, match=f"geo.database: no such file {missing}"):
        run_normalize(RunContext(spark, settings), [DAY])
    assert not lake.exists("silver.events")


def test_run_normalize_refuses_to_write_when_reconciliation_breaks(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _stage_settings(tmp_path, ["idp"])
    lake = Lake(spark, settings.paths.lake_root)
    _bronze(spark, lake)
    real_enrich = normalize_module.enrich

    def fan_out(*args, **kwargs):  # type: ignore[no-untyped-def]
        # a join that multiplies rows: exactly what reconciliation exists to catch
        out = real_enrich(*args, **kwargs)
        return out.unionByName(out.where(F.col("source") == "idp"))

    monkeypatch.setattr(normalize_module, "enrich", fan_out)
    with pytest.raises(
        PipelineError, match=r"reconciliation failed .* idp 2026-10-01: 4 bronze rows != 4 events"
    ):
        run_normalize(RunContext(spark, settings), [DAY])
    assert not lake.exists("silver.events")
    recon = lake.read("ops.reconciliation").where(F.col("source") == "idp").first()
    assert recon is not None and recon["balanced"] is False


# ---- integration: the real generator and ingest ------------------------------------------


@pytest.fixture(scope="module")
def generated(pipeline_month: PipelineMonth):  # type: ignore[no-untyped-def]
    """The shared generated month (tests/conftest.py), already through ingest .. export."""
    ctx = pipeline_month.ctx
    return (
        pipeline_month.workdir,
        Lake(ctx.spark, ctx.settings.paths.lake_root),
        pipeline_month.dates,
    )


def _where(df: DataFrame, file_col: str, line_col: str, *extra: str) -> DataFrame:
    """(source, date, file name, line): how dirty_rows.jsonl names a line."""
    return df.select(
        "source",
        F.col("run_date").cast("string").alias("date"),
        F.element_at(F.split(F.col(file_col), "/"), -1).alias("file"),
        F.col(line_col).alias("line"),
        *extra,
    )


def test_generated_data_reconciles_for_every_source_and_day(generated) -> None:  # type: ignore[no-untyped-def]
    _, lake, dates = generated
    recon = lake.read("ops.reconciliation").collect()
    assert len(recon) == 6 * len(dates)
    assert all(r["balanced"] for r in recon)
    assert all(r["raw_rows"] > 0 and r["events"] > 0 for r in recon)
    bronze_rows = sum(
        lake.read(f"bronze.{s}").count()
        for s in ("idp", "windows", "zeek_conn", "zeek_dns", "cloudtrail", "sshd")
    )
    assert sum(r["raw_rows"] for r in recon) == bronze_rows
    # a working week and its weekends, a little dirt: every source is usable every day
    status = lake.read("ops.source_status").collect()
    assert len(status) == 6 * len(dates)
    assert [(r["source"], r["run_date"], r["reasons"]) for r in status if r["status"] != "ok"] == []


def test_generated_dirty_rows_are_exactly_what_is_quarantined_or_deduplicated(generated) -> None:  # type: ignore[no-untyped-def]
    out, lake, _ = generated
    sources = ("idp", "windows", "zeek_conn", "zeek_dns", "cloudtrail", "sshd")
    bronze = None
    for s in sources:
        b = _where(lake.read(f"bronze.{s}"), "_file", "_line")
        bronze = b if bronze is None else bronze.unionByName(b)
    assert bronze is not None
    events = _where(lake.read("silver.events"), "bronze_file", "bronze_line")
    keys = ["source", "date", "file", "line"]
    quarantined = _where(lake.read("silver.quarantine"), "bronze_file", "bronze_line", "rule")
    dropped = bronze.join(events, keys, "left_anti").join(quarantined, keys, "left_anti")
    actual = {tuple(r[k] for k in keys): r["rule"] for r in quarantined.collect()}
    actual |= {tuple(r[k] for k in keys): "duplicate" for r in dropped.collect()}
    dirty = [json.loads(line) for line in (out / "dirty_rows.jsonl").read_text().splitlines()]
    rule_of_kind = {
        "duplicate": "duplicate",
        "malformed": "parser",
        "missing_timestamp": "expect_column_values_to_not_be_null(event_time)",
        "bad_timestamp": "expect_column_values_to_not_be_null(event_time)",
    }
    expected = {
        (d["source"], d["date"], d["file"], d["line"]): rule_of_kind[d["kind"]]
        for d in dirty
        if d["kind"] != "late"
    }
    assert {k: v.split(".", 1)[-1] for k, v in actual.items()} == expected
    assert {d["kind"] for d in dirty} >= set(rule_of_kind)
    late = {(d["source"], d["date"], d["file"], d["line"]) for d in dirty if d["kind"] == "late"}
    assert late and late <= {tuple(r[k] for k in keys) for r in events.collect()}


def test_generated_events_fill_the_silver_contract(generated) -> None:  # type: ignore[no-untyped-def]
    _, lake, _ = generated
    events = lake.read("silver.events")
    by_source = {
        r["source"]: r
        for r in events.groupBy("source")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.count("user_id").alias("users"),
            F.count("src_country").alias("geo"),
            F.count("device_id").alias("devices"),
            F.count("asset_criticality").alias("assets"),
            F.countDistinct("event_uid").alias("uids"),
        )
        .collect()
    }
    assert set(by_source) == {"idp", "windows", "zeek_conn", "zeek_dns", "cloudtrail", "sshd"}
    idp, windows = by_source["idp"], by_source["windows"]
    assert idp["users"] == idp["n"]  # every generated sign-in resolves to a directory account
    assert idp["geo"] > 0.9 * idp["n"]  # sign-ins come from public addresses
    assert windows["assets"] == windows["n"] and windows["devices"] > 0.5 * windows["n"]
    assert by_source["zeek_conn"]["devices"] > 0
    assert events.select("run_date", "event_uid").distinct().count() == events.count()
    assert events.where(F.col("src_is_known_egress")).count() > 0


# ---- real recordings (../shared/datasets) -------------------------------------------------


@pytest.mark.datasets
def test_real_recordings_normalize_and_report_their_quarantine_rate(
    spark: SparkSession, tmp_path: Path, datasets: Path, record_property: pytest.RecordProperty
) -> None:
    import zipfile

    ingest = pytest.importorskip("jobs.stages.ingest.stage")
    from jobs.stages.validate.stage import run_validate

    otrf = datasets / "otrf-security-datasets" / "datasets" / "atomic"
    picks = {  # source -> (run date, file name, where it comes from)
        "sshd": (date(2026, 12, 10), "auth.labsz.log", datasets / "loghub-auth" / "OpenSSH" / "OpenSSH_2k.log"),
        "zeek_conn": (date(2020, 8, 7), "conn.s003.log", datasets / "stratosphere-zeek" / "003-zeek-scenario-malicious" / "conn.log"),
        # Stratosphere 005 was written from a pcap with relative times: ts counts from 1970
        "zeek_dns": (date(1970, 1, 1), "dns.s005.log", datasets / "stratosphere-zeek" / "005-zeek-scenario-malicious" / "dns.log"),
        "windows": (date(2020, 8, 5), "wec.jsonl", otrf / "windows" / "credential_access" / "host" / "covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges.zip"),
        "cloudtrail": (date(2020, 9, 14), "cloudtrail.jsonl", otrf / "aws" / "collection" / "ec2_proxy_s3_exfiltration.zip"),
    }  # fmt: skip
    settings = test_settings(tmp_path, ingest={"sources": list(picks)})
    write_reference(settings.paths.reference_root)
    for source, (day, name, origin) in picks.items():
        if not origin.is_file():
            pytest.skip(f"missing recording {origin}")
        folder = Path(settings.paths.raw_root) / source / day.isoformat()
        folder.mkdir(parents=True)
        if origin.suffix == ".zip":
            with zipfile.ZipFile(origin) as archive:
                member = next(n for n in archive.namelist() if n.endswith(".json"))
                (folder / name).write_bytes(archive.read(member))
        else:
            (folder / name).symlink_to(origin)
    ctx = RunContext(spark, settings)
    dates = sorted({day for day, _, _ in picks.values()})
    ingest.run_ingest(ctx, dates)
    run_validate(ctx, dates)
    result = run_normalize(ctx, dates)  # no crash, and it reconciles (or it would raise)

    lake = Lake(spark, settings.paths.lake_root)
    recon = {
        r["source"]: r
        for r in lake.read("ops.reconciliation").where(F.col("raw_rows") > 0).collect()
    }
    assert set(recon) == set(picks)
    print("\nreal recordings: quarantine rate per source (top rules)")
    for source, r in sorted(recon.items()):
        rate = r["quarantined"] / r["raw_rows"]
        record_property(f"quarantine_rate_{source}", round(rate, 4))
        top = sorted(
            (
                (k.split(":", 1)[1], n)
                for k, n in result.details["quarantine_by_rule"].items()
                if k.startswith(source + ":")
            ),
            key=lambda kv: -kv[1],
        )[:3]
        print(f"  {source:<10} {r['raw_rows']:>6} rows  {r['events']:>6} events  {rate:6.1%} quarantined  "
              f"{r['duplicates']} duplicates  {top}")  # fmt: skip
        assert r["balanced"] and r["events"] > 0
