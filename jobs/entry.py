"""Spark application entry point: one job for one logical date, as `spark-submit` runs it.

Airflow's SparkSubmitOperator launches, for example:

    jobs/entry.py --stage ingest --date D --source idp      one source of the daily ingest
    jobs/entry.py --stage validate --date D --blocking-sources idp,windows
    jobs/entry.py --stage normalize --date D                 (any pipeline stage, or a
                                                              comma-separated list, --to for a range)
    jobs/entry.py --stage train --date D [--days 28]         the model, on the days ending at D
    jobs/entry.py --stage feedback --date D                  <raw_root>/analyst_decisions/D/*

Master, memory and packages come from the spark-submit command (the Airflow Spark
connection); everything else from `policylake.yaml` / `$POLICYLAKE_CONFIG` / the
`POLICYLAKE__...` environment, exactly as `policylake run` uses them. Relative paths are
rooted at `--workdir` or `$POLICYLAKE_WORKDIR` when given.

Exit codes (Airflow marks the task failed on any non-zero one): 0 done (including "nothing
to do", with a log line), 2 bad input (one line on stderr, before Spark starts), 1 a stage
failed (`PipelineError` and the other named errors of the stages: one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

# Run as a script (spark-submit jobs/entry.py), Python puts jobs/ first on sys.path, where
# jobs/spark.py, jobs/config.py ... would shadow top-level modules of the same names.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

if TYPE_CHECKING:
    from jobs.config import Settings
    from jobs.pipeline import RunContext, StageResult

EXIT_OK = 0
EXIT_STAGE_FAILED = 1
EXIT_BAD_INPUT = 2
# Jobs besides the daily pipeline stages; each runs on its own.
JOBS = ("train", "feedback")


class BadInput(ValueError):
    """Arguments or settings that make the job impossible; reported in one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        hint = (
            " (a run without a logical date? trigger it with one: airflow dags trigger -l YYYY-MM-DD)"
            if value.strip() in ("", "None")
            else ""
        )
        raise argparse.ArgumentTypeError(
            f"must be a date like 2026-10-01, got {value!r}{hint}"
        ) from None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(
        prog="policylake-entry",
        description="Run one policylake job for a logical date (what Airflow submits).",
    )
    parser.add_argument(
        "--stage", required=True, help="pipeline stage(s), comma-separated, or train | feedback"
    )
    parser.add_argument("--date", required=True, type=_day, help="logical date YYYY-MM-DD")
    parser.add_argument("--to", type=_day, default=None, help="last date of a range")
    parser.add_argument(
        "--source", action="append", default=None, help="ingest only this source (repeatable)"
    )
    parser.add_argument(
        "--blocking-sources",
        default="",
        help="validate fails unless these sources are ok (comma-separated, or 'all')",
    )
    parser.add_argument("--days", type=int, default=28, help="train: days ending at --date")
    parser.add_argument(
        "--estimator", default="auto", help="train: auto, isolation_forest or gradient_boosting"
    )
    parser.add_argument(
        "--ground-truth", type=Path, default=None, help="train: a generator's ground_truth.jsonl"
    )
    parser.add_argument("--config", type=Path, default=None, help="policylake.yaml")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="root relative paths here ($POLICYLAKE_WORKDIR)"
    )
    return parser.parse_args(list(argv))


@dataclass
class Plan:
    """What to run, checked completely before a JVM starts."""

    settings: Settings
    job: str  # "stages", "train" or "feedback"
    dates: list[date]
    stages: list[str] = field(default_factory=list)
    sources: tuple[str, ...] | None = None  # ingest restricted to these (configured) sources
    blocking: tuple[str, ...] = ()
    files: list[Path] = field(default_factory=list)
    nothing_to_do: str = ""


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def plan(args: argparse.Namespace) -> Plan:
    """Validate the arguments against the settings; raise BadInput / ConfigError / PipelineError."""
    from jobs.config import SOURCES, load_settings
    from jobs.orchestration import workdir_settings
    from jobs.pipeline import date_range, parse_stages

    settings = load_settings(args.config)
    settings = (
        settings.with_workdir(args.workdir)
        if args.workdir is not None
        else workdir_settings(settings)
    )
    dates = date_range(args.date, args.to or args.date)
    wanted = _csv(args.stage)
    if not wanted:
        raise BadInput("--stage is empty")
    configured = tuple(settings.ingest.sources)

    if any(w in JOBS for w in wanted):
        if len(wanted) > 1:
            raise BadInput(f"--stage {','.join(wanted)}: {'/'.join(JOBS)} run on their own")
        job = wanted[0]
        if args.source or args.blocking_sources:
            raise BadInput(f"--source and --blocking-sources do not apply to --stage {job}")
        if job == "train":
            if args.to is not None:
                raise BadInput("--stage train takes --date (the last day) and --days, not --to")
            if not 1 <= args.days <= 366:
                raise BadInput(f"--days must be within 1..366, got {args.days}")
            if args.ground_truth is not None and not args.ground_truth.is_file():
                raise BadInput(f"--ground-truth: no such file {args.ground_truth}")
            return Plan(settings, job, dates)
        return _feedback_plan(settings, dates)

    stages = parse_stages(",".join(wanted))
    result = Plan(settings, "stages", dates, stages=stages)
    if args.source:
        unknown = sorted(set(args.source) - set(SOURCES))
        if unknown:
            raise BadInput(f"unknown source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
        if stages != ["ingest"]:
            raise BadInput("--source applies to --stage ingest only")
        chosen = tuple(s for s in configured if s in args.source)
        skipped = sorted(set(args.source) - set(chosen))
        if skipped:
            print(f"ingest: not configured in ingest.sources, skipped: {', '.join(skipped)}")
        if not chosen:
            result.nothing_to_do = "ingest: no configured source to ingest; nothing to do"
        result.sources = chosen
    if args.blocking_sources.strip():
        if "validate" not in stages:
            raise BadInput("--blocking-sources applies to the validate stage")
        names = _csv(args.blocking_sources)
        if names == ["all"]:
            result.blocking = configured
        else:
            unknown = sorted(set(names) - set(configured))
            if unknown:
                raise BadInput(
                    f"--blocking-sources: not configured source(s) {', '.join(unknown)}; "
                    f"configured: {', '.join(configured)} (or 'all')"
                )
            result.blocking = tuple(s for s in configured if s in names)
    return result


def _feedback_plan(settings: Settings, dates: list[date]) -> Plan:
    from jobs.feedback import parse_decisions
    from jobs.orchestration import analyst_decision_files, analyst_decisions_dir

    root = settings.paths.raw_root
    try:
        files = [f for d in dates for f in analyst_decision_files(root, d.isoformat())]
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    result = Plan(settings, "feedback", dates, files=files)
    if not files:
        where = ", ".join(analyst_decisions_dir(root, d.isoformat()) for d in dates)
        result.nothing_to_do = f"feedback: no analyst decision files in {where}; nothing to do"
        return result
    for path in files:  # every file must be valid before any is ingested
        parse_decisions(path)
    return result


# --- jobs ------------------------------------------------------------------------------


def ingest_sources(ctx: RunContext, dates: list[date], sources: Sequence[str]) -> StageResult:
    """The ingest stage for some sources: their bronze tables, and their rows of
    `ops.ingest_log` only, so mapped tasks (one per source) add up to one full ingest."""
    from jobs.ingest import ingest_source, write_ingest_checks, write_ingest_log
    from jobs.pipeline import StageResult

    result = StageResult(stage="ingest", dates=list(dates))
    log: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for source in sources:
        outcome = ingest_source(ctx.spark, ctx.lake, ctx.settings.paths.raw_root, source, dates)
        result.rows[f"bronze.{source}"] = outcome.rows
        result.details[f"{source}.missing"] = [d.isoformat() for d in outcome.missing]
        log += outcome.log
        checks += outcome.checks
    write_ingest_checks(ctx.lake, sources, dates, checks)
    write_ingest_log(ctx.lake, log, dates, sources)
    result.rows["ops.ingest_log"] = len(log)
    return result


def check_blocking(result: StageResult, blocking: Sequence[str]) -> None:
    """Fail the validate job when a blocking source is not `ok` for a date it ran.

    The stage has already written `ops.dq_results` and `ops.source_status` (the evidence);
    failing here stops the downstream tasks before they read the date's bronze rows.
    """
    from jobs.pipeline import PipelineError

    status: dict[str, dict[str, str]] = result.details.get("status", {})
    bad = [
        f"{source} {day} {state}"
        for source in blocking
        for day, state in sorted(status.get(source, {}).items())
    ]
    if bad:
        raise PipelineError(
            f"validate: blocking source(s) not ok: {'; '.join(bad)} "
            "(reasons in ops.source_status and ops.dq_results)"
        )


def _run_stages(ctx: RunContext, job: Plan) -> None:
    from jobs.pipeline import run_stages

    results: Iterable[StageResult] = (
        [ingest_sources(ctx, job.dates, job.sources)]
        if job.sources is not None
        else run_stages(ctx, job.stages, job.dates)
    )
    for result in results:
        print(f"{result.stage}: rows={result.rows} seconds={result.seconds:.1f}")
        if result.stage == "validate":
            check_blocking(result, job.blocking)


def _run_train(ctx: RunContext, job: Plan, args: argparse.Namespace) -> None:
    from jobs.train import run_train

    last = job.dates[-1]
    first = last - timedelta(days=args.days - 1)
    result = run_train(
        ctx, first, last, estimator=args.estimator, ground_truth=args.ground_truth, seed=0
    )
    verdict = "promoted to champion" if result.promoted else "not promoted"
    print(
        f"train: {result.estimator} v{result.model_version} on {first} .. {last} "
        f"(labels: {result.label_source}) metrics={result.metrics}; {verdict}"
    )


def _run_feedback(ctx: RunContext, job: Plan) -> None:
    from jobs.feedback import run_feedback

    for path in job.files:
        result = run_feedback(ctx, path)
        print(f"feedback: {path}: rows={result.rows} details={result.details}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Imports after argument parsing: `--help` must not start a JVM.
    from jobs.config import ConfigError
    from jobs.feedback import FeedbackError
    from jobs.lake import SchemaMismatchError, TableNameError
    from jobs.pipeline import PipelineError, RunContext
    from jobs.policy.schema import PolicyLoadError
    from jobs.spark import build_spark
    from jobs.train import TrainError
    from jobs.validate import SuiteError

    try:
        job = plan(args)
    except FeedbackError as exc:  # an analyst file with bad rows: the feedback job fails
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STAGE_FAILED
    except (BadInput, ConfigError, PipelineError) as exc:  # PipelineError: unknown stage, bad range
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if job.nothing_to_do:
        print(job.nothing_to_do)
        return EXIT_OK
    spark = build_spark(job.settings)
    ctx = RunContext(spark=spark, settings=job.settings)
    known = (
        PipelineError,
        TrainError,
        SchemaMismatchError,
        TableNameError,
        SuiteError,
        PolicyLoadError,
    )
    try:
        if job.job == "train":
            _run_train(ctx, job, args)
        elif job.job == "feedback":
            _run_feedback(ctx, job)
        else:
            _run_stages(ctx, job)
    except known as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STAGE_FAILED
    finally:
        spark.stop()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
