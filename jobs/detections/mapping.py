"""Where a Sigma rule's events are in policylake, and what its field names are called here.

A Sigma rule names a log source (`product` / `service` / `category`) and fields in its
vendor's vocabulary (Windows event data names, CloudTrail JSON paths, Zeek columns). This
module maps both onto what policylake ingests:

- a log source becomes one or more *slots*: the telemetry source (`silver.events.source`),
  and for Windows the event log channel and event ids (`category: process_access` is Sysmon
  event 10 in `Microsoft-Windows-Sysmon/Operational`; `service: security` is the `Security`
  channel). The score stage evaluates each rule only on the rows of its slots;
- a field becomes a column token the backend (jobs.detections.compiler) turns into Spark SQL:
  `col:<column>` for a column of the events, `ed:<Name>` for Windows event data (the
  `event_data` map, by the Windows field name; `ed:A|B` means the first of A and B that is
  present, for fields that Sysmon and the Security log name differently) and `sql:<expr>`
  for a computed value.

The Windows channel names are pySigma's own table (`sigma.pipelines.common`), plus channels it
does not list; the Sysmon event ids per category are the ones Sysmon documents (pySigma's
Sysmon pipeline has the same table). A log source we do not ingest (Zeek HTTP, macOS, ...) or
a field with no column is a named failure, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from sigma.pipelines.common import windows_logsource_mapping
from sigma.pipelines.sysmon.sysmon import sysmon_generic_logsource_eventid_mapping

__all__ = [
    "EVENT_DATA",
    "RAW_TOKEN",
    "Slot",
    "Target",
    "Unsupported",
    "field_token",
    "resolve_logsource",
]

SYSMON = "Microsoft-Windows-Sysmon/Operational"
SECURITY = "Security"
POWERSHELL = ("Microsoft-Windows-PowerShell/Operational", "PowerShellCore/Operational")
CLASSIC_POWERSHELL = "Windows PowerShell"

# Channels of Sigma `service:` names that pySigma's table does not list.
_MORE_CHANNELS: dict[str, str | list[str]] = {
    "iis-configuration": "Microsoft-IIS-Configuration/Operational",
    "ldap": "Microsoft-Windows-LDAP-Client/Debug",
    "smbserver-connectivity": "Microsoft-Windows-SmbServer/Connectivity",
    "smbclient-connectivity": "Microsoft-Windows-SmbClient/Connectivity",
    "application-experience": [
        "Microsoft-Windows-Application-Experience/Program-Telemetry",
        "Microsoft-Windows-Application-Experience/Program-Compatibility-Assistant",
    ],
    "hyper-v-worker": "Microsoft-Windows-Hyper-V-Worker",
    "kernel-shimengine": "Microsoft-Windows-Kernel-ShimEngine/Operational",
    "sysmon": SYSMON,
}
WINDOWS_CHANNELS: dict[str, tuple[str, ...]] = {
    service: (channels,) if isinstance(channels, str) else tuple(channels)
    for service, channels in {**windows_logsource_mapping, **_MORE_CHANNELS}.items()
}


# Generic Windows categories -> (channel, event ids). Sysmon's table, plus the Security log's
# process creation (4688), and the PowerShell categories.
def _ids(value: object) -> tuple[int, ...]:
    return tuple(int(i) for i in value) if isinstance(value, list) else (int(str(value)),)


WINDOWS_CATEGORIES: dict[str, tuple[tuple[str, tuple[int, ...]], ...]] = {
    category: ((SYSMON, _ids(ids)),)
    for category, ids in sysmon_generic_logsource_eventid_mapping.items()
}
WINDOWS_CATEGORIES["process_creation"] = ((SYSMON, (1,)), (SECURITY, (4688,)))
WINDOWS_CATEGORIES.update(
    {
        "ps_module": tuple((c, (4103,)) for c in POWERSHELL),
        "ps_script": tuple((c, (4104,)) for c in POWERSHELL),
        "ps_classic_start": ((CLASSIC_POWERSHELL, (400,)),),
        "ps_classic_provider_start": ((CLASSIC_POWERSHELL, (600,)),),
        "ps_classic_script": ((CLASSIC_POWERSHELL, (800,)),),
    }
)
# Categories that come from EDR/ETW telemetry no Windows event log carries.
NOT_AN_EVENT_LOG = {
    "file_access": "file access is EDR/ETW telemetry (Microsoft-Windows-Kernel-File), not an event log",
    "file_rename": "file renames are EDR/ETW telemetry, not an event log",
}

# Windows fields that are System properties, not event data.
_WINDOWS_SYSTEM = {
    "Channel": "col:channel",
    "EventID": "col:event_id",
    "Provider_Name": "col:provider",
}
# Sysmon 1 and Security 4688 name the same things differently.
_PROCESS_CREATION = {
    "Image": "ed:Image|NewProcessName",
    "ParentImage": "ed:ParentImage|ParentProcessName",
    "User": "ed:User|SubjectUserName",
}

# Non-Windows log sources: Sigma field -> silver.events column (or expression).
_CLOUDTRAIL = {
    "eventName": "col:cloud_action",
    "eventSource": "sql:concat(cloud_service, '.amazonaws.com')",
    "awsRegion": "col:cloud_region",
    "sourceIPAddress": "col:src_ip",
    "errorCode": "col:status_detail",
    "userIdentity.userName": "col:user_name_raw",
}
_ZEEK_COMMON = {
    "id.orig_h": "col:src_ip",
    "id.orig_p": "col:src_port",
    "id.resp_h": "col:dst_ip",
    "id.resp_p": "col:dst_port",
    "proto": "col:protocol",
}
_ZEEK_DNS = {
    **_ZEEK_COMMON,
    "query": "col:dns_query",
    "rcode_name": "col:dns_rcode",
}
_ZEEK_CONN = {
    **_ZEEK_COMMON,
    "orig_bytes": "col:bytes_out",
    "resp_bytes": "col:bytes_in",
    "conn_state": "col:status_detail",
}
_SSHD = {"user": "col:user_name_raw", "src_ip": "col:src_ip"}
# Columns a `sql:` token reads (the evaluation skips a rule whose columns are absent).
SQL_TOKEN_COLUMNS = {"sql:concat(cloud_service, '.amazonaws.com')": ("cloud_service",)}

EVENT_DATA = "windows"  # the field table of Windows rules: anything else is event data
RAW_TOKEN = "raw:"  # a keyword (a value with no field): the whole log line
FIELD_TABLES: dict[str, dict[str, str]] = {
    "windows": _WINDOWS_SYSTEM,
    "process_creation": {**_WINDOWS_SYSTEM, **_PROCESS_CREATION},
    "cloudtrail": _CLOUDTRAIL,
    "zeek_dns": _ZEEK_DNS,
    "zeek_conn": _ZEEK_CONN,
    "sshd": _SSHD,
}
# What a keyword searches, per field table: Windows, every event data value; sshd, the
# syslog message (bronze.sshd.message; silver.events does not keep it).
RAW_COLUMNS: dict[str, str] = {
    "windows": "ed:*",
    "process_creation": "ed:*",
    "sshd": "col:message",
}


@dataclass(frozen=True)
class Slot:
    """Rows a rule reads: one telemetry source, and for Windows a channel and event ids."""

    source: str
    channel: str | None = None
    event_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Target:
    """A supported log source: its slots and the field table its rules are mapped with."""

    slots: tuple[Slot, ...]
    fields: str


@dataclass(frozen=True)
class Unsupported:
    """A log source policylake cannot evaluate; `ingested` says whether we ingest that source
    at all (a Windows service with no known channel is ours; Zeek HTTP logs are not)."""

    reason: str
    ingested: bool


def resolve_logsource(
    product: str | None, category: str | None, service: str | None
) -> Target | Unsupported:
    """The slots and field table of a Sigma log source, or why there are none."""
    product = (product or "").lower() or None
    category = (category or "").lower() or None
    service = (service or "").lower() or None
    if product == "windows":
        return _windows(category, service)
    if product == "linux":
        if service in (None, "sshd", "auth", "syslog"):
            return Target((Slot("sshd"),), "sshd")
        return Unsupported(f"linux service {service!r}: policylake ingests sshd syslog only", False)
    if product == "aws":
        if service == "cloudtrail":
            return Target((Slot("cloudtrail"),), "cloudtrail")
        return Unsupported(f"aws service {service!r}: policylake ingests CloudTrail only", False)
    if product == "zeek" or (product is None and category == "dns"):
        if service == "dns" or (product is None and category == "dns"):
            return Target((Slot("zeek_dns"),), "zeek_dns")
        if service == "conn":
            return Target((Slot("zeek_conn"),), "zeek_conn")
        return Unsupported(f"zeek log {service!r}: policylake ingests conn.log and dns.log", False)
    what = "/".join(x for x in (product, category, service) if x) or "(none)"
    return Unsupported(f"log source {what} is not one policylake ingests", False)


def _windows(category: str | None, service: str | None) -> Target | Unsupported:
    fields = "process_creation" if category == "process_creation" else "windows"
    if service is not None:
        channels = WINDOWS_CHANNELS.get(service)
        if channels is None:
            return Unsupported(f"windows service {service!r} has no known event log channel", True)
        ids: tuple[int, ...] = ()
        if category is not None and category in WINDOWS_CATEGORIES:
            ids = tuple(i for _, e in WINDOWS_CATEGORIES[category] for i in e)
        return Target(tuple(Slot("windows", c, ids) for c in channels), fields)
    if category is None:
        return Target((Slot("windows"),), fields)
    if category in NOT_AN_EVENT_LOG:
        return Unsupported(f"windows category {category}: {NOT_AN_EVENT_LOG[category]}", False)
    mapped = WINDOWS_CATEGORIES.get(category)
    if mapped is None:
        return Unsupported(f"windows category {category!r} has no known event log", True)
    return Target(tuple(Slot("windows", c, ids) for c, ids in mapped), fields)


class UnmappedFieldError(ValueError):
    """A Sigma field with no column in the table of its log source."""


def field_token(table: str, field: str | None) -> str:
    """The column token of a Sigma field name under a field table (see the module docstring)."""
    if field is None:
        return RAW_TOKEN
    if field.startswith(("col:", "ed:", "sql:")):  # already mapped by an earlier item
        return field
    mapped = FIELD_TABLES[table].get(field)
    if mapped is not None:
        return mapped
    if table in ("windows", "process_creation"):
        return f"ed:{field}"
    raise UnmappedFieldError(f"field {field!r} has no column in policylake's {table} events")
