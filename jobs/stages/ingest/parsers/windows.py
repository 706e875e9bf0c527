"""Windows Security and Sysmon events: NXLog-flattened JSON (OTRF) or Winlogbeat's nested shape."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.stages.ingest.parsing import Spec, finish_bronze, first_of, start_json, words

# ---------------------------------------------------------------------------------------
# windows: NXLog-flattened Security/Sysmon (OTRF), or Winlogbeat's nested shape
# ---------------------------------------------------------------------------------------

# bronze column -> event field name (flat key in NXLog, `winlog.event_data.<name>` in Winlogbeat)
WINDOWS_EVENT_DATA: dict[str, str] = {
    "target_user_name": "TargetUserName",
    "target_domain_name": "TargetDomainName",
    "subject_user_name": "SubjectUserName",
    "subject_domain_name": "SubjectDomainName",
    "logon_type": "LogonType",
    "ip_address": "IpAddress",
    "ip_port": "IpPort",
    "workstation_name": "WorkstationName",
    "status": "Status",
    "sub_status": "SubStatus",
    "process_name": "ProcessName",
    "new_process_name": "NewProcessName",
    "parent_process_name": "ParentProcessName",
    "command_line": "CommandLine",
    "image": "Image",
    "parent_image": "ParentImage",
    "sysmon_user": "User",
    "share_name": "ShareName",
    "privilege_list": "PrivilegeList",
    "source_ip": "SourceIp",
    "destination_ip": "DestinationIp",
    "destination_port": "DestinationPort",
}
_WINDOWS_SYSTEM = words(
    "@timestamp EventTime Hostname Channel EventID EventType EventTypeOrignal RecordNumber"
)
WINDOWS_SPEC: Spec = {
    **dict.fromkeys(_WINDOWS_SYSTEM),
    **dict.fromkeys(WINDOWS_EVENT_DATA.values()),
    "winlog": {
        "event_id": None,
        "channel": None,
        "computer_name": None,
        "record_id": None,
        "event_data": dict.fromkeys(WINDOWS_EVENT_DATA.values()),
    },
}


def parse_windows(lines: DataFrame) -> DataFrame:
    """Flat NXLog keys first; Winlogbeat's `winlog.*` fills what they leave empty."""
    df = start_json(lines, WINDOWS_SPEC)
    j = F.col("__j")
    w = j["winlog"]
    texts = {
        "event_time_local": j["EventTime"],
        "hostname": first_of(j["Hostname"], w["computer_name"]),
        "channel": first_of(j["Channel"], w["channel"]),
        "event_id": first_of(j["EventID"], w["event_id"]),
        # OTRF's Logstash kept NXLog's EventType as `EventTypeOrignal` on some records.
        "event_type": first_of(j["EventType"], j["EventTypeOrignal"]),
        "record_number": first_of(j["RecordNumber"], w["record_id"]),
    }
    for column, key in WINDOWS_EVENT_DATA.items():
        texts[column] = first_of(j[key], w["event_data"][key])
    return finish_bronze(df, "windows", texts, j["@timestamp"])
