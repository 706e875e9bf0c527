"""Behavioral baselines: per-entity daily aggregates and the rolling profiles scoring compares to.

`gold.entity_daily` for day D is computed from one day of `silver.events`.
`gold.baselines` for day D is the profile D's activity is judged against, built only from
`entity_daily` of the days before D, incrementally: baselines(D) is baselines(D-1) advanced
by entity_daily(D-1), minus the day that leaves each window. Item sets keep
first/last-seen dates, so adding a day never rescans a window. A full recompute from the
entity_daily history is the fallback when baselines(D-1) is absent; it gives the same rows
(tests assert it), so replays and backfills are exact whichever path a date takes.

Pure transforms: `entity_daily`, `observations`, `advance_baselines`, `full_baselines`.
I/O only in `run_baselines`. Column meanings and costs: docs/baselines.md.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs.config import BaselineSettings
from jobs.lake import require_columns
from jobs.pipeline import PipelineError, RunContext, StageResult
from jobs.reference import ReferenceDataError, asset_inventory, identity_directory
from jobs.schemas import (
    BASELINE_ITEM_SETS,
    BASELINES,
    DAILY_VALUES,
    ENTITY_DAILY,
    HOUR_OF_WEEK_BUCKETS,
    ITEM_COUNTS,
    ITEM_HISTORY,
    SILVER_EVENTS,
)
from jobs.spark import Checkpoints

__all__ = [
    "ACCOUNT_ENTITY_TYPES",
    "BASELINES_TABLE",
    "ENTITY_DAILY_TABLE",
    "SIGNIN_ACTIVITIES",
    "BaselinesInputError",
    "advance_baselines",
    "entity_daily",
    "full_baselines",
    "hour_of_week",
    "observations",
    "process_pair",
    "run_baselines",
    "set_windows",
]

SILVER_TABLE = "silver.events"
ENTITY_DAILY_TABLE = "gold.entity_daily"
BASELINES_TABLE = "gold.baselines"

KEYS = ("entity_type", "entity_id")
ACCOUNT_ENTITY_TYPES = ("user", "service_account")
# A sign-in is a successful (or failed) logon: IdP session start, Windows 4624/4625, sshd.
SIGNIN_ACTIVITIES = ("logon",)

# Which window each item set lives in (BaselineSettings field names).
HABIT_SETS = ("src_cities", "src_asns", "src_ips", "apps", "cloud_actions", "process_pairs")
COUNTRY_DEVICE_SETS = ("src_countries", "devices")
HOST_SETS = ("dst_hosts", "users")
_WINDOW_OF_GROUP = {
    "habit": "habit_window_days",
    "country_device": "country_device_window_days",
    "host": "host_window_days",
}
_SETS_OF_GROUP = {"habit": HABIT_SETS, "country_device": COUNTRY_DEVICE_SETS, "host": HOST_SETS}
assert sorted(s for g in _SETS_OF_GROUP.values() for s in g) == sorted(BASELINE_ITEM_SETS)

_COUNTS_TYPE = ITEM_COUNTS.simpleString()
_HISTORY_TYPE = ITEM_HISTORY.simpleString()
_VALUES_TYPE = DAILY_VALUES.simpleString()
_ZEROS = f"array_repeat(CAST(0 AS BIGINT), {HOUR_OF_WEEK_BUCKETS})"
_EMPTY_COUNTS = f"CAST(map() AS {_COUNTS_TYPE})"
_EMPTY_HISTORY = f"CAST(map() AS {_HISTORY_TYPE})"
_EMPTY_VALUES = f"CAST(array() AS {_VALUES_TYPE})"
_VALUE_METRICS = ("events", "failures", "bytes_in", "bytes_out")


class BaselinesInputError(PipelineError):
    """The baselines stage cannot find or trust its input."""


def set_windows(settings: BaselineSettings) -> dict[str, int]:
    """Item set -> its window in days."""
    return {
        name: int(getattr(settings, _WINDOW_OF_GROUP[group]))
        for group, names in _SETS_OF_GROUP.items()
        for name in names
    }


def _conform(df: DataFrame, schema: StructType) -> DataFrame:
    """Cast to the declared types (nested nullability included) in the declared order."""
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def _sql_date(day: date) -> str:
    return f"DATE'{day.isoformat()}'"


def _sorted_map(map_sql: str) -> str:
    """Maps are stored with keys in order, so a replay writes byte-identical rows."""
    return f"map_from_entries(array_sort(map_entries({map_sql})))"


# ---------------------------------------------------------------------------------------------
# gold.entity_daily
# ---------------------------------------------------------------------------------------------


def hour_of_week(event_time: Column, tz: Column) -> Column:
    """0..167 with Monday 00:00 = 0, in `tz` (UTC when null). Scoring buckets events the same way."""
    local = F.from_utc_timestamp(event_time, F.coalesce(tz, F.lit("UTC")))
    return F.weekday(local) * 24 + F.hour(local)


def _basename(path: Column) -> Column:
    return F.lower(F.regexp_extract(F.coalesce(path, F.lit("")), r"([^\\/]+)$", 1))


def process_pair(parent: Column, child: Column) -> Column:
    """`parent.exe>child.exe`: lower-case basenames, the key scoring looks pairs up by."""
    return F.when(child.isNotNull(), F.concat_ws(">", _basename(parent), _basename(child)))


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
    return _conform(out, ENTITY_DAILY)


# ---------------------------------------------------------------------------------------------
# observations: entity_daily rows plus one row per peer group per day
# ---------------------------------------------------------------------------------------------

OBSERVATION_COLUMNS = (
    "run_date",
    *KEYS,
    "peer_group",
    "tz",
    "signins",
    "hour_of_week",
    *BASELINE_ITEM_SETS,
    "daily_values",
)


def _sum_count_maps(maps: Column) -> Column:
    merged = F.aggregate(
        maps,
        F.expr(_EMPTY_COUNTS),
        lambda acc, m: F.map_zip_with(
            acc,
            m,
            lambda _k, a, b: (
                F.coalesce(a, F.lit(0).cast("long")) + F.coalesce(b, F.lit(0).cast("long"))
            ),
        ),
    )
    return F.map_from_entries(F.array_sort(F.map_entries(merged)))


def _sum_hour_arrays(arrays: Column) -> Column:
    return F.aggregate(
        arrays, F.expr(_ZEROS), lambda acc, a: F.zip_with(acc, a, lambda x, y: x + y)
    )


def _daily_value(member: Column) -> Column:
    return F.struct(
        F.col("run_date").alias("day"),
        member.alias("member"),
        *[F.col(m) for m in (*_VALUE_METRICS, "privileged_actions")],
    )


def observations(daily: DataFrame) -> DataFrame:
    """gold.entity_daily rows -> the rows baselines fold in: each entity-day, plus each peer group-day.

    A peer group's day sums its members' hour-of-week counts and item counts; its
    `daily_values` holds one element per member, so its robust statistics are over member-days.
    Membership is the member's `peer_group` on that day.
    """
    entities = daily.select(
        "run_date",
        *KEYS,
        "peer_group",
        "tz",
        "signins",
        "hour_of_week",
        *BASELINE_ITEM_SETS,
        F.array(_daily_value(F.lit(None).cast("string"))).alias("daily_values"),
    )
    members = daily.where(
        F.col("entity_type").isin(*ACCOUNT_ENTITY_TYPES) & F.col("peer_group").isNotNull()
    )
    peers = members.groupBy("run_date", F.col("peer_group").alias("entity_id")).agg(
        F.sum("signins").cast("long").alias("signins"),
        _sum_hour_arrays(F.collect_list("hour_of_week")).alias("hour_of_week"),
        *[_sum_count_maps(F.collect_list(name)).alias(name) for name in BASELINE_ITEM_SETS],
        F.array_sort(F.collect_list(_daily_value(F.col("entity_id")))).alias("daily_values"),
    )
    peers = peers.select(
        "run_date",
        F.lit("peer_group").alias("entity_type"),
        "entity_id",
        F.lit(None).cast("string").alias("peer_group"),
        F.lit(None).cast("string").alias("tz"),
        "signins",
        "hour_of_week",
        *BASELINE_ITEM_SETS,
        "daily_values",
    )
    return entities.unionByName(peers)


# ---------------------------------------------------------------------------------------------
# gold.baselines: the incremental step, the full recompute, and the derived columns
# ---------------------------------------------------------------------------------------------


def _median_sql(sorted_array: str) -> str:
    n = f"size({sorted_array})"
    mid = f"CAST({n} DIV 2 AS INT)"
    return (
        f"CASE WHEN {n} = 0 THEN NULL "
        f"WHEN {n} % 2 = 1 THEN element_at({sorted_array}, {mid} + 1) "
        f"ELSE (element_at({sorted_array}, {mid}) + element_at({sorted_array}, {mid} + 1)) / 2 END"
    )


def _finish(state: DataFrame, target: date, settings: BaselineSettings) -> DataFrame:
    """Add what is derived from the state: learning flag, comparison target, robust statistics."""
    is_account = F.col("entity_type").isin(*ACCOUNT_ENTITY_TYPES)
    days_known = F.datediff(F.lit(target), F.col("first_seen"))
    in_learning = F.coalesce(days_known < settings.learning_period_days, F.lit(True)) | (
        is_account & (F.col("signins_to_date") < settings.learning_min_signins)
    )
    to_peers = in_learning & is_account & F.col("peer_group").isNotNull()
    # Few projections with each sorted array computed once: analysis and codegen stay small.
    sorted_values = [
        F.expr(
            f"array_sort(transform(daily_values, v -> CAST(coalesce(v.{m}, 0) AS DOUBLE)))"
        ).alias(f"_v_{m}")
        for m in _VALUE_METRICS
    ]
    df = state.select(
        "*",
        F.lit(target).alias("run_date"),
        in_learning.alias("in_learning"),
        F.when(to_peers, F.lit("peer_group"))
        .otherwise(F.col("entity_type"))
        .alias("compare_to_type"),
        F.when(to_peers, F.col("peer_group")).otherwise(F.col("entity_id")).alias("compare_to"),
        F.lit(settings.habit_window_days).alias("habit_window_days"),
        F.lit(settings.country_device_window_days).alias("country_device_window_days"),
        F.lit(settings.host_window_days).alias("host_window_days"),
        F.size("daily_values").alias("days_observed"),
        F.when(
            F.col("entity_type") == "peer_group",
            F.expr("size(array_distinct(transform(daily_values, v -> v.member)))"),
        ).alias("members_observed"),
        F.expr(
            "aggregate(daily_values, CAST(0 AS BIGINT), (acc, v) -> acc + coalesce(v.privileged_actions, 0))"
        ).alias("privileged_actions_total"),
        F.expr("size(filter(daily_values, v -> v.privileged_actions > 0))").alias(
            "privileged_days"
        ),
        *sorted_values,
    )
    df = df.select(
        "*", *[F.expr(_median_sql(f"_v_{m}")).alias(f"{m}_median") for m in _VALUE_METRICS]
    )
    df = df.select(
        "*",
        *[
            F.expr(f"array_sort(transform(_v_{m}, x -> abs(x - {m}_median)))").alias(f"_dev_{m}")
            for m in _VALUE_METRICS
        ],
    )
    df = df.select(
        "*", *[F.expr(_median_sql(f"_dev_{m}")).alias(f"{m}_mad") for m in _VALUE_METRICS]
    )
    return _conform(df, BASELINES)


def _set_update_sql(name: str, window: int, day: date, target: date, expiring: str) -> str:
    """Advance one item set by a day: count today's items, subtract the expiring day, drop stale items.

    An item seen today that is still in the set continues its streak (keeps `first_seen`);
    otherwise it starts a new one. Items are kept while last_seen >= target - window.
    """
    d = _sql_date(day)
    added = (
        f"map_zip_with(coalesce(_p_{name}, {_EMPTY_HISTORY}), coalesce(_a_{name}, {_EMPTY_COUNTS}), "
        f"(k, s, n) -> CASE WHEN n IS NULL THEN s "
        f"WHEN s IS NULL THEN named_struct('first_seen', {d}, 'last_seen', {d}, 'days', 1, 'events', n) "
        f"ELSE named_struct('first_seen', s.first_seen, 'last_seen', {d}, 'days', s.days + 1, "
        f"'events', s.events + n) END)"
    )
    subtracted = (
        f"map_zip_with({added}, coalesce({expiring}, {_EMPTY_COUNTS}), "
        f"(k, s, n) -> CASE WHEN n IS NULL OR s IS NULL THEN s "
        f"ELSE named_struct('first_seen', s.first_seen, 'last_seen', s.last_seen, "
        f"'days', s.days - 1, 'events', s.events - n) END)"
    )
    lowest = _sql_date(target - timedelta(days=window))
    kept = f"map_filter({subtracted}, (k, s) -> s IS NOT NULL AND s.last_seen >= {lowest})"
    return _sorted_map(kept)


_STATE_COLUMNS = (
    *KEYS,
    "peer_group",
    "tz",
    "first_seen",
    "last_seen",
    "days_active_to_date",
    "signins_to_date",
    "hour_of_week",
    *BASELINE_ITEM_SETS,
    "daily_values",
)


def advance_baselines(
    previous: DataFrame, obs: DataFrame, target: date, settings: BaselineSettings
) -> DataFrame:
    """baselines(target - 1) + observations of day target - 1 -> baselines(target).

    `obs` must hold the observations (see `observations`) of day target - 1 and of each day
    leaving a window (target - 1 - window); other days are ignored. `previous` must have been
    built with the same windows. Cost: the state plus one day, whatever the window lengths.
    """
    day = target - timedelta(days=1)
    windows = {g: int(getattr(settings, f)) for g, f in _WINDOW_OF_GROUP.items()}

    # One shuffle: stack the previous state, the added day and the leaving days, one row per
    # (entity, part), and pick each part's columns back out per entity.
    parts = [
        previous.select(
            *KEYS,
            F.lit(True).alias("_prev"),
            *[F.col(c).alias(f"_p_{c}") for c in _STATE_COLUMNS[2:]],
        ),
        obs.where(F.col("run_date") == F.lit(day)).select(
            *KEYS,
            F.lit(True).alias("_add"),
            *[F.col(c).alias(f"_a_{c}") for c in OBSERVATION_COLUMNS[3:]],
        ),
    ]
    for group, window in windows.items():
        cols = [F.col(s).alias(f"_e_{group}_{s}") for s in _SETS_OF_GROUP[group]]
        if group == "habit":
            cols.append(F.col("hour_of_week").alias("_e_habit_hour_of_week"))
        leaving = day - timedelta(days=window)
        parts.append(obs.where(F.col("run_date") == F.lit(leaving)).select(*KEYS, *cols))
    stacked = parts[0]
    for part in parts[1:]:
        stacked = stacked.unionByName(part, allowMissingColumns=True)
    picked = [c for c in stacked.columns if c not in KEYS]
    joined = (
        stacked.groupBy(*KEYS)
        .agg(*[F.first(c, ignorenulls=True).alias(c) for c in picked])
        .where(F.col("_prev") | F.col("_add"))  # a leaving day alone never creates an entity
    )

    d = _sql_date(day)
    lowest_habit = _sql_date(target - timedelta(days=windows["habit"]))
    add = "coalesce(_add, false)"
    exprs = {
        "peer_group": "coalesce(_a_peer_group, _p_peer_group)",
        "tz": "coalesce(_a_tz, _p_tz)",
        "first_seen": f"coalesce(_p_first_seen, CASE WHEN {add} THEN {d} END)",
        "last_seen": f"CASE WHEN {add} THEN {d} ELSE _p_last_seen END",
        "days_active_to_date": f"coalesce(_p_days_active_to_date, 0) + CASE WHEN {add} THEN 1 ELSE 0 END",
        "signins_to_date": "coalesce(_p_signins_to_date, CAST(0 AS BIGINT)) + coalesce(_a_signins, CAST(0 AS BIGINT))",
        "hour_of_week": (
            f"zip_with(zip_with(coalesce(_p_hour_of_week, {_ZEROS}), coalesce(_a_hour_of_week, {_ZEROS}), "
            f"(x, y) -> x + y), coalesce(_e_habit_hour_of_week, {_ZEROS}), (x, y) -> x - y)"
        ),
        "daily_values": (
            f"array_sort(filter(concat(coalesce(_p_daily_values, {_EMPTY_VALUES}), "
            f"coalesce(_a_daily_values, {_EMPTY_VALUES})), v -> v.day >= {lowest_habit}))"
        ),
    }
    for group, names in _SETS_OF_GROUP.items():
        for name in names:
            exprs[name] = _set_update_sql(name, windows[group], day, target, f"_e_{group}_{name}")
    state = joined.select(*KEYS, *[F.expr(exprs[c]).alias(c) for c in _STATE_COLUMNS[2:]])
    return _finish(state, target, settings)


def full_baselines(obs: DataFrame, target: date, settings: BaselineSettings) -> DataFrame:
    """baselines(target) from the observations of every day before it (the fallback path).

    Windowed parts read only their window; item `first_seen` (start of the item's current
    streak: no gap longer than the window) and the to-date counters read the whole history.
    """
    hist = obs.where(F.col("run_date") < F.lit(target))
    habit = settings.habit_window_days
    habit_start = F.lit(target - timedelta(days=habit))

    in_habit = F.col("run_date") >= habit_start
    entities = hist.groupBy(*KEYS).agg(
        F.max_by("peer_group", F.when(F.col("peer_group").isNotNull(), F.col("run_date"))).alias(
            "peer_group"
        ),
        F.max_by("tz", F.when(F.col("tz").isNotNull(), F.col("run_date"))).alias("tz"),
        F.min("run_date").alias("first_seen"),
        F.max("run_date").alias("last_seen"),
        F.count(F.lit(1)).cast("int").alias("days_active_to_date"),
        F.sum("signins").cast("long").alias("signins_to_date"),
        _sum_hour_arrays(F.collect_list(F.when(in_habit, F.col("hour_of_week")))).alias(
            "hour_of_week"
        ),
        F.array_sort(F.flatten(F.collect_list(F.when(in_habit, F.col("daily_values"))))).alias(
            "daily_values"
        ),
    )

    windows = set_windows(settings)
    exploded = None
    for name in BASELINE_ITEM_SETS:
        part = hist.select(
            *KEYS,
            "run_date",
            F.lit(name).alias("_set"),
            F.lit(windows[name]).alias("_window"),
            F.explode(name).alias("item", "n"),
        )
        exploded = part if exploded is None else exploded.unionByName(part)
    assert exploded is not None
    by_item = Window.partitionBy(*KEYS, "_set", "item").orderBy("run_date")
    previous_day = F.lag("run_date").over(by_item)
    starts_streak = previous_day.isNull() | (
        F.datediff("run_date", previous_day) > F.col("_window")
    )
    window_start = F.date_sub(F.lit(target), F.col("_window"))
    in_window = F.col("run_date") >= window_start
    per_item = (
        exploded.withColumn("_starts", starts_streak)
        .groupBy(*KEYS, "_set", "item", "_window")
        .agg(
            F.max(F.when(F.col("_starts"), F.col("run_date"))).alias("first_seen"),
            F.max("run_date").alias("last_seen"),
            F.count(F.when(in_window, F.lit(1))).cast("int").alias("days"),
            F.sum(F.when(in_window, F.col("n"))).cast("long").alias("events"),
        )
        .where(F.col("last_seen") >= window_start)
    )
    entry = F.struct(
        F.col("item").alias("key"),
        F.struct("first_seen", "last_seen", "days", "events").alias("value"),
    )
    sets = per_item.groupBy(*KEYS).agg(
        *[
            F.map_from_entries(
                F.array_sort(F.collect_list(F.when(F.col("_set") == name, entry)))
            ).alias(name)
            for name in BASELINE_ITEM_SETS
        ]
    )

    state = entities.join(sets, list(KEYS), "left")
    state = state.select(
        *KEYS,
        "peer_group",
        "tz",
        "first_seen",
        "last_seen",
        "days_active_to_date",
        "signins_to_date",
        F.coalesce("hour_of_week", F.expr(_ZEROS)).alias("hour_of_week"),
        *[
            F.coalesce(F.col(s).cast(ITEM_HISTORY), F.expr(_EMPTY_HISTORY)).alias(s)
            for s in BASELINE_ITEM_SETS
        ],
        F.coalesce(F.col("daily_values").cast(DAILY_VALUES), F.expr(_EMPTY_VALUES)).alias(
            "daily_values"
        ),
    )
    return _finish(state, target, settings)


def days_needed(targets: Iterable[date], settings: BaselineSettings) -> list[date]:
    """The entity_daily days the incremental steps for `targets` read: the day before and the leaving days."""
    out: set[date] = set()
    for target in targets:
        day = target - timedelta(days=1)
        out.add(day)
        for field in _WINDOW_OF_GROUP.values():
            out.add(day - timedelta(days=int(getattr(settings, field))))
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# I/O entry
# ---------------------------------------------------------------------------------------------


def known_zones() -> list[str]:
    """IANA region ids (`area/city`) Spark accepts, plus UTC."""
    regions = {
        z
        for z in zoneinfo.available_timezones()
        if "/" in z and not z.startswith(("posix/", "right/"))
    }
    return sorted(regions | {"UTC"})


def _zone_or_null(col: str) -> Column:
    """The time zone if it is a known region id; a typo must not fail the whole stage."""
    return F.when(F.col(col).isin(*known_zones()), F.col(col))


def _reference(ctx: RunContext) -> tuple[DataFrame | None, DataFrame | None, list[str]]:
    """Directory accounts and inventory hosts with valid time zones; notes on what is missing."""
    notes: list[str] = []
    accounts = hosts = None
    try:
        accounts = identity_directory(ctx.spark, ctx.settings).select(
            "user_id", "account_type", "peer_group", _zone_or_null("timezone").alias("timezone")
        )
    except ReferenceDataError as exc:
        notes.append(f"identity directory unavailable, account hours in UTC: {exc}")
    try:
        hosts = asset_inventory(ctx.spark, ctx.settings).select(
            "asset_id", _zone_or_null("timezone").alias("timezone")
        )
    except ReferenceDataError as exc:
        notes.append(f"asset inventory unavailable, host hours in UTC: {exc}")
    return accounts, hosts, notes


def _stored_state(ctx: RunContext, day: date, settings: BaselineSettings) -> DataFrame | None:
    """baselines(day) from the lake, if present and built with the configured windows."""
    lake = ctx.lake
    if not lake.exists(BASELINES_TABLE):
        return None
    stored = require_columns(lake.read_dates(BASELINES_TABLE, [day]), BASELINES, BASELINES_TABLE)
    first = stored.select(*_WINDOW_OF_GROUP.values()).limit(1).collect()
    if not first:
        return None
    if tuple(first[0]) != tuple(int(getattr(settings, f)) for f in _WINDOW_OF_GROUP.values()):
        return None
    return stored


def _empty(ctx: RunContext, schema: StructType) -> DataFrame:
    return ctx.spark.createDataFrame([], schema)


def _entity_daily_history(ctx: RunContext, before: date) -> DataFrame:
    lake = ctx.lake
    if not lake.exists(ENTITY_DAILY_TABLE):
        return _empty(ctx, ENTITY_DAILY)
    daily = lake.read(ENTITY_DAILY_TABLE).where(F.col("run_date") < F.lit(before))
    return require_columns(daily, ENTITY_DAILY, ENTITY_DAILY_TABLE)


def run_baselines(
    ctx: RunContext, dates: list[date], *, rebuild_entity_daily: bool = True
) -> StageResult:
    """Write gold.entity_daily for `dates` (one job), then gold.baselines date by date.

    Each date advances the previous date's baselines read from the lake (written moments
    before inside a range); a date whose previous baselines are missing, or were built with
    other windows, is recomputed in full from the entity_daily history.
    """
    if not dates:
        raise BaselinesInputError("baselines: no dates to run")
    dates = sorted(set(dates))
    settings = ctx.settings.baselines
    lake = ctx.lake
    result = StageResult(stage="baselines", dates=dates)

    if rebuild_entity_daily:
        if not lake.exists(SILVER_TABLE):
            raise BaselinesInputError(
                f"{SILVER_TABLE} not found in {lake.root}; run normalize first"
            )
        events = require_columns(
            lake.read_dates(SILVER_TABLE, dates), SILVER_EVENTS, f"baselines input {SILVER_TABLE}"
        )
        accounts, hosts, notes = _reference(ctx)
        daily = require_columns(
            entity_daily(events, accounts, hosts), ENTITY_DAILY, ENTITY_DAILY_TABLE
        )
        lake.replace_dates(daily, ENTITY_DAILY_TABLE, dates)
        result.rows[ENTITY_DAILY_TABLE] = lake.read_dates(ENTITY_DAILY_TABLE, dates).count()
        if notes:
            result.details["reference"] = notes

    if lake.exists(ENTITY_DAILY_TABLE):
        needed = require_columns(
            lake.read_dates(ENTITY_DAILY_TABLE, days_needed(dates, settings)),
            ENTITY_DAILY,
            ENTITY_DAILY_TABLE,
        )
    else:
        needed = _empty(ctx, ENTITY_DAILY)

    paths: dict[str, str] = {}
    written: date | None = None
    with Checkpoints() as keep:
        obs = keep(observations(needed))
        for target in dates:
            previous_day = target - timedelta(days=1)
            if written == previous_day:  # written by this run, with these windows
                previous: DataFrame | None = require_columns(
                    lake.read_dates(BASELINES_TABLE, [previous_day]), BASELINES, BASELINES_TABLE
                )
            else:
                previous = _stored_state(ctx, previous_day, settings)
            if previous is None:
                history = observations(_entity_daily_history(ctx, target))
                profile = full_baselines(history, target, settings)
                paths[target.isoformat()] = "full"
            else:
                profile = advance_baselines(previous, obs, target, settings)
                paths[target.isoformat()] = "incremental"
            # One commit per date, and the next date reads it back: a range builds exactly as
            # date-by-date runs do, a failure keeps the dates already done, the plan never grows.
            profile = require_columns(profile, BASELINES, BASELINES_TABLE)
            lake.replace_dates(profile, BASELINES_TABLE, [target])
            written = target

    result.rows[BASELINES_TABLE] = lake.read_dates(BASELINES_TABLE, dates).count()
    result.details["paths"] = paths
    return result
