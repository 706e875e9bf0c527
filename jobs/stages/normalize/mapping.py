"""Per-source mappings: bronze columns -> the common event columns, before enrichment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from jobs.core.tables import SILVER_EVENTS
from jobs.quality.rows import key_text
from jobs.stages.normalize.routing import RAW_DIGEST
from jobs.stages.normalize.vocabulary import dash_null, normalize_status

# ---------------------------------------------------------------------------------------
# Per-source mapping -> the common columns before enrichment
# ---------------------------------------------------------------------------------------

_MAPPED_SILVER_COLUMNS = (
    "class_name", "activity_name", "status", "status_detail", "user_name_raw",
    "src_ip", "src_port", "dst_ip", "dst_port", "protocol", "bytes_in", "bytes_out",
    "process_name", "parent_process_name", "command_line", "app_name", "dns_query",
    "dns_rcode", "cloud_action", "cloud_service", "cloud_resource", "cloud_region",
    "logon_type", "session_hint", "channel", "event_id", "provider", "event_data",
)  # fmt: skip

# What every source mapping produces; enrichment adds the rest of SILVER_EVENTS.
MAPPED = StructType(
    [
        StructField("run_date", SILVER_EVENTS.schema["run_date"].dataType, False),
        StructField("source", StringType(), False),
        StructField("event_time", SILVER_EVENTS.schema["event_time"].dataType, True),
        StructField("event_key", StringType(), True),
        *[SILVER_EVENTS.schema[n] for n in _MAPPED_SILVER_COLUMNS],
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
    n = dash_null(name)
    if domain is None:
        return n
    d = dash_null(domain)
    qualified = F.when(d.isNotNull(), F.concat(d, F.lit("\\"), n)).otherwise(n)
    return (
        F.when(n.isNull(), F.lit(None).cast("string"))
        .when(n.rlike(r"[\\@]"), n)
        .otherwise(qualified)
    )


def _host_name(col: Column) -> Column:
    """Lower-case host name without UNC backslashes ('\\\\WS01' -> 'ws01')."""
    n = dash_null(F.regexp_replace(col, r"^\\\\+", ""))
    return F.lower(n)


def _ip(col: Column) -> Column:
    """The address when the text is one (CloudTrail may say 'AWS Internal' or a service)."""
    t = dash_null(col)
    looks = t.rlike(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$") | t.rlike(
        r"^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%a-zA-Z_-]*$"
    )
    return F.when(looks, t)


def _not_loopback(ip: Column) -> Column:
    return F.when(~(ip.startswith("127.") | (ip == "::1")), ip)


def lineage_columns() -> list[Column]:
    return [
        F.col("_file").alias("bronze_file"),
        F.col("_line").alias("bronze_line"),
        F.col("_batch_id").alias("bronze_batch_id"),
    ]


def _key(columns: Sequence[str]) -> Column:
    if not columns:
        return F.concat_ws("|", F.col("_file"), F.col("_line").cast("string"), F.col(RAW_DIGEST))
    if len(columns) == 1:
        return F.coalesce(F.col(columns[0]).cast("string"), F.lit(""))
    return key_text(*[F.col(c) for c in columns])


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
        "user_name_raw": dash_null(F.col("actor_alternate_id")),
        "src_ip": _ip(F.col("client_ip")),
        "app_name": F.col("target_app"),
        "session_hint": F.col("external_session_id"),
        "device_ref": F.coalesce(
            F.lower(dash_null(F.col("device_name"))), dash_null(F.col("device_id"))
        ),
        "device_name_key": F.lower(dash_null(F.col("device_name"))),
        "event_privileged": F.lower(F.coalesce(F.col("target_app"), F.lit(""))).contains("admin"),
    }


# Windows events are named by (family, event id): the same id means different things in
# different logs (Sysmon 1 is a process start, System 1 a time change). The family comes
# from the channel (Sysmon and PowerShell also from the provider).
SECURITY, SYSMON, SYSTEM, POWERSHELL = "security", "sysmon", "system", "powershell"
SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"
# (family, event id) -> (class_name, activity_name), OCSF-aligned (docs/normalization.md)
WINDOWS_EVENTS: dict[tuple[str, int], tuple[str, str]] = {
    (SECURITY, 4624): ("authentication", "logon"),
    (SECURITY, 4625): ("authentication", "logon"),
    (SECURITY, 4634): ("authentication", "logoff"),
    (SECURITY, 4647): ("authentication", "logoff"),
    (SECURITY, 4648): ("authentication", "explicit_logon"),
    (SECURITY, 4672): ("authentication", "privilege_use"),
    (SECURITY, 4768): ("authentication", "kerberos_tgt"),
    (SECURITY, 4769): ("authentication", "kerberos_service_ticket"),
    (SECURITY, 4771): ("authentication", "kerberos_preauth"),
    (SECURITY, 4776): ("authentication", "ntlm_validation"),
    (SECURITY, 4688): ("process", "launch"),
    (SECURITY, 5140): ("network", "share_access"),
    (SECURITY, 5145): ("network", "share_access"),
    (SECURITY, 4697): ("service", "install"),
    (SECURITY, 4698): ("scheduled_job", "create"),
    (SECURITY, 4720): ("account_change", "create"),
    (SECURITY, 4722): ("account_change", "enable"),
    (SECURITY, 4724): ("account_change", "password_reset"),
    (SECURITY, 4726): ("account_change", "delete"),
    (SECURITY, 4738): ("account_change", "change"),
    (SECURITY, 4728): ("group_management", "add_member"),  # global group
    (SECURITY, 4732): ("group_management", "add_member"),  # local group
    (SECURITY, 4756): ("group_management", "add_member"),  # universal group
    (SECURITY, 1102): ("event_log", "clear"),
    (SYSTEM, 104): ("event_log", "clear"),
    (SYSTEM, 7045): ("service", "install"),
    (SYSMON, 1): ("process", "launch"),
    (SYSMON, 3): ("network", "connection"),
    (SYSMON, 7): ("module", "load"),
    (SYSMON, 8): ("process", "remote_thread"),
    (SYSMON, 10): ("process", "access"),
    (SYSMON, 11): ("file", "create"),
    (SYSMON, 12): ("registry", "create"),  # "delete" when its EventType says so
    (SYSMON, 13): ("registry", "set_value"),
    (SYSMON, 14): ("registry", "rename"),
    (SYSMON, 17): ("file", "pipe_create"),
    (SYSMON, 18): ("file", "pipe_connect"),
    (SYSMON, 22): ("dns", "query"),
    (SYSMON, 23): ("file", "delete"),
    (SYSMON, 26): ("file", "delete"),
    (POWERSHELL, 4103): ("script", "pipeline_execution"),
    (POWERSHELL, 4104): ("script", "script_block"),
}
# An event with no mapping keeps class `other` and activity `event_<id>` (`other` without
# an id): kept in silver with its event_data, counted as unmapped, never quarantined.
UNMAPPED_CLASS = "other"
# Logon-like events: the user is the target account, the logging host is the target.
_WIN_TARGET_USER = (4624, 4625, 4634, 4648, 4768, 4769, 4771, 4776)
_WIN_ALWAYS_FAILED = (4625, 4771)
# Privileged by nature: special privileges at logon, account and group management, clearing
# an event log, installing a service.
_WIN_PRIVILEGED_CLASSES = ("account_change", "group_management", "event_log", "service")
# The process an event is about, where its data names one (process access and remote
# threads keep SourceImage / TargetImage in event_data: two processes, no single one).
_WIN_IMAGE_CLASSES = ("module", "file", "registry", "dns")
# Windows DNS client status codes (Sysmon 22 QueryStatus) -> DNS rcode names
_DNS_STATUS = {"0": "NOERROR", "9001": "FORMERR", "9002": "SERVFAIL", "9003": "NXDOMAIN",
               "9004": "NOTIMP", "9005": "REFUSED"}  # fmt: skip


def windows_family(channel: Column, provider: Column) -> Column:
    """security | sysmon | system | powershell | null, from the channel (and provider)."""
    c = F.lower(F.trim(channel))
    p = F.lower(F.trim(provider))
    return (
        F.when(c == "security", F.lit(SECURITY))
        .when((c == SYSMON_CHANNEL.lower()) | (p == "microsoft-windows-sysmon"), F.lit(SYSMON))
        .when(c == "system", F.lit(SYSTEM))
        .when(
            c.isin("microsoft-windows-powershell/operational", "windows powershell")
            | (p == "microsoft-windows-powershell"),
            F.lit(POWERSHELL),
        )
    )


def _windows_lookup(family: Column, eid: Column, part: int) -> Column:
    table = F.create_map(
        *[
            F.lit(x)
            for (fam, event_id), names in sorted(WINDOWS_EVENTS.items())
            for x in (f"{fam}:{event_id}", names[part])
        ]
    )
    return table[F.concat_ws(":", family, eid.cast("string"))]


def _map_windows(df: DataFrame) -> dict[str, Column]:
    eid = F.col("event_id")
    data = F.col("event_data")
    family = windows_family(F.col("channel"), F.col("provider"))
    sysmon = family.eqNullSafe(SYSMON)
    security = family.eqNullSafe(SECURITY)
    known_class = _windows_lookup(family, eid, 0)
    known_activity = _windows_lookup(family, eid, 1)
    class_name = F.coalesce(known_class, F.lit(UNMAPPED_CLASS))
    registry_delete = sysmon & (eid == 12) & F.lower(data["EventType"]).startswith("delete")
    activity = (
        F.when(registry_delete, F.lit("delete"))
        .when(known_activity.isNotNull(), known_activity)
        .when(eid.isNotNull(), F.concat(F.lit("event_"), eid.cast("string")))
        .otherwise(F.lit("other"))
    )
    target_user = eid.isin(*_WIN_TARGET_USER) & security
    user = (
        F.when(sysmon, user_name(F.coalesce(F.col("sysmon_user"), data["SourceUser"])))
        .when(target_user, user_name(F.col("target_user_name"), F.col("target_domain_name")))
        .otherwise(user_name(F.col("subject_user_name"), F.col("subject_domain_name")))
    )
    sub = dash_null(F.col("sub_status"))
    code = F.when(sub.isNotNull() & ~F.lower(sub).rlike(r"^0x0+$"), sub).otherwise(
        dash_null(F.col("status"))
    )
    dns_status = dash_null(data["QueryStatus"])
    dns_rcode = _lookup(_DNS_STATUS, dns_status, None)
    is_dns = sysmon & (eid == 22)
    status = (
        F.when(eid.isin(*_WIN_ALWAYS_FAILED) & security, F.lit("failure"))
        .when(is_dns & dns_status.isNotNull() & (dns_status != "0"), F.lit("failure"))
        .when(sysmon, F.lit("success"))
        # a service installed, a log cleared, a script block logged: the event is the outcome
        .when(known_class.isNotNull() & ~security, F.lit("success"))
        .otherwise(normalize_status(F.coalesce(code, F.col("event_type"))))
    )
    host = _host_name(F.col("hostname"))
    ip = _ip(F.col("ip_address"))
    is_launch = (class_name == "process") & (activity == "launch")
    is_sysmon_net = sysmon & (eid == 3)
    is_share = security & eid.isin(5140, 5145)
    is_logon = target_user | is_share
    is_privilege_use = security & eid.eqNullSafe(4672)
    workstation = _host_name(F.col("workstation_name"))
    image = dash_null(F.col("image"))
    process = (
        F.when(is_launch, F.coalesce(dash_null(F.col("new_process_name")), image))
        .when(is_sysmon_net | class_name.isin(*_WIN_IMAGE_CLASSES), image)
        .when(class_name == UNMAPPED_CLASS, F.coalesce(image, dash_null(F.col("process_name"))))
    )
    return {
        "class_name": class_name,
        "activity_name": activity,
        "status": status,
        "status_detail": F.when(is_dns, dns_status).otherwise(
            F.coalesce(code, F.col("event_type"))
        ),
        "user_name_raw": user,
        "src_ip": F.when(is_sysmon_net, _ip(F.col("source_ip"))).otherwise(ip),
        "src_port": F.when(is_sysmon_net, F.lit(None).cast("int")).otherwise(F.col("ip_port")),
        "dst_ip": F.when(is_sysmon_net, _ip(F.col("destination_ip"))),
        "dst_port": F.when(is_sysmon_net, F.col("destination_port")),
        "process_name": process,
        "parent_process_name": F.when(
            is_launch,
            F.coalesce(dash_null(F.col("parent_process_name")), dash_null(F.col("parent_image"))),
        ),
        "command_line": F.when(is_launch, dash_null(F.col("command_line"))),
        "app_name": F.when(is_share, dash_null(F.col("share_name"))),
        "dns_query": F.when(is_dns, F.lower(dash_null(data["QueryName"]))),
        "dns_rcode": F.when(is_dns, F.coalesce(dns_rcode, dns_status)),
        "logon_type": F.when(target_user, F.col("logon_type")),
        # where the activity came from: the workstation / client address for logons and share
        # access (a loopback logon came from the host itself), the host itself otherwise
        "device_name_key": F.when(
            is_logon,
            F.coalesce(workstation, F.when(ip.isNull() | _not_loopback(ip).isNull(), host)),
        ).when(~is_privilege_use, host),
        "device_ip_key": F.when(is_logon, _not_loopback(ip)),
        "dst_name_key": F.when(is_logon | is_privilege_use, host),
        "event_privileged": is_privilege_use | class_name.isin(*_WIN_PRIVILEGED_CLASSES),
        "channel": F.col("channel"),
        "event_id": eid,
        "provider": F.col("provider"),
        "event_data": data,
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
    rcode = dash_null(F.col("rcode_name"))
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
        "dns_query": F.lower(dash_null(F.col("query"))),
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
    error = dash_null(F.col("error_code"))
    status = (
        F.when(console & console_result.isNotNull(), normalize_status(console_result))
        .when(error.isNotNull(), F.lit("failure"))
        .otherwise(F.lit("success"))
    )
    session_user = F.regexp_extract(F.col("identity_arn"), r"(?s)assumed-role/[^/]+/(.+)$", 1)
    user = F.coalesce(
        dash_null(F.col("user_name")),
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
        "session_hint": dash_null(F.col("access_key_id")),
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
    user = dash_null(F.col("user"))
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
    return events.select(*columns, *lineage_columns())
