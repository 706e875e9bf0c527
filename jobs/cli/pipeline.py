"""Commands that run the pipeline: `run`, `demo`, `generate`, `train`, `export`, `report`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from jobs.cli.common import (
    ConfigOpt,
    WorkdirOpt,
    console,
    context,
    csv_list,
    out,
    parse_date,
    progress,
    run_pipeline,
    settings,
)
from jobs.cli.json_output import JsonOpt, json_command, record
from jobs.core.config import SOURCES, Settings
from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PipelineError, UsageError
from jobs.generate import generate_telemetry
from jobs.governance.audit import audit_key
from jobs.model.registry import tracking_uri
from jobs.model.train import TrainResult, run_train
from jobs.pipeline.runner import STAGES, date_range, parse_stages

# The demo prepares the month, scores its first two thirds on signals, trains, then scores
# the rest with the champion, as the weekly training DAG does in production.
STAGES_BEFORE_SCORE = ("ingest", "validate", "normalize", "baselines")


def check_blocking(result: StageResult, blocking: Sequence[str]) -> None:
    """Fail after validate when a blocking source is not `ok` for a date it ran.

    The stage has already written `ops.dq_results` and `ops.source_status` (the evidence);
    failing here stops what follows before it reads the date's bronze rows.
    """
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


def _sources(settings: Settings, wanted: list[str] | None) -> list[str] | None:
    if wanted is None:
        return None
    unknown = sorted(set(wanted) - set(SOURCES))
    if unknown:
        raise UsageError(f"unknown source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
    skipped = sorted(set(wanted) - set(settings.ingest.sources))
    if skipped:
        console.print(f"ingest: not configured in ingest.sources, skipped: {', '.join(skipped)}")
    return [s for s in settings.ingest.sources if s in wanted]


def _blocking(settings: Settings, stages: Sequence[str], spec: str | None) -> list[str]:
    names = csv_list(spec)
    if not names:
        return []
    if "validate" not in stages:
        raise UsageError("--blocking-sources applies to the validate stage")
    configured = list(settings.ingest.sources)
    if names == ["all"]:
        return configured
    unknown = sorted(set(names) - set(configured))
    if unknown:
        raise UsageError(
            f"--blocking-sources: not configured source(s) {', '.join(unknown)}; "
            f"configured: {', '.join(configured)} (or 'all')"
        )
    return [s for s in configured if s in names]


def stage_fields(result: StageResult) -> dict[str, Any]:
    """A stage's result as `run --json` shows it."""
    return {
        "stage": result.stage,
        "dates": result.dates,
        "rows": result.rows,
        "seconds": round(result.seconds, 3),
        "details": result.details,
    }


@json_command("run")
def run(
    date_: Annotated[
        str | None,
        typer.Option("--date", "--from", help="Logical date (or first date), YYYY-MM-DD."),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Last date of a range (backfill), inclusive.")
    ] = None,
    stage: Annotated[
        str | None, typer.Option(help="Comma-separated stages (default: all).")
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(help="Ingest only this configured source (repeatable; --stage ingest)."),
    ] = None,
    blocking_sources: Annotated[
        str | None,
        typer.Option(
            help="Fail after validate unless these sources are ok (comma-separated, or all)."
        ),
    ] = None,
    accept_gap: Annotated[
        str | None,
        typer.Option(
            "--accept-gap",
            metavar="REASON",
            help="Let recommend chain the decision log over days the lake lost (the audit "
            "anchor records them); REASON is logged in the anchor and the heads.",
        ),
    ] = None,
    workdir: WorkdirOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run pipeline stages for a date or a date range (in order, in bulk)."""
    if date_ is None:
        raise UsageError("--date is required (YYYY-MM-DD)")
    first = parse_date(date_, "--date")
    last = parse_date(to, "--to") if to else first
    dates = date_range(first, last)
    stages = parse_stages(stage)
    record(dates=dates, stages=[])
    cfg = settings(config, workdir)
    sources = _sources(cfg, source)
    if sources is not None and stages != ["ingest"]:
        raise UsageError("--source applies to --stage ingest alone")
    blocking = _blocking(cfg, stages, blocking_sources)
    if sources == []:
        console.print("ingest: no configured source to ingest; nothing to do")
        return
    if accept_gap is not None and not accept_gap.strip():
        raise UsageError("--accept-gap needs a reason")
    if accept_gap is not None and "recommend" not in stages:
        raise UsageError("--accept-gap applies to the recommend stage")
    ctx = context(cfg)
    ctx.accept_audit_gap = accept_gap
    done: list[StageResult] = []

    def gate(result: StageResult) -> None:  # a blocking source stops the run after validate
        done.append(result)
        if result.stage == "validate":
            check_blocking(result, blocking)

    try:
        run_pipeline(ctx, stages, dates, "run", sources, after=gate)
    finally:
        record(stages=[stage_fields(r) for r in done])


def generate(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write raw/, reference/ and ground truth.")
    ],
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2026-10-01",
    days: Annotated[int, typer.Option(min=1, max=3660, help="Number of days.")] = 30,
    users: Annotated[int, typer.Option(min=10, max=2_000_000, help="Number of human users.")] = 150,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 7,
    events_per_user: Annotated[
        float,
        typer.Option(
            min=0.01, max=100.0, help="Scale of per-user daily volume (1.0 ~ 100 events)."
        ),
    ] = 1.0,
) -> None:
    """Write a synthetic organisation's telemetry in real vendor formats, with injected attacks."""
    first = parse_date(start, "--start")
    with progress() as bar:
        task = bar.add_task("generating", total=None)

        def report(what: str, done: int, total: int) -> None:
            bar.update(task, description=f"generating {what}", completed=done, total=total)

        summary = generate_telemetry(
            out_dir, first, days, users, seed, events_per_user=events_per_user, progress=report
        )
    table = Table(title=f"generated into {out_dir}")
    table.add_column("source")
    table.add_column("lines", justify="right")
    for name, lines in sorted(summary.lines_by_source().items()):
        table.add_row(name, f"{lines:,}")
    out.print(table)
    out.print(
        f"{summary.total_lines:,} lines, {summary.scenarios} injected scenarios, "
        f"{summary.elapsed_seconds:.1f}s"
    )


def _train(
    ctx: RunContext, first: date, last: date, estimator: str, ground_truth: Path | None, seed: int
) -> TrainResult:
    with console.status(f"training on sessions {first} .. {last}"):
        result = run_train(
            ctx,
            first,
            last,
            estimator=estimator,
            ground_truth=ground_truth,
            seed=seed,
            signing_key=audit_key(),
        )
    metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(result.metrics.items()))
    verdict = (
        f"promoted to champion (v{result.model_version})"
        if result.promoted
        else f"not promoted; champion stays v{result.champion_version}"
    )
    record(
        first_date=first,
        last_date=last,
        run_id=result.run_id,
        estimator=result.estimator,
        model_version=result.model_version,
        label_source=result.label_source,
        metrics=result.metrics,
        promoted=result.promoted,
        champion_version=result.champion_version,
        champion_metrics=result.champion_metrics,
    )
    out.print(
        f"trained {result.estimator} v{result.model_version} on {first} .. {last} "
        f"(labels: {result.label_source}) {metrics or 'no held-out labels'}; {verdict}"
    )
    return result


@json_command("train")
def train(
    date_: Annotated[
        str | None,
        typer.Option("--date", "--to", help="Last day of scored sessions to train on, YYYY-MM-DD."),
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=366, help="Days of sessions to train on.")] = 28,
    estimator: Annotated[
        str, typer.Option(help="auto, isolation_forest or gradient_boosting.")
    ] = "auto",
    ground_truth: Annotated[
        Path | None,
        typer.Option(help="A generator's ground_truth.jsonl to use as labels (demo, evaluation)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the hold-out split and the estimator.")] = 0,
    workdir: WorkdirOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Train the session risk model, log it to MLflow, promote it if at least as good."""
    if date_ is None:
        raise UsageError("--date is required (YYYY-MM-DD)")
    last = parse_date(date_, "--date")
    if ground_truth is not None and not ground_truth.is_file():
        raise UsageError(f"--ground-truth: no such file {ground_truth}")
    ctx = context(settings(config, workdir))
    _train(ctx, last - timedelta(days=days - 1), last, estimator, ground_truth, seed)


def demo(
    workdir: Annotated[
        Path, typer.Option(help="Folder for raw/, lake/, mlruns/ and reports/.")
    ] = Path("policylake-demo"),
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2026-10-01",
    days: Annotated[int, typer.Option(min=4, max=366)] = 30,
    users: Annotated[int, typer.Option(min=10, max=100_000)] = 150,
    seed: Annotated[int, typer.Option()] = 7,
    config: ConfigOpt = None,
) -> None:
    """Generate a month of telemetry, run every stage over it, train the model, summarize.

    The first two thirds of the month are scored on signals alone; the model is then
    trained on them (labels: the generator's ground truth) and scores the last third,
    as the weekly training DAG does in production.
    """
    workdir = workdir.resolve()
    first = parse_date(start, "--start")
    generate(workdir, start, days, users, seed)
    ctx = context(settings(config, workdir))
    dates = date_range(first, first + timedelta(days=days - 1))
    cut = max(2, (2 * len(dates)) // 3)
    prepare = [s for s in STAGES if s in STAGES_BEFORE_SCORE]
    run_pipeline(ctx, prepare, dates, "demo")
    run_pipeline(ctx, ["score"], dates[:cut], "demo (signals only)")
    _train(ctx, dates[0], dates[cut - 1], "auto", workdir / "ground_truth.jsonl", seed)
    run_pipeline(ctx, ["score"], dates[cut:], "demo (with the champion)")
    rest = [s for s in STAGES if s not in prepare and s != "score"]
    run_pipeline(ctx, rest, dates, "demo")
    out.print(f"demo workdir: {workdir}", highlight=False, soft_wrap=True)
    for line in next_steps(ctx.settings, dates[-1]):
        out.print(line, highlight=False, soft_wrap=True)


def next_steps(settings: Settings, day: date) -> list[str]:
    """The demo's last lines: where its outputs are and how to look at them."""
    paths = settings.paths
    reports = Path(paths.reports_dir) / day.isoformat() / "report.html"
    exports = Path(paths.exports_dir) / day.isoformat()
    return [
        "what to look at next:",
        f"  daily report      {reports}",
        f"  data quality      {Path(paths.data_docs_dir) / 'index.html'} (Great Expectations Data Docs)",
        f"  model runs        .venv/bin/mlflow ui --backend-store-uri {tracking_uri(settings)}"
        " (then http://127.0.0.1:5000)",
        f"  for enforcement   {exports / 'policy_recommendations.jsonl'} and its manifest.json",
        "  the DAGs          make airflow (installs Airflow; UI on http://localhost:8080,"
        " docs/airflow.md)",
    ]


@json_command("export")
def export(
    date_: Annotated[str, typer.Option("--date", help="Run date to export, YYYY-MM-DD.")],
    to: Annotated[str | None, typer.Option("--to", help="Last date of a range, inclusive.")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder (default: paths.exports_dir).")
    ] = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write a day's policy recommendations as JSON lines plus a manifest (rows, sha256)."""
    first = parse_date(date_)
    dates = date_range(first, parse_date(to, "--to") if to else first)
    cfg = settings(config, workdir)
    if out_dir is not None:
        cfg = cfg.model_copy(
            update={"paths": cfg.paths.model_copy(update={"exports_dir": str(out_dir)})}
        )
    record(dates=dates, out_dir=cfg.paths.exports_dir)
    results = run_pipeline(context(cfg), ["export"], dates, "export")
    exports = results[0].details.get("exports", [])
    record(rows=results[0].rows.get("exported", 0), exports=exports)
    for e in exports:
        out.print(
            f"exported {e['rows']} recommendation(s) for {e['run_date']} (table version "
            f"{e['table_version']}) to {e['data_file']}; sha256 {e['sha256']}; "
            f"manifest {e['manifest']}",
            highlight=False,
            soft_wrap=True,
        )


def report(
    date_: Annotated[str, typer.Option("--date", help="Run date to report on, YYYY-MM-DD.")],
    to: Annotated[str | None, typer.Option("--to", help="Last date of a range, inclusive.")] = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Write the daily HTML report of a date (run the metrics stage for it first)."""
    first = parse_date(date_)
    dates = date_range(first, parse_date(to, "--to") if to else first)
    results = run_pipeline(context(settings(config, workdir)), ["report"], dates, "report")
    out.print(f"daily report: {results[0].details['report']}", highlight=False, soft_wrap=True)
