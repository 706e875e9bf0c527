"""The Windows parser on its three JSON shapes: NXLog/Logstash flat, Winlogbeat (7+ ECS and
6.x), evtx_dump records; hand-written lines, then real ones read in place from the OTRF
recordings and the SigmaHQ regression samples, checked against what Python's own JSON reader
says each line holds.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.stages.ingest.parsers.windows import (
    NXLOG_EVENT_TYPES,
    NXLOG_SYSTEM_FIELDS,
    WINDOWS_EVENT_DATA,
    parse_windows,
)

DAY = date(2026, 10, 1)
COLUMNS = (
    "_line", "_parse_status", "_cast_errors", "event_time_raw", "event_time_local", "hostname",
    "channel", "event_id", "event_type", "record_number", "provider", "log_format", "event_data",
)  # fmt: skip
OTRF = "otrf-security-datasets/datasets/atomic/windows"


def parse(spark: SparkSession, lines: list[str], *columns: str) -> DataFrame:
    frame = spark.createDataFrame(
        [(DAY, "windows", "file:/raw/w.jsonl", n, "b", line) for n, line in enumerate(lines, 1)],
        "run_date date, source string, _file string, _line long, _batch_id string, raw string",
    )
    return parse_windows(frame).select(*(columns or COLUMNS))


SYSMON_10 = {
    "SourceImage": "C:\\Windows\\system32\\svchost.exe",
    "TargetImage": "C:\\Windows\\system32\\lsass.exe",
    "GrantedAccess": "0x1000",
    "SourceProcessId": 812,
}


def test_three_shapes_one_set_of_columns(spark: SparkSession) -> None:
    evtx_4624 = {
        "Event": {
            "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
            "System": {
                "Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing"}},
                "EventID": 4624,
                "Level": 0,
                "Keywords": "0x8020000000000000",
                "TimeCreated": {"#attributes": {"SystemTime": "2026-10-01T08:00:00.123456Z"}},
                "EventRecordID": 77,
                "Channel": "Security",
                "Computer": "ws-01.corp.example",
            },
            "EventData": {"TargetUserName": "jdoe", "LogonType": 3, "ElevatedToken": True,
                          "Empty": None, "IpPort": {"#attributes": {"x": 1}, "#text": "445"}},
        }
    }  # fmt: skip
    evtx_7045 = {
        "Event": {
            "System": {
                "Provider": {"#attributes": {"Name": "Service Control Manager"}},
                "EventID": {"#attributes": {"Qualifiers": 16384}, "#text": 7045},
                "Level": 4,
                "Keywords": "0x80000000000000",
                "TimeCreated": {"#attributes": {"SystemTime": "2026-10-01T08:01:00Z"}},
                "EventRecordID": 5,
                "Channel": "System",
                "Computer": "srv-02",
            },
            "EventData": {"ServiceName": "x", "ImagePath": "C:\\t\\x.exe", "Data": {"#text": ["a", "b"]}},
        }
    }  # fmt: skip
    evtx_1102 = {
        "Event": {
            "System": {
                "Provider": {"#attributes": {"Name": "Microsoft-Windows-Eventlog"}},
                "EventID": 1102,
                "Keywords": "0x4020000000000000",
                "TimeCreated": {"#attributes": {"SystemTime": "2026-10-01T08:02:00Z"}},
                "EventRecordID": 9,
                "Channel": "Security",
                "Computer": "dc-01",
            },
            "UserData": {
                "LogFileCleared": {
                    "#attributes": {"xmlns": "http://manifests.microsoft.com/win/2004/08/windows/eventlog"},
                    "SubjectUserName": "adm", "SubjectDomainName": "CORP",
                }
            },
        }
    }  # fmt: skip
    evtx_no_data = {
        "Event": {
            "System": {
                "Provider": {"#attributes": {"Name": "Microsoft-Windows-PowerShell"}},
                "EventID": 4104, "Level": 5, "Channel": "Microsoft-Windows-PowerShell/Operational",
                "TimeCreated": {"#attributes": {"SystemTime": "2026-10-01T08:03:00Z"}},
                "Computer": "ws-01",
            },
            "EventData": None,
        }
    }  # fmt: skip
    ecs = {
        "@timestamp": "2026-10-01T08:04:00.000Z",
        "host": {"name": "wec01"},
        "log": {"level": "information"},
        "event": {"code": "10", "provider": "Microsoft-Windows-Sysmon"},
        "winlog": {
            "channel": "Microsoft-Windows-Sysmon/Operational", "event_id": "10",
            "computer_name": "WS-02.corp.example", "record_id": 123456,
            "provider_name": "Microsoft-Windows-Sysmon", "event_data": SYSMON_10,
        },
    }  # fmt: skip
    ecs_user_data = {
        "@timestamp": "2026-10-01T08:05:00.000Z",
        "winlog": {
            "channel": "Security", "event_id": 1102, "computer_name": "dc-01", "keywords": ["Audit Success"],
            "provider_name": "Microsoft-Windows-Eventlog",
            "user_data": {"xml_name": "LogFileCleared", "SubjectUserName": "adm"},
        },
    }  # fmt: skip
    beat6 = {
        "@timestamp": "2026-10-01T08:06:00.000Z",
        "beat": {"name": "WECserver"}, "host": {"name": "WECserver"},
        "computer_name": "HR001.shire.com", "log_name": "Windows PowerShell", "event_id": 800,
        "record_number": "101776", "source_name": "PowerShell", "level": "Information",
        "keywords": ["Classic"], "message": "Pipeline execution details ...",
        "event_data": {"param1": "Start-Sleep -Seconds 5"},
    }  # fmt: skip
    flat_time_created = {
        "SourceName": "Microsoft-Windows-Eventlog", "TimeCreated": "2026-10-01 08:07:00.104",
        "Hostname": "WORKSTATION5", "Task": "104", "Channel": "Security", "EventID": 1102,
        "Message": "The audit log was cleared.",
    }  # fmt: skip
    lines = [
        json.dumps(x)
        for x in (
            evtx_4624, evtx_7045, evtx_1102, evtx_no_data, ecs, ecs_user_data, beat6,
            flat_time_created, {"Event": "not an object", "Hostname": "ws-9"},
        )
    ]  # fmt: skip
    sysmon = "Microsoft-Windows-Sysmon/Operational"
    assertDataFrameEqual(
        parse(spark, lines),
        [
            Row(1, "parsed", None, "2026-10-01T08:00:00.123456Z", None, "ws-01.corp.example", "Security", 4624,
                "AUDIT_SUCCESS", 77, "Microsoft-Windows-Security-Auditing", "evtx",
                {"TargetUserName": "jdoe", "LogonType": "3", "ElevatedToken": "true", "Empty": None, "IpPort": "445"}),
            Row(2, "parsed", None, "2026-10-01T08:01:00Z", None, "srv-02", "System", 7045, "INFO", 5,
                "Service Control Manager", "evtx", {"ServiceName": "x", "ImagePath": "C:\\t\\x.exe", "Data": '["a","b"]'}),
            Row(3, "parsed", None, "2026-10-01T08:02:00Z", None, "dc-01", "Security", 1102, "AUDIT_SUCCESS", 9,
                "Microsoft-Windows-Eventlog", "evtx", {"SubjectUserName": "adm", "SubjectDomainName": "CORP"}),
            Row(4, "parsed", None, "2026-10-01T08:03:00Z", None, "ws-01", "Microsoft-Windows-PowerShell/Operational",
                4104, "VERBOSE", None, "Microsoft-Windows-PowerShell", "evtx", {}),
            Row(5, "parsed", None, "2026-10-01T08:04:00.000Z", None, "WS-02.corp.example", sysmon, 10, "INFO", 123456,
                "Microsoft-Windows-Sysmon", "winlogbeat", {**SYSMON_10, "SourceProcessId": "812"}),
            Row(6, "parsed", None, "2026-10-01T08:05:00.000Z", None, "dc-01", "Security", 1102, "AUDIT_SUCCESS", None,
                "Microsoft-Windows-Eventlog", "winlogbeat", {"SubjectUserName": "adm"}),
            Row(7, "parsed", None, "2026-10-01T08:06:00.000Z", None, "HR001.shire.com", "Windows PowerShell", 800,
                "INFO", 101776, "PowerShell", "winlogbeat", {"param1": "Start-Sleep -Seconds 5"}),
            Row(8, "parsed", None, None, "2026-10-01 08:07:00.104", "WORKSTATION5", "Security", 1102, None, None,
                "Microsoft-Windows-Eventlog", "nxlog", {}),
            # a flat line whose `Event` is text is no evtx record: a shape error, typed as such
            Row(9, "parsed", ["Event: 'not an object' is not an object"], None, None, "ws-9", None, None, None, None,
                None, "nxlog", {"Event": "not an object"}),
        ],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Real lines, read in place, against Python's reading of the same JSON
# ---------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A JSON value as event_data text: strings as they are, the rest as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _expected_flat(n: int, record: dict[str, Any]) -> Row:
    nxlog_type = record.get("EventType") if record.get("EventType") in NXLOG_EVENT_TYPES else None
    data = {
        k: _text(v)
        for k, v in record.items()
        if k not in NXLOG_SYSTEM_FIELDS and not (k == "EventType" and v == nxlog_type)
    }
    local = record.get("EventTime", record.get("TimeCreated"))
    return Row(
        n, "parsed", None, _text(record.get("@timestamp")), _text(local), record.get("Hostname"),
        record.get("Channel"), record.get("EventID"), nxlog_type or record.get("EventTypeOrignal"),
        int(record["RecordNumber"]) if "RecordNumber" in record else None, record.get("SourceName"), "nxlog", data,
    )  # fmt: skip


def _recording_lines(path: Path) -> list[str]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            (member,) = [m for m in archive.namelist() if m.endswith(".json")]
            return archive.read(member).decode("utf-8").splitlines()
    with tarfile.open(path) as archive:
        (member,) = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".json")]
        handle = archive.extractfile(member)
        assert handle is not None
        return handle.read().decode("utf-8").splitlines()


@pytest.mark.parametrize(
    "recording",
    [
        "lateral_movement/host/covenant_copy_smb_CreateRequest.zip",  # Sysmon 10/12/13, WFP ...
        "credential_access/host/cmd_psexec_lsa_secrets_dump.zip",  # TimeCreated, no @timestamp
        # a PowerShell export: Sysmon's own EventType (CreateKey ...) is event data
        "credential_access/host/cmd_sam_copy_esentutl.zip",
    ],
)
def test_real_otrf_nxlog_lines(spark: SparkSession, datasets: Path, recording: str) -> None:
    lines = _recording_lines(datasets / OTRF / recording)
    want = [_expected_flat(n, json.loads(line)) for n, line in enumerate(lines, 1)]
    assertDataFrameEqual(parse(spark, lines), want)


def test_real_winlogbeat_6_lines(spark: SparkSession, datasets: Path) -> None:
    lines = _recording_lines(
        datasets / OTRF / "privilege_escalation/host/empire_invoke_runas.tar.gz"
    )
    records = [json.loads(line) for line in lines]
    # event data, else user data without Winlogbeat's `xml_name` (the element's name)
    fields = [r.get("event_data", r.get("user_data", {})) for r in records]
    assert any("xml_name" in f for f in fields)
    want = [
        Row(
            n, r["computer_name"], r["log_name"], r["event_id"], int(r["record_number"]), r["source_name"],
            "winlogbeat", {k: _text(v) for k, v in f.items() if k != "xml_name"},
        )
        for n, (r, f) in enumerate(zip(records, fields, strict=True), 1)
    ]  # fmt: skip
    got = parse(
        spark, lines, "_line", "hostname", "channel", "event_id", "record_number", "provider",
        "log_format", "event_data",
    )  # fmt: skip
    assertDataFrameEqual(got, want)


def test_typed_event_data_columns_say_what_event_data_says(
    spark: SparkSession, datasets: Path
) -> None:
    """Flat lines' typed event-data columns are read from the struct parse, the other shapes'
    from the map: on real lines and on flat lines that repeat, nest or null a field, every
    typed column is what a lookup in the row's own `event_data` gives (the first copy of a
    repeated name), cast to the column's type."""
    base = '"@timestamp": "2026-10-01T08:00:00Z", "Hostname": "ws-1", "EventID": 4624'
    lines = _recording_lines(
        datasets / OTRF / "lateral_movement/host/covenant_copy_smb_CreateRequest.zip"
    )
    lines += [
        f'{{{base}, "TargetUserName": "first", "LogonType": 3, "TargetUserName": "second"}}',
        f'{{{base}, "Image": {{"nested": 1}}, "IpPort": "445", "Status": null}}',
        f'{{{base}, "Hostname": "again", "SubjectUserName": "adm", "LogonType": "x"}}',
    ]
    parsed = parse(spark, lines, "_line", "event_data", *WINDOWS_EVENT_DATA)
    types = dict(parsed.dtypes)
    mismatches = parsed.where(
        F.exists(
            F.array(
                *[
                    ~F.col(column).eqNullSafe(F.col("event_data")[key].try_cast(types[column]))
                    for column, key in WINDOWS_EVENT_DATA.items()
                ]
            ),
            lambda differs: differs,
        )
    )
    assert mismatches.select("_line").collect() == []
    n = len(lines)
    got = {r["_line"]: r for r in parsed.where(F.col("_line") > n - 3).collect()}
    assert got[n - 2]["target_user_name"] == "first" and got[n - 2]["logon_type"] == 3
    assert got[n - 1]["image"] == '{"nested":1}' and got[n - 1]["ip_port"] == 445
    assert got[n]["subject_user_name"] == "adm" and got[n]["logon_type"] is None
    # the real lines do fill the typed columns (the comparison above is not over nulls only)
    assert parsed.where(F.col("image").isNotNull() & (F.col("_line") <= n - 3)).count() > 0


def _evtx_records(text: str) -> Iterator[dict[str, Any]]:
    """The sample files hold one or more pretty-printed records one after another."""
    decoder, at = json.JSONDecoder(), 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return
        record, at = decoder.raw_decode(text, at)
        yield record


def _element_text(value: Any) -> str | None:
    if isinstance(value, dict) and "#text" in value:
        return _text(value["#text"])
    return _text(value)


def _expected_evtx(n: int, record: dict[str, Any]) -> Row:
    event = record["Event"]
    system = event["System"]
    fields = event.get("EventData")
    if fields is None and event.get("UserData") is not None:
        children = [v for k, v in event["UserData"].items() if not k.startswith("#")]
        fields = children[0]
    data = {
        k: _element_text(v)
        for k, v in (fields or {}).items()
        if not k.startswith("#") and not k.startswith("xmlns")
    }
    event_id = system["EventID"]
    return Row(
        n, "parsed", None, system["TimeCreated"]["#attributes"]["SystemTime"], None, system["Computer"],
        system["Channel"], event_id["#text"] if isinstance(event_id, dict) else event_id, system["EventRecordID"],
        system["Provider"]["#attributes"]["Name"], "evtx", data,
    )  # fmt: skip


def test_real_sigma_regression_records(spark: SparkSession, datasets: Path) -> None:
    samples = datasets.parent / "sigma" / "regression_data"  # ../shared/sigma beside the datasets
    if not samples.is_dir():
        pytest.skip(f"SigmaHQ regression data not found at {samples}")
    records = [
        record
        for path in sorted(samples.rglob("*.json"))
        for record in _evtx_records(path.read_text(encoding="utf-8"))
    ]
    assert len(records) > 100
    lines = [json.dumps(r, ensure_ascii=False) for r in records]  # one record per line
    want = [_expected_evtx(n, r) for n, r in enumerate(records, 1)]
    got = parse(
        spark, lines, "_line", "_parse_status", "_cast_errors", "event_time_raw", "event_time_local",
        "hostname", "channel", "event_id", "record_number", "provider", "log_format", "event_data",
    )  # fmt: skip
    assertDataFrameEqual(got, want)
