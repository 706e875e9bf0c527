"""`gold.baselines`: the profile a day is compared with, built from the days before it. The
incremental step (yesterday's profile advanced by one day), the full recompute (the same
rows from the whole history), and the derived columns (medians, MADs, learning period).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.core.config import BaselineSettings
from jobs.core.tables import (
    BASELINE_ITEM_SETS,
    BASELINES,
    DAILY_VALUES,
    ITEM_HISTORY,
)
from jobs.features.statistics import median_of_sorted
from jobs.stages.baselines.entity_daily import (
    ACCOUNT_ENTITY_TYPES,
    EMPTY_COUNTS_SQL,
    KEYS,
    ZEROS_SQL,
    conform_types,
    sorted_map_sql,
)

# Which window each item set lives in (BaselineSettings field names).
HABIT_SETS = ("src_cities", "src_asns", "src_ips", "apps", "cloud_actions", "process_pairs")
COUNTRY_DEVICE_SETS = ("src_countries", "devices")
HOST_SETS = ("dst_hosts", "users")
WINDOW_OF_GROUP = {
    "habit": "habit_window_days",
    "country_device": "country_device_window_days",
    "host": "host_window_days",
}
_SETS_OF_GROUP = {"habit": HABIT_SETS, "country_device": COUNTRY_DEVICE_SETS, "host": HOST_SETS}
if sorted(s for g in _SETS_OF_GROUP.values() for s in g) != sorted(BASELINE_ITEM_SETS):
    raise AssertionError("every baseline item set belongs to exactly one window")
_HISTORY_TYPE = ITEM_HISTORY.simpleString()
_VALUES_TYPE = DAILY_VALUES.simpleString()
_EMPTY_HISTORY = f"CAST(map() AS {_HISTORY_TYPE})"
_EMPTY_VALUES = f"CAST(array() AS {_VALUES_TYPE})"
_VALUE_METRICS = ("events", "failures", "bytes_in", "bytes_out")


def set_windows(settings: BaselineSettings) -> dict[str, int]:
    """Item set -> its window in days."""
    return {
        name: int(getattr(settings, WINDOW_OF_GROUP[group]))
        for group, names in _SETS_OF_GROUP.items()
        for name in names
    }


def sql_date(day: date) -> str:
    return f"DATE'{day.isoformat()}'"


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
        F.expr(EMPTY_COUNTS_SQL),
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
        arrays, F.expr(ZEROS_SQL), lambda acc, a: F.zip_with(acc, a, lambda x, y: x + y)
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


def _finish(state: DataFrame, target: date | Column, settings: BaselineSettings) -> DataFrame:
    """Add what is derived from the state: learning flag, comparison target, robust statistics.
    `target`: the date the profile is for, or a column holding it (one profile per target)."""
    target_date = F.lit(target) if isinstance(target, date) else target
    is_account = F.col("entity_type").isin(*ACCOUNT_ENTITY_TYPES)
    days_known = F.datediff(target_date, F.col("first_seen"))
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
        target_date.alias("run_date"),
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
        "*", *[median_of_sorted(F.col(f"_v_{m}")).alias(f"{m}_median") for m in _VALUE_METRICS]
    )
    df = df.select(
        "*",
        *[
            F.expr(f"array_sort(transform(_v_{m}, x -> abs(x - {m}_median)))").alias(f"_dev_{m}")
            for m in _VALUE_METRICS
        ],
    )
    df = df.select(
        "*", *[median_of_sorted(F.col(f"_dev_{m}")).alias(f"{m}_mad") for m in _VALUE_METRICS]
    )
    return conform_types(df, BASELINES.schema)


def _set_update_sql(name: str, window: int, day: date, target: date, expiring: str) -> str:
    """Advance one item set by a day: count today's items, subtract the expiring day, drop stale items.

    An item seen today that is still in the set continues its streak (keeps `first_seen`);
    otherwise it starts a new one. Items are kept while last_seen >= target - window.
    """
    d = sql_date(day)
    added = (
        f"map_zip_with(coalesce(_p_{name}, {_EMPTY_HISTORY}), coalesce(_a_{name}, {EMPTY_COUNTS_SQL}), "
        f"(k, s, n) -> CASE WHEN n IS NULL THEN s "
        f"WHEN s IS NULL THEN named_struct('first_seen', {d}, 'last_seen', {d}, 'days', 1, 'events', n) "
        f"ELSE named_struct('first_seen', s.first_seen, 'last_seen', {d}, 'days', s.days + 1, "
        f"'events', s.events + n) END)"
    )
    subtracted = (
        f"map_zip_with({added}, coalesce({expiring}, {EMPTY_COUNTS_SQL}), "
        f"(k, s, n) -> CASE WHEN n IS NULL OR s IS NULL THEN s "
        f"ELSE named_struct('first_seen', s.first_seen, 'last_seen', s.last_seen, "
        f"'days', s.days - 1, 'events', s.events - n) END)"
    )
    lowest = sql_date(target - timedelta(days=window))
    kept = f"map_filter({subtracted}, (k, s) -> s IS NOT NULL AND s.last_seen >= {lowest})"
    return sorted_map_sql(kept)


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
    windows = {g: int(getattr(settings, f)) for g, f in WINDOW_OF_GROUP.items()}

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

    d = sql_date(day)
    lowest_habit = sql_date(target - timedelta(days=windows["habit"]))
    add = "coalesce(_add, false)"
    exprs = {
        "peer_group": "coalesce(_a_peer_group, _p_peer_group)",
        "tz": "coalesce(_a_tz, _p_tz)",
        "first_seen": f"coalesce(_p_first_seen, CASE WHEN {add} THEN {d} END)",
        "last_seen": f"CASE WHEN {add} THEN {d} ELSE _p_last_seen END",
        "days_active_to_date": f"coalesce(_p_days_active_to_date, 0) + CASE WHEN {add} THEN 1 ELSE 0 END",
        "signins_to_date": "coalesce(_p_signins_to_date, CAST(0 AS BIGINT)) + coalesce(_a_signins, CAST(0 AS BIGINT))",
        "hour_of_week": (
            f"zip_with(zip_with(coalesce(_p_hour_of_week, {ZEROS_SQL}), coalesce(_a_hour_of_week, {ZEROS_SQL}), "
            f"(x, y) -> x + y), coalesce(_e_habit_hour_of_week, {ZEROS_SQL}), (x, y) -> x - y)"
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


def full_baselines(
    obs: DataFrame, target: date | Sequence[date], settings: BaselineSettings
) -> DataFrame:
    """baselines(target) from the observations of every day before it (the fallback path).
    Given several targets, the profile of each (as many runs of one would give) in one query.

    Windowed parts read only their window; item `first_seen` (start of the item's current
    streak: no gap longer than the window) and the to-date counters read the whole history.
    """
    targets = sorted({target} if isinstance(target, date) else set(target))
    frame = obs.sparkSession.createDataFrame([(d,) for d in targets], "_target date")
    # each observation joins every target after it: one history per target
    hist = obs.join(F.broadcast(frame), F.col("run_date") < F.col("_target"))
    keys = [*KEYS, "_target"]
    habit = settings.habit_window_days
    habit_start = F.date_sub(F.col("_target"), habit)

    in_habit = F.col("run_date") >= habit_start
    entities = hist.groupBy(*keys).agg(
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
            *keys,
            "run_date",
            F.lit(name).alias("_set"),
            F.lit(windows[name]).alias("_window"),
            F.explode(name).alias("item", "n"),
        )
        exploded = part if exploded is None else exploded.unionByName(part)
    assert exploded is not None
    by_item = Window.partitionBy(*keys, "_set", "item").orderBy("run_date")
    previous_day = F.lag("run_date").over(by_item)
    starts_streak = previous_day.isNull() | (
        F.datediff("run_date", previous_day) > F.col("_window")
    )
    window_start = F.date_sub(F.col("_target"), F.col("_window"))
    in_window = F.col("run_date") >= window_start
    per_item = (
        exploded.withColumn("_starts", starts_streak)
        .groupBy(*keys, "_set", "item", "_window")
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
    sets = per_item.groupBy(*keys).agg(
        *[
            F.map_from_entries(
                F.array_sort(F.collect_list(F.when(F.col("_set") == name, entry)))
            ).alias(name)
            for name in BASELINE_ITEM_SETS
        ]
    )

    state = entities.join(sets, keys, "left")
    state = state.select(
        *keys,
        "peer_group",
        "tz",
        "first_seen",
        "last_seen",
        "days_active_to_date",
        "signins_to_date",
        F.coalesce("hour_of_week", F.expr(ZEROS_SQL)).alias("hour_of_week"),
        *[
            F.coalesce(F.col(s).cast(ITEM_HISTORY), F.expr(_EMPTY_HISTORY)).alias(s)
            for s in BASELINE_ITEM_SETS
        ],
        F.coalesce(F.col("daily_values").cast(DAILY_VALUES), F.expr(_EMPTY_VALUES)).alias(
            "daily_values"
        ),
    )
    return _finish(state, F.col("_target"), settings)


def days_needed(targets: Iterable[date], settings: BaselineSettings) -> list[date]:
    """The entity_daily days the incremental steps for `targets` read: the day before and the leaving days."""
    out: set[date] = set()
    for target in targets:
        day = target - timedelta(days=1)
        out.add(day)
        for field in WINDOW_OF_GROUP.values():
            out.add(day - timedelta(days=int(getattr(settings, field))))
    return sorted(out)
