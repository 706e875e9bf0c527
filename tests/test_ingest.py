"""Ingest: every raw line lands in bronze exactly once, parsed or marked unparseable.

Hand-written lines in each vendor's real format (and the ways real feeds break them) are
written to files under a temporary raw/ tree; `run_ingest` reads them as Spark does in
production. One ingest of the whole tree is shared by most tests (Spark jobs are the slow
part); the idempotency tests use their own lake.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.core.config import Settings
from jobs.core.context import RunContext, StageResult
from jobs.core.tables import BRONZE, INGEST_LOG
from jobs.stages.ingest.files import (
    batch_id,
    file_blocks,
    file_table,
    number_lines,
    plan_files,
    read_raw_lines,
    sensor_of,
    zeek_layout,
)
from jobs.stages.ingest.parsers import PARSERS
from jobs.stages.ingest.stage import run_ingest
from tests.conftest import test_settings

D1, D2, D3 = date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)  # hand-written files
G1, G2 = date(2026, 10, 5), date(2026, 10, 6)  # the generator's files, in the same raw tree
HAND_DAYS = (D1, D2, D3)
ALL_SOURCES = ("idp", "windows", "zeek_conn", "zeek_dns", "cloudtrail", "sshd")

# ---------------------------------------------------------------------------------------
# The raw tree: real vendor shapes, plus the breakage real feeds carry
# ---------------------------------------------------------------------------------------

OKTA_SSO = {
    "uuid": "a1b2c3d4-0001-11ef-8f4b-0123456789ab",
    "published": "2026-10-01T08:00:01.123Z",
    "eventType": "user.authentication.sso",
    "version": "0",
    "severity": "INFO",
    "displayMessage": "User single sign on to app",
    "actor": {
        "id": "00u1abcdEFGH2345ijkl",
        "type": "User",
        "alternateId": "jane.doe@corp.example",
        "displayName": "Jane Doe",
        "detailEntry": None,
    },
    "client": {
        "userAgent": {
            "rawUserAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/128.0",
            "os": "Windows 10",
            "browser": "CHROME",
        },
        "zone": "null",
        "device": "Computer",
        "id": None,
        "ipAddress": "198.51.100.7",
        "geographicalContext": {"city": "Berlin", "country": "Germany"},
    },
    "device": {"id": "guo1a2b3c4", "name": "LAPTOP-JDOE", "os_platform": "WINDOWS"},
    "outcome": {"result": "SUCCESS", "reason": None},
    "target": [
        {
            "id": "00u1abcdEFGH2345ijkl",
            "type": "User",
            "alternateId": "jane.doe@corp.example",
            "displayName": "Jane Doe",
        },
        {
            "id": "0oa9salesforce",
            "type": "AppInstance",
            "alternateId": "Salesforce",
            "displayName": "Salesforce.com",
        },
    ],
    "authenticationContext": {"externalSessionId": "102sessionXYZ", "authenticationStep": 0},
    "transaction": {"type": "WEB", "id": "YxZ-tx-0001"},
}
OKTA_START = {
    **OKTA_SSO,
    "uuid": "a1b2c3d4-0002-11ef-8f4b-0123456789ab",
    "eventType": "user.session.start",
    "outcome": {"result": "FAILURE", "reason": "INVALID_CREDENTIALS"},
    "target": None,
}
OKTA_WRONG_TYPES = {**OKTA_START, "uuid": "wrong-types", "actor": "jane.doe", "severity": 3}

IDP_D1: list[str | bytes] = [
    json.dumps(OKTA_SSO),
    json.dumps(OKTA_WRONG_TYPES),
    json.dumps(OKTA_START)[:150],  # truncated in transit
    "",
    json.dumps([OKTA_START]),  # valid JSON, but not an object
    '{"uuid": "nul\x00\x00"}',
    # invalid UTF-8 inside a value: decoded with U+FFFD, the record still parses
    json.dumps({**OKTA_START, "uuid": "bad-utf8", "displayMessage": "caf@"})
    .encode()
    .replace(b"caf@", b"caf\xe9"),
    json.dumps({**OKTA_START, "uuid": "crlf"}) + "\r",  # a CRLF line ending
]
IDP_D2: list[str | bytes] = [
    json.dumps({**OKTA_SSO, "uuid": "d2-1"}),
    json.dumps({**OKTA_START, "uuid": "d2-2"}),
]


def nxlog(**fields: Any) -> str:
    """An OTRF/NXLog-flattened Windows event, spaced the way Logstash writes it."""
    base = {
        "@timestamp": "2026-10-01T09:15:02.417Z",
        "@version": "1",
        "EventTime": "2026-10-01 11:15:02",
        "EventReceivedTime": "2026-10-01 11:15:03",
        "Hostname": "WS-BER-0042.corp.example",
        "SourceModuleName": "eventlog",
        "Keywords": -9214364837600034816,
        "SeverityValue": 2,
        "Severity": "INFO",
        "RecordNumber": 184467,
        "Task": 12544,
        "tags": ["mordorDataset"],
    }
    base.update(fields)
    return json.dumps(base, separators=(", ", ": "))


WINDOWS_D1: list[str | bytes] = [
    nxlog(
        Channel="Security", EventID=4624, EventType="AUDIT_SUCCESS", TargetUserName="jdoe",
        TargetDomainName="CORP", SubjectUserName="WS-BER-0042$", LogonType="3",
        IpAddress="10.20.0.15", IpPort="-", WorkstationName="WS-BER-0042", Status="0x0",
    ),
    nxlog(
        Channel="Security", EventID=4625, EventType="AUDIT_FAILURE", TargetUserName="admin",
        LogonType="network", IpAddress="203.0.113.9", IpPort="51515", Status="0xc000006d",
        SubStatus="0xc000006a",
    ),
    nxlog(
        Channel="Microsoft-Windows-Sysmon/Operational", EventID=1, EventTypeOrignal="INFO",
        SourceName="Microsoft-Windows-Sysmon", Image="C:\\Windows\\System32\\cmd.exe", ParentImage="C:\\Windows\\explorer.exe",
        CommandLine="cmd.exe /c whoami", User="CORP\\jdoe",
    ),
    nxlog(
        Channel="Microsoft-Windows-Sysmon/Operational", EventID=3, Image="C:\\tools\\x.exe",
        SourceIp="10.20.0.15", DestinationIp="10.0.0.10", DestinationPort="445", User="CORP\\jdoe",
    ),
    json.dumps(
        {
            "@timestamp": "2026-10-01T09:20:00.000Z",
            "winlog": {
                "channel": "Security",
                "event_id": 4688,
                "computer_name": "SRV-LON-DB01.corp.example",
                "record_id": 99,
                "provider_name": "Microsoft-Windows-Security-Auditing",
                "event_data": {
                    "NewProcessName": "C:\\Windows\\System32\\net.exe",
                    "ParentProcessName": "C:\\Windows\\System32\\cmd.exe",
                    "CommandLine": "net user /domain",
                    "SubjectUserName": "svc-backup",
                },
            },
        }
    ),  # Winlogbeat's nested shape
]  # fmt: skip
WINDOWS_D2: list[str | bytes] = [
    nxlog(
        Channel="Security",
        EventID=4672,
        SubjectUserName="adm-jdoe",
        PrivilegeList="SeDebugPrivilege",
    )
]

ZEEK_HEADER = [
    "#separator \\x09",
    "#set_separator\t,",
    "#empty_field\t(empty)",
    "#unset_field\t-",
    "#path\tconn",
    "#open\t2026-10-01-00-00-00",
]


def words(text: str) -> list[str]:
    return text.split()


LABELLED_FIELDS = words(
    "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes resp_bytes "
    "conn_state local_orig local_resp missed_bytes history orig_pkts orig_ip_bytes resp_pkts "
    "resp_ip_bytes tunnel_parents label detailedlabel"
)
TSV_TYPES = words(
    "time string addr port addr port enum string interval count count string bool bool count "
    "string count count count count set[string] string string"
)


def tsv(*values: str) -> str:
    return "\t".join(values)


CONN_TSV_D1: list[str | bytes] = [
    *ZEEK_HEADER,
    tsv("#fields", *LABELLED_FIELDS),
    tsv("#types", *TSV_TYPES),
    tsv("1790841601.123456", "CHLXQF2OBY4onAR0Ug", "10.20.0.15", "62771", "40.74.108.123", "443", "tcp", "ssl",
        "1.135424", "1596", "4039", "SF", "T", "F", "0", "ShADdaFf", "14", "1016", "16", "1226", "(empty)", "Benign", "Microsoft"),
    tsv("1790841602.5", "CEL3aLvvNGvO6Ecoa", "193.201.9.232", "46563", "10.20.0.15", "3933", "tcp", "-",
        "-", "-", "-", "S0", "F", "T", "0", "S", "2", "80", "0", "0", "(empty)", "Malicious", "External-Attack-to-Device"),
    tsv("1790841603.0", "Cbad", "10.20.0.15", "abc", "10.0.0.1", "53", "udp", "dns",
        "0.1", "40", "80", "SF", "T", "T", "0", "Dd", "1", "68", "1", "96", "(empty)", "Benign", "(empty)"),
    tsv("1790841604.0", "Ccut", "10.20.0.15", "5"),  # cut short
    "#close\t2026-10-02-00-00-00",
]  # fmt: skip
CONN_JSON_D1: list[str | bytes] = [
    '{"ts":1790841605.755299,"uid":"C5xhsO3uGtOfyrBlHh","id.orig_h":"10.20.0.16","id.orig_p":40042,'
    '"id.resp_h":"8.8.8.8","id.resp_p":53,"proto":"udp","service":"dns","duration":0.012166976928710938,'
    '"orig_bytes":0,"resp_bytes":111,"conn_state":"SHR","local_orig":true,"missed_bytes":0,"history":"Cd",'
    '"orig_pkts":0,"orig_ip_bytes":0,"resp_pkts":1,"resp_ip_bytes":139}',
    # OTRF APT29 export: underscore keys, ISO timestamp
    '{"ts":"2026-10-01T00:00:06.000001Z","uid":"CapT29","id_orig_h":"10.0.1.4","id_orig_p":"x1",'
    '"id_resp_h":"10.0.0.4","id_resp_p":88,"proto":"tcp","service":"krb_tcp"}',
]
CONN_TSV_D2: list[str | bytes] = [
    *ZEEK_HEADER,
    tsv("#fields", *LABELLED_FIELDS[:21]),
    tsv("#types", *TSV_TYPES[:21]),
    tsv("1790928000.000001", "Cd2", "10.20.0.15", "50000", "10.0.0.10", "445", "tcp", "smb",
        "0.5", "100", "200", "SF", "T", "T", "0", "ShADadfF", "4", "300", "4", "400", "(empty)"),
    "#close\t2026-10-03-00-00-00",
]  # fmt: skip
DNS_D1: list[str | bytes] = [
    '{"_path":"dns","_write_ts":"2026-10-01T00:00:07.1Z","ts":"2026-10-01T00:00:07.000002Z",'
    '"uid":"CqKst53mF3det3eDV9","id.orig_h":"10.20.0.15","id.orig_p":41772,"id.resp_h":"10.0.0.53",'
    '"id.resp_p":53,"proto":"udp","trans_id":36329,"rtt":0.00087,"query":"login.corp.example",'
    '"qclass":1,"qclass_name":"C_INTERNET","qtype":1,"qtype_name":"A","rcode":0,"rcode_name":"NOERROR",'
    '"AA":false,"TC":false,"RD":true,"RA":true,"Z":0,"answers":["edge.corp.example","10.0.0.80"],'
    '"TTLs":[300.0,300.0],"rejected":false}',
    '{"ts":1790841608.1,"uid":"Cwrong","id.orig_h":"10.20.0.16","id.orig_p":5353,"id.resp_h":"10.0.0.53",'
    '"id.resp_p":53,"proto":"udp","trans_id":"70000000000","query":"x.example","answers":"10.0.0.1"}',
]

CT_RECORD = {
    "eventVersion": "1.09",
    "userIdentity": {
        "type": "IAMUser",
        "principalId": "AIDA5FLZVX4OI4EXAMPLE",
        "arn": "arn:aws:iam::123456789012:user/jdoe",
        "accountId": "123456789012",
        "accessKeyId": "AKIA5FLZVX4OEXAMPLE",
        "userName": "jdoe",
        "sessionContext": {"attributes": {"mfaAuthenticated": "true"}},
    },
    "eventTime": "2026-10-01T10:00:00Z",
    "eventSource": "iam.amazonaws.com",
    "eventName": "CreateAccessKey",
    "awsRegion": "us-east-1",
    "sourceIPAddress": "198.51.100.7",
    "userAgent": "aws-cli/2.15.0",
    "requestParameters": {"userName": "svc-deploy"},
    "responseElements": None,
    "requestID": "req-1",
    "eventID": "ct-1",
    "readOnly": False,
    "eventType": "AwsApiCall",
    "recipientAccountId": "123456789012",
}
CLOUDTRAIL_D1: list[str | bytes] = [
    json.dumps(CT_RECORD),
    json.dumps(
        {
            "Records": [
                {**CT_RECORD, "eventID": "ct-2", "eventName": "ListBuckets", "eventSource": "s3.amazonaws.com", "readOnly": True},
                {**CT_RECORD, "eventID": "ct-3", "errorCode": "AccessDenied", "errorMessage": "User is not authorized"},
            ]
        }
    ),
    '{"Records": []}',
    # OTRF's export: @timestamp beside the record, no eventTime
    json.dumps({**{k: v for k, v in CT_RECORD.items() if k != "eventTime"}, "@timestamp": "2020-09-14T00:44:23.000Z", "eventID": "ct-4"}),
]  # fmt: skip

SSHD_D1: list[str | bytes] = [
    "Dec 10 06:55:46 LabSZ sshd[24200]: Failed password for invalid user webmaster from 173.234.31.186 port 38926 ssh2",
    "2026-10-01T08:00:01.123456+02:00 web-03 sshd[811]: Accepted publickey for deploy from 10.1.2.3 port 50122 ssh2: RSA SHA256:abc",
    "Oct  1 08:01:00 web-03 sshd[812]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.50  user=root",
    "Oct  1 08:02:00 web-03 sshd[813]: pam_unix(sshd:session): session opened for user deploy(uid=1001) by (uid=0)",
    "Oct  1 08:03:00 web-03 sshd[814]: Invalid user oracle from 203.0.113.51 port 40000",
    "Oct  1 08:04:00 web-03 sshd[815]: Connection closed by authenticating user root 203.0.113.52 port 40001 [preauth]",
    "Oct  1 08:05:00 web-03 sshd[816]: Received disconnect from 203.0.113.53 port 40002:11: Bye Bye [preauth]",
    "Oct  1 08:06:00 web-03 sshd[817]: Disconnected from invalid user test 203.0.113.54 port 40003 [preauth]",
    "Oct  1 08:07:00 web-03 sshd[818]: reverse mapping checking getaddrinfo for ns.example.com [203.0.113.55] failed - POSSIBLE BREAK-IN ATTEMPT!",
    "Oct  1 08:08:00 web-03 sshd[819]: message repeated 5 times: [ Failed password for root from 203.0.113.56 port 40004 ssh2]",
    "Oct  1 08:09:00 web-03 sshd[820]: Server listening on 0.0.0.0 port 22.",
    "Jun 15 04:06:18 combo ftpd[29504]: connection from 24.54.76.216 () at Wed Jun 15 04:06:18 2005",
    "garbage that is not syslog",
    "Oct  1 08:10:00 web-0",  # cut short
    "web-03 sshd[821]: Accepted password for deploy from 10.1.2.4 port 50123 ssh2",  # lost its stamp
    "<38>Oct  1 08:11:00 web-03 sshd-session[822]: Connection closed by 203.0.113.57 port 40005",
]  # fmt: skip
SSHD_DB_D1: list[str | bytes] = [
    "Oct  1 09:00:00 db-01 sshd[1]: pam_unix(sshd:session): session closed for user postgres"
]
SSHD_D2: list[str | bytes] = [
    "Oct  2 00:00:01 web-03 sshd[900]: Accepted publickey for deploy from 10.1.2.3 port 50130 ssh2"
]

# source -> date -> file name -> lines (str lines are UTF-8 encoded; bytes are written as-is)
RAW_TREE: dict[str, dict[date, dict[str, list[str | bytes]]]] = {
    "idp": {D1: {"okta_system_log.jsonl": IDP_D1}, D2: {"okta_system_log.jsonl": IDP_D2}},
    "windows": {D1: {"wec01.jsonl": WINDOWS_D1}, D2: {"wec01.jsonl": WINDOWS_D2}},
    "zeek_conn": {
        D1: {"conn.sensor01.log": CONN_TSV_D1, "conn.sensor02.json": CONN_JSON_D1},
        D2: {"conn.sensor01.log": CONN_TSV_D2},
    },
    "zeek_dns": {D1: {"dns.sensor01.json": DNS_D1}},  # nothing delivered on D2
    "cloudtrail": {D1: {"cloudtrail.jsonl": CLOUDTRAIL_D1}, D2: {"cloudtrail.jsonl": []}},
    "sshd": {
        D1: {"auth.web-03.log": SSHD_D1, "auth.db-01.log": SSHD_DB_D1},
        D2: {"auth.web-03.log": SSHD_D2},
    },
}


def encode(lines: Sequence[str | bytes]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)


def write_raw(raw_root: Path, sources: Sequence[str] = ALL_SOURCES) -> None:
    for source in sources:
        for day, files in RAW_TREE[source].items():
            folder = raw_root / source / day.isoformat()
            folder.mkdir(parents=True, exist_ok=True)
            for name, lines in files.items():
                (folder / name).write_bytes(encode(lines))


@dataclass
class Ingested:
    """One backfill over the hand-written days and two generated days (a separate date
    range in the same raw tree), with every table collected once (they are small)."""

    ctx: RunContext
    result: StageResult
    raw_root: Path
    tables: dict[str, list[Row]]
    log: list[Row]
    generated: Path | None  # the generator's output folder (manifest, dirty rows)
    generator_error: str | None = None

    def path(self, source: str, day: date, name: str) -> str:
        return f"file:{self.raw_root / source / day.isoformat() / name}"

    def file_rows(self, source: str, day: date, name: str, *columns: str) -> list[Row]:
        """`_line` and `columns` of one raw file's bronze rows, in line order."""
        path = self.path(source, day, name)
        rows = sorted(
            (r for r in self.tables[source] if r["_file"] == path), key=lambda r: r["_line"]
        )
        return [Row(_line=r["_line"], **{c: r[c] for c in columns}) for r in rows]


def collect_tables(ctx: RunContext, sources: Sequence[str]) -> dict[str, list[Row]]:
    return {s: ctx.lake.read(f"bronze.{s}").collect() for s in sources}


def generate_into(out: Path, raw_root: Path) -> tuple[Path | None, str | None]:
    """Two generated days (20 users) moved into `raw_root`; (None, why) if that fails."""
    try:
        from jobs.generate import generate_telemetry

        generate_telemetry(out, G1, 2, 20, 7, workers=1)
    except Exception as exc:  # the generator is another module's test subject
        return None, f"{type(exc).__name__}: {exc}"
    for folder in sorted((out / "raw").glob("*/*")):
        target = raw_root / folder.parent.name / folder.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(folder, target)
    return out, None


@pytest.fixture(scope="module")
def ingested(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    workdir = tmp_path_factory.mktemp("ingest")
    settings = test_settings(workdir)
    raw_root = Path(settings.paths.raw_root)
    write_raw(raw_root)
    generated, error = generate_into(workdir / "generated", raw_root)
    ctx = RunContext(spark, settings)
    result = run_ingest(ctx, [*HAND_DAYS, G1, G2])
    log = ctx.lake.read("ops.ingest_log").collect()
    tables = collect_tables(ctx, ALL_SOURCES)
    return Ingested(ctx, result, raw_root, tables, log, generated, error)


# ---------------------------------------------------------------------------------------
# Lineage, counts and the stage result
# ---------------------------------------------------------------------------------------


def test_bronze_tables_match_the_contract(ingested: Ingested) -> None:
    for source in ALL_SOURCES:
        schema = ingested.ctx.lake.read(f"bronze.{source}").schema
        assert [(f.name, f.dataType) for f in schema.fields] == [
            (f.name, f.dataType) for f in BRONZE[source].schema.fields
        ], source
    assert ingested.ctx.lake.read("ops.ingest_log").schema.names == INGEST_LOG.schema.names


def test_every_line_is_one_row_with_its_exact_line_number(ingested: Ingested) -> None:
    """(file, line) -> raw equals the file's own lines; Zeek headers are not rows."""
    for source, days in RAW_TREE.items():
        for day, files in days.items():
            for name, lines in files.items():
                want = [
                    Row(_line=i + 1, raw=encode([x]).decode("utf-8", "replace")[:-1])
                    for i, x in enumerate(lines)
                    if not (source.startswith("zeek_") and str(x).startswith("#"))
                ]
                got = ingested.file_rows(source, day, name, "raw")
                if source == "cloudtrail":  # a Records line: one row per record (tested below)
                    got = [r for r in got if r._line != 2]
                    want = [r for r in want if r._line != 2]
                assertDataFrameEqual(got, want)


def test_ingest_log_reconciles_lines_headers_and_rows(ingested: Ingested) -> None:
    got = [
        Row(
            run_date=r["run_date"],
            source=r["source"],
            file=r["_file"].rsplit("/", 1)[-1],
            lines_read=r["lines_read"],
            header_lines=r["header_lines"],
            rows=r["rows"],
            unparseable=r["unparseable"],
        )
        for r in ingested.log
        if r["run_date"] in HAND_DAYS
    ]
    assertDataFrameEqual(
        got,
        [
            Row(run_date=D1, source="idp", file="okta_system_log.jsonl", lines_read=8, header_lines=0, rows=8, unparseable=4),
            Row(run_date=D2, source="idp", file="okta_system_log.jsonl", lines_read=2, header_lines=0, rows=2, unparseable=0),
            Row(run_date=D1, source="windows", file="wec01.jsonl", lines_read=5, header_lines=0, rows=5, unparseable=0),
            Row(run_date=D2, source="windows", file="wec01.jsonl", lines_read=1, header_lines=0, rows=1, unparseable=0),
            Row(run_date=D1, source="zeek_conn", file="conn.sensor01.log", lines_read=13, header_lines=9, rows=4, unparseable=1),
            Row(run_date=D1, source="zeek_conn", file="conn.sensor02.json", lines_read=2, header_lines=0, rows=2, unparseable=0),
            Row(run_date=D2, source="zeek_conn", file="conn.sensor01.log", lines_read=10, header_lines=9, rows=1, unparseable=0),
            Row(run_date=D1, source="zeek_dns", file="dns.sensor01.json", lines_read=2, header_lines=0, rows=2, unparseable=0),
            Row(run_date=D1, source="cloudtrail", file="cloudtrail.jsonl", lines_read=4, header_lines=0, rows=5, unparseable=1),
            Row(run_date=D2, source="cloudtrail", file="cloudtrail.jsonl", lines_read=0, header_lines=0, rows=0, unparseable=0),
            Row(run_date=D1, source="sshd", file="auth.web-03.log", lines_read=16, header_lines=0, rows=16, unparseable=3),
            Row(run_date=D1, source="sshd", file="auth.db-01.log", lines_read=1, header_lines=0, rows=1, unparseable=0),
            Row(run_date=D2, source="sshd", file="auth.web-03.log", lines_read=1, header_lines=0, rows=1, unparseable=0),
        ],
    )  # fmt: skip
    # lines_read is what is on disk, rows what bronze holds
    for r in ingested.log:
        on_disk = Path(r["_file"].removeprefix("file:")).read_bytes().count(b"\n")
        assert r["lines_read"] == on_disk
        assert sum(1 for b in ingested.tables[r["source"]] if b["_file"] == r["_file"]) == r["rows"]


def test_stage_result_counts_rows_unparseable_and_missing_sources(ingested: Ingested) -> None:
    result, tables = ingested.result, ingested.tables
    assert result.rows == {
        **{f"bronze.{s}": len(tables[s]) for s in ALL_SOURCES},
        "ops.ingest_log": len(ingested.log),
    }
    assert result.details["unparseable"] == {
        s: sum(r["_parse_status"] == "unparseable" for r in tables[s]) for s in ALL_SOURCES
    }
    assert result.details["header_lines"] == sum(r["header_lines"] for r in ingested.log)
    # the hand-written days alone
    hand = {s: [r for r in tables[s] if r["run_date"] in HAND_DAYS] for s in ALL_SOURCES}
    assert {s: len(rows) for s, rows in hand.items()} == {
        "idp": 10, "windows": 6, "zeek_conn": 7, "zeek_dns": 2, "cloudtrail": 5, "sshd": 18,
    }  # fmt: skip
    assert {s: sum(r["_parse_status"] == "unparseable" for r in rows) for s, rows in hand.items()} == {
        "idp": 4, "windows": 0, "zeek_conn": 1, "zeek_dns": 0, "cloudtrail": 1, "sshd": 3,
    }  # fmt: skip
    # D3 delivered nothing; zeek_dns skipped D2. An empty file is a delivery, not a gap.
    missing = [m for m in result.details["missing"] if date.fromisoformat(m[-10:]) in HAND_DAYS]
    assert sorted(missing) == sorted(
        [f"{s}@2026-10-03" for s in ALL_SOURCES] + ["zeek_dns@2026-10-02"]
    )


def test_batch_id_is_a_hash_of_source_date_and_files(ingested: Ingested) -> None:
    folder = ingested.raw_root / "zeek_conn" / D1.isoformat()
    files = [(p.name, p.stat().st_size) for p in folder.iterdir()]
    want = batch_id("zeek_conn", D1, files)
    got = {r["_batch_id"] for r in ingested.tables["zeek_conn"] if r["run_date"] == D1}
    assert got == {want}
    assert batch_id("zeek_conn", D1, list(reversed(files))) == want
    assert batch_id("zeek_conn", D2, files) != want
    assert batch_id("zeek_conn", D1, [(files[0][0], files[0][1] + 1), *files[1:]]) != want


# ---------------------------------------------------------------------------------------
# Parsers, one per format (whole rows of the columns that matter)
# ---------------------------------------------------------------------------------------


def test_idp_okta_events_and_broken_lines(ingested: Ingested) -> None:
    got = ingested.file_rows(
        "idp", D1, "okta_system_log.jsonl",
        "_parse_status", "_parse_error", "_cast_errors", "event_time_raw", "uuid", "event_type",
        "severity", "actor_alternate_id", "client_ip", "user_agent", "client_os", "device_id",
        "outcome_result", "outcome_reason", "target_app", "target_app_id", "external_session_id",
        "display_message",
    )  # fmt: skip
    ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/128.0"
    sso = ("parsed", None, None, "2026-10-01T08:00:01.123Z")
    unparseable = (None,) * 16
    assertDataFrameEqual(
        got,
        [
            Row(1, *sso, "a1b2c3d4-0001-11ef-8f4b-0123456789ab", "user.authentication.sso", "INFO", "jane.doe@corp.example",
                "198.51.100.7", ua, "Windows 10", "guo1a2b3c4", "SUCCESS", None, "Salesforce.com", "0oa9salesforce",
                "102sessionXYZ", "User single sign on to app"),
            Row(2, "parsed", None, ["actor: 'jane.doe' is not an object"], "2026-10-01T08:00:01.123Z", "wrong-types",
                "user.session.start", "3", None, "198.51.100.7", ua, "Windows 10", "guo1a2b3c4", "FAILURE",
                "INVALID_CREDENTIALS", None, None, "102sessionXYZ", "User single sign on to app"),
            Row(3, "unparseable", "invalid JSON", None, *unparseable),
            Row(4, "unparseable", "empty line", None, *unparseable),
            Row(5, "unparseable", "not a JSON object", None, *unparseable),
            Row(6, "unparseable", "NUL bytes in line", None, *unparseable),
            Row(7, "parsed", None, None, "2026-10-01T08:00:01.123Z", "bad-utf8", "user.session.start", "INFO",
                "jane.doe@corp.example", "198.51.100.7", ua, "Windows 10", "guo1a2b3c4", "FAILURE",
                "INVALID_CREDENTIALS", None, None, "102sessionXYZ", "caf\ufffd"),
            Row(8, "parsed", None, None, "2026-10-01T08:00:01.123Z", "crlf", "user.session.start", "INFO",
                "jane.doe@corp.example", "198.51.100.7", ua, "Windows 10", "guo1a2b3c4", "FAILURE",
                "INVALID_CREDENTIALS", None, None, "102sessionXYZ", "User single sign on to app"),
        ],
    )  # fmt: skip
    raw = ingested.file_rows("idp", D1, "okta_system_log.jsonl", "raw")[7]
    assert raw["raw"].endswith("}\r")  # raw is the line as read


def test_windows_nxlog_and_winlogbeat_events(ingested: Ingested) -> None:
    got = ingested.file_rows(
        "windows", D1, "wec01.jsonl",
        "_parse_status", "_cast_errors", "event_time_raw", "event_time_local", "hostname", "channel",
        "event_id", "event_type", "record_number", "target_user_name", "subject_user_name",
        "logon_type", "ip_address", "ip_port", "status", "sub_status", "new_process_name",
        "parent_process_name", "command_line", "image", "parent_image", "sysmon_user",
        "destination_ip", "destination_port",
    )  # fmt: skip
    ts, local, host = "2026-10-01T09:15:02.417Z", "2026-10-01 11:15:02", "WS-BER-0042.corp.example"
    sysmon = "Microsoft-Windows-Sysmon/Operational"
    assertDataFrameEqual(
        got,
        [
            Row(1, "parsed", None, ts, local, host, "Security", 4624, "AUDIT_SUCCESS", 184467, "jdoe", "WS-BER-0042$",
                3, "10.20.0.15", None, "0x0", None, None, None, None, None, None, None, None, None),
            Row(2, "parsed", ["logon_type: 'network' is not int"], ts, local, host, "Security", 4625, "AUDIT_FAILURE",
                184467, "admin", None, None, "203.0.113.9", 51515, "0xc000006d", "0xc000006a", None, None, None,
                None, None, None, None, None),
            Row(3, "parsed", None, ts, local, host, sysmon, 1, "INFO", 184467, None, None, None, None, None, None, None,
                None, None, "cmd.exe /c whoami", "C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\explorer.exe",
                "CORP\\jdoe", None, None),
            Row(4, "parsed", None, ts, local, host, sysmon, 3, None, 184467, None, None, None, None, None, None, None,
                None, None, None, "C:\\tools\\x.exe", None, "CORP\\jdoe", "10.0.0.10", 445),
            Row(5, "parsed", None, "2026-10-01T09:20:00.000Z", None, "SRV-LON-DB01.corp.example", "Security", 4688,
                None, 99, None, "svc-backup", None, None, None, None, None, "C:\\Windows\\System32\\net.exe",
                "C:\\Windows\\System32\\cmd.exe", "net user /domain", None, None, None, None, None),
        ],
    )  # fmt: skip
    # every event data field is kept by its Windows name, whatever the shape
    shapes = ingested.file_rows(
        "windows", D1, "wec01.jsonl", "provider", "log_format", "event_data"
    )
    assertDataFrameEqual(
        shapes,
        [
            Row(1, None, "nxlog", {"TargetUserName": "jdoe", "TargetDomainName": "CORP", "SubjectUserName": "WS-BER-0042$",
                                   "LogonType": "3", "IpAddress": "10.20.0.15", "IpPort": "-",
                                   "WorkstationName": "WS-BER-0042", "Status": "0x0"}),
            Row(2, None, "nxlog", {"TargetUserName": "admin", "LogonType": "network", "IpAddress": "203.0.113.9",
                                   "IpPort": "51515", "Status": "0xc000006d", "SubStatus": "0xc000006a"}),
            Row(3, "Microsoft-Windows-Sysmon", "nxlog", {"Image": "C:\\Windows\\System32\\cmd.exe", "ParentImage": "C:\\Windows\\explorer.exe",
                                   "CommandLine": "cmd.exe /c whoami", "User": "CORP\\jdoe"}),
            Row(4, None, "nxlog", {"Image": "C:\\tools\\x.exe", "SourceIp": "10.20.0.15", "DestinationIp": "10.0.0.10",
                                   "DestinationPort": "445", "User": "CORP\\jdoe"}),
            Row(5, "Microsoft-Windows-Security-Auditing", "winlogbeat", {"NewProcessName": "C:\\Windows\\System32\\net.exe",
                                        "ParentProcessName": "C:\\Windows\\System32\\cmd.exe",
                                        "CommandLine": "net user /domain", "SubjectUserName": "svc-backup"}),
        ],
    )  # fmt: skip


ZEEK_CONN_COLUMNS = (
    "_parse_status", "_parse_error", "_cast_errors", "event_time_raw", "sensor", "uid", "orig_h",
    "orig_p", "resp_h", "resp_p", "proto", "service", "duration", "orig_bytes", "conn_state",
    "history", "resp_ip_bytes", "label", "detailed_label",
)  # fmt: skip


def test_zeek_conn_tsv_uses_the_files_own_fields_and_keeps_labels(ingested: Ingested) -> None:
    got = ingested.file_rows("zeek_conn", D1, "conn.sensor01.log", *ZEEK_CONN_COLUMNS)
    assertDataFrameEqual(
        got,
        [
            Row(9, "parsed", None, None, "1790841601.123456", "sensor01", "CHLXQF2OBY4onAR0Ug", "10.20.0.15", 62771,
                "40.74.108.123", 443, "tcp", "ssl", 1.135424, 1596, "SF", "ShADdaFf", 1226, "Benign", "Microsoft"),
            Row(10, "parsed", None, None, "1790841602.5", "sensor01", "CEL3aLvvNGvO6Ecoa", "193.201.9.232", 46563,
                "10.20.0.15", 3933, "tcp", None, None, None, "S0", "S", 0, "Malicious", "External-Attack-to-Device"),
            Row(11, "parsed", None, ["orig_p: 'abc' is not int"], "1790841603.0", "sensor01", "Cbad", "10.20.0.15",
                None, "10.0.0.1", 53, "udp", "dns", 0.1, 40, "SF", "Dd", 96, "Benign", ""),
            Row(12, "unparseable", "wrong number of TSV columns (got 4, header has 23)", *(None,) * 17),
        ],
    )  # fmt: skip
    d2 = ingested.file_rows(
        "zeek_conn", D2, "conn.sensor01.log", "uid", "resp_p", "label", "detailed_label"
    )
    assertDataFrameEqual(d2, [Row(9, "Cd2", 445, None, None)])


def test_zeek_conn_json_with_dotted_or_underscore_keys(ingested: Ingested) -> None:
    got = ingested.file_rows("zeek_conn", D1, "conn.sensor02.json", *ZEEK_CONN_COLUMNS)
    assertDataFrameEqual(
        got,
        [
            # the epoch text is kept as written, not re-spelled as 1.790841605755299E9
            Row(1, "parsed", None, None, "1790841605.755299", "sensor02", "C5xhsO3uGtOfyrBlHh", "10.20.0.16", 40042,
                "8.8.8.8", 53, "udp", "dns", 0.012166976928710938, 0, "SHR", "Cd", 139, None, None),
            Row(2, "parsed", None, ["orig_p: 'x1' is not int"], "2026-10-01T00:00:06.000001Z", "sensor02", "CapT29",
                "10.0.1.4", None, "10.0.0.4", 88, "tcp", "krb_tcp", None, None, None, None, None, None, None),
        ],
    )  # fmt: skip


def test_zeek_dns_json(ingested: Ingested) -> None:
    got = ingested.file_rows(
        "zeek_dns", D1, "dns.sensor01.json",
        "_parse_status", "_cast_errors", "event_time_raw", "sensor", "uid", "orig_h", "orig_p", "resp_p",
        "trans_id", "query", "qtype_name", "rcode_name", "answers",
    )  # fmt: skip
    assertDataFrameEqual(
        got,
        [
            Row(1, "parsed", None, "2026-10-01T00:00:07.000002Z", "sensor01", "CqKst53mF3det3eDV9", "10.20.0.15",
                41772, 53, 36329, "login.corp.example", "A", "NOERROR", ["edge.corp.example", "10.0.0.80"]),
            Row(2, "parsed", ["answers: '10.0.0.1' is not an array", "trans_id: '70000000000' is not int"],
                "1790841608.1", "sensor01", "Cwrong", "10.20.0.16", 5353, 53, None, "x.example", None, None, None),
        ],
    )  # fmt: skip


def test_cloudtrail_records_and_s3_delivery_lines(ingested: Ingested) -> None:
    got = ingested.file_rows(
        "cloudtrail", D1, "cloudtrail.jsonl",
        "_parse_status", "_parse_error", "event_time_raw", "event_id", "event_name", "event_source",
        "identity_type", "identity_arn", "user_name", "access_key_id", "source_ip", "error_code",
        "request_parameters", "read_only",
    )  # fmt: skip
    arn, ip, key = "arn:aws:iam::123456789012:user/jdoe", "198.51.100.7", "AKIA5FLZVX4OEXAMPLE"
    t = "2026-10-01T10:00:00Z"
    params = '{"userName":"svc-deploy"}'
    assertDataFrameEqual(
        got,
        [
            Row(1, "parsed", None, t, "ct-1", "CreateAccessKey", "iam.amazonaws.com", "IAMUser", arn, "jdoe", key, ip, None, params, "false"),
            Row(2, "parsed", None, t, "ct-2", "ListBuckets", "s3.amazonaws.com", "IAMUser", arn, "jdoe", key, ip, None, params, "true"),
            Row(2, "parsed", None, t, "ct-3", "CreateAccessKey", "iam.amazonaws.com", "IAMUser", arn, "jdoe", key, ip, "AccessDenied", params, "false"),
            Row(3, "unparseable", "empty Records array", *(None,) * 13),
            Row(4, "parsed", None, "2020-09-14T00:44:23.000Z", "ct-4", "CreateAccessKey", "iam.amazonaws.com", "IAMUser", arn, "jdoe", key, ip, None, params, "false"),
        ],
    )  # fmt: skip
    # each record of a delivery line keeps its own JSON as raw
    raws = [
        r["raw"]
        for r in ingested.file_rows("cloudtrail", D1, "cloudtrail.jsonl", "raw")
        if r["_line"] == 2
    ]
    assert sorted(json.loads(r)["eventID"] for r in raws) == ["ct-2", "ct-3"]


def test_sshd_bsd_and_rfc3339_syslog(ingested: Ingested) -> None:
    got = ingested.file_rows(
        "sshd", D1, "auth.web-03.log",
        "_parse_status", "_parse_error", "event_time_raw", "host", "pid", "ssh_event", "auth_method",
        "user", "src_ip", "src_port", "invalid_user",
    )  # fmt: skip
    assertDataFrameEqual(
        got,
        [
            Row(1, "parsed", None, "Dec 10 06:55:46", "LabSZ", 24200, "failed", "password", "webmaster", "173.234.31.186", 38926, True),
            Row(2, "parsed", None, "2026-10-01T08:00:01.123456+02:00", "web-03", 811, "accepted", "publickey", "deploy", "10.1.2.3", 50122, False),
            Row(3, "parsed", None, "Oct  1 08:01:00", "web-03", 812, "pam_auth_failure", None, "root", "203.0.113.50", None, None),
            Row(4, "parsed", None, "Oct  1 08:02:00", "web-03", 813, "session_opened", None, "deploy", None, None, None),
            Row(5, "parsed", None, "Oct  1 08:03:00", "web-03", 814, "invalid_user", None, "oracle", "203.0.113.51", 40000, True),
            Row(6, "parsed", None, "Oct  1 08:04:00", "web-03", 815, "connection_closed", None, "root", "203.0.113.52", 40001, False),
            Row(7, "parsed", None, "Oct  1 08:05:00", "web-03", 816, "disconnect", None, None, "203.0.113.53", 40002, None),
            Row(8, "parsed", None, "Oct  1 08:06:00", "web-03", 817, "disconnect", None, "test", "203.0.113.54", 40003, True),
            Row(9, "parsed", None, "Oct  1 08:07:00", "web-03", 818, "break_in_attempt", None, None, "203.0.113.55", None, None),
            Row(10, "parsed", None, "Oct  1 08:08:00", "web-03", 819, "failed", "password", "root", "203.0.113.56", 40004, False),
            Row(11, "parsed", None, "Oct  1 08:09:00", "web-03", 820, "other", None, None, None, None, None),
            Row(12, "unparseable", "not an sshd syslog line", *(None,) * 9),
            Row(13, "unparseable", "not a syslog line", *(None,) * 9),
            Row(14, "unparseable", "not a syslog line", *(None,) * 9),
            Row(15, "parsed", None, None, "web-03", 821, "accepted", "password", "deploy", "10.1.2.4", 50123, False),
            Row(16, "parsed", None, "Oct  1 08:11:00", "web-03", 822, "connection_closed", None, None, "203.0.113.57", 40005, None),
        ],
    )  # fmt: skip
    closed = ingested.file_rows("sshd", D1, "auth.db-01.log", "ssh_event", "user", "message")
    assertDataFrameEqual(
        closed,
        [
            Row(
                1,
                "session_closed",
                "postgres",
                "pam_unix(sshd:session): session closed for user postgres",
            )
        ],
    )


# ---------------------------------------------------------------------------------------
# Line numbers across input splits
# ---------------------------------------------------------------------------------------


@pytest.fixture()
def small_splits(spark: SparkSession) -> Iterator[None]:
    key = "spark.sql.files.maxPartitionBytes"
    before = spark.conf.get(key)
    spark.conf.set(key, "4096")
    try:
        yield
    finally:
        spark.conf.set(key, before)


def numbered_lines(
    spark: SparkSession, folder: Path, source: str
) -> tuple[list[dict[str, Any]], DataFrame]:
    """The input splits of the files in `folder`, and their lines numbered as ingest does."""
    raw = read_raw_lines(spark, [str(folder)])
    blocks = [r.asDict() for r in file_blocks(raw, source).collect()]
    files = plan_files(source, blocks)
    return blocks, number_lines(raw, file_table(spark, source, files, {D1: "batch"}), source)


def test_line_numbers_are_exact_across_input_splits(
    spark: SparkSession, tmp_path: Path, small_splits: None
) -> None:
    folder = tmp_path / "raw" / "sshd" / D1.isoformat()
    folder.mkdir(parents=True)
    big = [f"Oct  1 08:00:00 h sshd[{i}]: " + "x" * (i * 7 % 97) for i in range(1, 3001)]
    (folder / "auth.big.log").write_bytes(encode(big))
    with gzip.open(folder / "auth.zipped.log.gz", "wb") as gz:  # not splittable: one block
        gz.write(encode(big[:500]))
    (folder / "auth.crlf.log").write_bytes(b"".join(x.encode() + b"\r\n" for x in big[:700]))

    blocks, lines = numbered_lines(spark, folder, "sshd")
    big_path = f"file:{folder / 'auth.big.log'}"
    assert sum(1 for b in blocks if b["_file"] == big_path) > 10  # really split
    got = lines.select(F.regexp_extract("_file", "[^/]+$", 0).alias("f"), "_line", "raw")
    want = (
        [Row(f="auth.big.log", _line=i + 1, raw=x) for i, x in enumerate(big)]
        + [Row(f="auth.zipped.log.gz", _line=i + 1, raw=x) for i, x in enumerate(big[:500])]
        + [Row(f="auth.crlf.log", _line=i + 1, raw=x + "\r") for i, x in enumerate(big[:700])]
    )
    assertDataFrameEqual(got, want)


# An invalid UTF-8 lead byte claims the bytes after it: a character-wise search steps over a
# NUL inside such a sequence (`instr` did, and let the line parse). Bytes are what count.
NUL_AFTER_BAD_LEAD = [b"\xe2\x80\x00\xa9", b"\xf0\x00", b"\xe2\x00\x80", b"\x00"]


@pytest.mark.parametrize(
    ("source", "name", "line"),
    [
        ("sshd", "auth.log", b"Oct  1 08:00:00 h sshd[1]: Accepted password for a%sb"),
        ("idp", "okta_system_log.jsonl", b'{"uuid": "a%sb", "eventType": "user.session.start"}'),
    ],
)
def test_a_nul_byte_hidden_in_an_invalid_utf8_sequence_is_still_found(
    spark: SparkSession, tmp_path: Path, source: str, name: str, line: bytes
) -> None:
    folder = tmp_path / "raw" / source / D1.isoformat()
    folder.mkdir(parents=True)
    clean = line.replace(b"%s", b"\xe2\x80")  # invalid UTF-8, but no NUL: parses
    data = [line.replace(b"%s", junk) for junk in NUL_AFTER_BAD_LEAD] + [clean]
    (folder / name).write_bytes(b"".join(x + b"\n" for x in data))

    _, lines = numbered_lines(spark, folder, source)
    got = PARSERS[source](lines).select("_line", "_parse_status", "_parse_error")
    nul = [Row(i + 1, "unparseable", "NUL bytes in line") for i in range(len(data) - 1)]
    assertDataFrameEqual(got, [*nul, Row(len(data), "parsed", None)])


# ---------------------------------------------------------------------------------------
# Idempotency, backfill = day by day, and files removed after a run
# ---------------------------------------------------------------------------------------

SUBSET = ["zeek_conn", "cloudtrail"]


def portable(rows: Sequence[Row], days: Sequence[date] = (D1, D2)) -> list[tuple[str, ...]]:
    """Rows of `days` as sortable text, `_file` without the raw root (the lakes differ)."""
    out = []
    for r in rows:
        if r["run_date"] in days:
            values = r.asDict()
            values["_file"] = "/".join(values["_file"].split("/")[-3:])
            out.append(tuple(str(v) for v in values.values()))
    return sorted(out)


def test_backfill_equals_day_by_day_reruns_are_identical_and_withdrawn_files_clear(
    spark: SparkSession, tmp_path: Path, ingested: Ingested
) -> None:
    settings: Settings = test_settings(tmp_path, ingest={"sources": SUBSET})
    raw_root = Path(settings.paths.raw_root)
    shutil.copytree(ingested.raw_root, raw_root)
    ctx = RunContext(spark, settings)

    run_ingest(ctx, [D1])
    run_ingest(ctx, [D2])
    day_by_day = collect_tables(ctx, SUBSET)
    for source in SUBSET:  # the fixture ingested D1..D3 in one go
        assert portable(day_by_day[source]) == portable(ingested.tables[source]), source
    log_before = ctx.lake.read("ops.ingest_log").collect()

    # The D1 Zeek files are withdrawn, then both days are ingested again.
    shutil.rmtree(raw_root / "zeek_conn" / D1.isoformat())
    again = run_ingest(ctx, [D1, D2])
    after = collect_tables(ctx, SUBSET)
    assert portable(after["cloudtrail"]) == portable(day_by_day["cloudtrail"])  # same rows
    assert [r for r in after["zeek_conn"] if r["run_date"] == D1] == []  # no stale rows
    assert portable(after["zeek_conn"]) == portable(day_by_day["zeek_conn"], [D2])
    assert again.details["missing"] == ["zeek_conn@2026-10-01"]
    assert again.rows == {"bronze.zeek_conn": 1, "bronze.cloudtrail": 5, "ops.ingest_log": 3}
    log_after = ctx.lake.read("ops.ingest_log").collect()
    assert portable(log_after) == portable(
        [r for r in log_before if not (r["source"] == "zeek_conn" and r["run_date"] == D1)]
    )


# ---------------------------------------------------------------------------------------
# The generator's files, line for line against its manifest and dirty-row list
# ---------------------------------------------------------------------------------------


def test_generated_telemetry_ingests_line_for_line(ingested: Ingested) -> None:
    if ingested.generated is None:
        pytest.fail(f"the generator did not run: {ingested.generator_error}")
    out = ingested.generated
    assert [m for m in ingested.result.details["missing"] if m.endswith(("10-05", "10-06"))] == []
    manifest = json.loads((out / "generator_manifest.json").read_text())
    tables = ingested.tables
    per_file: dict[tuple[str, str, str], list[Row]] = {}
    for source, rows in tables.items():
        for r in rows:
            key = (source, r["run_date"].isoformat(), r["_file"].rsplit("/", 1)[-1])
            per_file.setdefault(key, []).append(r)
    log = {
        (r["source"], r["run_date"].isoformat(), r["_file"].rsplit("/", 1)[-1]): r
        for r in ingested.log
        if r["run_date"] in (G1, G2)
    }
    assert set(log) == {(f["source"], f["date"], f["file"]) for f in manifest["files"]}
    for f in manifest["files"]:
        key = (f["source"], f["date"], f["file"])
        rows = per_file.get(key, [])
        # one row per event line; a CloudTrail Records line holds several events
        assert len({r["_line"] for r in rows}) == f["event_lines"], key
        assert len(rows) == f["events"], key
        assert (log[key]["lines_read"], log[key]["header_lines"]) == (
            f["lines"],
            f["header_lines"] + f["footer_lines"],
        ), key

    dirty = [json.loads(x) for x in (out / "dirty_rows.jsonl").read_text().splitlines()]
    kinds = {(d["source"], d["date"], d["file"], d["line"]): d["kind"] for d in dirty}
    assert "malformed" in kinds.values()
    for source, rows in tables.items():
        for r in rows:
            if r["run_date"] not in (G1, G2):
                continue
            kind = kinds.get(
                (source, r["run_date"].isoformat(), r["_file"].rsplit("/", 1)[-1], r["_line"])
            )
            where = (source, r["_file"], r["_line"], kind)
            if kind == "malformed":
                assert r["_parse_status"] == "unparseable", where
            else:  # clean, duplicate, late and timestamp-spoiled lines all parse cleanly
                assert (r["_parse_status"], r["_cast_errors"]) == ("parsed", None), where
                assert (r["event_time_raw"] is None) == (kind == "missing_timestamp"), where


# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sensor"),
    [
        ("conn.sensor01.log", "sensor01"),
        ("conn.sensor02.json", "sensor02"),
        ("dns.sensor01.json.gz", "sensor01"),
        ("conn.log.labeled", "conn"),
        ("dns.json.gz", "dns"),
        ("labeled-conn.log", "labeled-conn"),
    ],
)
def test_sensor_is_the_file_name_between_log_and_extension(name: str, sensor: str) -> None:
    assert sensor_of(name) == sensor


def test_zeek_layout_maps_columns_by_the_files_own_fields() -> None:
    labelled = zeek_layout("zeek_conn", "file:/r/conn.x.log", LABELLED_FIELDS)
    assert labelled["_zeek_fmt"] == "tsv"
    assert labelled["_zeek_ncols"] == 23
    assert labelled["_zpos_orig_h"] == 2
    assert labelled["_zpos_detailed_label"] == 22
    plain = zeek_layout("zeek_conn", "file:/r/conn.x.log", LABELLED_FIELDS[:21])
    assert plain["_zpos_label"] == -1
    assert zeek_layout("zeek_dns", "file:/r/dns.x.json", None)["_zeek_fmt"] == "json"
    # a TSV file that lost its header is read in Zeek's default order
    headerless = zeek_layout("zeek_dns", "file:/r/dns.x.log", None)
    assert (headerless["_zeek_fmt"], headerless["_zpos_query"]) == ("sniff", 9)


def test_every_source_has_a_parser() -> None:
    assert set(PARSERS) == set(ALL_SOURCES)
