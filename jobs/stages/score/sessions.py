"""Sessions and entity-day views: the units the score stage attaches signals to.

Authentication activity is grouped into sessions: the events of one (user, device, source
IP) with no gap longer than `scoring.session_gap_minutes` between consecutive events.
Host, network, DNS and cloud activity has no natural session, so each gets one view per
entity per day. Every view row carries a deterministic `session_id` (a hash of the date,
the kind and the key), so re-running a date gives the same ids, and event-level signals
can compute the id of the view they belong to without a join.

All functions are pure `DataFrame -> DataFrame` transforms over `silver.events` rows.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, LongType, StringType, TimestampType

__all__ = [
    "AUTH_CLASS",
    "SESSION_KINDS",
    "VIEW_COLUMNS",
    "auth_sessions",
    "auth_sources",
    "cloud_days",
    "dns_days",
    "entity_type_of",
    "event_host",
    "host_days",
    "network_days",
    "sessionize",
    "user_key",
    "view_session_id",
]

AUTH_CLASS = "authentication"
SESSION_KINDS = ("auth", "auth_source", "host", "network", "dns", "cloud")
UNKNOWN = "-"

# Columns every view has, in this order; `session_frame` (jobs.stages.score.views) stacks them.
VIEW_COLUMNS = (
    "run_date",
    "session_id",
    "session_kind",
    "entity_type",
    "entity_id",
    "user_id",
    "device_id",
    "src_ip",
    "src_country",
    "session_start",
    "session_end",
    "event_count",
    "failure_count",
    "user_type",
    "peer_group",
    "sources",
)


def _key(col: str) -> Column:
    return F.coalesce(F.col(col).cast("string"), F.lit(UNKNOWN))


def view_session_id(run_date: Column, kind: str, *parts: Column) -> Column:
    """sha256 of date, kind and key parts: stable across runs, unique per view row."""
    text = F.concat_ws(
        "|",
        run_date.cast("string"),
        F.lit(kind),
        *[F.coalesce(p.cast("string"), F.lit(UNKNOWN)) for p in parts],
    )
    return F.substring(F.sha2(text, 256), 1, 32)


def entity_type_of(user_type: Column) -> Column:
    """Service accounts are their own entity type; every other account is a user."""
    return F.when(user_type == "service", F.lit("service_account")).otherwise(F.lit("user"))


def _failed(status: Column) -> Column:
    return F.when(status == "failure", 1).otherwise(0)


def account_spelling(raw: Column) -> Column:
    """One spelling per account of the directory's unknowns: lower case, and a domain given
    by its DNS name (`THESHIRE.LOCAL\\pgustavo`, as Windows writes Kerberos logons) by its
    first label, the NetBIOS name Windows writes everywhere else by default
    (`theshire\\pgustavo`). `user@domain` names are kept as they are."""
    return F.regexp_replace(F.lower(raw), r"^([^\\.@]+)\.[^\\@]*\\", "$1\\\\")


def user_key(df: DataFrame) -> Column:
    """Canonical user id, else the account's spelling (unknown accounts still form sessions;
    `account_spelling`)."""
    return F.coalesce(
        F.col("user_id"),
        F.concat(F.lit("unknown:"), account_spelling(F.col("user_name_raw"))),
        F.lit(UNKNOWN),
    )


def sessionize(events: DataFrame, gap_minutes: int) -> DataFrame:
    """Authentication events with a `session_id` (same user, device and source IP, no gap > N min).

    Sessions never span run dates: each date's output depends on that date's events only.
    """
    auth = events.where(F.col("class_name") == AUTH_CLASS).withColumn("_user", user_key(events))
    part: list[Column | str] = [
        "run_date",
        "_user",
        F.coalesce("device_id", F.lit(UNKNOWN)),
        F.coalesce("src_ip", F.lit(UNKNOWN)),
    ]
    ordered = Window.partitionBy(*part).orderBy("event_time", "event_uid")
    prev = F.lag("event_time").over(ordered)
    gap = F.col("event_time").cast("double") - prev.cast("double")
    starts = F.when(prev.isNull() | (gap > gap_minutes * 60), 1).otherwise(0)
    with_seq = auth.withColumn("_new", starts).withColumn(
        "_seq",
        F.sum("_new").over(ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)),
    )
    start = F.min("event_time").over(Window.partitionBy(*part, "_seq"))
    return (
        with_seq.withColumn("session_start", start)
        .withColumn(
            "session_id",
            view_session_id(
                F.col("run_date"),
                "auth",
                F.col("_user"),
                F.col("device_id"),
                F.col("src_ip"),
                F.date_format("session_start", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"),
            ),
        )
        .withColumnRenamed("_user", "user_key")
        .drop("_new", "_seq")
    )


def _first_by_time(col: str) -> Column:
    """The value of the earliest event that has one (deterministic tie-break on event_uid)."""
    return F.min_by(F.col(col), F.when(F.col(col).isNotNull(), F.struct("event_time", "event_uid")))


def auth_sessions(sessionized: DataFrame) -> DataFrame:
    """One row per authentication session, with what its signals and features need."""
    success = F.col("status") == "success"
    return (
        sessionized.groupBy("run_date", "session_id")
        .agg(
            F.first("user_key").alias("user_key"),
            F.max("user_id").alias("user_id"),
            F.max("device_id").alias("device_id"),
            F.max("src_ip").alias("src_ip"),
            F.coalesce(
                F.min_by(
                    "src_country",
                    F.when(success & F.col("src_country").isNotNull(), F.col("event_time")),
                ),
                _first_by_time("src_country"),
            ).alias("src_country"),
            F.min("event_time").alias("session_start"),
            F.max("event_time").alias("session_end"),
            F.count(F.lit(1)).alias("event_count"),
            F.sum(_failed(F.col("status"))).cast("long").alias("failure_count"),
            F.sum(F.when(success, 1).otherwise(0)).cast("long").alias("success_count"),
            F.sum(F.when(F.col("is_privileged"), 1).otherwise(0))
            .cast("long")
            .alias("privileged_count"),
            F.countDistinct("app_name").cast("long").alias("app_count"),
            F.sort_array(F.collect_set("dst_host")).alias("dst_hosts"),
            F.sort_array(F.collect_set("source")).alias("sources"),
            F.max("user_type").alias("user_type"),
            F.max("peer_group").alias("peer_group"),
            F.max(F.coalesce(F.col("src_is_known_egress"), F.lit(False))).alias(
                "src_is_known_egress"
            ),
            F.max(F.coalesce(F.col("src_is_internal"), F.lit(False))).alias("src_is_internal"),
        )
        .withColumn("session_kind", F.lit("auth"))
        .withColumn(
            "entity_type",
            F.when(F.col("user_id").isNull(), F.lit("ip")).otherwise(
                entity_type_of(F.col("user_type"))
            ),
        )
        .withColumn("entity_id", F.coalesce("user_id", "src_ip", "user_key"))
    )


def auth_sources(sessionized: DataFrame) -> DataFrame:
    """One row per source IP per day of authentication activity: what spray and brute-force
    signals about the source (not the accounts it targets) attach to."""
    failed = F.col("status") == "failure"
    return (
        sessionized.where(F.col("src_ip").isNotNull())
        .groupBy("run_date", "src_ip")
        .agg(
            F.min("event_time").alias("session_start"),
            F.max("event_time").alias("session_end"),
            F.count(F.lit(1)).alias("event_count"),
            F.sum(F.when(failed, 1).otherwise(0)).cast("long").alias("failure_count"),
            F.sum(F.when(F.col("status") == "success", 1).otherwise(0))
            .cast("long")
            .alias("success_count"),
            F.countDistinct("user_key").cast("long").alias("accounts"),
            F.countDistinct(F.when(failed, F.col("user_key")))
            .cast("long")
            .alias("failed_accounts"),
            F.max("src_country").alias("src_country"),
            F.max(F.coalesce(F.col("src_is_known_egress"), F.lit(False))).alias(
                "src_is_known_egress"
            ),
            F.max(F.coalesce(F.col("src_is_internal"), F.lit(False))).alias("src_is_internal"),
            F.sort_array(F.collect_set("source")).alias("sources"),
        )
        .withColumn("session_kind", F.lit("auth_source"))
        .withColumn("entity_type", F.lit("ip"))
        .withColumn("entity_id", F.col("src_ip"))
        .withColumn(
            "session_id", view_session_id(F.col("run_date"), "auth_source", F.col("src_ip"))
        )
    )


def event_host() -> Column:
    """The host an event happened on: the device of a process, the target of a logon; for the
    other Windows events (service installs, log clearing, directory access, ...) the host that
    logged them (`device_id`). Network and DNS events belong to their own views."""
    klass = F.col("class_name")
    windows = F.col("source") == "windows"
    return (
        F.when(klass == "process", F.coalesce("device_id", "dst_host"))
        .when(klass == AUTH_CLASS, F.when(windows, F.coalesce("dst_host", "device_id")).otherwise(F.col("dst_host")))
        .when(windows & ~F.coalesce(klass.isin("network", "dns"), F.lit(False)), F.coalesce("device_id", "dst_host"))
    )  # fmt: skip


def host_days(events: DataFrame) -> DataFrame:
    """One row per host per day: processes started on it and logons to it (and, for Windows
    hosts, every other event it logged, so that a detection on any of them has a view to attach
    to). A process opening another, or a thread injected into one, is not a process run."""
    on_host = events.withColumn("_host", event_host()).where(F.col("_host").isNotNull())
    is_proc = (F.col("class_name") == "process") & (F.col("activity_name") == "launch")
    is_logon = (F.col("class_name") == AUTH_CLASS) & F.col("dst_host").isNotNull()
    return (
        on_host.groupBy("run_date", "_host")
        .agg(
            F.min("event_time").alias("session_start"),
            F.max("event_time").alias("session_end"),
            F.count(F.lit(1)).alias("event_count"),
            F.sum(_failed(F.col("status"))).cast("long").alias("failure_count"),
            F.sum(F.when(is_proc, 1).otherwise(0)).cast("long").alias("process_count"),
            F.sum(F.when(is_logon, 1).otherwise(0)).cast("long").alias("logon_count"),
            F.countDistinct(F.when(is_logon, F.col("user_id"))).cast("long").alias("logon_users"),
            F.countDistinct(
                F.when(
                    is_proc,
                    F.concat_ws(">", F.lower("parent_process_name"), F.lower("process_name")),
                )
            )
            .cast("long")
            .alias("process_pairs"),
            F.sum(F.when(F.col("is_privileged"), 1).otherwise(0))
            .cast("long")
            .alias("privileged_count"),
            F.sort_array(F.collect_set("source")).alias("sources"),
            F.max("asset_criticality").alias("asset_criticality"),
        )
        .withColumnRenamed("_host", "entity_id")
        .withColumn("session_kind", F.lit("host"))
        .withColumn("entity_type", F.lit("host"))
        .withColumn("device_id", F.col("entity_id"))
        .withColumn("session_id", view_session_id(F.col("run_date"), "host", F.col("entity_id")))
    )


def network_entity(events: DataFrame) -> DataFrame:
    """Flows keyed by who sent them: the internal endpoint when known, else the source IP."""
    return events.withColumn("_entity", F.coalesce("device_id", "src_ip")).withColumn(
        "_entity_type", F.when(F.col("device_id").isNotNull(), F.lit("host")).otherwise(F.lit("ip"))
    )


def network_days(events: DataFrame, internet_facing_tag: str = "internet-facing") -> DataFrame:
    """One row per sending entity per day: volumes out to the internet, fan-out, failed attempts.

    A flow counts as failed when the sensor saw no payload either way or marked it a failure
    (Zeek S0/REJ and friends), which is what scanning looks like. `unsolicited_inbound`
    counts connections an outside source opened to internal hosts not tagged
    `internet_facing_tag` (those are not meant to be reachable from the internet).
    """
    flows = network_entity(events.where(F.col("class_name") == "network"))
    external_dst = ~F.coalesce(F.col("_dst_internal"), F.lit(False))
    outside_src = ~F.coalesce(F.col("src_is_internal"), F.lit(False)) & ~F.coalesce(
        F.col("src_is_known_egress"), F.lit(False)
    )
    exposed = F.coalesce(F.array_contains("asset_tags", internet_facing_tag), F.lit(False))
    unsolicited = outside_src & F.col("_dst_internal") & ~exposed
    flows = flows.withColumn("_dst_internal", _dst_is_internal())
    no_payload = (F.coalesce("bytes_in", F.lit(0)) == 0) & (F.coalesce("bytes_out", F.lit(0)) == 0)
    failed = (F.col("status") == "failure") | no_payload
    return (
        flows.groupBy("run_date", "_entity", "_entity_type")
        .agg(
            F.min("event_time").alias("session_start"),
            F.max("event_time").alias("session_end"),
            F.count(F.lit(1)).alias("event_count"),
            F.sum(F.when(failed, 1).otherwise(0)).cast("long").alias("failure_count"),
            F.sum(F.when(external_dst, F.coalesce("bytes_out", F.lit(0))).otherwise(0))
            .cast("long")
            .alias("bytes_out_external"),
            F.sum(F.coalesce("bytes_out", F.lit(0))).cast("long").alias("bytes_out"),
            F.sum(F.coalesce("bytes_in", F.lit(0))).cast("long").alias("bytes_in"),
            F.countDistinct("dst_ip").cast("long").alias("dst_ips"),
            F.countDistinct("dst_ip", "dst_port").cast("long").alias("dst_endpoints"),
            F.countDistinct("dst_port").cast("long").alias("dst_ports"),
            F.countDistinct(F.when(~external_dst, F.col("dst_ip")))
            .cast("long")
            .alias("internal_dst_ips"),
            F.sum(F.when(unsolicited, 1).otherwise(0)).cast("long").alias("unsolicited_inbound"),
            F.max(F.coalesce(F.col("src_is_internal"), F.lit(False))).alias("src_is_internal"),
            F.max(F.coalesce(F.col("src_is_known_egress"), F.lit(False))).alias(
                "src_is_known_egress"
            ),
            F.max("src_ip").alias("src_ip"),
            F.max("src_country").alias("src_country"),
            F.sort_array(F.collect_set("source")).alias("sources"),
        )
        .withColumnRenamed("_entity", "entity_id")
        .withColumnRenamed("_entity_type", "entity_type")
        .withColumn("session_kind", F.lit("network"))
        .withColumn("device_id", F.when(F.col("entity_type") == "host", F.col("entity_id")))
        .withColumn("session_id", view_session_id(F.col("run_date"), "network", F.col("entity_id")))
    )


def _dst_is_internal() -> Column:
    """A flow's destination is ours when it is a known asset or private address space."""
    ip = F.coalesce(F.col("dst_ip"), F.lit(""))
    private = (
        ip.startswith("10.")
        | ip.startswith("192.168.")
        | ip.rlike(r"^172\.(1[6-9]|2[0-9]|3[01])\.")
        | ip.startswith("127.")
        | ip.startswith("fd")
        | ip.startswith("fe80:")
    )
    return F.col("dst_host").isNotNull() | private


def dns_days(events: DataFrame) -> DataFrame:
    """One row per querying entity per day: volume, distinct names, failed lookups."""
    queries = network_entity(events.where(F.col("class_name") == "dns"))
    return (
        queries.groupBy("run_date", "_entity", "_entity_type")
        .agg(
            F.min("event_time").alias("session_start"),
            F.max("event_time").alias("session_end"),
            F.count(F.lit(1)).alias("event_count"),
            F.sum(F.when(F.upper("dns_rcode") == "NXDOMAIN", 1).otherwise(0))
            .cast("long")
            .alias("failure_count"),
            F.countDistinct(F.lower("dns_query")).cast("long").alias("distinct_queries"),
            F.max("src_ip").alias("src_ip"),
            F.sort_array(F.collect_set("source")).alias("sources"),
        )
        .withColumnRenamed("_entity", "entity_id")
        .withColumnRenamed("_entity_type", "entity_type")
        .withColumn("session_kind", F.lit("dns"))
        .withColumn("device_id", F.when(F.col("entity_type") == "host", F.col("entity_id")))
        .withColumn("session_id", view_session_id(F.col("run_date"), "dns", F.col("entity_id")))
    )


def cloud_principal(events: DataFrame) -> DataFrame:
    """Cloud API calls keyed by principal: the canonical account, else the raw identity."""
    return events.withColumn("_principal", F.coalesce("user_id", F.lower("user_name_raw")))


def cloud_days(events: DataFrame, iam_write_actions: tuple[str, ...]) -> DataFrame:
    """One row per principal per day of cloud control-plane activity."""
    calls = cloud_principal(events.where(F.col("class_name") == "api")).where(
        F.col("_principal").isNotNull()
    )
    is_iam_write = F.col("cloud_action").isin(*iam_write_actions)
    return (
        calls.groupBy("run_date", "_principal")
        .agg(
            F.min("event_time").alias("session_start"),
            F.max("event_time").alias("session_end"),
            F.count(F.lit(1)).alias("event_count"),
            F.sum(_failed(F.col("status"))).cast("long").alias("failure_count"),
            F.countDistinct("cloud_action").cast("long").alias("distinct_actions"),
            F.sum(F.when(is_iam_write, 1).otherwise(0)).cast("long").alias("iam_writes"),
            F.countDistinct("cloud_region").cast("long").alias("regions"),
            F.max("user_id").alias("user_id"),
            F.max("user_type").alias("user_type"),
            F.max("peer_group").alias("peer_group"),
            F.max("src_ip").alias("src_ip"),
            F.max("src_country").alias("src_country"),
            F.sort_array(F.collect_set("source")).alias("sources"),
        )
        .withColumnRenamed("_principal", "entity_id")
        .withColumn("session_kind", F.lit("cloud"))
        .withColumn("entity_type", entity_type_of(F.col("user_type")))
        .withColumn("session_id", view_session_id(F.col("run_date"), "cloud", F.col("entity_id")))
    )


def common_view(view: DataFrame, keep: tuple[str, ...] = ()) -> DataFrame:
    """Any view in the shared column layout (`VIEW_COLUMNS`, then `keep`), missing columns null."""
    types = {
        "session_start": TimestampType(),
        "session_end": TimestampType(),
        "event_count": LongType(),
        "failure_count": LongType(),
        "sources": ArrayType(StringType()),
    }
    have = set(view.columns)
    cols = []
    for name in VIEW_COLUMNS:
        if name in have:
            cols.append(
                F.col(name).cast(types.get(name, StringType()))
                if name != "run_date"
                else F.col(name)
            )
        else:
            cols.append(F.lit(None).cast(types.get(name, StringType())).alias(name))
    return view.select(*cols, *keep)
