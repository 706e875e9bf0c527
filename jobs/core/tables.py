"""The table catalogue: every table of the lake, declared once.

Each `Table` names its layer and name, columns (with what each means), partitioning, the
stage or job that produces it (`owner`), the one module that writes it (`writer`), and who
reads it. Code reaches tables through these objects, never by spelling a name; the lake
(`jobs.core.lake`) refuses a write from any module of this package but the table's writer.
`docs/tables.md` is generated from this file (`python -m jobs.core.tables > docs/tables.md`,
checked by `tests/test_tables.py`).

One module rewrites rows it does not own: data-subject erasure (`ERASURE_MODULE`), which
redacts a person in every table and records what it did in `ops.erasures`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from jobs.core.config import SOURCES
from jobs.core.errors import TableNameError

LAYERS = ("bronze", "silver", "gold", "ops")
# Tables of a few rows to a few thousand per date are not partitioned: a partition per date
# would only make a year of nightly runs thousands of small files. `Lake.replace_dates` still
# replaces exactly a run's dates (Delta `replaceWhere` on the date column works on any
# column), and maintenance compacts them (jobs/pipeline/maintenance.py).
SMALL: tuple[str, ...] = ()
# The one module allowed to rewrite rows of any table (a data subject's erasure).
ERASURE_MODULE = "jobs.governance.erasure"


@dataclass(frozen=True)
class Column:
    """A column of a table and what it means."""

    name: str
    type: DataType
    doc: str
    nullable: bool = True

    @property
    def field(self) -> StructField:
        return StructField(self.name, self.type, self.nullable)


def column(name: str, dtype: DataType, doc: str, nullable: bool = True) -> Column:
    return Column(name, dtype, doc, nullable)


@dataclass(frozen=True, eq=False)
class Table:
    """One Delta table at `<lake root>/<layer>/<name>` (each declared once: compared by identity)."""

    name: str  # <layer>.<name>
    columns: tuple[Column, ...]
    description: str
    owner: str  # the stage or job whose run produces the rows
    writer: str  # the one module that writes them
    readers: tuple[str, ...]
    partition_by: tuple[str, ...] = ("run_date",)
    # the column a run's dates select (None: the table is not replaced by date)
    date_column: str | None = "run_date"
    properties: Mapping[str, str] = field(default_factory=dict)
    # restricted tables hold identifiers or secrets' digests: keep them from BI users
    restricted: bool = False
    docs: str = ""  # the page of docs/ that explains the table

    def __post_init__(self) -> None:
        layer, _, short = self.name.partition(".")
        if layer not in LAYERS or not short or "/" in short or ".." in short:
            raise TableNameError(
                f"table must be <layer>.<name> with layer in {LAYERS}: {self.name!r}"
            )

    @property
    def layer(self) -> str:
        return self.name.partition(".")[0]

    @property
    def schema(self) -> StructType:
        return StructType([c.field for c in self.columns])

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def __str__(self) -> str:
        return self.name


def _table(
    name: str,
    columns: Sequence[Column],
    description: str,
    owner: str,
    writer: str,
    readers: Sequence[str],
    **kwargs: object,
) -> Table:
    return Table(name, tuple(columns), description, owner, writer, tuple(readers), **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Types of nested columns
# ---------------------------------------------------------------------------------------

# One explainable signal: what fired, how strongly, against which threshold, and why.
SIGNAL = StructType(
    [
        StructField("name", StringType(), False),  # impossible_travel, new_country, ...
        StructField("value", DoubleType(), True),  # the measured quantity (km/h, count, bytes)
        StructField("threshold", DoubleType(), True),  # the threshold it was compared with
        StructField("contribution", DoubleType(), True),  # points it adds to the 0-100 risk
        StructField("detail", StringType(), True),  # plain language ("first sign-in from ...")
        StructField("source", StringType(), True),  # telemetry source (degraded-source rules)
    ]
)

HOUR_OF_WEEK_BUCKETS = 168  # Monday 00:00-00:59 local time is bucket 0, Sunday 23:00 is 167

# item -> events that day
ITEM_COUNTS = MapType(StringType(), LongType(), True)
# item -> where it sits in a window: first day of its current streak, last day seen,
# days seen inside the window and events inside the window
ITEM_HISTORY = MapType(
    StringType(),
    StructType(
        [
            StructField("first_seen", DateType(), True),
            StructField("last_seen", DateType(), True),
            StructField("days", IntegerType(), True),
            StructField("events", LongType(), True),
        ]
    ),
    True,
)
# One observed day of an entity (or of one member, for a peer group): the robust-stat inputs.
DAILY_VALUES = ArrayType(
    StructType(
        [
            StructField("day", DateType(), True),
            StructField("member", StringType(), True),  # peer groups: the member; else null
            StructField("events", LongType(), True),
            StructField("failures", LongType(), True),
            StructField("bytes_in", LongType(), True),
            StructField("bytes_out", LongType(), True),
            StructField("privileged_actions", LongType(), True),
        ]
    ),
    True,
)
# Item sets, in the order gold.entity_daily and gold.baselines carry them.
BASELINE_ITEM_SETS = (
    "src_countries",
    "src_cities",
    "src_asns",
    "src_ips",
    "devices",
    "dst_hosts",
    "apps",
    "cloud_actions",
    "process_pairs",
    "users",
)
# gold.metrics_daily dimensions (keys sorted)
METRIC_DIMENSIONS = MapType(StringType(), StringType(), True)


# ---------------------------------------------------------------------------------------
# bronze: every raw line, parsed or not, with its lineage
# ---------------------------------------------------------------------------------------

INGEST = "ingest"
# `_parse_status` of a bronze row
PARSED = "parsed"
UNPARSEABLE = "unparseable"
_INGEST_WRITER = "jobs.stages.ingest.stage"

# Every bronze table starts with these: the raw line, where it came from, and whether it parsed.
BRONZE_COMMON = (
    column(
        "run_date", DateType(), "The raw/<source>/<date>/ folder the line came from", nullable=False
    ),
    column(
        "source",
        StringType(),
        "The telemetry source: idp, windows, zeek_conn, zeek_dns, cloudtrail or sshd",
        nullable=False,
    ),
    column("_file", StringType(), "Path of the raw file", nullable=False),
    column("_line", LongType(), "1-based line number in the raw file", nullable=False),
    column(
        "_batch_id",
        StringType(),
        "Deterministic: hash of (source, date, input files)",
        nullable=False,
    ),
    column("raw", StringType(), "The line exactly as read"),
    column("_parse_status", StringType(), "Parsed | unparseable", nullable=False),
    column("_parse_error", StringType(), "Why a line is unparseable"),
    column("_cast_errors", ArrayType(StringType()), "Fields whose value had the wrong type"),
    column("event_time_raw", StringType(), "The event's timestamp text, as the vendor wrote it"),
)

_BRONZE_FIELDS: dict[str, tuple[Column, ...]] = {
    "idp": (
        column("uuid", StringType(), "Okta `uuid`"),
        column("event_type", StringType(), "Okta `eventType`"),
        column("severity", StringType(), "Okta `severity`"),
        column("display_message", StringType(), "Okta `displayMessage`"),
        column("actor_id", StringType(), "Okta `actor.id`"),
        column("actor_type", StringType(), "Okta `actor.type`"),
        column("actor_alternate_id", StringType(), "Okta `actor.alternateId` (login name)"),
        column("actor_display_name", StringType(), "Okta `actor.displayName`"),
        column("client_ip", StringType(), "Okta `client.ipAddress`"),
        column("user_agent", StringType(), "Okta `client.userAgent.rawUserAgent`"),
        column("client_os", StringType(), "Okta `client.userAgent.os`"),
        column("client_browser", StringType(), "Okta `client.userAgent.browser`"),
        column("client_device", StringType(), "Okta `client.device`"),
        column("device_id", StringType(), "Device or host asset id"),
        column("device_name", StringType(), "Okta `device.name`"),
        column("outcome_result", StringType(), "Okta `outcome.result`"),
        column("outcome_reason", StringType(), "Okta `outcome.reason`"),
        column("target_app", StringType(), "`displayName` of the first target of type AppInstance"),
        column("target_app_id", StringType(), "`id` of that target"),
        column(
            "external_session_id", StringType(), "Okta `authenticationContext.externalSessionId`"
        ),
        column("transaction_id", StringType(), "Okta `transaction.id`"),
    ),
    "windows": (
        column(
            "event_time_local",
            StringType(),
            "NXLog `EventTime` (host local time), else a flat export's `TimeCreated`",
        ),
        column(
            "hostname",
            StringType(),
            "The computer that logged the event: `Hostname`, `winlog.computer_name`, "
            "`computer_name` or evtx `System.Computer`",
        ),
        column(
            "channel",
            StringType(),
            "`Channel`, `winlog.channel`, `log_name` or evtx `System.Channel`",
        ),
        column(
            "event_id",
            IntegerType(),
            "`EventID`, `winlog.event_id`, `event_id` or evtx `System.EventID`",
        ),
        column(
            "event_type",
            StringType(),
            "NXLog `EventType` vocabulary (AUDIT_SUCCESS, AUDIT_FAILURE, INFO, ...); "
            "from the keywords and level in the other shapes",
        ),
        column(
            "record_number",
            LongType(),
            "`RecordNumber`, `winlog.record_id`, `record_number` or evtx `System.EventRecordID`",
        ),
        column("target_user_name", StringType(), "Event data `TargetUserName`"),
        column("target_domain_name", StringType(), "Event data `TargetDomainName`"),
        column("subject_user_name", StringType(), "Event data `SubjectUserName`"),
        column("subject_domain_name", StringType(), "Event data `SubjectDomainName`"),
        column("logon_type", IntegerType(), "Windows logon type"),
        column("ip_address", StringType(), "Event data `IpAddress`"),
        column("ip_port", IntegerType(), "Event data `IpPort`"),
        column("workstation_name", StringType(), "Event data `WorkstationName`"),
        column("status", StringType(), "Status of the decision"),
        column("sub_status", StringType(), "Event data `SubStatus`"),
        column("process_name", StringType(), "Executable of the process (path as logged)"),
        column("new_process_name", StringType(), "Event data `NewProcessName`"),
        column("parent_process_name", StringType(), "Executable of the parent process"),
        column("command_line", StringType(), "Command line of the process"),
        column("image", StringType(), "Sysmon `Image`"),
        column("parent_image", StringType(), "Sysmon `ParentImage`"),
        column("sysmon_user", StringType(), "Sysmon `User`"),
        column("share_name", StringType(), "Event data `ShareName`"),
        column("privilege_list", StringType(), "Event data `PrivilegeList`"),
        column("source_ip", StringType(), "Sysmon `SourceIp`"),
        column("destination_ip", StringType(), "Sysmon `DestinationIp`"),
        column("destination_port", IntegerType(), "Sysmon `DestinationPort`"),
        column(
            "provider",
            StringType(),
            "The event provider: `SourceName`, `winlog.provider_name`, `source_name` or evtx "
            "`System.Provider.Name`",
        ),
        column(
            "event_data",
            MapType(StringType(), StringType(), True),
            "Every EventData/UserData field of the event by its Windows name, values as text "
            "(NXLog: every top-level key that is not a system or transport field)",
        ),
        column(
            "log_format",
            StringType(),
            "The JSON shape of the line: nxlog (flat NXLog/Logstash), winlogbeat or evtx "
            "(evtx_dump records)",
        ),
    ),
    "zeek_conn": (
        column("sensor", StringType(), "Zeek sensor (from the file name)"),
        column("uid", StringType(), "Zeek `uid` (connection id)"),
        column("orig_h", StringType(), "Zeek `id.orig_h`"),
        column("orig_p", IntegerType(), "Zeek `id.orig_p`"),
        column("resp_h", StringType(), "Zeek `id.resp_h`"),
        column("resp_p", IntegerType(), "Zeek `id.resp_p`"),
        column("proto", StringType(), "Zeek `proto`"),
        column("service", StringType(), "Zeek `service`"),
        column("duration", DoubleType(), "Zeek `duration` (seconds)"),
        column("orig_bytes", LongType(), "Zeek `orig_bytes`"),
        column("resp_bytes", LongType(), "Zeek `resp_bytes`"),
        column("conn_state", StringType(), "Zeek `conn_state`"),
        column("missed_bytes", LongType(), "Zeek `missed_bytes`"),
        column("history", StringType(), "Zeek `history`"),
        column("orig_pkts", LongType(), "Zeek `orig_pkts`"),
        column("orig_ip_bytes", LongType(), "Zeek `orig_ip_bytes`"),
        column("resp_pkts", LongType(), "Zeek `resp_pkts`"),
        column("resp_ip_bytes", LongType(), "Zeek `resp_ip_bytes`"),
        column("label", StringType(), "Stratosphere-style `label`, where the capture has one"),
        column("detailed_label", StringType(), "Stratosphere-style `detailed-label`"),
    ),
    "zeek_dns": (
        column("sensor", StringType(), "Zeek sensor (from the file name)"),
        column("uid", StringType(), "Zeek `uid`"),
        column("orig_h", StringType(), "Zeek `id.orig_h`"),
        column("orig_p", IntegerType(), "Zeek `id.orig_p`"),
        column("resp_h", StringType(), "Zeek `id.resp_h`"),
        column("resp_p", IntegerType(), "Zeek `id.resp_p`"),
        column("proto", StringType(), "Zeek `proto`"),
        column("trans_id", IntegerType(), "Zeek `trans_id`"),
        column("query", StringType(), "Zeek `query`"),
        column("qtype_name", StringType(), "Zeek `qtype_name`"),
        column("rcode_name", StringType(), "Zeek `rcode_name`"),
        column("answers", ArrayType(StringType()), "Zeek `answers`"),
        column("label", StringType(), "Stratosphere-style `label`"),
    ),
    "cloudtrail": (
        column("event_id", StringType(), "CloudTrail `eventID`"),
        column("event_name", StringType(), "CloudTrail `eventName`"),
        column("event_source", StringType(), "CloudTrail `eventSource`"),
        column("event_type", StringType(), "CloudTrail `eventType`"),
        column("aws_region", StringType(), "CloudTrail `awsRegion`"),
        column("source_ip", StringType(), "CloudTrail `sourceIPAddress`"),
        column("user_agent", StringType(), "CloudTrail `userAgent`"),
        column("identity_type", StringType(), "`userIdentity.type`"),
        column("principal_id", StringType(), "`userIdentity.principalId`"),
        column("identity_arn", StringType(), "`userIdentity.arn`"),
        column("account_id", StringType(), "`userIdentity.accountId`"),
        column("access_key_id", StringType(), "`userIdentity.accessKeyId`"),
        column("user_name", StringType(), "`userIdentity.userName`"),
        column("error_code", StringType(), "CloudTrail `errorCode`"),
        column("error_message", StringType(), "CloudTrail `errorMessage`"),
        column("request_parameters", StringType(), "`requestParameters` as JSON text"),
        column("response_elements", StringType(), "`responseElements` as JSON text"),
        column("read_only", StringType(), "CloudTrail `readOnly`"),
        column("recipient_account_id", StringType(), "CloudTrail `recipientAccountId`"),
    ),
    "sshd": (
        column("host", StringType(), "Syslog host name"),
        column("pid", IntegerType(), "sshd process id"),
        column("message", StringType(), "The syslog message after `sshd[pid]:`"),
        column(
            "ssh_event",
            StringType(),
            "What the message says: accepted, failed, invalid_user, disconnect, ...",
        ),
        column("auth_method", StringType(), "password, publickey, keyboard-interactive, ..."),
        column("user", StringType(), "The account named"),
        column("src_ip", StringType(), "Source IP address"),
        column("src_port", IntegerType(), "Source port"),
        column("invalid_user", BooleanType(), "sshd said the user does not exist"),
    ),
}

_BRONZE_DESCRIPTIONS = {
    "idp": "Okta System Log events (JSON lines)",
    "windows": "Windows events of every channel (NXLog flat JSON, Winlogbeat JSON or evtx_dump "
    "JSON records)",
    "zeek_conn": "Zeek conn.log (JSON or TSV with #fields headers)",
    "zeek_dns": "Zeek dns.log (JSON or TSV with #fields headers)",
    "cloudtrail": "AWS CloudTrail records (one per line, or S3 delivery files with Records)",
    "sshd": "sshd syslog lines (RFC 3164)",
}

# Sources one raw line of which can hold several bronze rows (CloudTrail's S3 delivery files: one
# JSON document with a `Records` array). Elsewhere (`_file`, `_line`) names one bronze row.
SEVERAL_ROWS_PER_LINE = frozenset({"cloudtrail"})

BRONZE: dict[str, Table] = {
    source: _table(
        f"bronze.{source}",
        (*BRONZE_COMMON, *_BRONZE_FIELDS[source]),
        f"{_BRONZE_DESCRIPTIONS[source]}: every line of the day's raw files, parsed or not, "
        "with its file and line",
        owner=INGEST,
        writer=_INGEST_WRITER,
        readers=("validate", "normalize", "erasure"),
        docs="docs/ingest.md",
    )
    for source in SOURCES
}


def bronze_fields(source: str) -> list[StructField]:
    """The vendor columns of `bronze.<source>` (after the common lineage columns)."""
    return [c.field for c in _BRONZE_FIELDS[source]]


INGEST_LOG = _table(
    "ops.ingest_log",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column(
            "source",
            StringType(),
            "The telemetry source: idp, windows, zeek_conn, zeek_dns, cloudtrail or sshd",
            nullable=False,
        ),
        column("_file", StringType(), "Path of the raw file", nullable=False),
        column("lines_read", LongType(), "Every line in the file"),
        column("header_lines", LongType(), "Format metadata (Zeek #fields ...), not events"),
        column("rows", LongType(), "Bronze rows written (parsed + unparseable)"),
        column("unparseable", LongType(), "Lines that did not parse"),
        column(
            "_batch_id",
            StringType(),
            "Deterministic id of the ingest batch (source, date, files)",
            nullable=False,
        ),
    ),
    "One row per raw file and date: lines read, header lines, bronze rows, unparseable lines",
    partition_by=SMALL,
    owner=INGEST,
    writer=_INGEST_WRITER,
    readers=("ingest (late deliveries)", "metrics"),
    docs="docs/ingest.md",
)

# ---------------------------------------------------------------------------------------
# data quality (ingest, validate, normalize)
# ---------------------------------------------------------------------------------------

DQ_RESULTS = _table(
    "ops.dq_results",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column(
            "source",
            StringType(),
            "The telemetry source: idp, windows, zeek_conn, zeek_dns, cloudtrail or sshd "
            "(geolocation for the reference check)",
            nullable=False,
        ),
        column(
            "suite",
            StringType(),
            "Data-quality suite: a source, ingest, silver_events, or reference (the "
            "geolocation database normalize used)",
        ),
        column(
            "expectation", StringType(), "The expectation (suite.type(columns)[id])", nullable=False
        ),
        column("column", StringType(), "The column the expectation checks"),
        column(
            "success", BooleanType(), "Whether the expectation held for the date", nullable=False
        ),
        column("unexpected_count", LongType(), "Rows that failed the expectation"),
        column("element_count", LongType(), "Rows the expectation considered"),
        column(
            "critical",
            BooleanType(),
            "A failure marks the source degraded for the date",
            nullable=False,
        ),
        column(
            "details", StringType(), "JSON text with the expectation's kwargs and observed value"
        ),
    ),
    "Per date and source, the outcome of every expectation: delivery and schema drift (ingest), "
    "the source suites (validate), the silver contract (normalize)",
    partition_by=SMALL,
    owner="data quality (ingest, validate, normalize: each replaces its own suites' rows)",
    writer="jobs.quality.results",
    readers=("metrics", "report"),
    docs="docs/data_quality.md",
)

SOURCE_STATUS = _table(
    "ops.source_status",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column(
            "source",
            StringType(),
            "The telemetry source: idp, windows, zeek_conn, zeek_dns, cloudtrail or sshd",
            nullable=False,
        ),
        column("status", StringType(), "Ok | degraded | missing", nullable=False),
        column("reasons", ArrayType(StringType()), "Plain-language reasons, strongest first"),
    ),
    "Per date and source: ok, degraded (a critical expectation failed) or missing",
    partition_by=SMALL,
    owner="validate",
    writer="jobs.stages.validate.stage",
    readers=("score", "recommend", "metrics"),
    docs="docs/data_quality.md",
)

# ---------------------------------------------------------------------------------------
# silver
# ---------------------------------------------------------------------------------------

_NORMALIZE_WRITER = "jobs.stages.normalize.stage"

SILVER_EVENTS = _table(
    "silver.events",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column(
            "event_uid", StringType(), "Deterministic: source + vendor event key", nullable=False
        ),
        column(
            "source",
            StringType(),
            "The telemetry source: idp, windows, zeek_conn, zeek_dns, cloudtrail or sshd",
            nullable=False,
        ),
        column("event_time", TimestampType(), "UTC", nullable=False),
        column(
            "class_name",
            StringType(),
            "Authentication | network | dns | process | api | module | file | registry | "
            "script | service | account_change | group_management | event_log | scheduled_job "
            "| other (an event type without a mapping)",
        ),
        column(
            "activity_name",
            StringType(),
            "Logon, logoff, sso, mfa, privilege_use, connection, query, launch, access, load, "
            "api_call, ...; event_<id> for an unmapped Windows event",
        ),
        column("status", StringType(), "Success | failure | unknown"),
        column("status_detail", StringType(), "The vendor's own outcome token"),
        column("user_id", StringType(), "Canonical user id (directory), or null"),
        column("user_name_raw", StringType(), "The name as the feed wrote it"),
        column("user_type", StringType(), "Human | admin | service | break_glass | unknown"),
        column(
            "peer_group", StringType(), "Department/role peer group from the identity directory"
        ),
        column(
            "device_id",
            StringType(),
            "The endpoint the activity came from (IdP device or host asset id)",
        ),
        column("src_ip", StringType(), "Source IP address"),
        column("src_port", IntegerType(), "Source port"),
        column("src_country", StringType(), "ISO country code of the source IP (geolocation)"),
        column("src_city", StringType(), "City of the source IP (geolocation)"),
        column("src_lat", DoubleType(), "Latitude of the source IP"),
        column("src_lon", DoubleType(), "Longitude of the source IP"),
        column("src_asn", LongType(), "Autonomous system number of the source IP"),
        column("src_as_org", StringType(), "Organisation of that autonomous system"),
        column("src_is_internal", BooleanType(), "The source IP lies in an internal network range"),
        column("src_is_known_egress", BooleanType(), "Corporate egress / VPN range"),
        column("dst_host", StringType(), "Canonical asset id of the target host"),
        column("dst_ip", StringType(), "Destination IP address"),
        column("dst_port", IntegerType(), "Destination port"),
        column("protocol", StringType(), "Transport protocol (tcp, udp, icmp)"),
        column("bytes_in", LongType(), "Bytes received, from the entity's point of view"),
        column("bytes_out", LongType(), "Bytes sent, from the entity's point of view"),
        column("process_name", StringType(), "Executable of the process (path as logged)"),
        column("parent_process_name", StringType(), "Executable of the parent process"),
        column("command_line", StringType(), "Command line of the process"),
        column("app_name", StringType(), "SSO application or cloud service"),
        column("dns_query", StringType(), "Queried DNS name"),
        column("dns_rcode", StringType(), "DNS response code name"),
        column("cloud_action", StringType(), "Cloud API action (CloudTrail eventName)"),
        column(
            "cloud_service",
            StringType(),
            "Cloud service (CloudTrail eventSource without the domain)",
        ),
        column("cloud_resource", StringType(), "Resource the cloud action names"),
        column("cloud_region", StringType(), "Cloud region"),
        column("logon_type", IntegerType(), "Windows logon type"),
        column(
            "session_hint",
            StringType(),
            "Vendor session id where one exists (Okta externalSessionId)",
        ),
        column("is_privileged", BooleanType(), "The activity used or grants privileges"),
        column("asset_criticality", StringType(), "Of dst_host (or device for endpoint activity)"),
        column("asset_tags", ArrayType(StringType()), "Tags of the asset from the inventory"),
        column(
            "event_date",
            DateType(),
            "UTC date of event_time: the event's own date, which may differ from run_date (the "
            "delivery date) for a late event or a source whose clock is off",
        ),
        column("channel", StringType(), "Windows: the event log (Security, Sysmon, ...)"),
        column("event_id", IntegerType(), "Windows: the event ID"),
        column("provider", StringType(), "Windows: the event provider"),
        column(
            "event_data",
            MapType(StringType(), StringType(), True),
            "Windows: every EventData/UserData field of the event by its Windows name, as text",
        ),
        column("bronze_file", StringType(), "Lineage: raw file the event came from"),
        column("bronze_line", LongType(), "Lineage: line of that file"),
        column("bronze_batch_id", StringType(), "Lineage back to bronze"),
    ),
    "One event schema for every source (OCSF-aligned names), UTC, canonical user and device "
    "ids, outcome vocabulary, geolocation and asset enrichment",
    owner="normalize",
    writer=_NORMALIZE_WRITER,
    readers=("baselines", "score", "erasure"),
    docs="docs/normalization.md",
)

SILVER_QUARANTINE = _table(
    "silver.quarantine",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column(
            "source",
            StringType(),
            "The telemetry source: idp, windows, zeek_conn, zeek_dns, cloudtrail or sshd",
            nullable=False,
        ),
        column(
            "rule", StringType(), "The expectation (or parser check) that failed", nullable=False
        ),
        column("reason", StringType(), "Plain-language reason", nullable=False),
        column("raw", StringType(), "The raw line exactly as read"),
        column("bronze_file", StringType(), "Lineage: raw file the event came from"),
        column("bronze_line", LongType(), "Lineage: line of that file"),
        column("bronze_batch_id", StringType(), "Lineage: ingest batch of the bronze row"),
    ),
    "Bronze rows kept out of silver, each with the rule that failed and why",
    owner="normalize",
    writer=_NORMALIZE_WRITER,
    readers=("metrics", "analysts"),
    docs="docs/normalization.md",
)

RECONCILIATION = _table(
    "ops.reconciliation",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column(
            "source",
            StringType(),
            "The telemetry source: idp, windows, zeek_conn, zeek_dns, cloudtrail or sshd",
            nullable=False,
        ),
        column("raw_rows", LongType(), "Bronze rows of the date"),
        column("events", LongType(), "Events"),
        column("quarantined", LongType(), "Rows quarantined"),
        column("duplicates", LongType(), "Rows dropped as duplicates of an earlier row"),
        column(
            "balanced",
            BooleanType(),
            "Raw_rows = events + quarantined + duplicates",
            nullable=False,
        ),
    ),
    "Per date and source: bronze rows = silver events + quarantined + duplicates",
    partition_by=SMALL,
    owner="normalize",
    writer=_NORMALIZE_WRITER,
    readers=("metrics",),
    docs="docs/normalization.md",
)

# ---------------------------------------------------------------------------------------
# gold: baselines
# ---------------------------------------------------------------------------------------

_BASELINES_WRITER = "jobs.stages.baselines.stage"

ENTITY_DAILY = _table(
    "gold.entity_daily",
    (
        column("run_date", DateType(), "The silver.events run_date it comes from", nullable=False),
        column("entity_type", StringType(), "User | service_account | host", nullable=False),
        column("entity_id", StringType(), "Canonical user id or asset id", nullable=False),
        column("peer_group", StringType(), "Department/role from the directory (accounts only)"),
        column("tz", StringType(), "Time zone the hour-of-week buckets use (UTC when unknown)"),
        column("events", LongType(), "Events"),
        column("failures", LongType(), "Status = failure"),
        column("signins", LongType(), "Successful logons by the account, or received by the host"),
        column("signin_failures", LongType(), "Failed sign-ins"),
        column("privileged_actions", LongType(), "Is_privileged = true"),
        column("bytes_in", LongType(), "From the entity's point of view"),
        column("bytes_out", LongType(), "Bytes sent, from the entity's point of view"),
        column("first_event_time", TimestampType(), "First event of the day (UTC)"),
        column("last_event_time", TimestampType(), "Last event of the day (UTC)"),
        column("hour_of_week", ArrayType(LongType(), True), "168 event counts"),
        *[column(name, ITEM_COUNTS, "Events per item that day") for name in BASELINE_ITEM_SETS],
    ),
    "Per entity (user, service account, host) and day: counts, hour-of-week histogram and "
    "the items it touched",
    owner="baselines",
    writer=_BASELINES_WRITER,
    readers=("baselines", "metrics"),
    docs="docs/baselines.md",
)

BASELINES = _table(
    "gold.baselines",
    (
        column(
            "run_date",
            DateType(),
            "The day this profile is for (built from days < run_date)",
            nullable=False,
        ),
        column(
            "entity_type",
            StringType(),
            "User | service_account | host | peer_group",
            nullable=False,
        ),
        column(
            "entity_id",
            StringType(),
            "Canonical id of the entity (user id, asset id, IP)",
            nullable=False,
        ),
        column(
            "peer_group", StringType(), "Department/role peer group from the identity directory"
        ),
        column(
            "tz",
            StringType(),
            "Time zone of the hour-of-week buckets (latest seen; null for peer groups)",
        ),
        column(
            "in_learning",
            BooleanType(),
            "Still in the learning period: compared with its peer group, not itself",
            nullable=False,
        ),
        column(
            "compare_to_type",
            StringType(),
            "Entity type of the comparator (itself or its peer group)",
            nullable=False,
        ),
        column("compare_to", StringType(), "Id of the comparator", nullable=False),
        column("first_seen", DateType(), "First day with activity in the lake"),
        column("last_seen", DateType(), "Last day with activity before run_date"),
        column("days_active_to_date", IntegerType(), "Days with activity before run_date"),
        column("signins_to_date", LongType(), "Successful sign-ins before run_date"),
        column("habit_window_days", IntegerType(), "Length of the habit window (days)"),
        column(
            "country_device_window_days",
            IntegerType(),
            "Length of the country/device window (days)",
        ),
        column("host_window_days", IntegerType(), "Length of the host window (days)"),
        column("hour_of_week", ArrayType(LongType(), True), "Habit window sums"),
        *[
            column(
                name, ITEM_HISTORY, "First seen, last seen, days and events per item in its window"
            )
            for name in BASELINE_ITEM_SETS
        ],
        column(
            "days_observed",
            IntegerType(),
            "Observed days (member-days for a peer group) in the habit window",
        ),
        column(
            "members_observed", IntegerType(), "Peer groups: distinct members in the habit window"
        ),
        column("events_median", DoubleType(), "Median daily events in the habit window"),
        column("events_mad", DoubleType(), "Median absolute deviation of daily events"),
        column("failures_median", DoubleType(), "Median daily failures"),
        column("failures_mad", DoubleType(), "MAD of daily failures"),
        column("bytes_in_median", DoubleType(), "Median daily bytes in"),
        column("bytes_in_mad", DoubleType(), "MAD of daily bytes in"),
        column("bytes_out_median", DoubleType(), "Median daily bytes out"),
        column("bytes_out_mad", DoubleType(), "MAD of daily bytes out"),
        column("privileged_actions_total", LongType(), "Privileged actions in the habit window"),
        column(
            "privileged_days", IntegerType(), "Days with privileged actions in the habit window"
        ),
        column("daily_values", DAILY_VALUES, "The habit window's days (state)"),
    ),
    "Per entity and peer group, the profile a day is compared with, built from the days "
    "before it (30/90/180-day windows, learning period)",
    owner="baselines",
    writer=_BASELINES_WRITER,
    readers=("baselines", "score", "metrics"),
    docs="docs/baselines.md",
)

# ---------------------------------------------------------------------------------------
# gold: scoring
# ---------------------------------------------------------------------------------------

_SCORE_WRITER = "jobs.stages.score.stage"

SESSION_SCORES = _table(
    "gold.session_scores",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column("session_id", StringType(), "Deterministic", nullable=False),
        column("user_id", StringType(), "Canonical user id from the identity directory"),
        column("device_id", StringType(), "Device or host asset id"),
        column("src_ip", StringType(), "Source IP address"),
        column("src_country", StringType(), "ISO country code of the source IP (geolocation)"),
        column("session_start", TimestampType(), "Time of the first event of the session (UTC)"),
        column("session_end", TimestampType(), "Time of the last event of the session (UTC)"),
        column("event_count", LongType(), "Events in the session"),
        column("failure_count", LongType(), "Failed events in the session"),
        column(
            "signals",
            ArrayType(SIGNAL),
            "Explainable signals that fired, with value, threshold, contribution and detail",
        ),
        column("model_score", DoubleType(), "Anomaly score of the champion model, 0..1"),
        column(
            "model_version",
            StringType(),
            "Registered model version that scored the row (null: signals only)",
        ),
        column("risk", IntegerType(), "0-100", nullable=False),
        column("reasons", ArrayType(StringType()), "Top reasons, plain language"),
        column("degraded_sources", ArrayType(StringType()), "Sources degraded that day"),
        column("session_kind", StringType(), "Auth | auth_source | host | network | dns | cloud"),
        column(
            "entity_type",
            StringType(),
            "The entity the row counts for: user | service_account | host | ip",
        ),
        column("entity_id", StringType(), "Canonical id of the entity (user id, asset id, IP)"),
        column("user_type", StringType(), "Human, admin, service or break_glass"),
        column(
            "peer_group", StringType(), "Department/role peer group from the identity directory"
        ),
        column("features", MapType(StringType(), DoubleType(), True), "Model inputs"),
    ),
    "Sessions with their explainable signals, model score, risk 0-100 and reasons",
    owner="score",
    writer=_SCORE_WRITER,
    readers=("train", "metrics"),
    docs="docs/scoring.md",
)

ENTITY_RISK = _table(
    "gold.entity_risk",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column("entity_type", StringType(), "User | host | service_account | ip", nullable=False),
        column(
            "entity_id",
            StringType(),
            "Canonical id of the entity (user id, asset id, IP)",
            nullable=False,
        ),
        column(
            "risk", IntegerType(), "0-100, today's evidence plus decayed history", nullable=False
        ),
        column("risk_today", IntegerType(), "Risk from today's evidence alone, 0-100"),
        column("reasons", ArrayType(StringType()), "Plain-language reasons, strongest first"),
        column(
            "signals",
            ArrayType(SIGNAL),
            "Explainable signals that fired, with value, threshold, contribution and detail",
        ),
        column("sessions", LongType(), "Sessions of the entity that day"),
        column(
            "degraded_sources",
            ArrayType(StringType()),
            "Sources degraded that day (their evidence weighs less)",
        ),
        column(
            "peer_group", StringType(), "Department/role peer group from the identity directory"
        ),
        column("user_type", StringType(), "For users: human | admin | service | break_glass"),
        column("is_privileged", BooleanType(), "The activity used or grants privileges"),
        column("asset_criticality", StringType(), "For hosts"),
    ),
    "Risk per entity and day: today's evidence plus decayed history, with reasons",
    owner="score",
    writer=_SCORE_WRITER,
    readers=("score (history)", "recommend", "metrics", "report", "policy diff"),
    docs="docs/scoring.md",
)

MODEL_EVIDENCE = _table(
    "ops.model_evidence",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column(
            "model_name",
            StringType(),
            "The registered model scoring looks for (scoring.model_name)",
            nullable=False,
        ),
        column(
            "status",
            StringType(),
            "Champion: scored with the checked champion | none: no champion yet | "
            "incompatible: the champion has another feature list | unavailable: the registry "
            "could not be reached and scoring.registry_unavailable allowed signals alone",
            nullable=False,
        ),
        column("model_version", StringType(), "The version scored with (status champion)"),
        column(
            "model_digest",
            StringType(),
            "Sha256 of the model file scored with: the digest training recorded, checked "
            "before loading",
        ),
        column(
            "signed",
            BooleanType(),
            "The digest's HMAC was checked with POLICYLAKE_AUDIT_KEY (null without a model)",
        ),
        column("previous_date", DateType(), "The latest earlier date recorded, when scored"),
        column("previous_version", StringType(), "Model_version of previous_date"),
        column("previous_digest", StringType(), "Model_digest of previous_date"),
        column(
            "changed",
            BooleanType(),
            "(model_version, model_digest) differ from previous_date's (no earlier date: "
            "from none)",
            nullable=False,
        ),
        column(
            "degraded",
            BooleanType(),
            "Model evidence to discount: status is not champion, or the model changed",
            nullable=False,
        ),
        column(
            "reason", StringType(), "Plain language: what was used, or why none", nullable=False
        ),
    ),
    "Per date, the model the score stage scored with (version and file digest) or why none, "
    "and whether that differs from the date before: model evidence for the guardrails",
    owner="score",
    writer=_SCORE_WRITER,
    readers=("recommend (guardrails)", "auditors"),
    partition_by=SMALL,
    docs="docs/scoring.md",
)

# ---------------------------------------------------------------------------------------
# gold: decisions
# ---------------------------------------------------------------------------------------

_RECOMMEND_WRITER = "jobs.stages.recommend.stage"

POLICY_RECOMMENDATIONS = _table(
    "gold.policy_recommendations",
    (
        column(
            "rec_id",
            StringType(),
            "Sha256(target_type, target_id, action, run_date)",
            nullable=False,
        ),
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column("domain", StringType(), "Identity | endpoint | network | cloud", nullable=False),
        column(
            "target_type",
            StringType(),
            "Kind of entity acted on: user, service_account, host or ip",
            nullable=False,
        ),
        column("target_id", StringType(), "Canonical id of the entity acted on", nullable=False),
        column(
            "action", StringType(), "Allow | challenge | limit | isolate | block", nullable=False
        ),
        column(
            "status",
            StringType(),
            "Approved | pending_approval | shadow | rejected | overridden | alert_only",
            nullable=False,
        ),
        column("valid_from", TimestampType(), "Start of enforcement (UTC)", nullable=False),
        column(
            "valid_until",
            TimestampType(),
            "End of enforcement (UTC); enforcement is always time-limited",
            nullable=False,
        ),
        column("risk", IntegerType(), "Risk 0-100", nullable=False),
        column("reason", StringType(), "Plain-language reason"),
        column("policy_id", StringType(), "Id of the policy that decided", nullable=False),
        column("policy_version", StringType(), "Version of that policy", nullable=False),
        column(
            "domains",
            ArrayType(StringType()),
            "Every domain whose policy reached this action",
            nullable=False,
        ),
        column("override_action", StringType(), "The analyst's action when status is overridden"),
    ),
    "What enforcement polls: one row per target and action, with status and validity "
    "(Change Data Feed on)",
    owner="recommend (analyst decisions refresh its statuses)",
    writer="jobs.stages.recommend.recommendations",
    readers=("export", "metrics", "report", "enforcement systems", "feedback"),
    properties={"delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "false"},
    docs="docs/policies.md",
)

DECISION_LOG = _table(
    "gold.decision_log",
    (
        column(
            "rec_id",
            StringType(),
            "Id of the recommendation: sha256(target_type, target_id, action, run_date)",
            nullable=False,
        ),
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column(
            "inputs",
            StringType(),
            "JSON: risk, context (criticality, user type, degraded sources ...)",
        ),
        column(
            "signals",
            ArrayType(SIGNAL),
            "Explainable signals that fired, with value, threshold, contribution and detail",
        ),
        column("thresholds", StringType(), "JSON: the tier conditions that matched"),
        column("policy_id", StringType(), "Id of the policy that decided", nullable=False),
        column("policy_version", StringType(), "Version of that policy", nullable=False),
        column("policy_hash", StringType(), "Sha256 of the policy file content", nullable=False),
        column(
            "exceptions_checked",
            ArrayType(StringType()),
            "Exceptions and allowlist entries checked for the target",
        ),
        column("guardrails", StringType(), "JSON: which guardrails changed the action or status"),
        column("action", StringType(), "Allow, challenge, limit, isolate or block", nullable=False),
        column("status", StringType(), "Status of the decision"),
        column("reason", StringType(), "Plain language, names the signals and the policy"),
        column("domain", StringType(), "Identity, endpoint, network or cloud"),
        column(
            "target_type",
            StringType(),
            "Kind of entity acted on: user, service_account, host or ip",
        ),
        column("target_id", StringType(), "Canonical id of the entity acted on"),
        column("risk", IntegerType(), "Risk 0-100"),
        column("tier", StringType(), "The tier that matched (null: none did, so allow)"),
        column("policy_action", StringType(), "The tier's action before guardrails"),
        column("policy_mode", StringType(), "Enforce | shadow"),
    ),
    "Why: every decision, allow included, with inputs, signals, thresholds, policy id, "
    "version and hash, exceptions checked, guardrails and a reason sentence",
    owner="recommend",
    writer=_RECOMMEND_WRITER,
    readers=("export", "metrics", "feedback", "verify", "policy diff"),
    docs="docs/policies.md",
)

_AUDIT_WRITER = "jobs.governance.audit"

DECISION_LOG_CHAIN = _table(
    "ops.decision_log_chain",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column("position", IntegerType(), "1-based: (rec_id, policy_id, row_hash)", nullable=False),
        column(
            "rec_id",
            StringType(),
            "Id of the recommendation: sha256(target_type, target_id, action, run_date)",
            nullable=False,
        ),
        column("policy_id", StringType(), "Id of the policy that decided", nullable=False),
        column("row_hash", StringType(), "Sha256 of the row's canonical JSON", nullable=False),
        column(
            "chain_hash", StringType(), "Sha256(previous chain_hash || row_hash)", nullable=False
        ),
    ),
    "The hash chain over gold.decision_log: one row per decision, in chain order",
    partition_by=SMALL,
    owner="recommend (audit)",
    writer=_AUDIT_WRITER,
    readers=("verify",),
    docs="docs/audit.md",
)

AUDIT_HEADS = _table(
    "ops.audit_heads",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column("rows", LongType(), "Rows chained that day", nullable=False),
        column("head", StringType(), "The last chain_hash (the seed when no rows)", nullable=False),
        column(
            "previous_head", StringType(), "Head of the previous chained date (the seed's input)"
        ),
        column("previous_date", DateType(), "Previous chained date"),
        column(
            "hmac",
            StringType(),
            "HMAC-SHA256(POLICYLAKE_AUDIT_KEY, every other column); null without a key",
        ),
        column("reason", StringType(), "Recommend | relinked after ... | erasure <erasure_id> ..."),
    ),
    "Per chained date: the chain head, the previous date's head and an HMAC over both",
    partition_by=SMALL,
    owner="recommend (audit)",
    writer=_AUDIT_WRITER,
    readers=("verify", "recommend (the next date chains onto it)"),
    docs="docs/audit.md",
)

ANALYST_DECISIONS = _table(
    "ops.analyst_decisions",
    (
        column(
            "decision_id",
            StringType(),
            "Sha256(rec_id|decision|analyst|decided_at)",
            nullable=False,
        ),
        column(
            "rec_id",
            StringType(),
            "Id of the recommendation: sha256(target_type, target_id, action, run_date)",
            nullable=False,
        ),
        column("run_date", DateType(), "Of the recommendation decided on", nullable=False),
        column("decision", StringType(), "Approve | reject | override", nullable=False),
        column("override_action", StringType(), "The action to enforce instead (override only)"),
        column(
            "verdict",
            StringType(),
            "True_positive | false_positive | null (a label for training and metrics)",
        ),
        column("analyst", StringType(), "Who decided (as the file says)", nullable=False),
        column("reason", StringType(), "Plain-language reason"),
        column("decided_at", TimestampType(), "UTC", nullable=False),
        column(
            "target_type", StringType(), "Copied from the recommendation, so labels stand alone"
        ),
        column("target_id", StringType(), "Canonical id of the entity acted on"),
        column("action", StringType(), "Allow, challenge, limit, isolate or block"),
        column("policy_id", StringType(), "Id of the policy that decided"),
        column("source_file", StringType(), "The analyst decision file the row came from"),
    ),
    "Analyst approvals, rejections and overrides of recommendations, with verdicts (labels)",
    partition_by=SMALL,
    owner="feedback",
    writer="jobs.governance.decisions",
    readers=("recommend", "metrics", "train"),
    docs="docs/policies.md",
)

REFUSED_DECISIONS = _table(
    "ops.refused_decisions",
    (
        column("refusal_id", StringType(), "Sha256 of what was refused and why", nullable=False),
        column(
            "run_date",
            DateType(),
            "The logical date of the run that refused it (feedback: the drop folder's day, "
            "else the UTC day it ran; recommend: the run date)",
            nullable=False,
        ),
        column("refused_at", TimestampType(), "UTC, wall clock", nullable=False),
        column("stage", StringType(), "Feedback | recommend", nullable=False),
        column(
            "rule",
            StringType(),
            "Unknown_analyst | key_expired | not_permitted | unsigned | bad_signature | "
            "future | before_recommendation | shadow | above_ceiling",
            nullable=False,
        ),
        column("reason", StringType(), "Why, in plain language", nullable=False),
        column("rec_id", StringType(), "The recommendation the decision was about"),
        column("decision", StringType(), "Approve | reject | override"),
        column("override_action", StringType(), "The action the override asked for"),
        column("analyst", StringType(), "Who the file says decided (not authenticated)"),
        column("decided_at", TimestampType(), "When the file says it was decided (UTC)"),
        column("source_file", StringType(), "The analyst decision file"),
        column("line", IntegerType(), "Its line in the file"),
    ),
    "Analyst decisions refused (unauthenticated, out of time bounds, or against a "
    "guardrail), with the rule and the reason; never applied",
    owner="feedback (and recommend, when a guardrail overrules an earlier override)",
    writer="jobs.governance.decisions",
    readers=("metrics", "report (through metrics)", "auditors"),
    docs="docs/policies.md",
)

# ---------------------------------------------------------------------------------------
# gold: metrics
# ---------------------------------------------------------------------------------------

METRICS_DAILY = _table(
    "gold.metrics_daily",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column("metric", StringType(), "Recommendations, feature_psi, alert, ...", nullable=False),
        column(
            "dimensions", METRIC_DIMENSIONS, "E.g. {action: block, ...}; may be {}", nullable=False
        ),
        column("value", DoubleType(), "Value of the metric", nullable=False),
    ),
    "Long form for BI: one row per date, metric and dimensions (volumes, data quality, "
    "coverage, risk, drift, detection quality, alerts)",
    partition_by=SMALL,
    owner="metrics",
    writer="jobs.stages.metrics.stage",
    readers=("report", "BI"),
    properties={"delta.enableDeletionVectors": "false"},
    docs="docs/metrics.md",
)

# ---------------------------------------------------------------------------------------
# protected data
# ---------------------------------------------------------------------------------------

PSEUDONYMS = _table(
    "ops.pseudonyms",
    (
        column(
            "run_date",
            DateType(),
            "The logical date (UTC day) of the run that wrote the row",
            nullable=False,
        ),
        column("kind", StringType(), "User | host | device", nullable=False),
        column("token", StringType(), "U_/h_/d_ + 24 hex of HMAC-SHA256(key, id)", nullable=False),
        column("identifier", StringType(), "The real id", nullable=False),
    ),
    "Restricted: pseudonym token -> identifier for the pseudonymized BI tables",
    partition_by=SMALL,
    owner="score (privacy)",
    writer="jobs.governance.privacy",
    readers=("recommend", "pseudonym resolve", "erasure"),
    restricted=True,
    docs="docs/privacy.md",
)

ERASURES = _table(
    "ops.erasures",
    (
        column("erasure_id", StringType(), "Sha256(subject_ref|erased_at)", nullable=False),
        column("erased_at", TimestampType(), "UTC, wall clock (when it happened)", nullable=False),
        column("requested_by", StringType(), "Who ran it", nullable=False),
        column("subject_ref", StringType(), "HMAC-SHA256(key, user id) or sha256", nullable=False),
        column("subject_ref_kind", StringType(), "Hmac-sha256:<key env> | sha256", nullable=False),
        column("aliases", IntegerType(), "How many spellings of the account were matched"),
        column("tables", ArrayType(StringType()), "Tables rewritten and vacuumed", nullable=False),
        column(
            "rows_deleted",
            MapType(StringType(), LongType(), True),
            "Rows deleted per table",
            nullable=False,
        ),
        column(
            "rows_redacted",
            MapType(StringType(), LongType(), True),
            "Rows redacted per table",
            nullable=False,
        ),
        column("rechained_dates", ArrayType(DateType()), "Audit chain re-recorded"),
    ),
    "One row per data-subject erasure: who, when, which tables, how many rows (never the "
    "subject's id, only a keyed hash of it)",
    owner="forget",
    writer=ERASURE_MODULE,
    readers=("auditors",),
    partition_by=(),
    date_column=None,
    restricted=True,
    docs="docs/privacy.md",
)

# ---------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------

CATALOGUE: dict[str, Table] = {
    t.name: t
    for t in (
        *BRONZE.values(),
        INGEST_LOG,
        DQ_RESULTS,
        SOURCE_STATUS,
        SILVER_EVENTS,
        SILVER_QUARANTINE,
        RECONCILIATION,
        ENTITY_DAILY,
        BASELINES,
        SESSION_SCORES,
        ENTITY_RISK,
        MODEL_EVIDENCE,
        POLICY_RECOMMENDATIONS,
        DECISION_LOG,
        DECISION_LOG_CHAIN,
        AUDIT_HEADS,
        ANALYST_DECISIONS,
        REFUSED_DECISIONS,
        METRICS_DAILY,
        PSEUDONYMS,
        ERASURES,
    )
}


def table_named(name: str) -> Table:
    """The catalogue entry named `name` (`silver.events`), or a one-line TableNameError."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise TableNameError(f"no table {name!r} in the catalogue (jobs/core/tables.py)") from None


# ---------------------------------------------------------------------------------------
# docs/tables.md
# ---------------------------------------------------------------------------------------


def _type_text(dtype: DataType) -> str:
    return dtype.simpleString().replace("<", "&lt;").replace(">", "&gt;")


def render_markdown() -> str:
    """docs/tables.md: every table with its owner, writer, readers and columns."""
    lines = [
        "# Tables",
        "",
        "Generated from the table catalogue (`jobs/core/tables.py`) by",
        "`python -m jobs.core.tables > docs/tables.md`; a test fails when this page is stale.",
        "Every table is Delta, at `<lake root>/<layer>/<name>`. *Owner* is the stage or job",
        "whose run produces the rows; *writer* is the one module that writes them.",
        "",
        "| table | owner | writer | readers | partitioned by |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in CATALOGUE.values():
        parts = ", ".join(t.partition_by) or "-"
        lines.append(
            f"| [`{t.name}`](#{t.name.replace('.', '')}) | {t.owner} | `{t.writer}` | "
            f"{', '.join(t.readers)} | {parts} |"
        )
    for t in CATALOGUE.values():
        lines += ["", f"## {t.name}", "", t.description + "."]
        facts = [f"Owner: {t.owner}; writer: `{t.writer}`; read by {', '.join(t.readers)}."]
        if t.properties:
            props = ", ".join(f"`{k}={v}`" for k, v in sorted(t.properties.items()))
            facts.append(f"Table properties: {props}.")
        if t.restricted:
            facts.append("Restricted: keep it from BI users.")
        if t.docs:
            facts.append(f"More: [{t.docs.removeprefix('docs/')}]({t.docs.removeprefix('docs/')}).")
        lines += ["", " ".join(facts), "", "| column | type | meaning |", "| --- | --- | --- |"]
        for c in t.columns:
            null = "" if c.nullable else " not null"
            lines.append(f"| `{c.name}` | {_type_text(c.type)}{null} | {c.doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
