"""`gold.entity_daily`: one day of `silver.events` per entity (user, service account, host):
counts, the hour-of-week histogram and the items it touched.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs.core.tables import (
    BASELINE_ITEM_SETS,
    ENTITY_DAILY,
    HOUR_OF_WEEK_BUCKETS,
    ITEM_COUNTS,
)
from jobs.features.calendar import hour_of_week
from jobs.features.processes import process_pair

KEYS = ("entity_type", "entity_id")
ACCOUNT_ENTITY_TYPES = ("user", "service_account")
# A sign-in is a successful (or failed) logon: IdP session start, Windows 4624/4625, sshd.
SIGNIN_ACTIVITIES = ("logon",)

COUNTS_TYPE = ITEM_COUNTS.simpleString()
ZEROS_SQL = f"array_repeat(CAST(0 AS BIGINT), {HOUR_OF_WEEK_BUCKETS})"
EMPTY_COUNTS_SQL = f"CAST(map() AS {COUNTS_TYPE})"


def conform_types(df: DataFrame, schema: StructType) -> DataFrame:
    """Cast to the declared types (nested nullability included) in the declared order."""
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def sorted_map_sql(map_sql: str) -> str:
    """Maps are stored with keys in order, so a replay writes byte-identical rows."""
    return f"map_from_entries(array_sort(map_entries({map_sql})))"


# ---------------------------------------------------------------------------------------------
# gold.entity_daily
# ---------------------------------------------------------------------------------------------


def _blank_to_null(col: Column) -> Column:
    return F.when(col != "", col)


def _item_columns() -> dict[str, Column]:
    """Item set -> the item an entity-event row contributes (null contributes nothing).

    For a host, `devices` and `dst_hosts` are the other end of the activity (clients that
    reached it; hosts it reached), never the host itself.
    """
    other_end = {
        c: F.when(~F.col(c).eqNullSafe(F.col("entity_id")), F.col(c))
        for c in ("device_id", "dst_host")
    }
    return {
        "src_countries": F.col("src_country"),
        "src_cities": F.when(
            F.col("src_city").isNotNull(), F.concat_ws("/", "src_country", "src_city")
        ),
        "src_asns": F.col("src_asn").cast("string"),
        "src_ips": F.col("src_ip"),
        "devices": other_end["device_id"],
        "dst_hosts": other_end["dst_host"],
        "apps": F.col("app_name"),
        "cloud_actions": F.when(
            F.col("cloud_action").isNotNull(), F.concat_ws(":", "cloud_service", "cloud_action")
        ),
        "process_pairs": process_pair(F.col("parent_process_name"), F.col("process_name")),
        "users": F.when(F.col("_kind") == "host", F.col("user_id")),
    }


def entity_daily(
    events: DataFrame, accounts: DataFrame | None = None, hosts: DataFrame | None = None
) -> DataFrame:
    """silver.events rows (any number of run dates) -> one gold.entity_daily row per entity per day.

    `accounts` (user_id, account_type, peer_group, timezone) and `hosts` (asset_id, timezone)
    come from the directory and the asset inventory; time zones must be valid zone ids. Without
    them, service accounts come from silver `user_type`, peer groups from silver, and hours are UTC.
    """
    spark = events.sparkSession
    acct_rows = events.where(F.col("user_id").isNotNull()).select(
        "*",
        F.lit("account").alias("_kind"),
        F.col("user_id").alias("entity_id"),
        F.lit("actor").alias("_role"),
    )
    host_ids = F.array_distinct(
        F.filter(F.array("dst_host", "device_id"), lambda x: x.isNotNull() & (x != ""))
    )
    host_rows = events.select(
        "*", F.lit("host").alias("_kind"), F.explode(host_ids).alias("entity_id")
    ).withColumn(
        "_role",
        F.when(F.col("entity_id") == F.col("dst_host"), "target").otherwise("source"),
    )
    rows = acct_rows.unionByName(host_rows)

    lookups = []
    if accounts is not None:
        lookups.append(
            accounts.groupBy(F.col("user_id").alias("entity_id"))
            .agg(
                F.max("account_type").alias("_dir_type"),
                F.max("peer_group").alias("_dir_peer"),
                F.max("timezone").alias("tz"),
            )
            .withColumn("_kind", F.lit("account"))
        )
    if hosts is not None:
        lookups.append(
            hosts.groupBy(F.col("asset_id").alias("entity_id"))
            .agg(F.max("timezone").alias("tz"))
            .select(
                "entity_id",
                F.lit(None).cast("string").alias("_dir_type"),
                F.lit(None).cast("string").alias("_dir_peer"),
                "tz",
                F.lit("host").alias("_kind"),
            )
        )
    if lookups:
        lookup = lookups[0]
        for extra in lookups[1:]:
            lookup = lookup.unionByName(extra)
    else:
        lookup = spark.createDataFrame(
            [], "entity_id string, _dir_type string, _dir_peer string, tz string, _kind string"
        )
    rows = rows.join(F.broadcast(lookup), ["_kind", "entity_id"], "left")

    target = F.col("_role") == "target"
    rows = rows.withColumns(
        {
            "_how": hour_of_week(F.col("event_time"), F.col("tz")),
            # a target host receives what the source sent
            "_bytes_in": F.coalesce(
                F.when(target, F.col("bytes_out")).otherwise(F.col("bytes_in")), F.lit(0)
            ),
            "_bytes_out": F.coalesce(
                F.when(target, F.col("bytes_in")).otherwise(F.col("bytes_out")), F.lit(0)
            ),
        }
    )
    keys = ["run_date", "_kind", "entity_id"]

    is_failure = F.col("status") == "failure"
    is_signin = (
        (F.col("class_name") == "authentication")
        & F.col("activity_name").isin(*SIGNIN_ACTIVITIES)
        & (F.col("_role") != "source")
    )

    def count_if(cond: Column) -> Column:
        return F.sum(F.when(cond, 1).otherwise(0)).cast("long")

    counters = rows.groupBy(*keys).agg(
        F.max("_dir_type").alias("_dir_type"),
        F.max("_dir_peer").alias("_dir_peer"),
        F.max(F.coalesce("tz", F.lit("UTC"))).alias("tz"),
        F.max(F.col("user_type") == "service").alias("_silver_service"),
        F.max("peer_group").alias("_silver_peer"),
        F.count(F.lit(1)).alias("events"),
        count_if(is_failure).alias("failures"),
        count_if(is_signin & (F.col("status") == "success")).alias("signins"),
        count_if(is_signin & is_failure).alias("signin_failures"),
        count_if(F.col("is_privileged")).alias("privileged_actions"),
        F.sum("_bytes_in").cast("long").alias("bytes_in"),
        F.sum("_bytes_out").cast("long").alias("bytes_out"),
        F.min("event_time").alias("first_event_time"),
        F.max("event_time").alias("last_event_time"),
    )

    # One (set, item) row per entity-event and item, counted once per entity-day-item.
    items = [
        F.struct(F.lit(name).alias("set"), _blank_to_null(col).alias("item"))
        for name, col in _item_columns().items()
    ]
    items.append(F.struct(F.lit("_how").alias("set"), F.col("_how").cast("string").alias("item")))
    triples = (
        rows.select(
            *keys,
            F.explode(F.filter(F.array(*items), lambda x: x["item"].isNotNull())).alias("t"),
        )
        .groupBy(*keys, F.col("t.set").alias("set"), F.col("t.item").alias("item"))
        .agg(F.count(F.lit(1)).alias("n"))
    )
    entry = F.struct(F.col("item").alias("key"), F.col("n").alias("value"))
    maps = triples.groupBy(*keys).agg(
        *[
            F.map_from_entries(
                F.array_sort(F.collect_list(F.when(F.col("set") == name, entry)))
            ).alias(name)
            for name in BASELINE_ITEM_SETS
        ],
        F.map_from_entries(
            F.collect_list(
                F.when(
                    F.col("set") == "_how",
                    F.struct(F.col("item").cast("int").alias("key"), F.col("n").alias("value")),
                )
            )
        ).alias("_how_map"),
    )
    hour_counts = F.transform(
        F.sequence(F.lit(0), F.lit(HOUR_OF_WEEK_BUCKETS - 1)),
        lambda h: F.coalesce(F.element_at(F.col("_how_map"), h), F.lit(0).cast("long")),
    )

    is_service = F.coalesce(F.col("_dir_type") == "service", F.col("_silver_service"))
    out = counters.join(maps, keys, "inner").select(
        "run_date",
        F.when(F.col("_kind") == "host", "host")
        .when(is_service, "service_account")
        .otherwise("user")
        .alias("entity_type"),
        "entity_id",
        F.when(F.col("_kind") == "account", F.coalesce("_dir_peer", "_silver_peer")).alias(
            "peer_group"
        ),
        "tz",
        "events",
        "failures",
        "signins",
        "signin_failures",
        "privileged_actions",
        "bytes_in",
        "bytes_out",
        "first_event_time",
        "last_event_time",
        hour_counts.alias("hour_of_week"),
        *BASELINE_ITEM_SETS,
    )
    return conform_types(out, ENTITY_DAILY.schema)
