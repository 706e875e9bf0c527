"""Raw files to `silver.events`: ingest, validate and normalize of one day (or a range), timed
stage by stage with the Spark jobs and tasks each one ran (issue [3/8]'s targets).

    python -m bench.bench_raw_to_silver --label 1m --users 9500            # ~1 M events
    python -m bench.bench_raw_to_silver --label demo-month --users 150 --days 30 --start 2026-10-01
    python -m bench.bench_raw_to_silver --label demo-night --users 150 --days 3 --history-days 2

The telemetry is generated once into `bench/scratch/raw-to-silver/<label>/` (reused while its
parameters match); each run starts from an empty lake, in one Spark session with the
production settings (`local[*]`, adaptive execution) and the UI's REST API on, so the job
and task counts come from Spark itself. The scan floor (read and count every raw line of
the range, all sources, one job) runs first and warms the JVM. With `--history-days N` the
first N days run first, untimed, and the last day is measured alone: a night, with the
volume history validate compares it with. Results are merged into
`bench/results/raw_to_silver.json` under `<label>`; docs/benchmarks.md reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.monitor import SparkRest

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results" / "raw_to_silver.json"
SCRATCH = BENCH / "scratch" / "raw-to-silver"
STAGES = ("ingest", "validate", "normalize")
MIB = 1024 * 1024


def generated(folder: Path, first: date, days: int, users: int, seed: int) -> int:
    """Generate (or reuse) the raw telemetry; the number of raw lines."""
    from jobs.generate import generate_telemetry

    wanted = {"start": first.isoformat(), "days": days, "users": users, "seed": seed}
    manifest = folder / "generator_manifest.json"
    if manifest.is_file():
        found = json.loads(manifest.read_text(encoding="utf-8"))
        if {k: found["parameters"].get(k) for k in wanted} == wanted:
            return int(found["totals"]["lines"])
    shutil.rmtree(folder, ignore_errors=True)
    return int(generate_telemetry(folder, first, days, users, seed).total_lines)


def _seconds(stamp: str) -> float:
    """A REST API time ("2026-12-07T08:01:02.345GMT") as epoch seconds."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%Z").replace(tzinfo=UTC).timestamp()


def profile(jobs: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Where a stage's time went: seconds in Spark jobs by call site (the job's name, the
    line of our code that triggered it) and the driver time outside any job."""
    by_site: dict[str, list[float]] = {}
    spans: list[tuple[float, float]] = []
    for job in jobs:
        if "completionTime" not in job:
            continue
        began, ended = _seconds(job["submissionTime"]), _seconds(job["completionTime"])
        spans.append((began, ended))
        # the call site names a file of this checkout: kept relative to it
        site = str(job.get("name", "?")).replace(f"{REPO}/", "")
        by_site.setdefault(site, []).append(ended - began)
    busy, reach = 0.0, float("-inf")  # the union of the jobs' intervals
    for began, ended in sorted(spans):
        busy += max(0.0, ended - max(began, reach))
        reach = max(reach, ended)
    sites = sorted(by_site.items(), key=lambda kv: -sum(kv[1]))
    return {
        "in_jobs_seconds": round(busy, 2),
        "outside_jobs_seconds": round(max(0.0, seconds - busy), 2),
        "call_sites": [
            {"site": site, "jobs": len(t), "seconds": round(sum(t), 2)} for site, t in sites
        ],
    }


def measure(
    folder: Path, dates: list[date], driver_memory: str, history: list[date]
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from jobs.core.config import load_settings
    from jobs.core.context import RunContext
    from jobs.core.spark import build_spark
    from jobs.pipeline.runner import run_stages

    for sub in ("lake", "data_docs"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    settings = load_settings(None).with_workdir(folder)
    spark_settings = settings.spark.model_copy(
        update={"ui_enabled": True, "driver_memory": driver_memory}
    )
    settings = settings.model_copy(update={"spark": spark_settings})
    spark = build_spark(settings)
    ctx = RunContext(spark, settings)
    rest = SparkRest(spark.sparkContext.uiWebUrl or "", spark.sparkContext.applicationId)

    def since(first: int) -> list[dict[str, Any]]:
        return [j for j in rest.jobs() if int(j["jobId"]) >= first]

    def next_job() -> int:
        ids = [int(j["jobId"]) for j in rest.jobs()]
        return max(ids) + 1 if ids else 0

    for stage in STAGES if history else ():
        list(run_stages(ctx, [stage], history))
    out: dict[str, Any] = {"stages": {}, "dates": [d.isoformat() for d in dates]}
    raw_root = settings.paths.raw_root.rstrip("/")
    folders = [
        f"{raw_root}/{s}/{d.isoformat()}"
        for s in settings.ingest.sources
        for d in dates
        if Path(f"{raw_root}/{s}/{d.isoformat()}").exists()
    ]
    start = next_job()
    began = time.perf_counter()
    lines = (
        spark.read.option("lineSep", "\n").option("recursiveFileLookup", "true").text(folders)
    ).count()
    out["scan_floor"] = {"seconds": round(time.perf_counter() - began, 2), "lines": lines}
    total = 0.0
    for stage in STAGES:
        start = next_job()
        began = time.perf_counter()
        result = list(run_stages(ctx, [stage], dates))[-1]
        seconds = time.perf_counter() - began
        time.sleep(1.0)  # the listener bus delivers the last job events asynchronously
        ran = since(start)
        jobs, tasks = len(ran), sum(int(j.get("numTasks", 0)) for j in ran)
        total += seconds
        out["stages"][stage] = {
            "seconds": round(seconds, 2),
            "jobs": jobs,
            "tasks": tasks,
            "rows": dict(result.rows),
            "profile": profile(ran, seconds),
        }
        print(f"{stage:10s} {seconds:8.1f} s  {jobs:4d} jobs  {tasks:6d} tasks", flush=True)
    heap = rest.jvm_peak_heap()
    out["three_stages"] = {
        "seconds": round(total, 2),
        "jobs": sum(s["jobs"] for s in out["stages"].values()),
        "tasks": sum(s["tasks"] for s in out["stages"].values()),
    }
    out["peak_heap_mib"] = round(max(heap.values()) / MIB, 1) if heap else None
    out["events"] = int(
        spark.read.format("delta")
        .load(f"{settings.paths.lake_root}/silver/events")
        .where(F.col("run_date").isin(dates))
        .count()
    )
    spark.stop()
    return out


def git_commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="results key, e.g. 1m, 10m, demo")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2026, 10, 7))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--history-days", type=int, default=0, help="untimed days first")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--data", type=Path, help="a generated folder to use instead")
    parser.add_argument("--results", type=Path, default=RESULTS)
    opts = parser.parse_args()

    folder = SCRATCH / opts.label
    folder.mkdir(parents=True, exist_ok=True)
    if opts.data is not None:  # link the raw and reference folders of an existing generation
        for sub in ("raw", "reference", "generator_manifest.json"):
            link = folder / sub
            if not link.exists():
                link.symlink_to((opts.data / sub).resolve())
        lines = int(json.loads((folder / "generator_manifest.json").read_text())["totals"]["lines"])
    else:
        lines = generated(folder, opts.start, opts.days, opts.users, opts.seed)
    days = [opts.start + timedelta(days=i) for i in range(opts.days)]
    history, dates = days[: opts.history_days], days[opts.history_days :]
    run = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "users": opts.users,
        "days": opts.days,
        "raw_lines": lines,
        "driver_memory": opts.driver_memory,
        "history_days": opts.history_days,
        **measure(folder, dates, opts.driver_memory, history),
    }
    run["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, Any] = {}
    if opts.results.is_file():
        results = json.loads(opts.results.read_text(encoding="utf-8"))
    results[opts.label] = run
    opts.results.parent.mkdir(parents=True, exist_ok=True)
    opts.results.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    three = run["three_stages"]
    print(
        f"{opts.label}: {lines:,} raw lines, scan floor {run['scan_floor']['seconds']} s; "
        f"ingest + validate + normalize {three['seconds']} s, {three['jobs']} jobs, "
        f"{three['tasks']} tasks; peak heap {run['peak_heap_mib']} MiB -> {opts.results}"
    )


if __name__ == "__main__":
    main()
