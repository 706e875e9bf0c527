"""Benchmark: the layout of a large date-replaced table, partitioned by `run_date` (what the
catalogue uses) against Delta liquid clustering, through the lake's real access patterns.

A month of nightly `silver.events` writes (the table's own schema; each night replaces its
date with `replaceWhere`, and a few dates are re-run, as backfills do), then `OPTIMIZE`
(bin-packing per partition, or clustering), under each layout:

- `partitioned`: `partitionBy("run_date")` (the catalogue's layout for the large tables);
- `clustered_date`: `CLUSTER BY (run_date)`;
- `clustered_date_entity`: `CLUSTER BY (run_date, user_id)` (per-user reads: `forget`,
  analysts' drill-downs).

Measured per layout: the month's writes, files before and after `OPTIMIZE` and its time,
then what the pipeline reads: one date (a stage of the night), the 30-day window (baselines),
one user across the month (`forget`), and one more re-run of a date after `OPTIMIZE`. Each
read is timed as the best of three. Writes bench/results/layout.json.

    PYTHONPATH=. .venv/bin/python bench/bench_layout.py [--rows-per-day 100000] [--days 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.core.config import Settings
from jobs.core.spark import build_spark
from jobs.core.tables import SILVER_EVENTS

RESULTS = Path(__file__).parent / "results" / "layout.json"
START = date(2026, 10, 1)
LAYOUTS: dict[str, tuple[str, ...]] = {
    "partitioned": (),
    "clustered_date": ("run_date",),
    "clustered_date_entity": ("run_date", "user_id"),
}
USERS = 2_000
FILLED = {  # columns given values; the others stay null, as in a real mix of sources
    "source": "zeek_conn",
    "class_name": "network",
    "activity_name": "traffic",
    "status": "success",
    "process_name": "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
    "command_line": '"chrome.exe" --type=renderer --lang=en-US --field-trial-handle=1234',
}


def night(spark: SparkSession, day: date, rows: int, salt: int = 0) -> DataFrame:
    """One date of `silver.events`-shaped rows (the table's own schema)."""
    n = F.col("id")
    values: dict[str, Any] = {
        "run_date": F.lit(day),
        "event_uid": F.sha2(F.concat_ws(":", F.lit(day.isoformat()), n.cast("string"), F.lit(salt)), 256),
        "event_time": F.lit(f"{day.isoformat()} 00:00:00").cast("timestamp")
        + F.make_interval(secs=(n * 86_399 / rows).cast("int")),
        "user_id": F.concat(F.lit("u-"), F.lpad((F.hash(n, F.lit(salt)) % USERS).cast("string"), 5, "0")),
        "device_id": F.concat(F.lit("ws-"), (n % 500).cast("string")),
        "src_ip": F.concat(F.lit("10.1."), (n % 250).cast("string"), F.lit("."), (n % 200).cast("string")),
        "dst_ip": F.concat(F.lit("203.0.113."), (n % 250).cast("string")),
        "dst_port": (F.lit(443) + n % 3).cast("int"),
        **{k: F.lit(v) for k, v in FILLED.items()},
    }  # fmt: skip
    columns = []
    for field in SILVER_EVENTS.schema.fields:
        value = values.get(field.name)
        if value is None:
            value = F.lit(None)
        columns.append(value.cast(field.dataType).alias(field.name))
    return spark.range(rows).select(*columns)


def create(spark: SparkSession, path: str, clustering: tuple[str, ...]) -> None:
    if not clustering:
        return  # partitioned: created by the first write, as the lake does
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(SILVER_EVENTS.schema)
    builder.clusterBy(*clustering).execute()


def write_night(frame: DataFrame, path: str, day: date, partitioned: bool) -> None:
    writer = frame.write.format("delta").mode("overwrite")
    writer = writer.option("replaceWhere", f"run_date = DATE'{day.isoformat()}'")
    if partitioned:
        writer = writer.partitionBy("run_date")
    writer.save(path)


def files_of(spark: SparkSession, path: str) -> tuple[int, int]:
    row = DeltaTable.forPath(spark, path).detail().select("numFiles", "sizeInBytes").first()
    assert row is not None
    return int(row[0]), int(row[1])


def best_of(action: Callable[[], object], times: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(times):
        began = time.perf_counter()
        out = action()
        best = min(best, time.perf_counter() - began)
    return round(best, 3), out


def measure(spark: SparkSession, root: Path, name: str, days: int, rows: int) -> dict[str, Any]:
    clustering = LAYOUTS[name]
    path = str(root / name)
    partitioned = not clustering
    create(spark, path, clustering)
    dates = [START + timedelta(days=i) for i in range(days)]
    began = time.perf_counter()
    for day in dates:
        write_night(night(spark, day, rows), path, day, partitioned)
    for day in dates[-3:]:  # backfills re-run the last dates
        write_night(night(spark, day, rows, salt=1), path, day, partitioned)
    writes = time.perf_counter() - began
    before = files_of(spark, path)
    began = time.perf_counter()
    table = DeltaTable.forPath(spark, path)
    (table.optimize().executeCompaction() if partitioned else spark.sql(f"OPTIMIZE delta.`{path}`"))
    optimize = time.perf_counter() - began
    after = files_of(spark, path)
    frame = spark.read.format("delta").load(path)
    one_day, day_rows = best_of(lambda: frame.where(F.col("run_date") == dates[-1]).count())
    window, window_users = best_of(
        lambda: (
            frame.where(F.col("run_date").between(dates[0], dates[-1]))
            .groupBy("user_id")
            .agg(F.count(F.lit(1)).alias("n"), F.countDistinct("dst_ip").alias("d"))
            .count()
        )
    )
    user, user_rows = best_of(lambda: frame.where(F.col("user_id") == "u-00042").count())
    began = time.perf_counter()
    write_night(night(spark, dates[days // 2], rows, salt=2), path, dates[days // 2], partitioned)
    rerun = time.perf_counter() - began
    return {
        "layout": name,
        "clustering": list(clustering),
        "partition_by": [] if clustering else ["run_date"],
        "writes_s": round(writes, 1),
        "writes_per_night_s": round(writes / (days + 3), 2),
        "files_before_optimize": before[0],
        "files_after_optimize": after[0],
        "bytes_after_optimize": after[1],
        "optimize_s": round(optimize, 1),
        "read_one_date_s": one_day,
        "read_one_date_rows": day_rows,
        "read_30_day_window_s": window,
        "read_30_day_window_groups": window_users,
        "read_one_user_s": user,
        "read_one_user_rows": user_rows,
        "rerun_one_date_after_optimize_s": round(rerun, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="policylake-layout-") as tmp:
        root = Path(tmp)
        settings = Settings()
        spark = build_spark(settings)
        spark.sparkContext.setLogLevel("ERROR")
        results = [measure(spark, root, name, args.days, args.rows_per_day) for name in LAYOUTS]
        spark.stop()
    for r in results:
        assert r["read_one_date_rows"] == args.rows_per_day, r
    out = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "rows_per_day": args.rows_per_day,
        "days": args.days,
        "shuffle_partitions": settings.spark.shuffle_partitions,
        "layouts": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
