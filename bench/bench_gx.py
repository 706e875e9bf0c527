"""What Great Expectations costs validate, by result format, against the row predicates' counts.

    python -m bench.bench_gx --lake bench/scratch/raw-to-silver/1m

Reads a lake the raw-to-silver benchmark left (its `bronze.*` of one date), builds each
source's candidate frame the way validate does (narrowed to the columns under test and
checkpointed), then times, per source: the row predicates' counts (`daily_counts`, one hash
aggregation plus the uniqueness counts) and a Great Expectations validation of the same
frame with `BOOLEAN_ONLY`, `SUMMARY` without samples (the default) and `SUMMARY` with 20
sample values per expectation. Each timing is the best of `--repeats`; Spark jobs are
counted per run. Results are merged into `bench/results/gx_formats.json` under the lake's
folder name.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "gx_formats.json"
FORMATS = (("BOOLEAN_ONLY", 0), ("SUMMARY", 0), ("SUMMARY", 20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, required=True, help="a benchmark workdir")
    parser.add_argument("--date", type=date.fromisoformat, default=date(2026, 10, 7))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    opts = parser.parse_args()

    from jobs.core.config import load_settings
    from jobs.core.lake import Lake
    from jobs.core.spark import build_spark, checkpoint, release
    from jobs.quality.gx import GreatExpectationsRunner
    from jobs.quality.rows import (
        prepare_rows,
        read_bronze,
        reference_host_timezones,
        under_test,
    )
    from jobs.quality.suites import daily_counts, load_suites, suite_parameters, suites_dir
    from jobs.stages.validate.volume import Volume, volume_frame

    settings = load_settings(None).with_workdir(opts.lake)
    spark = build_spark(settings)
    lake = Lake(spark, settings.paths.lake_root)
    tracker = spark.sparkContext.statusTracker()
    params = suite_parameters(settings.validation)
    sources = list(settings.ingest.sources)
    suites = load_suites(suites_dir(settings), sources)
    host_tz = checkpoint(reference_host_timezones(spark, settings))
    day = [opts.date]

    def jobs() -> int:
        ids = tracker.getJobIdsForGroup(None)
        return max(ids) + 1 if ids else 0

    def timed(fn: Any, setup: Any = lambda: None) -> dict[str, float]:
        """The best of the repeats (`setup`'s result is `fn`'s argument, made untimed)."""
        best, ran = float("inf"), 0
        for _ in range(opts.repeats):
            arg = setup()
            first, began = jobs(), time.perf_counter()
            fn(arg)
            best, ran = min(best, time.perf_counter() - began), jobs() - first
        return {"seconds": round(best, 3), "jobs": ran}

    def measure_source(frame: Any, suite: Any, source: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"rows": frame.count(), "expectations": len(suite.rules)}
        entry["row_predicates"] = timed(lambda _: daily_counts(frame, suite.rules, params))
        for result_format, samples in FORMATS:
            entry[f"gx_{result_format.lower()}_{samples}"] = timed(
                lambda runner: runner.validate(suite, frame, params, f"bench {source}"),
                lambda fmt=result_format, n=samples: GreatExpectationsRunner(None, fmt, n),
            )
        return entry

    out: dict[str, Any] = {"sources": {}}
    for source in sources:
        suite = suites[source]
        bronze = read_bronze(lake, source, day).drop("raw")
        volume = volume_frame(spark, [Volume(opts.date, bronze.count(), None, 0, None)])
        rows = prepare_rows(bronze, source, host_tz, volume)
        frame = checkpoint(under_test(rows, suite))
        entry = measure_source(frame, suite, source)
        release(frame)
        out["sources"][source] = entry
        print(source, json.dumps(entry), flush=True)
    keys = ["row_predicates", *[f"gx_{f.lower()}_{n}" for f, n in FORMATS]]
    out["total"] = {
        k: {
            "seconds": round(sum(s[k]["seconds"] for s in out["sources"].values()), 3),
            "jobs": sum(s[k]["jobs"] for s in out["sources"].values()),
        }
        for k in keys
    }
    out["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    spark.stop()
    results: dict[str, Any] = {}
    if opts.results.is_file():
        results = json.loads(opts.results.read_text(encoding="utf-8"))
    results[opts.lake.name] = out
    opts.results.parent.mkdir(parents=True, exist_ok=True)
    opts.results.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps(out["total"], indent=1))


if __name__ == "__main__":
    main()
