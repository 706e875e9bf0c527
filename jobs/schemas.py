"""Table schemas, declared once. Stages check frames against them where data enters and leaves.

Column meanings are documented in docs/tables.md.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
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


def _s(name: str) -> StructField:
    return StructField(name, StringType(), True)


def _i(name: str) -> StructField:
    return StructField(name, IntegerType(), True)


def _l(name: str) -> StructField:
    return StructField(name, LongType(), True)


def _d(name: str) -> StructField:
    return StructField(name, DoubleType(), True)


# Every bronze table starts with these: the raw line, where it came from, and whether it parsed.
BRONZE_COMMON = [
    StructField(
        "run_date", DateType(), False
    ),  # the raw/<source>/<date>/ folder the line came from
    StructField("source", StringType(), False),
    StructField("_file", StringType(), False),  # path of the raw file
    StructField("_line", LongType(), False),  # 1-based line number in the raw file
    StructField(
        "_batch_id", StringType(), False
    ),  # deterministic: hash of (source, date, input files)
    StructField("raw", StringType(), True),  # the line exactly as read
    StructField("_parse_status", StringType(), False),  # parsed | unparseable
    StructField("_parse_error", StringType(), True),  # why a line is unparseable
    StructField(
        "_cast_errors", ArrayType(StringType()), True
    ),  # fields whose value had the wrong type
    StructField(
        "event_time_raw", StringType(), True
    ),  # the event's timestamp text, as the vendor wrote it
]

BRONZE_FIELDS: dict[str, list[StructField]] = {
    "idp": [
        _s("uuid"),
        _s("event_type"),
        _s("severity"),
        _s("display_message"),
        _s("actor_id"),
        _s("actor_type"),
        _s("actor_alternate_id"),
        _s("actor_display_name"),
        _s("client_ip"),
        _s("user_agent"),
        _s("client_os"),
        _s("client_browser"),
        _s("client_device"),
        _s("device_id"),
        _s("device_name"),
        _s("outcome_result"),
        _s("outcome_reason"),
        _s("target_app"),
        _s("target_app_id"),
        _s("external_session_id"),
        _s("transaction_id"),
    ],
    "windows": [
        _s("event_time_local"),
        _s("hostname"),
        _s("channel"),
        _i("event_id"),
        _s("event_type"),
        _l("record_number"),
        _s("target_user_name"),
        _s("target_domain_name"),
        _s("subject_user_name"),
        _s("subject_domain_name"),
        _i("logon_type"),
        _s("ip_address"),
        _i("ip_port"),
        _s("workstation_name"),
        _s("status"),
        _s("sub_status"),
        _s("process_name"),
        _s("new_process_name"),
        _s("parent_process_name"),
        _s("command_line"),
        _s("image"),
        _s("parent_image"),
        _s("sysmon_user"),
        _s("share_name"),
        _s("privilege_list"),
        _s("source_ip"),
        _s("destination_ip"),
        _i("destination_port"),
    ],
    "zeek_conn": [
        _s("sensor"),
        _s("uid"),
        _s("orig_h"),
        _i("orig_p"),
        _s("resp_h"),
        _i("resp_p"),
        _s("proto"),
        _s("service"),
        _d("duration"),
        _l("orig_bytes"),
        _l("resp_bytes"),
        _s("conn_state"),
        _l("missed_bytes"),
        _s("history"),
        _l("orig_pkts"),
        _l("orig_ip_bytes"),
        _l("resp_pkts"),
        _l("resp_ip_bytes"),
        _s("label"),
        _s("detailed_label"),
    ],
    "zeek_dns": [
        _s("sensor"),
        _s("uid"),
        _s("orig_h"),
        _i("orig_p"),
        _s("resp_h"),
        _i("resp_p"),
        _s("proto"),
        _i("trans_id"),
        _s("query"),
        _s("qtype_name"),
        _s("rcode_name"),
        StructField("answers", ArrayType(StringType()), True),
        _s("label"),
    ],
    "cloudtrail": [
        _s("event_id"),
        _s("event_name"),
        _s("event_source"),
        _s("event_type"),
        _s("aws_region"),
        _s("source_ip"),
        _s("user_agent"),
        _s("identity_type"),
        _s("principal_id"),
        _s("identity_arn"),
        _s("account_id"),
        _s("access_key_id"),
        _s("user_name"),
        _s("error_code"),
        _s("error_message"),
        _s("request_parameters"),
        _s("response_elements"),
        _s("read_only"),
        _s("recipient_account_id"),
    ],
    "sshd": [
        _s("host"),
        _i("pid"),
        _s("message"),
        _s("ssh_event"),
        _s("auth_method"),
        _s("user"),
        _s("src_ip"),
        _i("src_port"),
        StructField("invalid_user", BooleanType(), True),
    ],
}


def bronze_schema(source: str) -> StructType:
    return StructType([*BRONZE_COMMON, *BRONZE_FIELDS[source]])


# silver.events: one schema for every source, OCSF-aligned names, times in UTC.
SILVER_EVENTS = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("event_uid", StringType(), False),  # deterministic: source + vendor event key
        StructField("source", StringType(), False),
        StructField("event_time", TimestampType(), False),  # UTC
        _s("class_name"),  # authentication | network | dns | process | api
        _s(
            "activity_name"
        ),  # logon, logoff, sso, mfa, privilege_use, connection, query, launch, api_call, ...
        _s("status"),  # success | failure | unknown
        _s("status_detail"),  # the vendor's own outcome token
        _s("user_id"),  # canonical user id (directory), or null
        _s("user_name_raw"),  # the name as the feed wrote it
        _s("user_type"),  # human | admin | service | break_glass | unknown
        _s("peer_group"),
        _s("device_id"),  # the endpoint the activity came from (IdP device or host asset id)
        _s("src_ip"),
        _i("src_port"),
        _s("src_country"),
        _s("src_city"),
        _d("src_lat"),
        _d("src_lon"),
        _l("src_asn"),
        _s("src_as_org"),
        StructField("src_is_internal", BooleanType(), True),
        StructField("src_is_known_egress", BooleanType(), True),  # corporate egress / VPN range
        _s("dst_host"),  # canonical asset id of the target host
        _s("dst_ip"),
        _i("dst_port"),
        _s("protocol"),
        _l("bytes_in"),
        _l("bytes_out"),
        _s("process_name"),
        _s("parent_process_name"),
        _s("command_line"),
        _s("app_name"),  # SSO application or cloud service
        _s("dns_query"),
        _s("dns_rcode"),
        _s("cloud_action"),
        _s("cloud_service"),
        _s("cloud_resource"),
        _s("cloud_region"),
        _i("logon_type"),
        _s("session_hint"),  # vendor session id where one exists (Okta externalSessionId)
        StructField("is_privileged", BooleanType(), True),
        _s("asset_criticality"),  # of dst_host (or device for endpoint activity)
        StructField("asset_tags", ArrayType(StringType()), True),
        _s("bronze_file"),
        _l("bronze_line"),
        _s("bronze_batch_id"),  # lineage back to bronze
    ]
)

SILVER_QUARANTINE = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("source", StringType(), False),
        StructField("rule", StringType(), False),  # the expectation (or parser check) that failed
        StructField("reason", StringType(), False),
        _s("raw"),
        _s("bronze_file"),
        _l("bronze_line"),
        _s("bronze_batch_id"),
    ]
)

DQ_RESULTS = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("source", StringType(), False),
        _s("suite"),
        StructField("expectation", StringType(), False),
        _s("column"),
        StructField("success", BooleanType(), False),
        _l("unexpected_count"),
        _l("element_count"),
        StructField("critical", BooleanType(), False),
        _s("details"),  # JSON text with the expectation's kwargs and observed value
    ]
)

SOURCE_STATUS = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("source", StringType(), False),
        StructField("status", StringType(), False),  # ok | degraded | missing
        StructField("reasons", ArrayType(StringType()), True),
    ]
)

RECONCILIATION = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("source", StringType(), False),
        _l("raw_rows"),
        _l("events"),
        _l("quarantined"),
        _l("duplicates"),
        StructField("balanced", BooleanType(), False),
    ]
)

INGEST_LOG = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("source", StringType(), False),
        StructField("_file", StringType(), False),
        _l("lines_read"),  # every line in the file
        _l("header_lines"),  # format metadata (Zeek #fields ...), not events
        _l("rows"),  # bronze rows written (parsed + unparseable)
        _l("unparseable"),
        StructField("_batch_id", StringType(), False),
    ]
)


# --- scoring and decisions (gold) -------------------------------------------------------

# One explainable signal: what fired, how strongly, against which threshold, and why.
SIGNAL = StructType(
    [
        StructField("name", StringType(), False),  # impossible_travel, new_country, ...
        _d("value"),  # the measured quantity (km/h, count, bytes, ratio)
        _d("threshold"),  # the threshold it was compared with
        _d("contribution"),  # points it adds to the 0-100 risk
        _s("detail"),  # plain-language reason ("first sign-in from Brazil; 2,100 km ...")
        _s("source"),  # the telemetry source it is drawn from (for degraded-source rules)
    ]
)

SESSION_SCORES = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("session_id", StringType(), False),  # deterministic
        _s("user_id"),
        _s("device_id"),
        _s("src_ip"),
        _s("src_country"),
        StructField("session_start", TimestampType(), True),
        StructField("session_end", TimestampType(), True),
        _l("event_count"),
        _l("failure_count"),
        StructField("signals", ArrayType(SIGNAL), True),
        _d("model_score"),  # anomaly score of the champion model, 0..1
        _s("model_version"),
        StructField("risk", IntegerType(), False),  # 0-100
        StructField("reasons", ArrayType(StringType()), True),  # top reasons, plain language
        StructField("degraded_sources", ArrayType(StringType()), True),  # sources degraded that day
        # appended by the score stage (docs/scoring.md):
        _s("session_kind"),  # auth | auth_source | host | network | dns | cloud
        _s("entity_type"),  # the entity the row counts for: user | service_account | host | ip
        _s("entity_id"),
        _s("user_type"),
        _s("peer_group"),
        StructField("features", MapType(StringType(), DoubleType(), True), True),  # model inputs
    ]
)

ENTITY_RISK = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("entity_type", StringType(), False),  # user | host | service_account | ip
        StructField("entity_id", StringType(), False),
        StructField("risk", IntegerType(), False),  # 0-100, today's evidence plus decayed history
        StructField("risk_today", IntegerType(), True),
        StructField("reasons", ArrayType(StringType()), True),
        StructField("signals", ArrayType(SIGNAL), True),
        _l("sessions"),
        StructField("degraded_sources", ArrayType(StringType()), True),
        _s("peer_group"),
        _s("user_type"),  # for users: human | admin | service | break_glass
        StructField("is_privileged", BooleanType(), True),
        _s("asset_criticality"),  # for hosts
    ]
)

POLICY_RECOMMENDATIONS = StructType(
    [
        StructField(
            "rec_id", StringType(), False
        ),  # sha256(target_type, target_id, action, run_date)
        StructField("run_date", DateType(), False),
        StructField("domain", StringType(), False),  # identity | endpoint | network | cloud
        StructField("target_type", StringType(), False),
        StructField("target_id", StringType(), False),
        StructField("action", StringType(), False),  # allow | challenge | limit | isolate | block
        StructField(
            "status", StringType(), False
        ),  # approved | pending_approval | shadow | rejected | overridden | alert_only
        StructField("valid_from", TimestampType(), False),
        StructField("valid_until", TimestampType(), False),
        StructField("risk", IntegerType(), False),
        _s("reason"),
        StructField("policy_id", StringType(), False),
        StructField("policy_version", StringType(), False),
        # added by the recommend stage (docs/policies.md, "Outputs"):
        StructField(
            "domains", ArrayType(StringType()), False
        ),  # every domain whose policy reached this action
        _s("override_action"),  # the analyst's action when status is overridden
    ]
)

DECISION_LOG = StructType(
    [
        StructField("rec_id", StringType(), False),
        StructField("run_date", DateType(), False),
        _s("inputs"),  # JSON: risk, context (criticality, user type, degraded sources ...)
        StructField("signals", ArrayType(SIGNAL), True),
        _s("thresholds"),  # JSON: the tier conditions that matched
        StructField("policy_id", StringType(), False),
        StructField("policy_version", StringType(), False),
        StructField("policy_hash", StringType(), False),  # sha256 of the policy file content
        StructField("exceptions_checked", ArrayType(StringType()), True),
        _s("guardrails"),  # JSON: which guardrails changed the action or status
        StructField("action", StringType(), False),
        _s("status"),
        _s("reason"),  # plain language, names the signals and the policy
        # added by the recommend stage (docs/policies.md, "Outputs"):
        _s("domain"),
        _s("target_type"),
        _s("target_id"),
        _i("risk"),
        _s("tier"),  # the tier that matched (null: none did, so allow)
        _s("policy_action"),  # the tier's action before guardrails
        _s("policy_mode"),  # enforce | shadow
    ]
)


# ---------------------------------------------------------------------------------------------
# BEGIN baselines stage (gold.entity_daily, gold.baselines); owner: jobs/baselines.py.
# Columns are documented in docs/baselines.md.
# ---------------------------------------------------------------------------------------------
from pyspark.sql.types import MapType  # noqa: E402

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

# Item sets, in the order both tables carry them.
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

ENTITY_DAILY = StructType(
    [
        StructField("run_date", DateType(), False),  # the silver.events run_date it comes from
        StructField("entity_type", StringType(), False),  # user | service_account | host
        StructField("entity_id", StringType(), False),  # canonical user id or asset id
        _s("peer_group"),  # department/role from the directory (accounts only)
        _s("tz"),  # time zone the hour-of-week buckets use (UTC when unknown)
        _l("events"),
        _l("failures"),  # status = failure
        _l("signins"),  # successful logons by the account, or received by the host
        _l("signin_failures"),
        _l("privileged_actions"),  # is_privileged = true
        _l("bytes_in"),  # from the entity's point of view
        _l("bytes_out"),
        StructField("first_event_time", TimestampType(), True),
        StructField("last_event_time", TimestampType(), True),
        StructField("hour_of_week", ArrayType(LongType(), True), True),  # 168 event counts
        *[StructField(name, ITEM_COUNTS, True) for name in BASELINE_ITEM_SETS],
    ]
)

BASELINES = StructType(
    [
        StructField(
            "run_date", DateType(), False
        ),  # the day this profile is for (built from days < run_date)
        StructField(
            "entity_type", StringType(), False
        ),  # user | service_account | host | peer_group
        StructField("entity_id", StringType(), False),
        _s("peer_group"),
        _s("tz"),  # time zone of the hour-of-week buckets (latest seen; null for peer groups)
        StructField("in_learning", BooleanType(), False),
        StructField("compare_to_type", StringType(), False),
        StructField("compare_to", StringType(), False),
        StructField("first_seen", DateType(), True),  # first day with activity in the lake
        StructField("last_seen", DateType(), True),  # last day with activity before run_date
        _i("days_active_to_date"),
        _l("signins_to_date"),
        _i("habit_window_days"),
        _i("country_device_window_days"),
        _i("host_window_days"),
        StructField("hour_of_week", ArrayType(LongType(), True), True),  # habit window sums
        *[StructField(name, ITEM_HISTORY, True) for name in BASELINE_ITEM_SETS],
        _i("days_observed"),  # observed days (member-days for a peer group) in the habit window
        _i("members_observed"),  # peer groups: distinct members in the habit window
        _d("events_median"),
        _d("events_mad"),
        _d("failures_median"),
        _d("failures_mad"),
        _d("bytes_in_median"),
        _d("bytes_in_mad"),
        _d("bytes_out_median"),
        _d("bytes_out_mad"),
        _l("privileged_actions_total"),
        _i("privileged_days"),
        StructField("daily_values", DAILY_VALUES, True),  # the habit window's days (state)
    ]
)
# END baselines stage
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# BEGIN policy stage (ops.analyst_decisions); owner: jobs/feedback.py. docs/policies.md.
ANALYST_DECISIONS = StructType(
    [
        StructField(
            "decision_id", StringType(), False
        ),  # sha256(rec_id|decision|analyst|decided_at)
        StructField("rec_id", StringType(), False),
        StructField("run_date", DateType(), False),  # of the recommendation decided on
        StructField("decision", StringType(), False),  # approve | reject | override
        _s("override_action"),  # the action to enforce instead (override only)
        _s("verdict"),  # true_positive | false_positive | null (a label for training and metrics)
        StructField("analyst", StringType(), False),
        _s("reason"),
        StructField("decided_at", TimestampType(), False),  # UTC
        _s("target_type"),  # copied from the recommendation, so labels stand alone
        _s("target_id"),
        _s("action"),
        _s("policy_id"),
        _s("source_file"),
    ]
)
# END policy stage
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# BEGIN metrics stage (gold.metrics_daily); owner: jobs/metrics.py. docs/metrics.md.
# Long form for BI: one row per (run date, metric, dimensions). Dimension keys are sorted.
METRIC_DIMENSIONS = MapType(StringType(), StringType(), True)

METRICS_DAILY = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("metric", StringType(), False),  # recommendations, feature_psi, alert, ...
        StructField("dimensions", METRIC_DIMENSIONS, False),  # e.g. {action: block, ...}; may be {}
        StructField("value", DoubleType(), False),
    ]
)
# END metrics stage
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# BEGIN protected data and tamper evidence (ops.pseudonyms, ops.erasures, ops.decision_log_chain,
# ops.audit_heads); owners: jobs/privacy.py, jobs/audit.py. docs/privacy.md, docs/audit.md.
# Restricted: token -> identifier for the pseudonymized BI tables (one row per token used that day).
PSEUDONYMS = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("kind", StringType(), False),  # user | host | device
        StructField("token", StringType(), False),  # u_/h_/d_ + 24 hex of HMAC-SHA256(key, id)
        StructField("identifier", StringType(), False),  # the real id
    ]
)

# One data-subject erasure (`policylake forget`); never the subject's id, only a keyed hash of it.
ERASURES = StructType(
    [
        StructField("erasure_id", StringType(), False),  # sha256(subject_ref|erased_at)
        StructField("erased_at", TimestampType(), False),  # UTC, wall clock (when it happened)
        StructField("requested_by", StringType(), False),  # who ran it
        StructField("subject_ref", StringType(), False),  # HMAC-SHA256(key, user id) or sha256
        StructField("subject_ref_kind", StringType(), False),  # hmac-sha256:<key env> | sha256
        _i("aliases"),  # how many spellings of the account were matched
        StructField("tables", ArrayType(StringType()), False),  # tables rewritten and vacuumed
        StructField("rows_deleted", MapType(StringType(), LongType(), True), False),
        StructField("rows_redacted", MapType(StringType(), LongType(), True), False),
        StructField("rechained_dates", ArrayType(DateType()), True),  # audit chain re-recorded
    ]
)

# The hash chain over gold.decision_log: one row per decision, in chain order (docs/audit.md).
DECISION_LOG_CHAIN = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("position", IntegerType(), False),  # 1-based: (rec_id, policy_id, row_hash)
        StructField("rec_id", StringType(), False),
        StructField("policy_id", StringType(), False),
        StructField("row_hash", StringType(), False),  # sha256 of the row's canonical JSON
        StructField("chain_hash", StringType(), False),  # sha256(previous chain_hash || row_hash)
    ]
)

AUDIT_HEADS = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("rows", LongType(), False),
        StructField("head", StringType(), False),  # the last chain_hash (the seed when no rows)
        _s("previous_head"),  # head of the previous chained date (the seed's input)
        StructField("previous_date", DateType(), True),
        _s("hmac"),  # HMAC-SHA256(POLICYLAKE_AUDIT_KEY, every other column); null without a key
        _s("reason"),  # recommend | relinked after ... | erasure <erasure_id> ...
    ]
)
# END protected data and tamper evidence
# ---------------------------------------------------------------------------------------------
