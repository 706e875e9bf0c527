"""The pipeline benchmark: a day of ~1 M and ~10 M events through every stage, against targets.

    make bench                                        # the full run: scales 1 and 10
    .venv/bin/python -m bench.run_bench --scales 0.02 # a quick check (~20 k events)

Per scale (scale 1 = ~1 M events in the benchmarked day):

1. generate `--history-days` days of history plus the benchmarked day (one organisation of
   `scale x 9,500` people, the same seed) under `bench/scratch/scale-<s>/` (kept and reused
   while the parameters match);
2. history, untimed, in its own process: every stage for each history date in turn, then the
   champion model trained on them (as the weekly DAG would have);
3. the benchmarked day, in a fresh process with a 2 GiB driver heap (`--driver-memory`),
   `local[*]`, the Spark UI on for the REST API and event logs under
   `bench/scratch/eventlogs/`: the scan floor, every
   stage (wall time, events/s, peak JVM heap, peak RSS), then the Spark side of the DuckDB
   comparison, each step alone;
4. the DuckDB reference (`bench/duckdb_reference.py`) in its own process, limited to 2
   threads and a 2 GB memory limit, and the agreement checks (the run fails if Spark and
   DuckDB disagree).

Results: `bench/results/pipeline.json`, `bench/results/pipeline.md` (the README table) and
`bench/results/profile.md`. The 90-day vs 30-day baseline window target comes from
`bench/bench_baselines.py` (`--baselines run` runs it, `reuse` reads its results file).
docs/benchmarks.md explains the method.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
WORK = BENCH / "scratch"
USERS_PER_MILLION = 9_500  # the generator writes ~105 lines per person on a weekday
DEFAULT_DAY = date(2026, 10, 7)  # a Wednesday: weekday volume
DRIVER_MEMORY = "2g"
DUCKDB_THREADS = 2
DUCKDB_MEMORY = "2GB"
TARGETS = {
    "pipeline_10m_seconds": 300.0,
    "spark_over_duckdb": 3.0,
    "cost_per_event_10m_over_1m": 1.2,
    "baseline_90d_over_30d": 1.3,
}
KEEP = ("raw", "reference", "ground_truth.jsonl", "dirty_rows.jsonl", "generator_manifest.json")


def _log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _scale_dir(work: Path, scale: float) -> Path:
    return work / f"scale-{scale:g}"


def users_for(scale: float) -> int:
    return max(10, round(scale * USERS_PER_MILLION))


def generate(
    folder: Path, first: date, days: int, users: int, seed: int, regenerate: bool
) -> dict[str, Any]:
    """Generate (or reuse) the raw telemetry of the history and the benchmarked day."""
    from jobs.generate import generate_telemetry

    manifest = folder / "generator_manifest.json"
    wanted = {
        "start": first.isoformat(),
        "days": days,
        "users": users,
        "seed": seed,
        "events_per_user": 1.0,
    }
    if manifest.is_file() and not regenerate:
        found = json.loads(manifest.read_text(encoding="utf-8"))
        if found.get("parameters") == wanted:
            _log(f"reusing generated data in {folder} ({found['totals']['lines']:,} lines)")
            return {"reused": True, "parameters": wanted, "lines": found["totals"]["lines"]}
    folder.mkdir(parents=True, exist_ok=True)
    _log(f"generating {days} days x {users:,} people into {folder}")
    summary = generate_telemetry(folder, first, days, users, seed, events_per_user=1.0)
    _log(f"generated {summary.total_lines:,} lines in {summary.elapsed_seconds:.0f} s")
    return {
        "reused": False,
        "parameters": wanted,
        "lines": summary.total_lines,
        "seconds": round(summary.elapsed_seconds, 1),
    }


def clean(folder: Path) -> None:
    """Everything but the generated inputs: every run starts from an empty lake."""
    for child in folder.iterdir():
        if child.name in KEEP:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def child_env(
    history_days: int, event_logs: Path | None, driver_memory: str = DRIVER_MEMORY
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYLAKE")}
    env.update(
        {
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
            "POLICYLAKE__SPARK__MASTER": "local[*]",
            "POLICYLAKE__SPARK__DRIVER_MEMORY": driver_memory,
            # novelty signals need this much history behind a baseline; the generated history
            # is shorter than the default (7), so the signals would never be evaluated to fire
            "POLICYLAKE__SCORING__MIN_HISTORY_DAYS": str(history_days),
        }
    )
    if event_logs is not None:
        event_logs.mkdir(parents=True, exist_ok=True)
        conf = {
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": f"file:{event_logs}",
            "spark.eventLog.logStageExecutorMetrics": "true",
            "spark.executor.metrics.pollingInterval": "250ms",
            "spark.executor.processTreeMetrics.enabled": "true",
            "spark.ui.port": "0",
            "spark.ui.retainedTasks": "1000",
        }
        env["POLICYLAKE__SPARK__UI_ENABLED"] = "true"
        for key, value in conf.items():
            env[f"POLICYLAKE__SPARK__CONF__{key}"] = value
    return env


def run_child(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.run(
            [sys.executable, *args], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise RuntimeError(
            f"{' '.join(args[:3])} failed (exit {proc.returncode}); see {log}:\n" + "\n".join(tail)
        )
    return seconds


def run_scale(scale: float, opts: argparse.Namespace) -> dict[str, Any]:
    folder = _scale_dir(opts.workdir, scale)
    day = opts.day
    first = day - timedelta(days=opts.history_days)
    users = users_for(scale)
    out: dict[str, Any] = {"scale": scale, "users": users, "load_average": {}}
    out["load_average"]["start"] = _load()
    out["generate"] = generate(
        folder, first, opts.history_days + 1, users, opts.seed, opts.regenerate
    )
    history_json = folder / "history.json"
    if opts.reuse_history and history_json.is_file():
        # development only: keep the lake of the last history run, forget the day's journal
        _log(f"scale {scale:g}: reusing the history in {folder / 'lake'}")
        shutil.rmtree(folder / "lake" / "_stage_runs" / day.isoformat(), ignore_errors=True)
        out["history"] = json.loads(history_json.read_text(encoding="utf-8")) | {"reused": True}
    else:
        clean(folder)
        out["history"] = run_history(folder, scale, first, day, opts)
    out["load_average"]["before_day"] = _load()
    day_json = folder / "day.json"
    if opts.reuse_day and day_json.is_file():
        # development only: the last benchmarked day of this scale, e.g. to re-run DuckDB alone
        _log(f"scale {scale:g}: reusing the benchmarked day in {day_json}")
        out["day"] = json.loads(day_json.read_text(encoding="utf-8")) | {"reused": True}
    else:
        out["day"] = run_day(folder, scale, day, opts)
    out["load_average"]["after_day"] = _load()
    out["duckdb"] = run_duckdb(folder, scale, day, opts)
    out["load_average"]["end"] = _load()
    return out


def run_history(
    folder: Path, scale: float, first: date, day: date, opts: argparse.Namespace
) -> dict[str, Any]:
    """Every stage for each history date, then the champion: untimed, its own process."""
    _log(f"scale {scale:g}: history {first} .. {day - timedelta(days=1)} (untimed)")
    history_json = folder / "history.json"
    args = ["-m", "bench.spark_run", "--phase", "history", "--workdir", str(folder),
            "--day", day.isoformat(), "--history-days", str(opts.history_days),
            "--out", str(history_json)]  # fmt: skip
    if opts.no_champion:
        args.append("--no-champion")
    env = child_env(opts.history_days, None, opts.driver_memory)
    seconds = run_child(args, folder, env, folder / "history.log")
    found: dict[str, Any] = json.loads(history_json.read_text(encoding="utf-8"))
    return found | {"seconds": round(seconds, 1)}


def run_day(folder: Path, scale: float, day: date, opts: argparse.Namespace) -> dict[str, Any]:
    """The measured day: a fresh process, the `--driver-memory` heap, the UI and event logs on."""
    _log(
        f"scale {scale:g}: benchmarked day {day} (fresh process, {opts.driver_memory} driver heap)"
    )
    day_json = folder / "day.json"
    day_json.unlink(missing_ok=True)
    args = ["-m", "bench.spark_run", "--phase", "day", "--workdir", str(folder),
            "--day", day.isoformat(), "--out", str(day_json)]  # fmt: skip
    env = child_env(opts.history_days, opts.workdir / "eventlogs", opts.driver_memory)
    seconds = run_child(args, folder, env, folder / "day.log")
    found: dict[str, Any] = json.loads(day_json.read_text(encoding="utf-8"))
    return found | {"process_seconds": round(seconds, 1)}


def run_duckdb(folder: Path, scale: float, day: date, opts: argparse.Namespace) -> dict[str, Any]:
    """The DuckDB reference and the agreement checks, its own process."""
    _log(f"scale {scale:g}: DuckDB reference ({DUCKDB_THREADS} threads, {opts.duckdb_memory})")
    duck_json = folder / "duckdb.json"
    duck_json.unlink(missing_ok=True)
    args = ["-m", "bench.duckdb_reference", "--workdir", str(folder), "--day", day.isoformat(),
            "--out", str(duck_json), "--threads", str(DUCKDB_THREADS),
            "--memory-limit", opts.duckdb_memory,
            "--spark-signals", str(folder / "compare" / "spark_signals")]  # fmt: skip
    try:
        run_child(args, folder, child_env(opts.history_days, None), folder / "duckdb.log")
    except RuntimeError as exc:
        if not duck_json.is_file():  # a disagreement still writes the result file
            raise
        _log(str(exc).splitlines()[0])
    found: dict[str, Any] = json.loads(duck_json.read_text(encoding="utf-8"))
    return found


def machine_facts() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    try:
        java = subprocess.run(
            ["java", "-version"], capture_output=True, text=True
        ).stderr.splitlines()[0]
    except (OSError, IndexError):
        java = "unknown"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": java,
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {}
    for pkg in ("pyspark", "delta-spark", "duckdb", "deltalake", "great-expectations", "psutil"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = "not installed"
    return out


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_files": len(git("status", "--porcelain").splitlines()),
    }


def baselines_bench(mode: str) -> dict[str, Any] | None:
    path = RESULTS / "baselines.json"
    if mode == "run":
        _log("bench/bench_baselines.py (30- vs 90-day habit window)")
        subprocess.run([sys.executable, str(BENCH / "bench_baselines.py")], cwd=REPO, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    if mode == "skip" or not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    data["file"] = str(path.relative_to(REPO))
    return data


def main() -> None:
    from bench.render import evaluate, write_outputs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scales", default="1,10", help="comma-separated; 1 = ~1 M events (default 1,10)"
    )
    parser.add_argument(
        "--history-days", type=int, default=2, help="days run (untimed) before the benchmarked day"
    )
    parser.add_argument("--day", type=date.fromisoformat, default=DEFAULT_DAY)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--driver-memory",
        default=DRIVER_MEMORY,
        help=f"spark.driver.memory of the Spark runs (default {DRIVER_MEMORY}, the target; in "
        "local mode it is the executor's heap too)",
    )
    parser.add_argument("--workdir", type=Path, default=WORK)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--baselines", choices=("run", "reuse", "skip"), default="reuse",
                        help="bench/bench_baselines.py: run it, reuse its results file, or skip")  # fmt: skip
    parser.add_argument("--no-champion", action="store_true", help="score without a trained model")
    parser.add_argument(
        "--reuse-history",
        action="store_true",
        help="development: keep the lake of the last history run of each scale",
    )
    parser.add_argument(
        "--reuse-day",
        action="store_true",
        help="development: keep the last benchmarked day of each scale (with --reuse-history)",
    )
    parser.add_argument(
        "--duckdb-memory",
        default=DUCKDB_MEMORY,
        help=f"memory_limit of the DuckDB reference (default {DUCKDB_MEMORY}, as the driver heap)",
    )
    parser.add_argument(
        "--regenerate", action="store_true", help="generate even if the data matches"
    )
    opts = parser.parse_args()
    scales = [float(s) for s in opts.scales.split(",") if s.strip()]
    if opts.history_days < 1:
        parser.error("--history-days must be at least 1 (2 exercises the incremental baselines)")
    opts.workdir = opts.workdir.resolve()
    opts.workdir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    run: dict[str, Any] = {
        "benchmark": "policylake daily pipeline: one day of ~1 M / ~10 M events through every stage",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.run_bench", *sys.argv[1:]]),
        "git": git_state(),
        "machine": machine_facts(),
        "versions": versions(),
        "settings": {
            "day": opts.day.isoformat(),
            "history_days": opts.history_days,
            "history": (
                f"{opts.history_days} generated day(s) before the benchmarked day, each run through "
                "every stage in turn (untimed, separate process), then the champion model trained "
                "on them" + (" (skipped)" if opts.no_champion else "")
            ),
            "seed": opts.seed,
            "users_per_scale_1": USERS_PER_MILLION,
            "spark_master": "local[*]",
            "driver_memory": opts.driver_memory,
            "overrides": child_env(
                opts.history_days, opts.workdir / "eventlogs", opts.driver_memory
            ),
            "duckdb": {"threads": DUCKDB_THREADS, "memory_limit": opts.duckdb_memory},
        },
        "targets": TARGETS,
        "scales_requested": [f"{s:g}" for s in scales],
        "scales": {},
    }
    run["settings"]["overrides"] = {
        k: v for k, v in run["settings"]["overrides"].items() if k.startswith("POLICYLAKE__")
    }
    failures = []
    for scale in scales:
        try:
            run["scales"][f"{scale:g}"] = run_scale(scale, opts)
        except Exception as exc:
            failures.append(f"scale {scale:g}: {exc}")
            _log(f"scale {scale:g} FAILED: {exc}")
            run["scales"][f"{scale:g}"] = {"scale": scale, "error": str(exc)[:4000]}
        # results so far: a long run that is stopped later still leaves its finished scales
        run["total_seconds"] = round(time.perf_counter() - started, 1)
        run["baselines_bench"] = baselines_bench(
            "reuse" if opts.baselines == "run" else opts.baselines
        )
        evaluate(run)
        write_outputs(run, opts.results)
        _log(f"results so far written to {opts.results / 'pipeline.json'}")
    run["baselines_bench"] = baselines_bench(opts.baselines)
    run["total_seconds"] = round(time.perf_counter() - started, 1)
    evaluate(run)
    write_outputs(run, opts.results)
    _log(f"wrote {opts.results / 'pipeline.json'}, pipeline.md, profile.md")
    for line in run["summary_lines"]:
        print(line)
    if failures:
        raise SystemExit("benchmark failed: " + "; ".join(failures))
    if not run["agree"]:
        raise SystemExit(
            "benchmark failed: Spark and the DuckDB reference disagree (see pipeline.json)"
        )


if __name__ == "__main__":
    main()
