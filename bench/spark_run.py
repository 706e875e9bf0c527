"""One benchmark scale in a fresh Spark process: the history (untimed) or the benchmarked day.

`--phase history` runs every stage for each history date in turn (as the nightly job would
have) and trains the champion model on them, so the benchmarked day has baselines, scores,
entity risk and a model to build on. Nothing of it is timed for the results.

`--phase day` is the measurement, in its own JVM with the Spark UI on (REST API) and event
logs written under `bench/scratch/`:

1. the scan floor: Spark reads and counts every raw line of the day (all sources);
2. every pipeline stage for the day, each in its own Spark job group, with wall time, the
   JVM's peak heap (REST `peakMemoryMetrics`, per Spark stage `peakExecutorMetrics`) and the
   peak RSS of the JVM, the Python driver and the Python workers (psutil);
3. the Spark side of the DuckDB comparison, each step alone: ingest + normalize of
   `zeek_conn` (into a scratch lake), `entity_daily`, the baselines step, three signals;
4. the REST API's jobs, stages and SQL executions (with plans) for the profile.

Settings come from the environment `bench/run_bench.py` sets (`POLICYLAKE__...`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from jobs.core.config import IngestSettings, PathSettings, Settings, load_settings
from jobs.core.context import RunContext, StageResult
from jobs.pipeline.runner import STAGES, run_stages

MIB = 1024 * 1024
COMPARE_SOURCE = "zeek_conn"


def available_stages() -> tuple[list[str], dict[str, str]]:
    """Pipeline stages whose module exists (metrics and report are still being written)."""
    modules = {"metrics": "jobs.stages.metrics.stage", "report": "jobs.stages.report.stage"}
    missing = {}
    names = []
    for name in STAGES:
        module = modules.get(name)
        if module and importlib.util.find_spec(module) is None:
            missing[name] = f"{module} does not exist yet"
            continue
        names.append(name)
    return names, missing


def _settings(workdir: Path) -> Settings:
    return load_settings(None).with_workdir(workdir)


def _context(settings: Settings) -> RunContext:
    from jobs.core.spark import build_spark

    return RunContext(spark=build_spark(settings), settings=settings)


def _result_summary(result: StageResult) -> dict[str, Any]:
    details = {
        k: v for k, v in result.details.items() if isinstance(v, (int, float, str, bool, dict))
    }
    return {"rows": dict(result.rows), "details": json.loads(json.dumps(details, default=str))}


def _day_events(workdir: Path, day: date) -> dict[str, Any]:
    manifest = json.loads((workdir / "generator_manifest.json").read_text(encoding="utf-8"))
    by_source: dict[str, int] = {}
    lines = 0
    for f in manifest["files"]:
        if f["date"] == day.isoformat():
            by_source[f["source"]] = by_source.get(f["source"], 0) + int(f["event_lines"])
            lines += int(f["lines"])
    return {
        "event_lines": sum(by_source.values()),
        "lines": lines,
        "by_source": by_source,
        "parameters": manifest["parameters"],
        "organisation": manifest["organisation"],
    }


# ---------------------------------------------------------------------------------------------
# history
# ---------------------------------------------------------------------------------------------


def run_history(workdir: Path, dates: Sequence[date], champion: bool) -> dict[str, Any]:
    settings = _settings(workdir)
    ctx = _context(settings)
    stages, missing = available_stages()
    out: dict[str, Any] = {
        "dates": [d.isoformat() for d in dates],
        "stages": {},
        "missing": missing,
    }
    for day in dates:
        timings = {}
        for name in stages:
            started = time.perf_counter()
            try:
                for result in run_stages(ctx, [name], [day]):
                    timings[name] = round(result.seconds, 2)
            except Exception as exc:  # a stage still being written must not stop the history
                if name not in ("metrics", "report"):
                    raise
                timings[name] = f"failed after {time.perf_counter() - started:.1f}s: {exc!r}"[:400]
        out["stages"][day.isoformat()] = timings
    if champion:
        from jobs.model.train import run_train

        started = time.perf_counter()
        try:
            trained = run_train(
                ctx,
                dates[0],
                dates[-1],
                estimator="auto",
                ground_truth=workdir / "ground_truth.jsonl",
                seed=0,
            )
            out["champion"] = {
                "estimator": trained.estimator,
                "version": trained.model_version,
                "promoted": trained.promoted,
                "seconds": round(time.perf_counter() - started, 1),
            }
        except Exception as exc:
            out["champion"] = {"error": repr(exc)[:400]}
    ctx.spark.stop()
    return out


# ---------------------------------------------------------------------------------------------
# the benchmarked day
# ---------------------------------------------------------------------------------------------


class Groups:
    """Runs callables in named Spark job groups, timed and memory-sampled."""

    def __init__(self, ctx: RunContext, sampler: Any, rest: Any, recorder: Any) -> None:
        self.ctx = ctx
        self.sampler = sampler
        self.rest = rest
        self.recorder = recorder
        self.order: list[str] = []
        self.runs: dict[str, dict[str, Any]] = {}

    def run(self, group: str, fn: Callable[[], Any]) -> Any:
        sc = self.ctx.spark.sparkContext
        # the group only: Spark and Delta keep their own job descriptions
        sc.setLocalProperty("spark.jobGroup.id", group)
        self.order.append(group)
        record: dict[str, Any] = {"started": time.time()}
        started = time.perf_counter()
        value = None
        with self.sampler.window(group):
            try:
                value = fn()
                record["status"] = "ok"
            except Exception as exc:
                record["status"] = "failed"
                record["error"] = repr(exc)[:1000]
                record["traceback"] = traceback.format_exc()[-4000:]
        record["wall_s"] = round(time.perf_counter() - started, 3)
        record["ended"] = time.time()
        record["memory"] = self.sampler.closed.get(group, {})
        try:
            record["jvm_peak_heap_so_far_mib"] = round(
                max(self.rest.jvm_peak_heap().values()) / MIB, 1
            )
        except Exception as exc:  # the UI must not fail the benchmark
            record["jvm_peak_heap_so_far_mib"] = None
            record["rest_error"] = repr(exc)[:200]
        self.runs[group] = record
        time.sleep(0.5)  # the listener bus delivers the last job events asynchronously
        self.recorder.capture()
        return value


def scan_floor(ctx: RunContext, day: date) -> dict[str, Any]:
    """Read and count every raw line of the day, all sources in one job (what ingest must read)."""
    from pyspark.sql import functions as F

    raw_root = ctx.settings.paths.raw_root.rstrip("/")
    folders = [
        f"{raw_root}/{s}/{day.isoformat()}"
        for s in ctx.settings.ingest.sources
        if Path(f"{raw_root}/{s}/{day.isoformat()}").exists()
    ]
    started = time.perf_counter()
    df = ctx.spark.read.option("lineSep", "\n").option("recursiveFileLookup", "true").text(folders)
    rows = df.groupBy(F.regexp_extract(F.col("_metadata.file_path"), r"/raw/([^/]+)/", 1)).count()
    per_source = {r[0]: int(r[1]) for r in rows.collect()}
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "lines": sum(per_source.values()),
        "lines_by_source": per_source,
        "bytes": sum(p.stat().st_size for f in folders for p in Path(f).rglob("*") if p.is_file()),
    }


def _compare_settings(
    settings: Settings, scratch: Path, sources: tuple[str, ...] | None
) -> Settings:
    paths = settings.paths.model_dump()
    paths.update(
        lake_root=str(scratch / "lake"),
        data_docs_dir=str(scratch / "data_docs"),
        exports_dir=str(scratch / "exports"),
        reports_dir=str(scratch / "reports"),
    )
    update: dict[str, Any] = {"paths": PathSettings(**paths)}
    if sources is not None:
        update["ingest"] = IngestSettings(sources=sources)
    return settings.model_copy(update=update)


def spark_normalize_source(ctx: RunContext, day: date) -> dict[str, Any]:
    from jobs.stages.ingest.stage import run_ingest
    from jobs.stages.normalize.stage import run_normalize

    t0 = time.perf_counter()
    ingest = run_ingest(ctx, [day])
    t1 = time.perf_counter()
    normalized = run_normalize(ctx, [day])
    t2 = time.perf_counter()
    return {
        "ingest_s": round(t1 - t0, 3),
        "normalize_s": round(t2 - t1, 3),
        "rows": {**ingest.rows, **normalized.rows},
    }


def spark_entity_daily(main: RunContext, cmp: RunContext, day: date) -> dict[str, Any]:
    from jobs.core.lake import require_columns
    from jobs.core.tables import ENTITY_DAILY, SILVER_EVENTS
    from jobs.stages.baselines.entity_daily import entity_daily
    from jobs.stages.baselines.stage import _reference

    events = require_columns(
        main.lake.read_dates(SILVER_EVENTS.name, [day]), SILVER_EVENTS.schema, "bench"
    )
    accounts, hosts, _ = _reference(main)
    daily = require_columns(entity_daily(events, accounts, hosts), ENTITY_DAILY.schema, "bench")
    cmp.lake.replace_dates(daily, ENTITY_DAILY.name, [day])
    return {"rows": cmp.lake.read_dates(ENTITY_DAILY.name, [day]).count()}


def spark_baselines(cmp: RunContext, day: date) -> dict[str, Any]:
    from jobs.stages.baselines.stage import run_baselines

    result = run_baselines(cmp, [day], rebuild_entity_daily=False)
    return {"rows": dict(result.rows), "paths": result.details.get("paths")}


def spark_signals(main: RunContext, day: date, out: Path) -> dict[str, Any]:
    """new_country, first_time_host_access, exfiltration_volume as the score stage builds them."""
    from functools import reduce

    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    from jobs.core.lake import dates_predicate, require_columns
    from jobs.core.tables import BASELINES, SILVER_EVENTS
    from jobs.reference.files import asset_inventory
    from jobs.stages.score import signals
    from jobs.stages.score.views import build_views

    cfg = main.settings.scoring
    lake = main.lake
    events = require_columns(
        lake.read_dates("silver.events", [day - timedelta(days=1), day]),
        SILVER_EVENTS.schema,
        "bench",
    )
    baselines = require_columns(lake.read_dates("gold.baselines", [day]), BASELINES.schema, "bench")
    assets = asset_inventory(main.spark, main.settings)
    host_groups = assets.select(
        "asset_id",
        F.concat(F.lit("hosts/"), F.coalesce("asset_type", F.lit("unknown"))).alias("peer_group"),
    )
    views = build_views(events, [day], cfg)
    in_dates = F.expr(dates_predicate("run_date", [day]))
    current = views.sessionized.where(in_dates)
    with_peers = baselines.unionByName(signals.host_peer_baselines(baselines, host_groups))
    network = views.network.join(
        host_groups.select(F.col("asset_id").alias("entity_id"), "peer_group"), "entity_id", "left"
    )
    parts = [
        signals.new_country(current, with_peers, cfg),
        signals.first_time_host_access(current, with_peers, cfg),
        signals.exfiltration_volume(network, with_peers, cfg),
    ]
    rows: DataFrame = reduce(DataFrame.unionByName, parts).select(
        "run_date",
        "session_id",
        F.col("signal.name").alias("name"),
        F.col("signal.value").alias("value"),
        F.col("signal.threshold").alias("threshold"),
    )
    rows.write.mode("overwrite").parquet(str(out))
    written = main.spark.read.parquet(str(out))
    return {"fired": {r[0]: int(r[1]) for r in written.groupBy("name").count().collect()}}


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def summarize_rest(
    jobs: list[dict[str, Any]], stages: list[dict[str, Any]], runs: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per job group: Spark jobs, stages, tasks, time inside jobs, executor time, I/O, peaks."""
    stage_ids: dict[int, list[dict[str, Any]]] = {}
    for s in stages:
        stage_ids.setdefault(s["stageId"], []).append(s)
    out: dict[str, dict[str, Any]] = {}
    for group, run in runs.items():
        mine = [j for j in jobs if j.get("jobGroup") == group]
        intervals = []
        for j in mine:
            s, e = _parse_time(j.get("submissionTime")), _parse_time(j.get("completionTime"))
            if s is not None and e is not None:
                intervals.append((s, e))
        spark_stages = [
            s for j in mine for sid in j.get("stageIds", []) for s in stage_ids.get(sid, [])
        ]
        ran = [s for s in spark_stages if s.get("status") in ("COMPLETE", "FAILED")]

        def total(key: str, src: list[dict[str, Any]] = ran) -> int:
            return int(sum(int(s.get(key) or 0) for s in src))

        heap = [int((s.get("peakExecutorMetrics") or {}).get("JVMHeapMemory") or 0) for s in ran]
        python_rss = [
            int((s.get("peakExecutorMetrics") or {}).get("ProcessTreePythonRSSMemory") or 0)
            for s in ran
        ]
        in_jobs = _union_seconds(intervals)
        top = sorted(
            (
                {
                    "job_id": j["jobId"],
                    "seconds": round((e or 0) - (s or 0), 3),
                    "name": j.get("name"),
                    "description": (j.get("description") or "")[:160],
                    "stages": len(j.get("stageIds", [])),
                    "tasks": j.get("numTasks"),
                }
                for j in mine
                for s, e in [
                    (_parse_time(j.get("submissionTime")), _parse_time(j.get("completionTime")))
                ]
            ),
            key=lambda r: -float(r["seconds"]),
        )[:8]
        out[group] = {
            "spark_jobs": len(mine),
            "spark_stages": len(ran),
            "skipped_stages": sum(1 for s in spark_stages if s.get("status") == "SKIPPED"),
            "tasks": total("numCompleteTasks"),
            "seconds_in_jobs": round(in_jobs, 3),
            "seconds_outside_jobs": round(max(0.0, float(run["wall_s"]) - in_jobs), 3),
            "executor_run_s": round(total("executorRunTime") / 1000, 3),
            "executor_cpu_s": round(total("executorCpuTime") / 1e9, 3),
            "jvm_gc_s": round(total("jvmGcTime") / 1000, 3),
            "input_mib": round(total("inputBytes") / MIB, 1),
            "output_mib": round(total("outputBytes") / MIB, 1),
            "shuffle_read_mib": round(total("shuffleReadBytes") / MIB, 1),
            "shuffle_write_mib": round(total("shuffleWriteBytes") / MIB, 1),
            "spill_disk_mib": round(total("diskBytesSpilled") / MIB, 1),
            "spill_memory_mib": round(total("memoryBytesSpilled") / MIB, 1),
            "peak_jvm_heap_mib": round(max(heap, default=0) / MIB, 1),
            "peak_python_workers_rss_mib_spark": round(max(python_rss, default=0) / MIB, 1),
            "top_jobs": top,
            "top_stages": sorted(
                (
                    {
                        "stage_id": s["stageId"],
                        "executor_run_s": round(int(s.get("executorRunTime") or 0) / 1000, 3),
                        "tasks": s.get("numTasks"),
                        "name": s.get("name"),
                        "input_mib": round(int(s.get("inputBytes") or 0) / MIB, 1),
                        "shuffle_write_mib": round(int(s.get("shuffleWriteBytes") or 0) / MIB, 1),
                        "shuffle_read_mib": round(int(s.get("shuffleReadBytes") or 0) / MIB, 1),
                    }
                    for s in ran
                ),
                key=lambda r: -float(r["executor_run_s"]),
            )[:8],
        }
    return out


def sql_by_group(
    sql: list[dict[str, Any]], jobs: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    group_of_job = {j["jobId"]: j.get("jobGroup") for j in jobs}
    out: dict[str, list[dict[str, Any]]] = {}
    for q in sql:
        ids = [*q.get("successJobIds", []), *q.get("failedJobIds", []), *q.get("runningJobIds", [])]
        groups = {group_of_job.get(i) for i in ids} - {None}
        if not groups:
            continue
        nodes = [n.get("nodeName", "") for n in q.get("nodes", [])]
        counted: dict[str, int] = {}
        for n in nodes:
            key = n.split(" ")[0] if not n.startswith("Scan") else n
            counted[key] = counted.get(key, 0) + 1
        for g in groups:
            out.setdefault(str(g), []).append(
                {
                    "id": q.get("id"),
                    "duration_s": round(int(q.get("duration") or 0) / 1000, 3),
                    "description": (q.get("description") or "")[:200],
                    "jobs": len(ids),
                    "operators": dict(sorted(counted.items(), key=lambda kv: -kv[1])),
                    "plan": q.get("planDescription") or "",
                }
            )
    for g in out:
        out[g].sort(key=lambda r: -float(r["duration_s"]))
    return out


def run_day(
    workdir: Path, day: date, out_dir: Path, stages_filter: list[str] | None
) -> dict[str, Any]:
    from bench.monitor import MemorySampler, RestRecorder, SparkRest

    settings = _settings(workdir)
    sampler = MemorySampler().start()
    launched = time.perf_counter()
    ctx = _context(settings)
    spark = ctx.spark
    sc = spark.sparkContext
    startup_s = time.perf_counter() - launched
    if not sc.uiWebUrl:
        raise SystemExit(
            "the bench needs the Spark UI (REST API): POLICYLAKE__SPARK__UI_ENABLED=true"
        )
    rest = SparkRest(sc.uiWebUrl, sc.applicationId)
    recorder = RestRecorder(rest)
    groups = Groups(ctx, sampler, rest, recorder)
    groups.run("warmup", lambda: spark.range(100_000).selectExpr("sum(id)").collect())

    floor = [groups.run(f"scan_floor_{i}", lambda: scan_floor(ctx, day)) for i in (1, 2)]

    stages, missing = available_stages()
    if stages_filter:
        stages = [s for s in stages if s in stages_filter]
    stage_results: dict[str, Any] = {}
    for name in stages:
        # through run_stages, as `policylake run` does: date lock, stage journal, late-delivery check
        result = groups.run(
            f"stage:{name}", lambda name=name: list(run_stages(ctx, [name], [day]))[-1]
        )
        stage_results[name] = _result_summary(result) if result is not None else None

    # Spark side of the DuckDB comparison, each step alone on a scratch lake
    scratch = out_dir / "compare"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for table in ("gold/entity_daily", "gold/baselines"):
        shutil.copytree(Path(settings.paths.lake_root) / table, scratch / "lake" / table)
    cmp_source = RunContext(spark, _compare_settings(settings, scratch, (COMPARE_SOURCE,)))
    cmp = RunContext(spark, _compare_settings(settings, scratch, None))
    compare = {
        "normalize_zeek_conn": groups.run(
            "compare:normalize_zeek_conn", lambda: spark_normalize_source(cmp_source, day)
        ),
        "entity_daily": groups.run(
            "compare:entity_daily", lambda: spark_entity_daily(ctx, cmp, day)
        ),
        "baselines": groups.run("compare:baselines", lambda: spark_baselines(cmp, day)),
        "signals": groups.run(
            "compare:signals", lambda: spark_signals(ctx, day, scratch / "spark_signals")
        ),
    }

    time.sleep(1.5)  # let the listener bus deliver the last events to the REST store
    rest_dir = out_dir / "rest"
    rest_dir.mkdir(parents=True, exist_ok=True)
    recorder.capture()
    jobs, spark_stages, sql = recorder.all_jobs(), recorder.all_stages(), recorder.all_sql()
    executors = rest.executors()
    for name, payload in (
        ("jobs", jobs),
        ("stages", spark_stages),
        ("sql", sql),
        ("executors", executors),
    ):
        (rest_dir / f"{name}.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    per_group = summarize_rest(jobs, spark_stages, groups.runs)
    queries = sql_by_group(sql, jobs)
    plans_dir = out_dir / "plans"
    shutil.rmtree(plans_dir, ignore_errors=True)
    plans_dir.mkdir(parents=True)
    top_queries: dict[str, list[dict[str, Any]]] = {}
    for group, qs in queries.items():
        kept = []
        for q in qs[:3]:
            path = plans_dir / f"{group.replace(':', '_')}-sql{q['id']}.txt"
            path.write_text(q["plan"], encoding="utf-8")
            kept.append({k: v for k, v in q.items() if k != "plan"} | {"plan_file": str(path)})
        top_queries[group] = kept
    conf = dict(sc.getConf().getAll())
    app_id = sc.applicationId
    peak_heap = {k: round(v / MIB, 1) for k, v in rest.jvm_peak_heap().items()}
    executor_peaks = {
        str(e.get("id")): {
            k: round(int(v) / MIB, 1)
            for k, v in (e.get("peakMemoryMetrics") or {}).items()
            if "Memory" in k
        }
        for e in executors
    }
    sampler.stop()
    spark.stop()
    return {
        "day": day.isoformat(),
        "events": _day_events(workdir, day),
        "spark_startup_s": round(startup_s, 2),
        "app_id": app_id,
        "spark_conf": {
            k: conf[k]
            for k in sorted(conf)
            if not k.startswith("spark.app.") or k == "spark.app.name"
        },
        "stages_run": stages,
        "stages_missing": missing,
        "stage_results": stage_results,
        "scan_floor": floor,
        "compare": compare,
        "groups": groups.runs,
        "group_order": groups.order,
        "rest_summary": per_group,
        "top_queries": top_queries,
        "jvm_peak_heap_mib": peak_heap,
        "executor_peak_memory_mib": executor_peaks,
        "memory_overall_peak_rss_mib": sampler.overall_peaks(),
        "event_log_dir": conf.get("spark.eventLog.dir"),
        "rest_errors": recorder.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=("history", "day"), required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--day", type=date.fromisoformat, required=True)
    parser.add_argument("--history-days", type=int, default=2)
    parser.add_argument("--no-champion", action="store_true")
    parser.add_argument("--stages", help="comma-separated subset of stages (debugging)")
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    if args.phase == "history":
        dates = [args.day - timedelta(days=i) for i in range(args.history_days, 0, -1)]
        result = run_history(workdir, dates, champion=not args.no_champion)
    else:
        wanted = [s for s in (args.stages or "").split(",") if s] or None
        result = run_day(workdir, args.day, args.out.parent.resolve(), wanted)
    result["pid"] = os.getpid()
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
