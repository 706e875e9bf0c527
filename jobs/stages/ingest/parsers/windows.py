"""Windows events of every channel, in the three JSON shapes collectors write, detected per line:

| `log_format` | shape | detected by |
| --- | --- | --- |
| `nxlog` | NXLog / Logstash flat JSON (OTRF Security-Datasets): system and event data fields side by side at the top level | neither of the others |
| `winlogbeat` | Winlogbeat: `winlog.{event_id,channel,computer_name,record_id,provider_name,event_data,user_data}` (7+, ECS), or the same at the top level (6.x: `event_id`, `log_name`, `computer_name`, `record_number`, `source_name`, `event_data`) | a `winlog` object, or a top-level `computer_name` / `log_name` |
| `evtx` | one evtx_dump record per line (`evtx` / `PyEvtxParser.records_json()`): `Event.System.*`, `Event.EventData` or `Event.UserData` | an `Event` object |

Every event keeps all of its event data in `event_data` (map of the Windows field name to its
value as text); the typed columns (`target_user_name`, `image`, ...) are read from that map,
so they mean the same in every shape.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import MapType, StringType

from jobs.stages.ingest.parsing import Spec, finish_bronze, first_of, start_json, words

# bronze column -> event data field name (flat key in NXLog, `winlog.event_data.<name>` in
# Winlogbeat, `Event.EventData.<name>` in evtx_dump)
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

NXLOG = "nxlog"
WINLOGBEAT = "winlogbeat"
EVTX = "evtx"

# NXLog's (im_msvistalog) system fields and what Logstash/NXLog add in transit: everything
# else at the top level of a flat line is the event's data. (`AccountName`, `AccountType`,
# `Domain`, `UserID` stay: NXLog fills them from the System Security element, but several
# events also carry fields of those names in their EventData, and dropping them would lose
# those.)
NXLOG_SYSTEM_FIELDS = words(
    "@timestamp @version @metadata EventTime EventReceivedTime TimeCreated Hostname SourceName "
    "ProviderGuid Channel EventID EventTypeOrignal Severity SeverityValue Keywords "
    "RecordNumber Task Category Opcode OpcodeValue Version Level ThreadID ExecutionProcessID "
    "ActivityID RelatedActivityID SourceModuleName SourceModuleType Message host port tags type "
    "message agent ecs fields input log event"
)
# NXLog's `EventType` vocabulary. A flat `EventType` with another value is the event's own
# field of that name (Sysmon 12-14: CreateKey, SetValue, ...), so it is event data; OTRF's
# Logstash kept NXLog's value as `EventTypeOrignal` then.
NXLOG_EVENT_TYPES = words("AUDIT_SUCCESS AUDIT_FAILURE INFO WARNING ERROR CRITICAL VERBOSE")
_WINLOGBEAT_LEGACY = words(
    "event_id log_name computer_name record_number source_name event_data user_data keywords level"
)
_EVTX_SYSTEM: Spec = {
    "Provider": {"#attributes": {"Name": None}},
    "EventID": None,  # 4624, or {"#attributes": {"Qualifiers": ...}, "#text": 4624}
    "TimeCreated": {"#attributes": {"SystemTime": None}},
    "EventRecordID": None,
    "Channel": None,
    "Computer": None,
    "Keywords": None,
    "Level": None,
}
# the flat system fields the parser reads
_FLAT_READ = words(
    "@timestamp EventTime TimeCreated Hostname SourceName Channel EventID EventType "
    "EventTypeOrignal RecordNumber"
)
WINDOWS_SPEC: Spec = {
    **dict.fromkeys(_FLAT_READ),
    # the event data fields read into typed columns (a flat line holds them at the top level)
    **dict.fromkeys(WINDOWS_EVENT_DATA.values()),
    # objects kept as JSON text (string leaves): read only in their own shape, so a flat
    # line whose `host` is the collector's name is no shape error
    "host": None,
    "log": None,
    # Winlogbeat 7+ (ECS)
    "winlog": {
        "event_id": None,
        "channel": None,
        "computer_name": None,
        "record_id": None,
        "provider_name": None,
        "keywords": None,
        "event_data": None,
        "user_data": None,
    },
    # Winlogbeat 6.x
    **dict.fromkeys(_WINLOGBEAT_LEGACY),
    # evtx_dump
    "Event": {"System": _EVTX_SYSTEM, "EventData": None, "UserData": None},
}

_TEXT_MAP = MapType(StringType(), StringType(), True)

_TEXT = "$['#text']"
# evtx `Level` -> NXLog's EventType words (0 is "log always": Security audits, by keyword)
_LEVELS = {"1": "CRITICAL", "2": "ERROR", "3": "WARNING", "4": "INFO", "5": "VERBOSE"}
_LEVEL_WORDS = {
    "critical": "CRITICAL",
    "error": "ERROR",
    "warning": "WARNING",
    "information": "INFO",
    "info": "INFO",
    "verbose": "VERBOSE",
}


def _map_of(text: Column) -> Column:
    """A JSON object's members as text (numbers and booleans spelled as in JSON, nested
    objects and arrays as their JSON text); null when `text` is not an object."""
    return F.from_json(text, _TEXT_MAP.simpleString())


def _text_of(value: Column) -> Column:
    """evtx_dump writes an element with attributes as `{"#attributes": ..., "#text": v}`."""
    inner = F.get_json_object(value, _TEXT)
    return F.when(value.startswith("{") & inner.isNotNull(), inner).otherwise(value)


def _xml_fields(fields: Column) -> Column:
    """Element values as text, without XML namespace and attribute members."""
    kept = F.map_filter(fields, lambda k, _v: ~k.startswith("#") & ~k.startswith("xmlns"))
    return F.transform_values(kept, lambda _k, v: _text_of(v))


def _evtx_event_data(event: Column) -> Column:
    """`EventData`, else the fields of `UserData`'s one child element (`LogFileCleared` ...)."""
    event_data = _map_of(event["EventData"])
    user_data = F.map_filter(_map_of(event["UserData"]), lambda k, _v: ~k.startswith("#"))
    child = _map_of(F.get(F.map_values(user_data), 0))
    return F.coalesce(_xml_fields(event_data), _xml_fields(F.coalesce(child, user_data)))


def _beat_event_data(event_data: Column, user_data: Column) -> Column:
    """Winlogbeat's `event_data`, else the fields of `user_data` (without its `xml_name`)."""
    users = F.map_filter(_map_of(user_data), lambda k, _v: k != "xml_name")
    return F.coalesce(_map_of(event_data), users)


def _nxlog_event_type(value: Column) -> Column:
    return F.when(value.isin(*NXLOG_EVENT_TYPES), value)


def _flat_event_data(line: Column) -> Column:
    # `isin` over many literals is a hash-set lookup (Spark's InSet); inside the lambda,
    # which runs interpreted, that is most of the parse's cost per key
    return F.map_filter(
        _map_of(line),
        lambda k, v: (
            ~k.isin(*NXLOG_SYSTEM_FIELDS)
            & ~((k == "EventType") & F.coalesce(v.isin(*NXLOG_EVENT_TYPES), F.lit(False)))
        ),
    )


def _keyword_event_type(keywords: Column) -> Column:
    """Winlogbeat keyword names ("Audit Success") -> NXLog's EventType."""
    return F.when(keywords.contains("Audit Success"), F.lit("AUDIT_SUCCESS")).when(
        keywords.contains("Audit Failure"), F.lit("AUDIT_FAILURE")
    )


def _level_word(level: Column) -> Column:
    words_map = F.create_map(*[F.lit(x) for kv in sorted(_LEVEL_WORDS.items()) for x in kv])
    return words_map[F.lower(F.trim(level))]


def _evtx_event_type(keywords: Column, level: Column) -> Column:
    """Keyword bits 53 (audit success) and 52 (audit failure), else the level."""
    digits = F.lpad(F.regexp_replace(F.lower(keywords), r"^0x", ""), 16, "0")
    nibble = F.when(
        keywords.rlike(r"^0x[0-9A-Fa-f]{1,16}$"), F.conv(F.substring(digits, 3, 1), 16, 10)
    ).cast("int")
    levels = F.create_map(*[F.lit(x) for kv in sorted(_LEVELS.items()) for x in kv])
    return (
        F.when(nibble.bitwiseAND(2) > 0, F.lit("AUDIT_SUCCESS"))
        .when(nibble.bitwiseAND(1) > 0, F.lit("AUDIT_FAILURE"))
        .otherwise(levels[level])
    )


def parse_windows(lines: DataFrame) -> DataFrame:
    """Detect the shape of each line, then read every shape into the same columns."""
    df = start_json(lines, WINDOWS_SPEC)
    j = F.col("__j")
    w = j["winlog"]
    event = j["Event"]
    system = event["System"]
    is_evtx = event.isNotNull()
    is_ecs = ~is_evtx & w.isNotNull()
    is_legacy = ~is_evtx & ~is_ecs & (j["computer_name"].isNotNull() | j["log_name"].isNotNull())
    log_format = (
        F.when(is_evtx, F.lit(EVTX))
        .when(is_ecs | is_legacy, F.lit(WINLOGBEAT))
        .otherwise(F.lit(NXLOG))
    )
    df = df.select(
        "*",
        log_format.alias("__format"),
        F.when(is_evtx, _evtx_event_data(event))
        .when(is_ecs, _beat_event_data(w["event_data"], w["user_data"]))
        .when(is_legacy, _beat_event_data(j["event_data"], j["user_data"]))
        .otherwise(_flat_event_data(F.col("__line")))
        .alias("__event_data"),
    )
    fmt = F.col("__format")
    data = F.col("__event_data")
    # A flat line's event data is at its top level, so its typed columns can come from the
    # one struct parse instead of a lookup in the map (which scans the keys: most of the
    # parse's cost). Not when a name repeats: the map keeps every copy and a lookup gives
    # the first, the struct the last, and the typed column must say what `event_data` says.
    distinct_names = F.size(data) == F.size(F.array_distinct(F.map_keys(data)))
    df = df.select("*", ((fmt == NXLOG) & distinct_names).alias("__from_struct"))
    ecs = fmt.eqNullSafe(WINLOGBEAT) & w.isNotNull()

    def by_shape(flat: Column, beat: Column, legacy: Column, evtx: Column) -> Column:
        """One column from the field each shape keeps it in."""
        return (
            F.when(fmt == EVTX, evtx)
            .when(ecs, beat)
            .when(fmt == WINLOGBEAT, legacy)
            .otherwise(flat)
        )

    ecs_level = F.get_json_object(j["log"], "$.level")
    texts = {
        "event_time_local": F.when(fmt == NXLOG, first_of(j["EventTime"], j["TimeCreated"])),
        "hostname": by_shape(
            j["Hostname"],
            first_of(w["computer_name"], F.get_json_object(j["host"], "$.name")),
            j["computer_name"],
            system["Computer"],
        ),
        "channel": by_shape(j["Channel"], w["channel"], j["log_name"], system["Channel"]),
        "event_id": by_shape(
            j["EventID"], w["event_id"], j["event_id"], _text_of(system["EventID"])
        ),
        # OTRF's Logstash kept NXLog's EventType as `EventTypeOrignal` on some records.
        "event_type": by_shape(
            first_of(_nxlog_event_type(j["EventType"]), j["EventTypeOrignal"]),
            first_of(_keyword_event_type(w["keywords"]), _level_word(ecs_level)),
            first_of(_keyword_event_type(j["keywords"]), _level_word(j["level"])),
            _evtx_event_type(system["Keywords"], system["Level"]),
        ),
        "record_number": by_shape(
            j["RecordNumber"], w["record_id"], j["record_number"], system["EventRecordID"]
        ),
        "provider": by_shape(
            j["SourceName"],
            w["provider_name"],
            j["source_name"],
            system["Provider"]["#attributes"]["Name"],
        ),
        "event_data": F.coalesce(data, F.create_map().cast(_TEXT_MAP)),
        "log_format": fmt,
    }
    for column, key in WINDOWS_EVENT_DATA.items():
        texts[column] = F.when(F.col("__from_struct"), j[key]).otherwise(data[key])
    event_time = F.when(fmt == EVTX, system["TimeCreated"]["#attributes"]["SystemTime"]).otherwise(
        j["@timestamp"]
    )
    return finish_bronze(df, "windows", texts, event_time)
