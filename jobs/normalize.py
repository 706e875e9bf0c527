"""Normalize: bronze -> `silver.events` (one OCSF-aligned schema), `silver.quarantine`,
and `ops.reconciliation`.

Every bronze row of a (source, date) ends in exactly one place:

1. `silver.quarantine` with rule `parser` (unparseable line), `type_check` (a field had the
   wrong type), or the first row-level expectation of the source's suite it fails
   (e.g. `windows.expect_column_values_to_not_be_null(event_time)`), with a reason;
2. the duplicate count: a later delivery of an event already seen that date (same source
   and vendor key: the columns of the suite's `meta.dedup` expectation; the first by
   file and line is kept);
3. `silver.events`, mapped per source, then enriched (directory, asset inventory,
   geolocation of the distinct source addresses, network ranges).

`ops.reconciliation` checks bronze rows = events + quarantined + duplicates per source and
date; if that fails the stage raises instead of writing silver. The written events are
also checked against the `silver_events` suite (a critical failure stops the stage).
docs/normalization.md maps every column per source.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)
from pyspark.sql.window import Window

from jobs.config import Settings
from jobs.lake import require_columns
from jobs.pipeline import PipelineError, RunContext, StageResult
from jobs.schemas import RECONCILIATION, SILVER_EVENTS, SILVER_QUARANTINE
from jobs.spark import Checkpoints
from jobs.validate import (
    PARSER_RULE,
    SILVER_SUITE,
    TYPE_CHECK_RULE,
    PhaseClock,
    Suite,
    cross_check,
    daily_counts,
    dq_result_rows,
    load_suite,
    prepare_rows,
    read_bronze,
    reference_host_timezones,
    row_check,
    run_name,
    runner_for,
    suite_parameters,
    suites_dir,
    write_dq_results,
)

__all__ = [
    "DUPLICATE",
    "EVENT",
    "QUARANTINE",
    "STATUS_VOCABULARY",
    "enrich",
    "map_source",
    "normalize_status",
    "reconcile",
    "route_rows",
    "run_normalize",
    "user_name",
]

EVENT, QUARANTINE, DUPLICATE = "event", "quarantine", "duplicate"

# ---------------------------------------------------------------------------------------
# Outcome vocabulary: every feed's token (lower-cased) -> success | failure | unknown
# ---------------------------------------------------------------------------------------

STATUS_VOCABULARY: dict[str, str] = {
    # Okta outcome.result and the spellings feeds use
    **dict.fromkeys(
        [
            "success",
            "successful",
            "succeeded",
            "allow",
            "allowed",
            "granted",
            "ok",
            "pass",
            "passed",
        ],
        "success",
    ),
    **dict.fromkeys(
        ["failure", "failed", "fail", "deny", "denied", "blocked", "rejected", "reject", "error"],
        "failure",
    ),
    **dict.fromkeys(["challenge", "skipped", "unknown", "pending"], "unknown"),
    # Windows EventType (NXLog); Status/SubStatus codes are read by `_hex_status`
    "audit_success": "success",
    "audit_failure": "failure",
    # sshd message kinds (jobs.ingest)
    "accepted": "success",
    "session_opened": "success",
    "session_closed": "success",
    "invalid_user": "failure",
    "pam_auth_failure": "failure",
    "connection_closed": "unknown",
    "disconnect": "unknown",
    "break_in_attempt": "unknown",
    "other": "unknown",
    # Zeek conn_state: a handshake completed (data could flow) vs never answered / refused
    **dict.fromkeys(["sf", "s1", "s2", "s3", "rsto", "rstr"], "success"),
    **dict.fromkeys(["s0", "rej", "rstos0", "rstrh", "sh", "shr"], "failure"),
    "oth": "unknown",
    # DNS rcode_name
    "noerror": "success",
    **dict.fromkeys(
        [
            "formerr",
            "servfail",
            "nxdomain",
            "notimp",
            "refused",
            "yxdomain",
            "yxrrset",
            "nxrrset",
            "notauth",
            "notzone",
        ],
        "failure",
    ),
}


def _hex_status(token: Column) -> Column:
    """NTSTATUS / Kerberos codes: 0x0 is success, any other code a failure."""
    t = F.lower(F.trim(token))
    return F.when(t.rlike(r"^0x0+$"), F.lit("success")).when(
        t.rlike(r"^0x[0-9a-f]+$"), F.lit("failure")
    )


def normalize_status(token: Column) -> Column:
    """success | failure | unknown for any vendor token (null token: unknown)."""
    vocabulary = F.create_map(*[F.lit(x) for kv in sorted(STATUS_VOCABULARY.items()) for x in kv])
    return F.coalesce(_hex_status(token), vocabulary[F.lower(F.trim(token))], F.lit("unknown"))


# ---------------------------------------------------------------------------------------
# Routing: quarantine, duplicates, events
# ---------------------------------------------------------------------------------------


def _dash_null(col: Column) -> Column:
    t = F.trim(col)
    return F.when(t.isin("", "-"), F.lit(None).cast("string")).otherwise(t)


def route_rows(rows: DataFrame, suite: Suite, params: Mapping[str, Any]) -> DataFrame:
    """Adds `_route` (event | quarantine | duplicate), `_rule` and `_reason`.

    Precedence: parser, type_check, then the suite's row-level expectations in file order
    (the first that fails names the rule); de-duplication only among rows that passed.
    """
    rule = F.when(~(F.col("_parse_status") == "parsed"), F.lit(PARSER_RULE)).when(
        ~F.col("_candidate"), F.lit(TYPE_CHECK_RULE)
    )
    reason = F.when(
        ~(F.col("_parse_status") == "parsed"),
        F.coalesce(F.col("_parse_error"), F.lit("unparseable line")),
    ).when(~F.col("_candidate"), F.array_join(F.col("_cast_errors"), "; "))
    for r in suite.row_rules:
        check = row_check(r, params)
        rule = rule.when(check.unexpected, F.lit(r.name))
        reason = reason.when(check.unexpected, check.reason)
    routed = rows.withColumn("_rule", rule).withColumn("_reason", reason)
    passing = F.col("_rule").isNull()
    key = suite.dedup_key
    if key:
        order = Window.partitionBy("run_date", passing, *[F.col(c) for c in key]).orderBy(
            "_file", "_line", F.col("raw")
        )
        copy = passing & (F.row_number().over(order) > 1)
    else:
        copy = F.lit(False)
    route = F.when(~passing, F.lit(QUARANTINE)).when(copy, F.lit(DUPLICATE)).otherwise(F.lit(EVENT))
    return routed.withColumn("_route", route)


def quarantine_frame(routed: DataFrame) -> DataFrame:
    q = routed.where(F.col("_route") == QUARANTINE)
    return q.select(
        "run_date",
        "source",
        F.col("_rule").alias("rule"),
        F.coalesce(F.col("_reason"), F.lit("")).alias("reason"),
        "raw",
        F.col("_file").alias("bronze_file"),
        F.col("_line").alias("bronze_line"),
        F.col("_batch_id").alias("bronze_batch_id"),
    )


# ---------------------------------------------------------------------------------------
# Per-source mapping -> the common columns before enrichment
# ---------------------------------------------------------------------------------------

_MAPPED_SILVER_COLUMNS = (
    "class_name", "activity_name", "status", "status_detail", "user_name_raw",
    "src_ip", "src_port", "dst_ip", "dst_port", "protocol", "bytes_in", "bytes_out",
    "process_name", "parent_process_name", "command_line", "app_name", "dns_query",
    "dns_rcode", "cloud_action", "cloud_service", "cloud_resource", "cloud_region",
    "logon_type", "session_hint",
)  # fmt: skip

# What every source mapping produces; enrichment adds the rest of SILVER_EVENTS.
MAPPED = StructType(
    [
        StructField("run_date", SILVER_EVENTS["run_date"].dataType, False),
        StructField("source", StringType(), False),
        StructField("event_time", SILVER_EVENTS["event_time"].dataType, True),
        StructField("event_key", StringType(), True),
        *[SILVER_EVENTS[n] for n in _MAPPED_SILVER_COLUMNS],
        StructField("device_ref", StringType(), True),  # a device id that is not an asset (IdP)
        StructField("device_name_key", StringType(), True),
        StructField("device_ip_key", StringType(), True),
        StructField("dst_name_key", StringType(), True),
        StructField("event_privileged", BooleanType(), True),
        StructField("bronze_file", StringType(), True),
        StructField("bronze_line", LongType(), True),
        StructField("bronze_batch_id", StringType(), True),
    ]
)


def user_name(name: Column, domain: Column | None = None) -> Column:
    """`DOMAIN\\name` when the feed gives the domain apart; '-' and '' are no name."""
    n = _dash_null(name)
    if domain is None:
        return n
    d = _dash_null(domain)
    qualified = F.when(d.isNotNull(), F.concat(d, F.lit("\\"), n)).otherwise(n)
    return (
        F.when(n.isNull(), F.lit(None).cast("string"))
        .when(n.rlike(r"[\\@]"), n)
        .otherwise(qualified)
    )


def _host_name(col: Column) -> Column:
    """Lower-case host name without UNC backslashes ('\\\\WS01' -> 'ws01')."""
    n = _dash_null(F.regexp_replace(col, r"^\\\\+", ""))
    return F.lower(n)


def _ip(col: Column) -> Column:
    """The address when the text is one (CloudTrail may say 'AWS Internal' or a service)."""
    t = _dash_null(col)
    looks = t.rlike(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$") | t.rlike(
        r"^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%a-zA-Z_-]*$"
    )
    return F.when(looks, t)


def _not_loopback(ip: Column) -> Column:
    return F.when(~(ip.startswith("127.") | (ip == "::1")), ip)


def _lineage() -> list[Column]:
    return [
        F.col("_file").alias("bronze_file"),
        F.col("_line").alias("bronze_line"),
        F.col("_batch_id").alias("bronze_batch_id"),
    ]


def _key(columns: Sequence[str]) -> Column:
    if not columns:
        return F.concat_ws(
            "|",
            F.col("_file"),
            F.col("_line").cast("string"),
            F.sha2(F.coalesce("raw", F.lit("")), 256),
        )
    if len(columns) == 1:
        return F.coalesce(F.col(columns[0]).cast("string"), F.lit(""))
    # Several columns: escape the separator and mark a missing value, so values an attacker
    # chooses (`ws01|x` + `y` vs `ws01` + `x|y`, `` vs null) never make two events one key.
    return F.concat_ws(
        "|",
        *[
            F.coalesce(F.regexp_replace(F.col(c).cast("string"), r"([\\|])", r"\\$1"), F.lit("\\N"))
            for c in columns
        ],
    )


IDP_ACTIVITY = {
    "user.session.start": "logon",
    "user.authentication.sso": "sso",
    "user.authentication.auth_via_mfa": "mfa",
    "user.authentication.verify": "mfa",
    "user.session.end": "logoff",
    "user.account.lock": "account_lock",
    "user.account.reset_password": "password_reset",
    "policy.evaluate_sign_on": "policy_evaluation",
}


def _lookup(mapping: Mapping[Any, str], key: Column, default: str | None) -> Column:
    m = F.create_map(
        *[F.lit(x) for kv in sorted(mapping.items(), key=lambda kv: str(kv[0])) for x in kv]
    )
    fallback = F.lit(default) if default is not None else F.lit(None).cast("string")
    return F.coalesce(m[key], fallback)


def _map_idp(df: DataFrame) -> dict[str, Column]:
    et = F.col("event_type")
    activity = F.coalesce(
        _lookup(IDP_ACTIVITY, et, None),
        F.when(et.startswith("user.mfa."), F.lit("mfa")),
        F.when(et.startswith("user.authentication."), F.lit("authentication")),
        F.lit("other"),
    )
    return {
        "class_name": F.lit("authentication"),
        "activity_name": activity,
        "status": normalize_status(F.col("outcome_result")),
        "status_detail": F.col("outcome_result"),
        "user_name_raw": _dash_null(F.col("actor_alternate_id")),
        "src_ip": _ip(F.col("client_ip")),
        "app_name": F.col("target_app"),
        "session_hint": F.col("external_session_id"),
        "device_ref": F.coalesce(
            F.lower(_dash_null(F.col("device_name"))), _dash_null(F.col("device_id"))
        ),
        "device_name_key": F.lower(_dash_null(F.col("device_name"))),
        "event_privileged": F.lower(F.coalesce(F.col("target_app"), F.lit(""))).contains("admin"),
    }


WINDOWS_ACTIVITY: dict[int, tuple[str, str]] = {
    4624: ("authentication", "logon"),
    4625: ("authentication", "logon"),
    4634: ("authentication", "logoff"),
    4647: ("authentication", "logoff"),
    4648: ("authentication", "explicit_logon"),
    4672: ("authentication", "privilege_use"),
    4768: ("authentication", "kerberos_tgt"),
    4769: ("authentication", "kerberos_service_ticket"),
    4771: ("authentication", "kerberos_preauth"),
    4776: ("authentication", "ntlm_validation"),
    4688: ("process", "launch"),
    5140: ("network", "share_access"),
    5145: ("network", "share_access"),
}
SYSMON_ACTIVITY: dict[int, tuple[str, str]] = {
    1: ("process", "launch"),
    3: ("network", "connection"),
}
SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"
# Logon-like events: the user is the target account, the logging host is the target.
_WIN_TARGET_USER = (4624, 4625, 4634, 4648, 4768, 4769, 4771, 4776)
_WIN_ALWAYS_FAILED = (4625, 4771)


def _map_windows(df: DataFrame) -> dict[str, Column]:
    eid = F.col("event_id")
    sysmon = F.col("channel") == SYSMON_CHANNEL
    sec_class = _lookup({k: v[0] for k, v in WINDOWS_ACTIVITY.items()}, eid, None)
    sec_act = _lookup({k: v[1] for k, v in WINDOWS_ACTIVITY.items()}, eid, None)
    sys_class = _lookup({k: v[0] for k, v in SYSMON_ACTIVITY.items()}, eid, None)
    sys_act = _lookup({k: v[1] for k, v in SYSMON_ACTIVITY.items()}, eid, None)
    class_name = F.when(sysmon, F.coalesce(sys_class, F.lit("process"))).otherwise(
        F.coalesce(sec_class, F.lit("authentication"))
    )
    activity = F.when(sysmon, F.coalesce(sys_act, F.lit("other"))).otherwise(
        F.coalesce(sec_act, F.lit("other"))
    )
    target_user = eid.isin(*_WIN_TARGET_USER) & ~sysmon
    user = (
        F.when(sysmon, user_name(F.col("sysmon_user")))
        .when(target_user, user_name(F.col("target_user_name"), F.col("target_domain_name")))
        .otherwise(user_name(F.col("subject_user_name"), F.col("subject_domain_name")))
    )
    sub = _dash_null(F.col("sub_status"))
    code = F.when(sub.isNotNull() & ~F.lower(sub).rlike(r"^0x0+$"), sub).otherwise(
        _dash_null(F.col("status"))
    )
    status = (
        F.when(eid.isin(*_WIN_ALWAYS_FAILED) & ~sysmon, F.lit("failure"))
        .when(sysmon, F.lit("success"))
        .otherwise(normalize_status(F.coalesce(code, F.col("event_type"))))
    )
    host = _host_name(F.col("hostname"))
    ip = _ip(F.col("ip_address"))
    is_process = class_name == "process"
    is_sysmon_net = sysmon & (eid == 3)
    is_share = ~sysmon & eid.isin(5140, 5145)
    is_logon = target_user | is_share
    workstation = _host_name(F.col("workstation_name"))
    return {
        "class_name": class_name,
        "activity_name": activity,
        "status": status,
        "status_detail": F.coalesce(code, F.col("event_type")),
        "user_name_raw": user,
        "src_ip": F.when(is_sysmon_net, _ip(F.col("source_ip"))).otherwise(ip),
        "src_port": F.when(is_sysmon_net, F.lit(None).cast("int")).otherwise(F.col("ip_port")),
        "dst_ip": F.when(is_sysmon_net, _ip(F.col("destination_ip"))),
        "dst_port": F.when(is_sysmon_net, F.col("destination_port")),
        "process_name": F.when(
            is_process | is_sysmon_net,
            F.coalesce(_dash_null(F.col("new_process_name")), _dash_null(F.col("image"))),
        ),
        "parent_process_name": F.when(
            is_process,
            F.coalesce(_dash_null(F.col("parent_process_name")), _dash_null(F.col("parent_image"))),
        ),
        "command_line": F.when(is_process, _dash_null(F.col("command_line"))),
        "app_name": F.when(is_share, _dash_null(F.col("share_name"))),
        "logon_type": F.when(target_user, F.col("logon_type")),
        # where the activity came from: the workstation / client address for logons and share
        # access (a loopback logon came from the host itself), the host itself otherwise
        "device_name_key": F.when(
            is_logon,
            F.coalesce(workstation, F.when(ip.isNull() | _not_loopback(ip).isNull(), host)),
        ).when(eid != 4672, host),
        "device_ip_key": F.when(is_logon, _not_loopback(ip)),
        "dst_name_key": F.when(is_logon | (eid == 4672) & ~sysmon, host),
        "event_privileged": (eid == 4672) & ~sysmon,
    }


def _map_zeek_conn(df: DataFrame) -> dict[str, Column]:
    return {
        "class_name": F.lit("network"),
        "activity_name": F.lit("connection"),
        "status": normalize_status(F.col("conn_state")),
        "status_detail": F.col("conn_state"),
        "src_ip": F.col("orig_h"),
        "src_port": F.col("orig_p"),
        "dst_ip": F.col("resp_h"),
        "dst_port": F.col("resp_p"),
        "protocol": F.col("proto"),
        "bytes_out": F.col("orig_bytes"),
        "bytes_in": F.col("resp_bytes"),
        "device_ip_key": F.col("orig_h"),
    }


def _map_zeek_dns(df: DataFrame) -> dict[str, Column]:
    rcode = _dash_null(F.col("rcode_name"))
    return {
        "class_name": F.lit("dns"),
        "activity_name": F.lit("query"),
        "status": F.when(rcode.isNull(), F.lit("unknown")).otherwise(normalize_status(rcode)),
        "status_detail": rcode,
        "src_ip": F.col("orig_h"),
        "src_port": F.col("orig_p"),
        "dst_ip": F.col("resp_h"),
        "dst_port": F.col("resp_p"),
        "protocol": F.col("proto"),
        "dns_query": F.lower(_dash_null(F.col("query"))),
        "dns_rcode": rcode,
        "device_ip_key": F.col("orig_h"),
    }


# IAM-like services whose write calls change who can do what.
PRIVILEGED_CLOUD_SERVICES = ("iam", "organizations", "sso", "sts")
_CLOUD_RESOURCE_PATHS = (
    "$.userName", "$.roleName", "$.groupName", "$.policyArn", "$.bucketName", "$.instanceId",
    "$.keyId", "$.secretId", "$.functionName", "$.name",
)  # fmt: skip


def _map_cloudtrail(df: DataFrame) -> dict[str, Column]:
    service = F.regexp_replace(F.lower(F.col("event_source")), r"\.amazonaws\.com$", "")
    console = F.col("event_name") == "ConsoleLogin"
    console_result = F.get_json_object(F.col("response_elements"), "$.ConsoleLogin")
    error = _dash_null(F.col("error_code"))
    status = (
        F.when(console & console_result.isNotNull(), normalize_status(console_result))
        .when(error.isNotNull(), F.lit("failure"))
        .otherwise(F.lit("success"))
    )
    session_user = F.regexp_extract(F.col("identity_arn"), r"(?s)assumed-role/[^/]+/(.+)$", 1)
    user = F.coalesce(
        _dash_null(F.col("user_name")),
        F.when(session_user != "", session_user),
        F.when(F.col("identity_type") == "Root", F.lit("root")),
    )
    resource = F.coalesce(
        *[F.get_json_object(F.col("request_parameters"), p) for p in _CLOUD_RESOURCE_PATHS]
    )
    write = F.lower(F.coalesce(F.col("read_only"), F.lit("false"))) == "false"
    return {
        "class_name": F.when(console, F.lit("authentication")).otherwise(F.lit("api")),
        "activity_name": F.when(console, F.lit("logon")).otherwise(F.lit("api_call")),
        "status": status,
        "status_detail": F.when(console, F.coalesce(console_result, error)).otherwise(error),
        "user_name_raw": user,
        "src_ip": _ip(F.col("source_ip")),
        "app_name": service,
        "cloud_action": F.col("event_name"),
        "cloud_service": service,
        "cloud_resource": resource,
        "cloud_region": F.col("aws_region"),
        "session_hint": _dash_null(F.col("access_key_id")),
        "event_privileged": (F.col("identity_type") == "Root")
        | (service.isin(*PRIVILEGED_CLOUD_SERVICES) & write & ~console),
    }


SSHD_ACTIVITY = {
    "accepted": "logon",
    "failed": "logon",
    "invalid_user": "logon_attempt",
    "pam_auth_failure": "logon_attempt",
    "session_opened": "session_open",
    "session_closed": "logoff",
    "connection_closed": "disconnect",
    "disconnect": "disconnect",
}


def _map_sshd(df: DataFrame) -> dict[str, Column]:
    ev = F.col("ssh_event")
    user = _dash_null(F.col("user"))
    return {
        "class_name": F.lit("authentication"),
        "activity_name": _lookup(SSHD_ACTIVITY, ev, "other"),
        "status": normalize_status(ev),
        "status_detail": F.concat_ws(" ", ev, F.col("auth_method")),
        "user_name_raw": user,
        "src_ip": _ip(F.col("src_ip")),
        "src_port": F.col("src_port"),
        "protocol": F.lit("ssh"),
        "device_ip_key": _not_loopback(_ip(F.col("src_ip"))),
        "dst_name_key": _host_name(F.col("host")),
        "event_privileged": F.lower(F.coalesce(user, F.lit(""))) == "root",
    }


SOURCE_MAPPINGS = {
    "idp": _map_idp,
    "windows": _map_windows,
    "zeek_conn": _map_zeek_conn,
    "zeek_dns": _map_zeek_dns,
    "cloudtrail": _map_cloudtrail,
    "sshd": _map_sshd,
}


def map_source(events: DataFrame, source: str, key_columns: Sequence[str]) -> DataFrame:
    """Routed `event` rows of one source -> the MAPPED columns."""
    mapped = SOURCE_MAPPINGS[source](events)
    columns: list[Column] = [
        F.col("run_date"),
        F.col("source"),
        F.col("event_time"),
        _key(key_columns).alias("event_key"),
    ]
    fixed = {
        "run_date",
        "source",
        "event_time",
        "event_key",
        "bronze_file",
        "bronze_line",
        "bronze_batch_id",
    }
    for f in MAPPED.fields:
        if f.name in fixed:
            continue
        value = mapped.get(f.name, F.lit(None))
        columns.append(value.cast(f.dataType).alias(f.name))
    return events.select(*columns, *_lineage())


# ---------------------------------------------------------------------------------------
# Enrichment
# ---------------------------------------------------------------------------------------

GEO_SCHEMA = StructType(
    [
        StructField("_geo_ip", StringType(), False),
        StructField("src_country", StringType(), True),
        StructField("src_city", StringType(), True),
        StructField("src_lat", DoubleType(), True),
        StructField("src_lon", DoubleType(), True),
        StructField("src_asn", LongType(), True),
        StructField("src_as_org", StringType(), True),
        StructField("src_is_internal", BooleanType(), True),
        StructField("src_is_known_egress", BooleanType(), True),
    ]
)
EGRESS_KINDS = ("corporate_egress", "vpn", "egress")
INTERNAL_KINDS = ("internal", "corporate_internal", "site", "datacenter")


def _geo_partitions(
    city_db: str | None, asn_db: str | None, ranges: Sequence[tuple[str, str]]
) -> Any:
    """A mapInPandas function: distinct IPs -> geolocation and range membership."""

    def lookup(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from jobs.geo import GeoResolver, default_resolver, is_private

        resolver = (
            default_resolver()
            if city_db is None and asn_db is None
            else GeoResolver(city_db, asn_db)
        )
        nets = []
        for cidr, kind in ranges:
            try:
                nets.append((ipaddress.ip_network(cidr, strict=False), kind))
            except ValueError:
                continue
        for batch in batches:
            ips = batch["_geo_ip"].tolist()
            found = resolver.lookup_many(ips)
            rows = []
            for ip in ips:
                rec = found.get(ip)
                try:
                    addr = ipaddress.ip_address(ip)
                except ValueError:
                    addr = None
                kinds = {
                    k
                    for n, k in nets
                    if addr is not None and addr.version == n.version and addr in n
                }
                rows.append(
                    {
                        "_geo_ip": ip,
                        "src_country": rec.country if rec else None,
                        "src_city": rec.city if rec else None,
                        "src_lat": rec.latitude if rec else None,
                        "src_lon": rec.longitude if rec else None,
                        "src_asn": rec.asn if rec else None,
                        "src_as_org": rec.as_org if rec else None,
                        "src_is_internal": addr is not None
                        and (is_private(ip) or bool(kinds & set(INTERNAL_KINDS))),
                        "src_is_known_egress": bool(kinds & set(EGRESS_KINDS)),
                    }
                )
            out = pd.DataFrame(rows, columns=GEO_SCHEMA.names)
            out["src_asn"] = out["src_asn"].astype("Int64")
            yield out

    return lookup


def geo_table(
    events: DataFrame, settings: Settings, ranges: Sequence[tuple[str, str]]
) -> DataFrame:
    """Geolocation of the distinct source addresses, computed on the executors."""
    ips = (
        events.select(F.col("src_ip").alias("_geo_ip"))
        .where(F.col("_geo_ip").isNotNull())
        .distinct()
    )
    return ips.mapInPandas(
        _geo_partitions(settings.geo.city_db, settings.geo.asn_db, ranges), GEO_SCHEMA
    )


def asset_lookup(assets: DataFrame) -> DataFrame:
    """(key, asset_id): `n:<name>` for asset id, FQDN and short name; `i:<ip>` for its address."""
    asset_id = F.lower(F.trim(F.col("asset_id")))
    keys = F.array(
        F.concat(F.lit("n:"), asset_id),
        F.concat(F.lit("n:"), F.lower(F.trim(F.col("fqdn")))),
        F.concat(F.lit("n:"), F.lower(F.split(F.trim(F.col("fqdn")), r"\.").getItem(0))),
        F.concat(F.lit("i:"), F.trim(F.col("ip"))),
    )
    return (
        assets.where(asset_id.isNotNull())
        .select(F.explode(keys).alias("key"), asset_id.alias("asset_id"))
        .where(F.col("key").isNotNull())
        .groupBy("key")
        .agg(F.min("asset_id").alias("asset_id"))
    )


def _join_asset(df: DataFrame, lookup: DataFrame, key: Column, out: str) -> DataFrame:
    side = lookup.select(F.col("key").alias(f"_{out}_key"), F.col("asset_id").alias(out))
    return (
        df.withColumn(f"_{out}_key", key)
        .join(F.broadcast(side), f"_{out}_key", "left")
        .drop(f"_{out}_key")
    )


def enrich(
    mapped: DataFrame,
    aliases: DataFrame,
    directory: DataFrame,
    assets: DataFrame,
    geo: DataFrame,
) -> DataFrame:
    """MAPPED rows -> SILVER_EVENTS: canonical user, directory attributes, assets, geo."""
    raw = F.lower(F.trim(F.col("user_name_raw")))
    bare = F.when(raw.contains("\\"), F.regexp_extract(raw, r"(?s)^[^\\]*\\(.+)$", 1))
    # an alias two accounts claim resolves to the smallest id, the same on every run
    alias_side = aliases.groupBy("alias_key").agg(F.min("user_id").alias("user_id"))
    df = (
        mapped.withColumn("_alias_full", raw)
        .withColumn("_alias_bare", bare)
        .join(
            alias_side.select(
                F.col("alias_key").alias("_alias_full"), F.col("user_id").alias("_uid_full")
            ),
            "_alias_full",
            "left",
        )
        .join(
            alias_side.select(
                F.col("alias_key").alias("_alias_bare"), F.col("user_id").alias("_uid_bare")
            ),
            "_alias_bare",
            "left",
        )
        .withColumn("user_id", F.coalesce("_uid_full", "_uid_bare"))
    )
    people = directory.groupBy("user_id").agg(
        F.min("account_type").alias("_account_type"),
        F.min("peer_group").alias("_peer_group"),
        F.max("privileged").alias("_dir_privileged"),
    )
    df = df.join(people, "user_id", "left")
    lookup = asset_lookup(assets)
    df = _join_asset(df, lookup, F.concat(F.lit("n:"), F.col("device_name_key")), "_dev_by_name")
    df = _join_asset(df, lookup, F.concat(F.lit("i:"), F.col("device_ip_key")), "_dev_by_ip")
    df = _join_asset(df, lookup, F.concat(F.lit("n:"), F.col("dst_name_key")), "_dst_by_name")
    df = _join_asset(df, lookup, F.concat(F.lit("i:"), F.col("dst_ip")), "_dst_by_ip")
    device_asset = F.coalesce("_dev_by_name", "_dev_by_ip")
    dst_asset = F.coalesce("_dst_by_name", "_dst_by_ip")
    short = F.split(F.col("dst_name_key"), r"\.").getItem(0)
    df = (
        df.withColumn(
            "device_id",
            F.coalesce(
                device_asset,
                F.col("device_ref"),
                F.split(F.col("device_name_key"), r"\.").getItem(0),
            ),
        )
        .withColumn("dst_host", F.coalesce(dst_asset, short))
        .withColumn("_crit_asset", F.coalesce(dst_asset, device_asset))
    )
    attrs = assets.select(
        F.lower(F.trim(F.col("asset_id"))).alias("_crit_asset"),
        F.lower(F.trim(F.col("criticality"))).alias("asset_criticality"),
        F.filter(F.col("tags"), lambda t: t != "").alias("asset_tags"),
    ).dropDuplicates(["_crit_asset"])
    df = df.join(F.broadcast(attrs), "_crit_asset", "left")
    df = df.join(geo, F.col("src_ip") == F.col("_geo_ip"), "left")
    event_uid = F.substring(
        F.sha2(F.concat_ws("|", F.col("source"), F.col("event_key")), 256), 1, 32
    )
    out = df.select(
        F.col("run_date"),
        event_uid.alias("event_uid"),
        F.col("source"),
        F.col("event_time"),
        "class_name",
        "activity_name",
        "status",
        "status_detail",
        "user_id",
        "user_name_raw",
        F.when(F.col("user_id").isNull(), F.lit("unknown"))
        .otherwise(F.coalesce(F.lower("_account_type"), F.lit("unknown")))
        .alias("user_type"),
        F.col("_peer_group").alias("peer_group"),
        "device_id",
        "src_ip",
        "src_port",
        "src_country",
        "src_city",
        "src_lat",
        "src_lon",
        "src_asn",
        "src_as_org",
        "src_is_internal",
        "src_is_known_egress",
        "dst_host",
        "dst_ip",
        "dst_port",
        "protocol",
        "bytes_in",
        "bytes_out",
        "process_name",
        "parent_process_name",
        "command_line",
        "app_name",
        "dns_query",
        "dns_rcode",
        "cloud_action",
        "cloud_service",
        "cloud_resource",
        "cloud_region",
        "logon_type",
        "session_hint",
        (
            F.coalesce(F.col("event_privileged"), F.lit(False))
            | F.coalesce(F.col("_dir_privileged"), F.lit(False))
        ).alias("is_privileged"),
        "asset_criticality",
        "asset_tags",
        "bronze_file",
        "bronze_line",
        "bronze_batch_id",
    )
    return out.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER_EVENTS.fields])


# ---------------------------------------------------------------------------------------
# Reconciliation
# ---------------------------------------------------------------------------------------


def reconcile(
    raw: Mapping[tuple[str, date], int],
    events: Mapping[tuple[str, date], int],
    quarantined: Mapping[tuple[str, date], int],
    duplicates: Mapping[tuple[str, date], int],
    sources: Sequence[str],
    dates: Sequence[date],
) -> list[dict[str, Any]]:
    """RECONCILIATION rows: raw = events + quarantined + duplicates per (source, date)."""
    out = []
    for source in sources:
        for d in dates:
            k = (source, d)
            r, e, q, dup = (
                raw.get(k, 0),
                events.get(k, 0),
                quarantined.get(k, 0),
                duplicates.get(k, 0),
            )
            out.append(
                {
                    "run_date": d,
                    "source": source,
                    "raw_rows": r,
                    "events": e,
                    "quarantined": q,
                    "duplicates": dup,
                    "balanced": r == e + q + dup,
                }
            )
    return out


def _counts(df: DataFrame, *extra: str) -> dict[tuple[Any, ...], int]:
    return {
        tuple(row[c] for c in ("source", "run_date", *extra)): int(row["n"])
        for row in df.groupBy("source", "run_date", *extra)
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    }


# ---------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------


def _empty(schema: StructType, spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], schema)


def run_normalize(ctx: RunContext, dates: list[date]) -> StageResult:
    """The `normalize` stage over `dates` (all configured sources in one pass)."""
    from jobs.reference import asset_inventory, identity_directory, network_ranges, user_aliases

    dates = sorted(set(dates))
    result = StageResult(stage="normalize", dates=dates)
    if not dates:
        return result
    spark, settings, lake = ctx.spark, ctx.settings, ctx.lake
    sources = list(settings.ingest.sources)
    directory = suites_dir(settings)
    params = suite_parameters(settings.validation)
    ranges = [
        (r["cidr"], (r["kind"] or "").strip().lower())
        for r in network_ranges(spark, settings).collect()
    ]

    clock = PhaseClock()
    raw_counts: dict[tuple[str, date], int] = {}
    dup_counts: dict[tuple[str, date], int] = {}
    mapped_parts: list[DataFrame] = []
    quarantine_parts: list[DataFrame] = []
    with Checkpoints() as keep:
        host_tz = keep(reference_host_timezones(spark, settings))
        assets = keep(asset_inventory(spark, settings))
        for source in sources:
            suite = load_suite(directory, source)
            bronze = read_bronze(lake, source, dates)
            rows = prepare_rows(bronze, source, host_tz, None)
            routed = keep(route_rows(rows, suite, params))
            for (src, d, route), n in _counts(routed, "_route").items():
                raw_counts[(src, d)] = raw_counts.get((src, d), 0) + n
                if route == DUPLICATE:
                    dup_counts[(src, d)] = n
            quarantine_parts.append(quarantine_frame(routed))
            mapped_parts.append(
                map_source(routed.where(F.col("_route") == EVENT), source, suite.dedup_key)
            )
        mapped = mapped_parts[0] if mapped_parts else _empty(MAPPED, spark)
        for part in mapped_parts[1:]:
            mapped = mapped.unionByName(part)
        quarantine = quarantine_parts[0] if quarantine_parts else _empty(SILVER_QUARANTINE, spark)
        for part in quarantine_parts[1:]:
            quarantine = quarantine.unionByName(part)
        clock.mark("read_and_route")
        geo = geo_table(mapped, settings, ranges)
        events = enrich(
            mapped, user_aliases(spark, settings), identity_directory(spark, settings), assets, geo
        )
        events = keep(require_columns(events, SILVER_EVENTS, "normalize silver.events"))
        quarantine = keep(
            require_columns(quarantine, SILVER_QUARANTINE, "normalize silver.quarantine")
        )
        event_counts = {(s, d): n for (s, d), n in _counts(events).items()}
        quarantine_counts = {(s, d): n for (s, d), n in _counts(quarantine).items()}
        clock.mark("map_and_enrich")
        recon = reconcile(raw_counts, event_counts, quarantine_counts, dup_counts, sources, dates)
        recon_df = spark.createDataFrame(
            [tuple(r[n] for n in RECONCILIATION.names) for r in recon], RECONCILIATION
        )
        lake.replace_dates(
            require_columns(recon_df, RECONCILIATION, "ops.reconciliation"),
            "ops.reconciliation",
            dates,
        )
        broken = [r for r in recon if not r["balanced"]]
        if broken:
            first = broken[0]
            raise PipelineError(
                f"normalize: reconciliation failed for {len(broken)} source/date(s), e.g. "
                f"{first['source']} {first['run_date']}: {first['raw_rows']} bronze rows != "
                f"{first['events']} events + {first['quarantined']} quarantined + {first['duplicates']} duplicates"
            )
        clock.mark("reconcile")
        silver_rows = check_silver_contract(ctx, events, dates, params)
        clock.mark("silver_contract")
        lake.replace_dates(events, "silver.events", dates)
        lake.replace_dates(quarantine, "silver.quarantine", dates)
        clock.mark("write")
        result.rows = {
            "silver.events": sum(event_counts.values()),
            "silver.quarantine": sum(quarantine_counts.values()),
            "duplicates": sum(dup_counts.values()),
            "ops.reconciliation": len(recon),
            "ops.dq_results": silver_rows,
        }
        result.details["quarantine_by_rule"] = {
            f"{r['source']}:{r['rule']}": int(r["n"])
            for r in quarantine.groupBy("source", "rule")
            .agg(F.count(F.lit(1)).alias("n"))
            .collect()
        }
        result.details["seconds"] = clock.seconds
    return result


def check_silver_contract(
    ctx: RunContext, events: DataFrame, dates: list[date], params: Mapping[str, Any]
) -> int:
    """The `silver_events` suite on what is about to be written, per source and date.

    Its results join `ops.dq_results` (suite `silver_events`); a critical failure raises:
    it means the normalization is wrong, not the data.
    """
    settings = ctx.settings
    suite = load_suite(suites_dir(settings), SILVER_SUITE)
    counts = daily_counts(events, suite.rules, params, by=("source", "run_date"))
    totals: dict[str, tuple[int, int]] = {}
    for value in counts.values():
        for rule in suite.rules:
            c, u = value[rule.name]
            tc, tu = totals.get(rule.name, (0, 0))
            totals[rule.name] = (tc + c, tu + u)
    gx = runner_for(settings)
    outcomes = gx.validate(suite, events, params, f"{run_name(dates)} silver")
    cross_check(suite, outcomes, totals, sum(int(v["rows"]) for v in counts.values()))
    rows: list[dict[str, Any]] = []
    for source in sorted({k[0] for k in counts}):
        per_date = {k[1]: v for k, v in counts.items() if k[0] == source}
        rows += dq_result_rows(suite, source, [d for d in dates if d in per_date], per_date, params)
    write_dq_results(ctx.lake, rows, dates, [SILVER_SUITE])
    gx.build_docs()
    failed = sorted({r["expectation"] for r in rows if r["critical"] and not r["success"]})
    if failed:
        raise PipelineError(f"normalize: silver.events breaks its contract: {', '.join(failed)}")
    return len(rows)
