"""Spark application entry point: one stage for one logical date, as `spark-submit` runs it.

Airflow's SparkSubmitOperator launches `jobs/entry.py --stage S --date D [--source X]`;
master, memory and packages come from the Spark connection, everything else from
`policylake.yaml` / environment, exactly as `policylake run` uses them.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="policylake-entry", description=__doc__)
    parser.add_argument("--stage", required=True, help="pipeline stage name")
    parser.add_argument(
        "--date", required=True, type=date.fromisoformat, help="logical date YYYY-MM-DD"
    )
    parser.add_argument("--to", type=date.fromisoformat, default=None, help="last date of a range")
    parser.add_argument(
        "--source", action="append", default=None, help="restrict ingest to a source"
    )
    parser.add_argument("--config", type=Path, default=None, help="policylake.yaml")
    parser.add_argument("--workdir", type=Path, default=None, help="root relative paths here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Imports after argument parsing: `--help` must not start a JVM.
    from jobs.config import ConfigError, load_settings
    from jobs.pipeline import PipelineError, RunContext, date_range, parse_stages, run_stages
    from jobs.spark import build_spark

    try:
        settings = load_settings(args.config)
        if args.workdir is not None:
            settings = settings.with_workdir(args.workdir)
        if args.source:
            ingest = settings.ingest.model_copy(update={"sources": tuple(args.source)})
            settings = settings.model_copy(update={"ingest": ingest})
        stages = parse_stages(args.stage)
        dates = date_range(args.date, args.to or args.date)
    except (ConfigError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spark = build_spark(settings)
    try:
        for result in run_stages(RunContext(spark=spark, settings=settings), stages, dates):
            print(f"{result.stage}: rows={result.rows} seconds={result.seconds:.1f}")
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
