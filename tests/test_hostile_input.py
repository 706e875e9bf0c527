"""Hostile and broken input: property-based batches through ingest, validate and normalize.

Each Hypothesis example is a batch of lines per parser (Okta, Windows, Zeek conn TSV and
JSON, Zeek DNS, CloudTrail, sshd): valid records carrying attack strings in their free
text, and the same records broken the ways feeds and attackers break them (truncated or
invalid JSON, wrong JSON types, NUL bytes, invalid UTF-8, 1 MB fields, timestamps far in
the past or future, missing and unknown fields, CR line ends). Every batch is written as
real raw files and run through the real stages once. The properties:

- nothing crashes, and every line is one bronze row (a CloudTrail `Records` line one per
  record) holding the line as read;
- every bronze row is in exactly one of silver.events, silver.quarantine (with a rule and
  a reason) or the duplicate count, and ops.reconciliation balances;
- unparseable rows are quarantined by `parser` with the parser's reason, rows with cast
  errors by `type_check` with the cast errors as reason;
- what each line was built to be decides more: a broken line is unparseable, a wrongly
  typed one has cast errors, a bad timestamp is quarantined by an `event_time` rule, and a
  valid line with hostile text is an event whose text arrives unchanged.

The number of lines tried per parser is written to the file `POLICYLAKE_HOSTILE_RESULTS`
names, when set (the recorded run: bench/results/hostile_inputs.json); a plain test run
writes nothing into the checkout.
Shrinking is off: every example is a full stage run (tens of seconds), and the failure
message names the parser, line and what was expected.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from jobs.core.config import Settings
from jobs.core.context import RunContext
from jobs.pipeline.runner import run_stages
from jobs.stages.ingest.parsers.zeek import ZEEK_DEFAULT_FIELDS
from tests.bronze_frames import write_reference
from tests.conftest import test_settings

DAY = date(2026, 10, 1)
DAY_START = datetime(2026, 10, 1, tzinfo=UTC)
RESULTS_ENV = "POLICYLAKE_HOSTILE_RESULTS"  # where to record the lines tried (unset: nowhere)
EXAMPLES = 2  # each is a full ingest + validate + normalize run over seven files

# parser -> (source, file name); both Zeek conn files land in the same date folder
FILES = {
    "idp": ("idp", "okta_system_log.jsonl"),
    "windows": ("windows", "wec01.jsonl"),
    "zeek_conn_tsv": ("zeek_conn", "conn.sensor01.log"),
    "zeek_conn_json": ("zeek_conn", "conn.sensor02.json"),
    "zeek_dns": ("zeek_dns", "dns.sensor01.json"),
    "cloudtrail": ("cloudtrail", "cloudtrail.jsonl"),
    "sshd": ("sshd", "auth.web-01.log"),
}
JSON_PARSERS = ("idp", "windows", "zeek_conn_json", "zeek_dns", "cloudtrail")

ZEEK_CONN_FIELDS = list(ZEEK_DEFAULT_FIELDS["zeek_conn"])
ZEEK_HEADER = [
    "#separator \\x09",
    "#set_separator\t,",
    "#empty_field\t(empty)",
    "#unset_field\t-",
    "#path\tconn",
    "#open\t2026-10-01-00-00-00",
    "\t".join(["#fields", *ZEEK_CONN_FIELDS]),
    "\t".join(["#types", *["string"] * len(ZEEK_CONN_FIELDS)]),
]

# ---------------------------------------------------------------------------------------
# Strategies: hostile text, valid records, and the ways they break
# ---------------------------------------------------------------------------------------

ATTACKS = [
    "${jndi:ldap://x/a}",
    "${${lower:j}ndi:${lower:l}dap://x/a}",
    "{{7*7}}",
    "<%= 7*7 %>",
    "#{7*7}",
    "'; DROP TABLE x;--",
    '" OR 1=1 --',
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "file:///etc/shadow",
    "\x1b[31mred\x1b[0m\x1b]0;title\x07",
    "\x00\x01\x02\x7f",
    "ctl\x01sep\x01",
    "\u0085\u2028\u2029",
    "\u202egnp.exe",
    "%s%n%x%p",
    "<script>alert(1)</script>",
    "$(rm -rf /) `id`",
    "\ud800",  # a lone surrogate: only JSON can carry it (as \\ud800)
    "A" * 300,
    "-",
    "",
    " padded ",
    "x|y",
    "a\\b",
]
BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\x80"]
FAR_TIMES = [
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2026-13-45T99:99:99Z",
    "+275760-09-13T00:00:00Z",
    "2026-09-01T00:00:00Z",
    "2027-10-01T00:00:00Z",
    "",
    "not a time",
]
FAR_EPOCHS = ["0", "-1", "99999999999", "1e20", "253402300800.5", "abc", "1790000000000000"]
FAR_SYSLOG = [
    "Jan  1 00:00:00",
    "Feb 30 12:00:00",
    "Oct 99 99:99:99",
    "9999-12-31T23:59:59+00:00",
    "0000-01-01T00:00:00Z",
]
MARK = "@@BADUTF8@@"  # replaced by invalid UTF-8 bytes after serialization
MB = 1_000_000

# Text beyond the attack list: control characters, separators, line terminators Java's
# regex `.` does not match, bidi overrides, combining marks, emoji, the syslog/TSV
# separators and the ones the parsers use internally.
ALPHABET = [
    *"abcXYZ019 -_./:;=|\\'\"<>{}[]()$%@#&*!?,~`^+",
    *[chr(c) for c in range(0x00, 0x20)],
    "\x7f", "\x85", "\xa0", "\u200b", "\u202e", "\u2028", "\u2029", "\ufeff", "\ufffd",
    "\u0301", "é", "ß", "İ", "漢", "😀", "\U0010fffd",
]  # fmt: skip


class Picks:
    """The choices for one line: its kind and main hostile text come from Hypothesis, the
    rest from a seed it drew (a batch of hundreds of lines must fit one Hypothesis example)."""

    def __init__(self, kind: int, attack: str, seed: int) -> None:
        self.kind_index = kind
        self.attack: str | None = attack
        self.rng = random.Random(seed)

    def kind(self, kinds: list[str]) -> str:
        return kinds[self.kind_index % len(kinds)]

    def text(self) -> str:
        """The drawn attack the first time (the field whose value is checked), then more."""
        if self.attack is not None:
            attack, self.attack = self.attack, None
            return attack
        roll = self.rng.random()
        noise = "".join(self.rng.choice(ALPHABET) for _ in range(self.rng.randint(0, 24)))
        if roll < 0.4:
            return self.rng.choice(ATTACKS)
        if roll < 0.8:
            return noise
        return self.rng.choice(ATTACKS) + noise

    def choice(self, items: list[Any]) -> Any:
        return self.rng.choice(items)

    def int(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def second(self) -> int:
        return self.rng.randint(60, 86_000)

    def ip4(self) -> str:
        return f"10.{self.rng.randint(0, 255)}.0.{self.rng.randint(1, 254)}"

    def port(self) -> int:
        return self.rng.randint(0, 65535)

    def uid(self) -> str:
        return f"C{self.rng.getrandbits(48):012x}"

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128)))

    def binary(self, size: int) -> bytes:
        return bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(0, size)))


def _line_text(text: str) -> str:
    """Free text for line formats: no line break (a new line is a new record)."""
    return text.replace("\n", " ").replace("\r", " ")


def _tsv_text(text: str) -> str:
    return _line_text(text).replace("\t", " ") or "(empty)"


@dataclass
class Line:
    data: bytes
    expect: str  # event | parser | type_check | quarantine | time | any
    kind: str
    probe: dict[str, Any] = field(default_factory=dict)  # bronze column -> exact value

    def __repr__(self) -> str:  # Hypothesis prints failing examples: keep 1 MB lines short
        return f"Line({self.kind}, {self.expect}, {self.data[:120]!r}, {len(self.data)} bytes)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def _json_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode("utf-8")


def _when(second: int) -> datetime:
    return DAY_START + timedelta(seconds=second)


def _iso(second: int) -> str:
    return _when(second).strftime("%Y-%m-%dT%H:%M:%S.000Z")


seconds = st.integers(min_value=60, max_value=86_000)
ip4 = st.builds(lambda a, b: f"10.{a}.0.{b}", st.integers(0, 255), st.integers(1, 254))
port = st.integers(0, 65535)
uid = st.builds(lambda n: f"C{n:012x}", st.integers(0, 2**40))


def idp_record(p: Picks) -> tuple[dict[str, Any], dict[str, Any]]:
    text = p.text()
    app = p.text()
    record = {
        "uuid": p.uuid(),
        "published": _iso(p.second()),
        "eventType": p.choice(["user.session.start", "user.authentication.sso"]),
        "version": "0",
        "severity": p.choice(["INFO", "WARN"]),
        "displayMessage": text,
        "actor": {
            "id": "00u1abcdEFGH2345ijkl",
            "type": "User",
            "alternateId": p.choice(["jane.doe@corp.example", p.text()]),
            "displayName": p.text(),
        },
        "client": {"ipAddress": p.ip4(), "userAgent": {"rawUserAgent": p.text()}},
        "outcome": {"result": "SUCCESS", "reason": p.text()},
        "target": [{"id": "0oa1", "type": "AppInstance", "displayName": app}],
        "transaction": {"id": p.text()},
    }
    # a value the parser keeps as text arrives unchanged (surrogates cannot be stored)
    probe = {} if "\ud800" in text + app else {"display_message": text, "target_app": app}
    if record["actor"]["alternateId"] in ("", "-") or "\ud800" in record["actor"]["alternateId"]:
        record["actor"]["alternateId"] = "jane.doe@corp.example"
    return record, probe


def windows_record(p: Picks) -> tuple[dict[str, Any], dict[str, Any]]:
    command = p.text()
    host = p.choice(["WS-BER-0042.corp.example", p.text()])
    if host.strip(" ") in ("", "-") or "\ud800" in host:
        host = "WS-BER-0042.corp.example"
    record = {
        "@timestamp": _iso(p.second()),
        "EventTime": "2026-10-01 11:15:02",
        "Hostname": host,
        "Channel": "Security",
        "EventID": 4688,
        "EventType": "AUDIT_SUCCESS",
        "RecordNumber": p.int(1, 2**40),
        "SubjectUserName": p.text(),
        "SubjectDomainName": p.text(),
        "NewProcessName": p.text(),
        "ParentProcessName": "C:\\Windows\\explorer.exe",
        "CommandLine": command,
        "tags": ["mordorDataset"],
    }
    probe = {} if "\ud800" in command else {"command_line": command}
    return record, probe


def _zeek_conn_values(p: Picks) -> dict[str, str]:
    return {
        "ts": f"{(_when(p.second()).timestamp()):.6f}",
        "uid": p.uid(),
        "id.orig_h": p.ip4(),
        "id.orig_p": str(p.port()),
        "id.resp_h": p.ip4(),
        "id.resp_p": str(p.port()),
        "proto": p.choice(["tcp", "udp"]),
        "service": p.text(),
        "duration": "0.5",
        "orig_bytes": str(p.int(0, 10**12)),
        "resp_bytes": "200",
        "conn_state": "SF",
        "local_orig": "T",
        "local_resp": "F",
        "missed_bytes": "0",
        "history": p.text(),
        "orig_pkts": "4",
        "orig_ip_bytes": "300",
        "resp_pkts": "4",
        "resp_ip_bytes": "400",
        "tunnel_parents": "(empty)",
    }


def zeek_conn_tsv_values(p: Picks) -> tuple[dict[str, Any], dict[str, Any]]:
    values = _zeek_conn_values(p)
    values["service"] = _tsv_text(values["service"]).replace("\ud800", "?")
    values["history"] = _tsv_text(values["history"]).replace("\ud800", "?")
    probe = {"service": None if values["service"] == "-" else values["service"]}
    if values["service"] == "(empty)":
        probe = {"service": ""}
    return values, probe


def zeek_conn_json_record(p: Picks) -> tuple[dict[str, Any], dict[str, Any]]:
    values = _zeek_conn_values(p)
    record: dict[str, Any] = {"_path": "conn", **values}
    record["ts"] = float(values["ts"])
    for key in ("id.orig_p", "id.resp_p", "orig_bytes", "resp_bytes", "orig_pkts"):
        record[key] = int(values[key])
    record["duration"] = 0.5
    record.pop("tunnel_parents")
    probe = {} if "\ud800" in values["service"] else {"service": values["service"]}
    return record, probe


def zeek_dns_record(p: Picks) -> tuple[dict[str, Any], dict[str, Any]]:
    query = p.text()
    record = {
        "ts": f"{(_when(p.second())).strftime('%Y-%m-%dT%H:%M:%S.000001Z')}",
        "uid": p.uid(),
        "id.orig_h": p.ip4(),
        "id.orig_p": p.port(),
        "id.resp_h": "10.0.0.53",
        "id.resp_p": 53,
        "proto": "udp",
        "trans_id": p.int(0, 65535),
        "query": query,
        "qtype_name": p.text(),
        "rcode_name": "NOERROR",
        "answers": [p.text() for _ in range(p.int(0, 3))],
    }
    probe = {} if "\ud800" in query else {"query": query}
    return record, probe


def cloudtrail_record(p: Picks) -> tuple[dict[str, Any], dict[str, Any]]:
    agent = p.text()
    record = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "arn": "arn:aws:iam::123456789012:user/jdoe",
            "accountId": "123456789012",
            "userName": p.text(),
        },
        "eventTime": _when(p.second()).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "iam.amazonaws.com",
        "eventName": p.choice(["CreateAccessKey", p.text()]),
        "awsRegion": "us-east-1",
        "sourceIPAddress": p.choice([p.ip4(), p.text()]),
        "userAgent": agent,
        "errorMessage": p.text(),
        "requestParameters": {"userName": p.text()},
        "responseElements": None,
        "eventID": p.uuid(),
        "eventType": "AwsApiCall",
        "readOnly": False,
    }
    if record["eventName"] in ("", "-") or "\ud800" in record["eventName"]:
        record["eventName"] = "CreateAccessKey"
    probe = {} if "\ud800" in agent else {"user_agent": agent}
    return record, probe


def sshd_fields(p: Picks) -> dict[str, Any]:
    second = p.second()
    user = _line_text(p.text()).replace("\ud800", "?")
    return {
        "stamp": _when(second).strftime("%b %e %H:%M:%S"),
        "pid": p.int(1, 4_000_000),
        "verb": p.choice(["Failed password", "Accepted publickey"]),
        "user": user,
        "ip": p.ip4(),
        "port": p.port(),
    }


def sshd_line(f: dict[str, Any]) -> str:
    return (
        f"{f['stamp']} web-01 sshd[{f['pid']}]: {f['verb']} for {f['user']} "
        f"from {f['ip']} port {f['port']} ssh2"
    )


def _sshd_user_is_clean(user: str) -> bool:
    """A user name the sshd message grammar reads back exactly (no field separators)."""
    stripped = user.strip(" ")
    return (
        bool(stripped)
        and stripped == user
        and " from " not in user
        and not user.startswith("invalid user ")
        and stripped != "-"
    )


RECORDS: dict[str, Callable[[Picks], tuple[dict[str, Any], dict[str, Any]]]] = {
    "idp": idp_record,
    "windows": windows_record,
    "zeek_conn_json": zeek_conn_json_record,
    "zeek_dns": zeek_dns_record,
    "cloudtrail": cloudtrail_record,
}

# Wrong JSON types that must become cast errors (parsed, `_cast_errors`, type_check).
WRONG_TYPES: dict[str, list[tuple[str, Any]]] = {
    "idp": [("actor", "jane.doe"), ("target", {"id": 1}), ("client", 42), ("outcome", [1])],
    "windows": [("EventID", "abc"), ("RecordNumber", {"x": 1}), ("EventID", 1e300)],
    "zeek_conn_json": [("id.orig_p", "abc"), ("resp_bytes", 12.5), ("orig_bytes", "1" * 40)],
    "zeek_dns": [("trans_id", "70000000000"), ("answers", "10.0.0.1"), ("id.orig_p", [1])],
    "cloudtrail": [("userIdentity", "root"), ("userIdentity", [1, 2])],
}
REQUIRED: dict[str, list[str]] = {
    "idp": ["uuid", "eventType", "actor"],
    "windows": ["Hostname"],  # a record number is not required: the content keys the event
    "zeek_conn_json": ["uid", "id.orig_h"],
    "zeek_dns": ["uid"],
    "cloudtrail": ["eventID", "eventName"],
}
TIME_KEY = {
    "idp": "published",
    "windows": "@timestamp",
    "zeek_conn_json": "ts",
    "zeek_dns": "ts",
    "cloudtrail": "eventTime",
}
NOT_OBJECTS = ["[1,2]", '"just a string"', "123", "null", "true", "[]", "{"]
EXTRA_FIELDS = [
    {"${jndi:ldap://x/a}": "{{7*7}}"},
    {"__proto__": {"polluted": True}, "constructor": {"prototype": 1}},
    {"nested": {"ts": 0, "uuid": "x", "published": "1970-01-01T00:00:00Z"}},
    {"riskScore": 99, "x" * 200: "y"},
]


def _bad_utf8(record: dict[str, Any], key_path: list[str], junk: bytes) -> bytes:
    node: Any = record
    for key in key_path[:-1]:
        node = node[key]
    node[key_path[-1]] = f"ok{MARK}ok"
    return _json_line(record).replace(MARK.encode(), junk)


TEXT_PATH = {
    "idp": ["displayMessage"],
    "windows": ["CommandLine"],
    "zeek_conn_json": ["service"],
    "zeek_dns": ["query"],
    "cloudtrail": ["userAgent"],
}


JSON_KINDS = [
    "valid",
    "valid",
    "truncated",
    "nul",
    "bad_utf8",
    "wrong_type",
    "far_time",
    "drop_required",
    "extra_fields",
    "not_object",
    "crlf",
    "garbage",
    "deep",
    "long_number",
    "control_chars",
]
TSV_KINDS = [
    "valid",
    "valid",
    "truncated",
    "nul",
    "bad_utf8",
    "wrong_type",
    "far_time",
    "extra_tab",
    "crlf",
    "garbage",
]
SYSLOG_KINDS = [
    "valid",
    "valid",
    "truncated",
    "nul",
    "bad_utf8",
    "wrong_type",
    "far_time",
    "other_program",
    "not_syslog",
    "crlf",
    "garbage",
]


def json_line(p: Picks, parser: str) -> Line:
    record, probe = RECORDS[parser](p)
    kind = p.kind(JSON_KINDS)
    data = _json_line(record)
    if kind == "valid":
        return Line(data, "event", kind, probe)
    if kind == "crlf":
        return Line(data + b"\r", "event", kind, probe)
    if kind == "truncated":
        cut = p.int(0, len(data) - 1)
        return Line(data[:cut], "parser", kind)
    if kind == "nul":
        at = p.int(0, len(data))
        return Line(data[:at] + b"\x00" + data[at:], "parser", kind)
    if kind == "bad_utf8":
        junk = p.choice(BAD_UTF8)
        return Line(_bad_utf8(record, TEXT_PATH[parser], junk), "event", kind)
    if kind == "wrong_type":
        key, value = p.choice(WRONG_TYPES[parser])
        record[key] = value
        return Line(_json_line(record), "type_check", kind)
    if kind == "far_time":
        pool = FAR_EPOCHS if parser.startswith("zeek_conn") else FAR_TIMES
        record[TIME_KEY[parser]] = p.choice([*pool, None, 1e300])
        if parser == "windows":
            record.pop("EventTime")  # else the local time stands in for a missing @timestamp
        return Line(_json_line(record), "time", kind)
    if kind == "drop_required":
        record.pop(p.choice(REQUIRED[parser]))
        return Line(_json_line(record), "quarantine", kind)
    if kind == "extra_fields":
        extra = p.choice(EXTRA_FIELDS)
        first = p.choice([True, False])
        record = {**extra, **record} if first else {**record, **extra}
        return Line(_json_line(record), "event", kind, probe)
    if kind == "not_object":
        return Line(p.choice(NOT_OBJECTS).encode(), "parser", kind)
    if kind == "deep":
        depth = p.choice([200, 1500, 5000])
        nested = '{"deep":' * depth + "1" + "}" * depth
        text = data.decode()[:-1] + ', "x": ' + nested + "}"
        return Line(text.encode(), "any", kind)
    if kind == "long_number":
        digits = p.choice([30, 1200, 20_000])
        text = data.decode()[:-1] + ', "big": ' + "9" * digits + "}"
        return Line(text.encode(), "any", kind)
    if kind == "control_chars":  # raw (unescaped) control characters inside a JSON string
        raw = data.replace(b'"', b'"\x01\x1b[0m\t', 1)
        return Line(raw, "any", kind)
    blob = p.binary(200).replace(b"\n", b" ")
    return Line(blob, "any", kind)


def tsv_line(p: Picks) -> Line:
    values, probe = zeek_conn_tsv_values(p)
    kind = p.kind(TSV_KINDS)

    def joined() -> bytes:
        return "\t".join(values[k] for k in ZEEK_CONN_FIELDS).encode()

    valid = "parser" if "\x00" in values["service"] + values["history"] else "event"
    if kind == "valid":
        return Line(joined(), valid, kind, probe)
    if kind == "crlf":
        return Line(joined() + b"\r", valid, kind, probe)
    if kind == "truncated":
        data = joined()
        cut = p.int(0, len(data) - 1)
        tabs = data[:cut].count(b"\t")
        return Line(data[:cut], "parser" if tabs < len(ZEEK_CONN_FIELDS) - 1 else "any", kind)
    if kind == "nul":
        data = joined()
        at = p.int(0, len(data))
        return Line(data[:at] + b"\x00" + data[at:], "parser", kind)
    if kind == "bad_utf8":
        values["service"] = MARK
        junk = p.choice(BAD_UTF8)
        return Line(joined().replace(MARK.encode(), b"ok" + junk + b"ok"), "event", kind)
    if kind == "wrong_type":
        key, value = p.choice([("id.orig_p", "abc"), ("resp_bytes", "12.5"), ("duration", "x")])
        values[key] = value
        return Line(joined(), "type_check", kind)
    if kind == "far_time":
        values["ts"] = p.choice(FAR_EPOCHS)
        return Line(joined(), "time", kind)
    if kind == "extra_tab":
        return Line(joined() + b"\t" + p.choice([b"", b"x", b"\t"]), "parser", kind)
    # a line starting with `#` would be a header line (not a row): garbage starts otherwise
    blob = b"x" + p.binary(200).replace(b"\n", b" ")
    return Line(blob, "any", kind)


def syslog_line(p: Picks) -> Line:
    f = sshd_fields(p)
    kind = p.kind(SYSLOG_KINDS)
    clean = _sshd_user_is_clean(f["user"])
    probe = {"user": f["user"], "pid": f["pid"]} if clean else {}
    expect_valid = "parser" if "\x00" in f["user"] else "event" if clean else "any"
    if kind == "valid":
        return Line(sshd_line(f).encode(), expect_valid, kind, probe)
    if kind == "crlf":
        return Line(sshd_line(f).encode() + b"\r", expect_valid, kind, probe)
    if kind == "truncated":
        data = sshd_line(f).encode()
        return Line(data[: p.int(0, len(data) - 1)], "any", kind)
    if kind == "nul":
        data = sshd_line(f).encode()
        at = p.int(0, len(data))
        return Line(data[:at] + b"\x00" + data[at:], "parser", kind)
    if kind == "bad_utf8":
        junk = p.choice(BAD_UTF8)
        f["user"] = "ok"
        data = sshd_line(f).encode().replace(b" ok ", b" ok" + junk + b"ok ", 1)
        return Line(data, "event", kind)
    if kind == "wrong_type":
        data = sshd_line({**f, "user": "deploy", "port": "99999999999"}).encode()
        return Line(data, "type_check", kind)
    if kind == "far_time":
        stamp = p.choice(FAR_SYSLOG)
        return Line(sshd_line({**f, "user": "deploy", "stamp": stamp}).encode(), "time", kind)
    if kind == "other_program":
        data = sshd_line(f).replace("sshd[", "ftpd[", 1).encode()
        return Line(data, "parser", kind)
    if kind == "not_syslog":
        return Line(_line_text(p.text()).encode("utf-8", "surrogatepass"), "any", kind)
    blob = p.binary(200).replace(b"\n", b" ")
    return Line(blob, "any", kind)


def huge_line(parser: str, text: str) -> Line:
    """A valid record with a 1 MB free-text field."""
    text = text.replace("\ud800", "?").replace("\x00", "_")
    big = (text * (MB // max(len(text), 1) + 1))[:MB] or "A" * MB
    if parser == "zeek_conn_tsv":
        big = _tsv_text(big)
        base = {k: "1" for k in ZEEK_CONN_FIELDS}
        base.update(
            ts=f"{DAY_START.timestamp() + 3600:.6f}", uid="Chuge0000001", proto="tcp",
            conn_state="SF", tunnel_parents="(empty)", service=big,
        )  # fmt: skip
        base["id.orig_h"], base["id.resp_h"] = "10.0.0.1", "10.0.0.2"
        return Line("\t".join(base[k] for k in ZEEK_CONN_FIELDS).encode(), "event", "huge")
    if parser == "sshd":
        big = _line_text(big).replace(" ", "_") or "A" * MB
        line = (
            f"Oct  1 12:00:00 web-01 sshd[7]: Failed password for {big} from 10.0.0.9 port 22 ssh2"
        )
        return Line(line.encode(), "event", "huge", {"user": big})
    records = {
        "idp": {"uuid": "00000000-0000-4000-8000-00000000aaaa", "published": _iso(3600),
                "eventType": "user.session.start", "actor": {"alternateId": "jane.doe@corp.example"},
                "client": {"ipAddress": "10.0.0.1"}, "outcome": {"result": "SUCCESS"},
                "displayMessage": big},
        "windows": {"@timestamp": _iso(3600), "Hostname": "WS-1", "Channel": "Security",
                    "EventID": 4688, "RecordNumber": 1, "CommandLine": big},
        "zeek_conn_json": {"ts": DAY_START.timestamp() + 3600, "uid": "Chuge0000002",
                           "id.orig_h": "10.0.0.1", "id.resp_h": "10.0.0.2", "proto": "tcp",
                           "service": big},
        "zeek_dns": {"ts": DAY_START.timestamp() + 3600, "uid": "Chuge0000003",
                     "id.orig_h": "10.0.0.1", "id.resp_h": "10.0.0.53", "proto": "udp",
                     "trans_id": 1, "query": big},
        "cloudtrail": {"eventTime": "2026-10-01T01:00:00Z", "eventID": "00000000-0000-4000-8000-00000000bbbb",
                       "eventName": "ListUsers", "eventSource": "iam.amazonaws.com", "userAgent": big},
    }  # fmt: skip
    column = {"idp": "display_message", "windows": "command_line", "cloudtrail": "user_agent"}
    probe = {column[parser]: big} if parser in column else {}
    return Line(_json_line(records[parser]), "event", "huge", probe)


def records_line(p: Picks) -> Line:
    """A CloudTrail S3-delivery line: one row per record."""
    records = [cloudtrail_record(p)[0] for _ in range(p.int(0, 3))]
    return Line(_json_line({"Records": records}), "records" if records else "any", "records")


def build_line(parser: str, p: Picks) -> Line:
    if parser == "zeek_conn_tsv":
        line = tsv_line(p)
    elif parser == "sshd":
        line = syslog_line(p)
    else:
        line = json_line(p, parser)
    if b"\x00" in line.data and line.expect != "any":  # random text brought a NUL byte
        line.expect = "parser"
    return line


KIND_COUNT = {"zeek_conn_tsv": len(TSV_KINDS), "sshd": len(SYSLOG_KINDS)}
attack = st.one_of(st.sampled_from(ATTACKS), st.text(max_size=6))
seed = st.integers(0, 2**32 - 1)


@st.composite
def batch(draw: st.DrawFn, parser: str) -> list[Line]:
    """60-120 lines, at least one of each kind, a 1 MB line, for CloudTrail a Records line."""
    n_kinds = KIND_COUNT.get(parser, len(JSON_KINDS))
    extra = draw(
        st.lists(
            st.tuples(st.integers(0, n_kinds - 1), attack, seed),
            min_size=60 - n_kinds,
            max_size=120 - n_kinds,
        )
    )
    every_kind = [(k, draw(attack), draw(seed)) for k in range(n_kinds)]
    order = draw(st.permutations([*every_kind, *extra]))
    lines = [build_line(parser, Picks(*choice)) for choice in order]
    lines.append(huge_line(parser, draw(st.sampled_from(ATTACKS[:18]))))
    if parser == "cloudtrail":
        lines.insert(draw(st.integers(0, len(lines))), records_line(Picks(0, "", draw(seed))))
    return lines


all_batches = st.fixed_dictionaries({parser: batch(parser) for parser in FILES})

# ---------------------------------------------------------------------------------------
# The stages, once per example
# ---------------------------------------------------------------------------------------

TRIED: dict[str, Counter[str]] = defaultdict(Counter)


@pytest.fixture(scope="module")
def hostile_lake(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    settings = test_settings(tmp_path_factory.mktemp("hostile"))
    write_reference(settings.paths.reference_root)
    yield settings
    ran = {parser: counts["batches"] for parser, counts in TRIED.items()}
    # Hypothesis drops examples that outgrow its buffer without a word: make that visible
    assert not TRIED or min(ran.values()) >= EXAMPLES, f"only {ran} batches ran"
    results = os.environ.get(RESULTS_ENV)
    if TRIED and results:
        path = Path(results)
        path.parent.mkdir(parents=True, exist_ok=True)
        totals = {
            parser: {
                "lines": counts["lines"],
                "batches": counts["batches"],
                "bytes": counts["bytes"],
                "by_kind": {k[5:]: v for k, v in sorted(counts.items()) if k.startswith("kind:")},
            }
            for parser, counts in sorted(TRIED.items())
        }
        document = {
            "test": "tests/test_hostile_input.py",
            "total_lines": sum(t["lines"] for t in totals.values()),
            "parsers": totals,
        }
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def write_batches(raw_root: Path, batches: dict[str, list[Line]]) -> dict[str, int]:
    """One raw file per parser; returns each file's header line count."""
    shutil.rmtree(raw_root, ignore_errors=True)
    headers = {}
    for parser, lines in batches.items():
        source, name = FILES[parser]
        folder = raw_root / source / DAY.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        head = [h.encode() for h in ZEEK_HEADER] if parser == "zeek_conn_tsv" else []
        headers[parser] = len(head)
        (folder / name).write_bytes(
            b"".join(x + b"\n" for x in [*head, *(ln.data for ln in lines)])
        )
    return headers


def _decoded(text: str | bytes) -> str:
    """The line as text; invalid UTF-8 as U+FFFD. Python and the JVM disagree on how many
    U+FFFD an invalid sequence becomes, so a run of them counts as one."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return re.sub("\ufffd+", "\ufffd", text)


def _where(parser: str, line: int, got: Line) -> str:
    shown = got.data[:160]
    return f"{parser} line {line} ({got.kind}, expected {got.expect}): {shown!r}"


def check_file(
    parser: str,
    lines: list[Line],
    header: int,
    bronze: list[Row],
    events: dict[tuple[str, int], int],
    quarantine: dict[tuple[str, int], list[Row]],
) -> int:
    """Every property of one parser's file; returns the bronze rows not routed (duplicates)."""
    source, name = FILES[parser]
    mine = [r for r in bronze if r["_file"].endswith(f"/{source}/{DAY.isoformat()}/{name}")]
    by_line: dict[int, list[Row]] = defaultdict(list)
    for r in mine:
        by_line[r["_line"]].append(r)
    want = set(range(header + 1, header + len(lines) + 1))
    assert set(by_line) == want, (
        f"{parser}: lines without a bronze row {sorted(want - set(by_line))[:10]}"
    )
    unrouted = 0
    for number, line in enumerate(lines, start=header + 1):
        rows = by_line[number]
        where = _where(parser, number, line)
        if line.kind != "records":
            assert len(rows) == 1, f"{where}: {len(rows)} bronze rows"
            text = _decoded(line.data)
            assert _decoded(rows[0]["raw"]) == text, f"{where}: raw is {rows[0]['raw'][:160]!r}"
        key = (rows[0]["_file"], number)
        routed = quarantine.get(key, [])
        n_events = events.get(key, 0)
        assert n_events + len(routed) <= len(rows), f"{where}: routed more rows than bronze has"
        unrouted += len(rows) - n_events - len(routed)
        for q in routed:
            assert q["rule"] and q["reason"], f"{where}: quarantined without rule or reason"
            assert len(q["reason"]) <= 5000, f"{where}: reason of {len(q['reason'])} chars"
        for r in rows:
            if r["_parse_status"] == "unparseable":
                assert r["_parse_error"], where
                assert [(q["rule"], q["reason"]) for q in routed] == [
                    ("parser", r["_parse_error"])
                ], where
            elif r["_cast_errors"]:
                reason = "; ".join(r["_cast_errors"])
                assert ("type_check", reason) in [(q["rule"], q["reason"]) for q in routed], where
        statuses = {r["_parse_status"] for r in rows}
        if line.expect == "parser":
            assert statuses == {"unparseable"}, f"{where}: parsed"
        elif line.expect == "type_check":
            assert statuses == {"parsed"} and all(r["_cast_errors"] for r in rows), (
                f"{where}: no cast error ({rows[0]['_parse_error']})"
            )
        elif line.expect in ("quarantine", "time"):
            assert len(routed) == len(rows), f"{where}: not quarantined"
            if line.expect == "time":
                assert all("event_time" in q["rule"] for q in routed), (
                    f"{where}: quarantined by {[q['rule'] for q in routed]}"
                )
        elif line.expect in ("event", "records"):
            assert statuses == {"parsed"}, f"{where}: {rows[0]['_parse_error']}"
            assert not any(r["_cast_errors"] for r in rows), f"{where}: {rows[0]['_cast_errors']}"
            assert not routed, f"{where}: quarantined by {routed[0]['rule']}: {routed[0]['reason']}"
            for column, value in line.probe.items():
                assert rows[0][column] == value, (
                    f"{where}: {column} = {str(rows[0][column])[:160]!r}"
                )
    return unrouted


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)
@given(batches=all_batches)
def test_hostile_batches_never_crash_never_drop_and_are_routed(
    spark: SparkSession, hostile_lake: Settings, batches: dict[str, list[Line]]
) -> None:
    settings_ = hostile_lake
    headers = write_batches(Path(settings_.paths.raw_root), batches)
    for parser, lines in batches.items():
        counts = TRIED[parser]
        counts["lines"] += len(lines)
        counts["batches"] += 1
        counts["bytes"] += sum(len(x.data) + 1 for x in lines)
        counts.update(f"kind:{x.kind}" for x in lines)

    ctx = RunContext(spark, settings_)
    results = {r.stage: r for r in run_stages(ctx, ["ingest", "validate", "normalize"], [DAY])}
    assert set(results) == {"ingest", "validate", "normalize"}

    lake = ctx.lake
    sources = sorted({s for s, _ in FILES.values()})
    bronze = [r for s in sources for r in lake.read_dates(f"bronze.{s}", [DAY]).collect()]
    events = {
        (r["bronze_file"], r["bronze_line"]): r["n"]
        for r in lake.read_dates("silver.events", [DAY])
        .groupBy("bronze_file", "bronze_line")
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    }
    quarantine: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for q in lake.read_dates("silver.quarantine", [DAY]).drop("raw").collect():
        quarantine[(q["bronze_file"], q["bronze_line"])].append(q)

    unrouted: Counter[str] = Counter()
    for parser, lines in batches.items():
        unrouted[FILES[parser][0]] += check_file(
            parser, lines, headers[parser], bronze, events, quarantine
        )
    recon = {r["source"]: r for r in lake.read_dates("ops.reconciliation", [DAY]).collect()}
    for source in sources:
        r = recon[source]
        n_bronze = sum(1 for b in bronze if f"/{source}/" in b["_file"])
        assert r["balanced"], f"{source}: reconciliation does not balance: {r}"
        assert r["raw_rows"] == n_bronze, f"{source}: {r['raw_rows']} != {n_bronze} bronze rows"
        assert r["duplicates"] == unrouted[source], f"{source}: {r}"


# ---------------------------------------------------------------------------------------
# Attacker-chosen key values: two different events must never share an event_uid
# ---------------------------------------------------------------------------------------


def test_crafted_key_values_cannot_collide_two_events_into_one_event_uid(
    spark: SparkSession,
) -> None:
    """Windows' vendor key is (host, channel, record number). Values that contain the key's
    separator, or an empty value beside a missing one, are different events: they must stay
    two events with two event_uids (a shared id would fail the silver uniqueness contract,
    stopping the stage, or let one event pass as a re-delivery of the other)."""
    from jobs.quality.rows import prepare_rows
    from jobs.quality.suites import default_suites_dir, load_suite, suite_parameters
    from jobs.stages.normalize.mapping import map_source
    from jobs.stages.normalize.routing import EVENT, route_rows
    from tests.bronze_frames import bronze_frame, bronze_row

    def event(line: int, host: str, channel: str | None) -> dict[str, Any]:
        return bronze_row(
            "windows", line, hostname=host, channel=channel, event_id=4688, record_number=5,
            event_time_raw="2026-10-01T09:00:00Z", command_line="whoami",
        )  # fmt: skip

    rows = [
        event(1, "ws01", "x|y"),
        event(2, "ws01|x", "y"),
        event(3, "ws02", ""),
        event(4, "ws02", None),
        event(5, "ws03\\", "|z"),
        event(6, "ws03", "\\|z"),
    ]
    suite = load_suite(default_suites_dir(), "windows")
    prepared = prepare_rows(bronze_frame(spark, "windows", rows), "windows", None)
    routed = route_rows(prepared, suite, suite_parameters(Settings().validation))
    assert sorted(r["_route"] for r in routed.collect()) == [EVENT] * 6
    mapped = map_source(routed.where(F.col("_route") == EVENT), "windows", suite.dedup_key)
    keys = [r["event_key"] for r in mapped.collect()]
    assert len(set(keys)) == 6, keys


def _lines(spark: SparkSession, raws: list[str], **extra: Any) -> Any:
    rows = [(DAY, "x", "file:/raw/x.log", i + 1, "b", raw) for i, raw in enumerate(raws)]
    df = spark.createDataFrame(
        rows,
        "run_date date, source string, _file string, _line long, _batch_id string, raw string",
    )
    for name, value in extra.items():
        df = df.withColumn(name, F.lit(value))
    return df


def test_text_in_a_field_cannot_shift_the_fields_around_it(spark: SparkSession) -> None:
    """Line terminators Java's `.` stops at, the parser's own separator, and a nested `ts`:
    the field that carries them keeps them, and the other fields stay what the line says."""
    from jobs.stages.ingest.files import zeek_layout
    from jobs.stages.ingest.parsers import PARSERS

    users = ["bad\ruser", "line\u2028sep", "nel\x85x", "x\x01203.0.113.9", "tab\tuser"]
    sshd = PARSERS["sshd"](
        _lines(
            spark,
            [
                f"Oct  1 08:00:0{i} web-01 sshd[{i + 1}]: Failed password for {u} from 10.0.0.1 port 22 ssh2"
                for i, u in enumerate(users)
            ],
        )
    )
    got = [
        (r["_parse_status"], r["user"], r["src_ip"], r["src_port"])
        for r in sshd.orderBy("_line").collect()
    ]
    assert got == [("parsed", u, "10.0.0.1", 22) for u in users]

    layout = zeek_layout("zeek_conn", "file:/raw/conn.x.json", None)
    nested = '{"meta": {"ts": 0}, "ts": 1790841605.755299, "uid": "Cabc12345", "proto": "tcp"}'
    plain = '{"ts": 1790841605.755299, "uid": "Cabc12346"}'
    zeek = PARSERS["zeek_conn"](_lines(spark, [nested, plain], _sensor="x", **layout))
    times = [r["event_time_raw"] for r in zeek.orderBy("_line").collect()]
    assert times == ["1790841605.755299", "1790841605.755299"]
