"""Benchmark: the cost of adding one day to gold.baselines, for a 30- and a 90-day habit window.

Synthesises `gold.entity_daily` for a history of days at 1x (~150 users, ~15k events/day)
and 10x volume, primes baselines with a full recompute, then times the incremental stage
(`run_baselines` for one date: read the previous state and four days of entity_daily,
advance, write) a few times and keeps the median. Also times `entity_daily` itself on one
synthetic day of silver events. Writes bench/results/baselines.json and prints a table.

    .venv/bin/python bench/bench_baselines.py                # 1x and 10x, windows 30 and 90
    .venv/bin/python bench/bench_baselines.py --scales 1 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.core.config import Settings, load_settings
from jobs.core.context import RunContext
from jobs.core.tables import BASELINES, ENTITY_DAILY, HOUR_OF_WEEK_BUCKETS, SILVER_EVENTS
from jobs.stages.baselines.entity_daily import entity_daily
from jobs.stages.baselines.stage import run_baselines

RESULTS = Path(__file__).resolve().parent / "results" / "baselines.json"
START = date(2026, 1, 1)
USERS_1X = 150
EVENTS_PER_DAY_1X = 15_000
TARGET_RATIO = 1.3


def _u(*parts: Any) -> Any:
    """A deterministic uniform [0, 1) from the hash of `parts` (columns or literals)."""
    cols = [p if not isinstance(p, (str, int)) else F.lit(p) for p in parts]
    return F.pmod(F.xxhash64(*cols), F.lit(1_000_003)) / F.lit(1_000_003.0)


def _pick(prefix: Any, pool: int, count: int, *seed: Any) -> Any:
    """`count` draws from `prefix<0..pool-1>` (deduplicated, sorted) -> map item -> 1..9."""
    head = F.lit(prefix) if isinstance(prefix, str) else prefix
    items = F.array_sort(
        F.array_distinct(
            F.transform(
                F.sequence(F.lit(1), F.lit(count)),
                lambda j: F.concat(head, F.floor(_u(*seed, "pick", j) * pool).cast("string")),
            )
        )
    )
    counts = F.transform(items, lambda x: (F.floor(_u(*seed, x) * 9) + 1).cast("long"))
    return F.map_from_arrays(items, counts)


def synthetic_entity_daily(spark: SparkSession, scale: int, days: int) -> DataFrame:
    """entity_daily rows shaped like the generator's organisation: habitual items with a few
    new ones every day, users in 24 peer groups, workstations and servers as hosts."""
    users = USERS_1X * scale
    servers = 20 * scale
    per_user_events = EVENTS_PER_DAY_1X / USERS_1X
    day_col = F.date_add(F.lit(START), F.col("d").cast("int"))
    grid = spark.range(days).withColumnRenamed("id", "d")
    ents = (
        spark.range(users)
        .select(
            F.lit("user").alias("entity_type"),
            F.format_string("user%06d@corp.example", "id").alias("entity_id"),
            F.col("id").alias("n"),
        )
        .unionByName(
            spark.range(max(3, users // 40)).select(
                F.lit("service_account").alias("entity_type"),
                F.format_string("svc%04d@corp.example", "id").alias("entity_id"),
                F.col("id").alias("n"),
            )
        )
        .unionByName(
            spark.range(users + servers).select(
                F.lit("host").alias("entity_type"),
                F.format_string("host-%06d", "id").alias("entity_id"),
                F.col("id").alias("n"),
            )
        )
    )
    rows = ents.crossJoin(grid).withColumn("run_date", day_col)
    seed = (F.col("entity_id"), F.col("d"))
    active = _u(*seed, "active") < F.when(F.dayofweek("run_date").isin(1, 7), 0.25).otherwise(0.95)
    rows = rows.where(active | (F.col("entity_type") == "host"))
    events = (F.lit(per_user_events) * (0.5 + _u(*seed, "events"))).cast("long")
    hour_of_week = F.transform(
        F.sequence(F.lit(0), F.lit(HOUR_OF_WEEK_BUCKETS - 1)),
        lambda h: (
            F.when(_u(*seed, "h", h) < 0.06, F.floor(_u(*seed, "c", h) * 20))
            .otherwise(0)
            .cast("long")
        ),
    )
    own = F.concat(F.col("entity_id"), F.lit("/"))
    new_today = _u(*seed, "new") < 0.1  # one user-day in ten brings a never-seen IP
    out = rows.select(
        "run_date",
        "entity_type",
        "entity_id",
        F.when(
            F.col("entity_type") != "host",
            F.format_string("dept%d/role%d", F.col("n") % 8, F.col("n") % 3),
        ).alias("peer_group"),
        F.lit("UTC").alias("tz"),
        events.alias("events"),
        (events * 0.02).cast("long").alias("failures"),
        F.floor(_u(*seed, "s") * 4).cast("long").alias("signins"),
        F.lit(0).cast("long").alias("signin_failures"),
        F.when(_u(*seed, "p") < 0.1, 1).otherwise(0).cast("long").alias("privileged_actions"),
        (F.lit(2e6) * _u(*seed, "bi")).cast("long").alias("bytes_in"),
        (F.lit(5e6) * _u(*seed, "bo")).cast("long").alias("bytes_out"),
        F.lit(None).cast("timestamp").alias("first_event_time"),
        F.lit(None).cast("timestamp").alias("last_event_time"),
        hour_of_week.alias("hour_of_week"),
        F.map_from_arrays(
            F.array(F.when(_u(*seed, "co") < 0.01, F.lit("BR")).otherwise(F.lit("US"))),
            F.array(F.lit(1).cast("long")),
        ).alias("src_countries"),
        _pick("US/city", 4, 2, *seed).alias("src_cities"),
        _pick("AS", 5, 2, *seed).alias("src_asns"),
        F.map_concat(
            _pick(F.concat(own, F.lit("ip")), 3, 2, *seed),
            F.when(new_today, _pick("ip-new-", 10**9, 1, *seed, "n")).otherwise(
                F.create_map().cast("map<string,bigint>")
            ),
        ).alias("src_ips"),
        _pick(F.concat(own, F.lit("dev")), 2, 1, *seed).alias("devices"),
        _pick("srv-", servers, 5, *seed).alias("dst_hosts"),
        _pick("app", 15, 4, *seed).alias("apps"),
        F.when(F.col("n") % 5 == 0, _pick("svc:Action", 40, 6, *seed))
        .otherwise(F.create_map().cast("map<string,bigint>"))
        .alias("cloud_actions"),
        _pick("parent.exe>child", 60, 4, *seed).alias("process_pairs"),
        F.when(F.col("entity_type") == "host", _pick("user", users, 3, *seed))
        .otherwise(F.create_map().cast("map<string,bigint>"))
        .alias("users"),
    )
    return out.select(*[F.col(f.name).cast(f.dataType) for f in ENTITY_DAILY.schema.fields])


def synthetic_silver_day(spark: SparkSession, scale: int, day: date) -> DataFrame:
    """One day of silver.events: sign-ins, processes, flows and cloud calls of `scale` x 150 users."""
    users = USERS_1X * scale
    n = EVENTS_PER_DAY_1X * scale
    ev = spark.range(n).withColumn("uid", F.floor(_u(F.col("id"), "user") * users).cast("long"))
    kind = F.floor(_u(F.col("id"), "kind") * 4)
    start = F.lit(datetime(day.year, day.month, day.day)).cast("timestamp")
    values: dict[str, Any] = {
        "run_date": F.lit(day),
        "event_uid": F.format_string("bench-%d", "id"),
        "source": F.lit("bench"),
        "event_time": start + F.make_interval(secs=F.floor(_u(F.col("id"), "t") * 86_399)),
        "class_name": F.element_at(
            F.array(*[F.lit(c) for c in ("authentication", "process", "network", "api")]),
            (kind + 1).cast("int"),
        ),
        "activity_name": F.element_at(
            F.array(*[F.lit(c) for c in ("logon", "launch", "connection", "api_call")]),
            (kind + 1).cast("int"),
        ),
        "status": F.when(_u(F.col("id"), "fail") < 0.03, "failure").otherwise("success"),
        "user_id": F.format_string("user%06d@corp.example", "uid"),
        "user_type": F.lit("human"),
        "peer_group": F.format_string("dept%d/role%d", F.col("uid") % 8, F.col("uid") % 3),
        "device_id": F.format_string("host-%06d", "uid"),
        "src_ip": F.format_string(
            "10.%d.%d.%d", F.col("uid") % 200, F.col("uid") % 250, F.col("id") % 3
        ),
        "src_country": F.lit("US"),
        "src_city": F.lit("New York"),
        "src_asn": F.lit(7922).cast("long"),
        "dst_host": F.format_string("srv-%d", F.floor(_u(F.col("id"), "dst") * 20 * scale)),
        "bytes_in": F.floor(_u(F.col("id"), "bi") * 20_000).cast("long"),
        "bytes_out": F.floor(_u(F.col("id"), "bo") * 50_000).cast("long"),
        "process_name": F.when(kind == 1, F.format_string("child%d.exe", F.col("id") % 40)),
        "parent_process_name": F.when(kind == 1, F.lit("explorer.exe")),
        "app_name": F.when(kind == 0, F.format_string("app%d", F.col("id") % 15)),
        "cloud_action": F.when(kind == 3, F.format_string("Action%d", F.col("id") % 40)),
        "cloud_service": F.when(kind == 3, F.lit("s3")),
        "is_privileged": _u(F.col("id"), "priv") < 0.02,
    }
    return ev.select(
        *[
            (values[f.name] if f.name in values else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in SILVER_EVENTS.schema.fields
        ]
    )


def _settings(workdir: Path, habit: int, partitions: int) -> Settings:
    base = load_settings(None, environ={}).model_dump()
    base["spark"].update(shuffle_partitions=partitions, driver_memory="4g")
    base["baselines"].update(habit_window_days=habit)
    return Settings.model_validate(base).with_workdir(workdir)


def _dir_bytes(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*.parquet"))


def bench_window(
    spark: SparkSession, scale: int, habit: int, history: int, repeats: int, partitions: int
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-baselines-{scale}x-{habit}d-"))
    try:
        ctx = RunContext(spark=spark, settings=_settings(workdir, habit, partitions))
        lake = ctx.lake
        days = [START + timedelta(days=i) for i in range(history)]
        daily = synthetic_entity_daily(spark, scale, history)
        lake.replace_dates(daily, ENTITY_DAILY.name, days)
        rows_per_day = lake.read(ENTITY_DAILY.name).count() / history
        first = days[-repeats - 1]  # baselines(first) from days before it, then add days one by one
        started = time.perf_counter()
        primed = run_baselines(ctx, [first], rebuild_entity_daily=False)
        full_s = time.perf_counter() - started
        assert primed.details["paths"] == {first.isoformat(): "full"}, primed.details
        runs = []
        for k in range(1, repeats + 1):
            target = first + timedelta(days=k)
            started = time.perf_counter()
            result = run_baselines(ctx, [target], rebuild_entity_daily=False)
            runs.append(time.perf_counter() - started)
            assert result.details["paths"] == {target.isoformat(): "incremental"}, result.details
        state = lake.read_dates(BASELINES.name, [first + timedelta(days=repeats)])
        return {
            "scale": scale,
            "habit_window_days": habit,
            "country_device_window_days": ctx.settings.baselines.country_device_window_days,
            "host_window_days": ctx.settings.baselines.host_window_days,
            "history_days": history,
            "entity_daily_rows_per_day": round(rows_per_day),
            "baseline_rows": state.count(),
            "baseline_bytes_per_day": _dir_bytes(
                f"{lake.path(BASELINES.name)}/run_date={first + timedelta(days=repeats)}"
            ),
            "full_recompute_s": round(full_s, 2),
            "add_one_day_s": round(statistics.median(runs), 2),
            "add_one_day_runs_s": [round(r, 2) for r in runs],
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench_entity_daily(spark: SparkSession, scale: int, partitions: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-entity-daily-{scale}x-"))
    try:
        ctx = RunContext(spark=spark, settings=_settings(workdir, 30, partitions))
        day = START
        ctx.lake.replace_dates(synthetic_silver_day(spark, scale, day), "silver.events", [day])
        events = ctx.lake.read_dates("silver.events", [day])
        runs = []
        for _ in range(2):
            started = time.perf_counter()
            ctx.lake.replace_dates(entity_daily(events), ENTITY_DAILY.name, [day])
            runs.append(time.perf_counter() - started)
        return {
            "scale": scale,
            "silver_events": events.count(),
            "entity_daily_rows": ctx.lake.read(ENTITY_DAILY.name).count(),
            "entity_daily_s": round(min(runs), 2),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--windows", type=int, nargs="+", default=[30, 90])
    parser.add_argument(
        "--history", type=int, default=100, help="days of entity_daily to synthesise"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="days added per window (median kept)"
    )
    parser.add_argument("--partitions", type=int, default=4, help="spark.sql.shuffle.partitions")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.history <= max(args.windows) + args.repeats:
        parser.error("--history must exceed the largest window plus --repeats")

    from jobs.core.spark import build_spark

    scratch = Path(tempfile.mkdtemp(prefix="bench-baselines-"))
    spark = build_spark(_settings(scratch, 30, args.partitions))
    load_before = os.getloadavg()
    spark.range(10).count()  # JVM warm-up outside the measurements
    windows: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for scale in args.scales:
        steps.append(bench_entity_daily(spark, scale, args.partitions))
        for habit in args.windows:
            windows.append(
                bench_window(spark, scale, habit, args.history, args.repeats, args.partitions)
            )
    load_after = os.getloadavg()
    spark.stop()
    shutil.rmtree(scratch, ignore_errors=True)

    ratios = {}
    lo, hi = min(args.windows), max(args.windows)
    for scale in args.scales:
        by_w = {r["habit_window_days"]: r for r in windows if r["scale"] == scale}
        ratios[f"{scale}x"] = round(by_w[hi]["add_one_day_s"] / by_w[lo]["add_one_day_s"], 2)
    out = {
        "benchmark": "baselines: add one day (incremental run_baselines for one date, Delta I/O included)",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 1) for x in load_before],
            "load_average_after": [round(x, 1) for x in load_after],
        },
        "volume_1x": {"users": USERS_1X, "events_per_day": EVENTS_PER_DAY_1X},
        "windows": windows,
        "entity_daily": steps,
        f"ratio_{hi}d_over_{lo}d": ratios,
        "target_ratio": TARGET_RATIO,
        "meets_target": all(r <= TARGET_RATIO for r in ratios.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    print(f"{'scale':>5} {'habit':>5} {'rows/day':>9} {'state rows':>10} {'state MB':>8} "
          f"{'full s':>7} {'add day s':>9}")  # fmt: skip
    for r in windows:
        print(
            f"{r['scale']:>4}x {r['habit_window_days']:>4}d {r['entity_daily_rows_per_day']:>9} "
            f"{r['baseline_rows']:>10} {r['baseline_bytes_per_day'] / 1e6:>8.1f} "
            f"{r['full_recompute_s']:>7.1f} {r['add_one_day_s']:>9.2f}"
        )
    for s in steps:
        print(
            f"entity_daily {s['scale']}x: {s['silver_events']} events -> {s['entity_daily_rows']} rows in {s['entity_daily_s']} s"
        )
    print(
        f"add-one-day ratio {hi}d/{lo}d: {ratios} (target <= {TARGET_RATIO}); load {load_before[0]:.1f}->{load_after[0]:.1f} on {os.cpu_count()} cpus"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
