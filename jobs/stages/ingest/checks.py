"""Ingest checks of suite `ingest` in ops.dq_results: delivery (critical) and schema drift."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from jobs.stages.ingest.files import RawFile
from jobs.stages.ingest.parsers.cloudtrail import CLOUDTRAIL_SPEC
from jobs.stages.ingest.parsers.idp import OKTA_SPEC
from jobs.stages.ingest.parsers.windows import WINDOWS_SPEC
from jobs.stages.ingest.parsers.zeek import ZEEK_DEFAULT_FIELDS, zeek_spec
from jobs.stages.ingest.parsing import Spec, words

# ---------------------------------------------------------------------------------------
# Ingest checks in ops.dq_results (suite `ingest`): delivery and schema drift
# ---------------------------------------------------------------------------------------

INGEST_SUITE = "ingest"
DELIVERY = "delivery"
SCHEMA_DRIFT = "schema_drift"

# Top-level fields the vendor formats carry that bronze does not keep as columns (they stay
# in `raw`): not drift. Windows event data fields (CamelCase, NXLog flattens them to the top
# level; bronze keeps them all in `event_data`) are an open set by design; only other
# spellings count as new there.
VENDOR_FIELDS: dict[str, frozenset[str]] = {
    "idp": frozenset(words("version legacyEventType debugContext securityContext request")),
    "windows": frozenset(
        words(
            "@version @metadata host port tags type message event log agent ecs beat fields "
            "input task opcode process_id thread_id provider_guid version activity_id "
            "related_activity_id user"  # Winlogbeat 6.x top-level fields it does not parse
        )
    ),
    "cloudtrail": frozenset(
        words(
            "additionalEventData apiVersion managementEvent resources serviceEventDetails "
            "sharedEventID vpcEndpointId vpcEndpointAccountId eventCategory addendum "
            "sessionCredentialFromConsole edgeDeviceDetails tlsDetails insightDetails"
        )
    ),
    "zeek_conn": frozenset(
        words(
            "_path _write_ts _node local_orig local_resp tunnel_parents orig_l2_addr "
            "resp_l2_addr vlan inner_vlan community_id ip_proto label detailedlabel"
        )
    ),
    "zeek_dns": frozenset(
        words(
            "_path _write_ts _node qclass qclass_name qtype rcode AA TC RD RA Z TTLs rejected "
            "auth addl detailedlabel"
        )
    ),
}
_WINDOWS_EVENT_DATA_NAME = r"^[A-Z][A-Za-z0-9]*$"

# Fields a source's rows cannot do without (each group: any one spelling). A group that no
# parsed row of a date carries is a missing field: the vendor dropped or renamed it.
CORE_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "idp": (("uuid",), ("published",), ("eventType",), ("actor",), ("outcome",)),
    "windows": (  # NXLog, Winlogbeat (7+: `winlog`, 6.x: top level), evtx_dump (`Event`)
        ("@timestamp", "EventTime", "TimeCreated", "Event"),
        ("Hostname", "winlog", "computer_name", "Event"),
        ("EventID", "winlog", "event_id", "Event"),
        ("Channel", "winlog", "log_name", "Event"),
    ),
    "cloudtrail": (
        ("eventTime", "@timestamp"),
        ("eventID",),
        ("eventName",),
        ("eventSource",),
        ("userIdentity",),
    ),
    "zeek_conn": (
        ("ts",),
        ("uid",),
        ("id.orig_h", "id_orig_h"),
        ("id.resp_h", "id_resp_h"),
        ("proto",),
    ),
    "zeek_dns": (("ts",), ("uid",), ("id.orig_h", "id_orig_h"), ("query",)),
}


def declared_fields(source: str) -> frozenset[str]:
    """Top-level field names the parser reads, plus the vendor's known extras."""
    specs: dict[str, Spec] = {
        "idp": OKTA_SPEC,
        "windows": WINDOWS_SPEC,
        "cloudtrail": {**CLOUDTRAIL_SPEC, "Records": None},
    }
    if source in specs:
        names = set(specs[source])
    elif source.startswith("zeek_"):
        names = set(zeek_spec(source)) | set(ZEEK_DEFAULT_FIELDS[source])
    else:
        return frozenset()
    return frozenset(names | VENDOR_FIELDS.get(source, frozenset()))


@dataclass
class FieldCounts:
    """Per date: parsed rows that carry field names, how many carry each, and cast errors."""

    rows: int = 0
    fields: dict[str, int] = field(default_factory=dict)
    cast_errors: dict[str, int] = field(default_factory=dict)


def _check_row(
    source: str,
    day: date,
    expectation: str,
    success: bool,
    unexpected: int,
    elements: int,
    critical: bool,
    details: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "run_date": day,
        "source": source,
        "suite": INGEST_SUITE,
        "expectation": expectation,
        "column": None,
        "success": success,
        "unexpected_count": unexpected,
        "element_count": elements,
        "critical": critical,
        "details": json.dumps(details, sort_keys=True),
    }


def delivery_rows(
    source: str,
    dates: Sequence[date],
    files: Sequence[RawFile],
    log: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One `delivery` row per date: did the source deliver any row? (critical)"""
    out = []
    for day in sorted(set(dates)):
        n_files = sum(1 for f in files if f.run_date == day)
        rows = sum(int(r["rows"]) for r in log if r["run_date"] == day)
        if rows:
            reason = None
        elif n_files:
            reason = f"{n_files} {source} file(s) for {day.isoformat()} hold no event lines"
        else:
            reason = f"no {source} data delivered for {day.isoformat()}"
        details = {"files": n_files, "rows": rows, **({"reason": reason} if reason else {})}
        out.append(
            _check_row(source, day, DELIVERY, rows > 0, 0 if rows else 1, rows, True, details)
        )
    return out


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def schema_drift_rows(source: str, fields: Mapping[date, FieldCounts]) -> list[dict[str, Any]]:
    """One `schema_drift` row per delivered date: top-level fields that are new (not
    declared), missing (a core field no row carries) or changed type (cast errors).
    Informational (not critical): the row-level checks decide what is quarantined."""
    if source not in CORE_FIELDS:
        return []  # sshd: syslog lines have no field names
    declared = declared_fields(source)
    out = []
    for day, counts in sorted(fields.items()):
        new = {
            name: n
            for name, n in counts.fields.items()
            if name not in declared
            and not (source == "windows" and re.match(_WINDOWS_EVENT_DATA_NAME, name))
        }
        missing = [
            "|".join(group)
            for group in CORE_FIELDS[source]
            if counts.rows and not any(counts.fields.get(g) for g in group)
        ]
        parts = []
        if new:
            parts.append(
                "new field(s) " + ", ".join(f"{k} ({_rows(v)})" for k, v in sorted(new.items()))
            )
        if missing:
            parts.append(f"missing field(s) {', '.join(missing)} (in none of {_rows(counts.rows)})")
        if counts.cast_errors:
            parts.append(
                "changed type "
                + ", ".join(f"{k} ({_rows(v)})" for k, v in sorted(counts.cast_errors.items()))
            )
        details = {
            "new_fields": dict(sorted(new.items())),
            "missing_fields": missing,
            "type_changes": dict(sorted(counts.cast_errors.items())),
            "rows": counts.rows,
            "message": f"{source} {day.isoformat()}: {'; '.join(parts)}" if parts else None,
        }
        drifted = len(new) + len(missing) + len(counts.cast_errors)
        out.append(
            _check_row(
                source, day, SCHEMA_DRIFT, drifted == 0, drifted, counts.rows, False, details
            )
        )
    return out


def drift_messages(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    return [
        str(json.loads(r["details"])["message"])
        for r in checks
        if r["expectation"] == SCHEMA_DRIFT and not r["success"]
    ]
