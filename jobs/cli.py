"""`policylake` command line: generate telemetry, run stages, run the demo."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobs.config import ConfigError, Settings, load_settings
from jobs.policy.cli import export_command, feedback_command, policy_app
from jobs.privacy_cli import forget_command, pseudonym_app, verify_command
from jobs.report import report_command

if TYPE_CHECKING:
    from jobs.pipeline import RunContext, StageResult
    from jobs.train import TrainResult

app = typer.Typer(
    name="policylake",
    help="Adaptive security policy as a nightly batch job on a data lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(policy_app, name="policy")
app.command("export")(export_command)
app.command("feedback")(feedback_command)
app.command("verify")(verify_command)
app.command("forget")(forget_command)
app.add_typer(pseudonym_app, name="pseudonym")
app.command("report")(report_command)
console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="policylake.yaml to use (default: ./policylake.yaml if present)."
    ),
]


class UsageError(ValueError):
    """Bad command-line input, reported in one line."""


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def parse_date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} must be a date like 2026-10-01, got {value!r}") from None


def _settings(config: Path | None, workdir: Path | None = None) -> Settings:
    settings = load_settings(config)
    return settings.with_workdir(workdir) if workdir is not None else settings


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command()
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
    from jobs.generate import generate_telemetry

    first = parse_date(start, "--start")
    with _progress() as progress:
        task = progress.add_task("generating", total=None)

        def report(what: str, done: int, total: int) -> None:
            progress.update(task, description=f"generating {what}", completed=done, total=total)

        summary = generate_telemetry(
            out_dir, first, days, users, seed, events_per_user=events_per_user, progress=report
        )
    table = Table(title=f"generated into {out_dir}")
    table.add_column("source")
    table.add_column("lines", justify="right")
    for source, lines in sorted(summary.lines_by_source().items()):
        table.add_row(source, f"{lines:,}")
    out.print(table)
    out.print(
        f"{summary.total_lines:,} lines, {summary.scenarios} injected scenarios, "
        f"{summary.elapsed_seconds:.1f}s"
    )


def _context(settings: Settings) -> RunContext:
    from jobs.pipeline import RunContext
    from jobs.spark import build_spark

    return RunContext(spark=build_spark(settings), settings=settings)


def _run_pipeline(
    settings: Settings,
    stages: list[str],
    dates: list[date],
    title: str,
    ctx: RunContext | None = None,
) -> list[StageResult]:
    from jobs.pipeline import run_stages

    ctx = ctx or _context(settings)
    results: list[StageResult] = []
    with _progress() as progress:
        task = progress.add_task(title, total=len(stages))
        for result in run_stages(ctx, stages, dates):
            results.append(result)
            progress.update(task, advance=1, description=f"{title}: {result.stage} done")
    table = Table(title=f"{title}: {dates[0]} .. {dates[-1]} ({len(dates)} days)")
    table.add_column("stage")
    table.add_column("rows", justify="right")
    table.add_column("details")
    table.add_column("seconds", justify="right")
    for r in results:
        rows = ", ".join(f"{k}={v:,}" for k, v in r.rows.items())
        details = ", ".join(
            f"{k}={v}" for k, v in r.details.items() if not isinstance(v, (dict, list))
        )
        table.add_row(r.stage, rows, details, f"{r.seconds:.1f}")
    out.print(table)
    return results


@app.command()
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
    workdir: Annotated[
        Path | None, typer.Option(help="Root relative paths here (like the demo).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run pipeline stages for a date or a date range (in order, in bulk)."""
    from jobs.pipeline import date_range, parse_stages

    if date_ is None:
        raise UsageError("--date is required (YYYY-MM-DD)")
    first = parse_date(date_, "--date")
    last = parse_date(to, "--to") if to else first
    dates = date_range(first, last)
    stages = parse_stages(stage)
    _run_pipeline(_settings(config, workdir), stages, dates, "run")


def _train(
    ctx: RunContext, first: date, last: date, estimator: str, ground_truth: Path | None, seed: int
) -> TrainResult:
    from jobs.train import run_train

    with console.status(f"training on sessions {first} .. {last}"):
        result = run_train(
            ctx, first, last, estimator=estimator, ground_truth=ground_truth, seed=seed
        )
    metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(result.metrics.items()))
    verdict = (
        f"promoted to champion (v{result.model_version})"
        if result.promoted
        else f"not promoted; champion stays v{result.champion_version}"
    )
    out.print(
        f"trained {result.estimator} v{result.model_version} on {first} .. {last} "
        f"(labels: {result.label_source}) {metrics or 'no held-out labels'}; {verdict}"
    )
    return result


@app.command()
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
    workdir: Annotated[
        Path | None, typer.Option(help="Root relative paths here (like the demo).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Train the session risk model, log it to MLflow, promote it if at least as good."""
    from datetime import timedelta

    if date_ is None:
        raise UsageError("--date is required (YYYY-MM-DD)")
    last = parse_date(date_, "--date")
    if ground_truth is not None and not ground_truth.is_file():
        raise UsageError(f"--ground-truth: no such file {ground_truth}")
    ctx = _context(_settings(config, workdir))
    _train(ctx, last - timedelta(days=days - 1), last, estimator, ground_truth, seed)


@app.command()
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
    from jobs.pipeline import STAGES, date_range

    workdir = workdir.resolve()
    first = parse_date(start, "--start")
    generate(workdir, start, days, users, seed)
    settings = _settings(config, workdir)
    dates = date_range(first, first.fromordinal(first.toordinal() + days - 1))
    cut = max(2, (2 * len(dates)) // 3)
    ctx = _context(settings)
    prepare = [s for s in STAGES if s in STAGES_BEFORE_SCORE]
    _run_pipeline(settings, prepare, dates, "demo", ctx)
    _run_pipeline(settings, ["score"], dates[:cut], "demo (signals only)", ctx)
    _train(ctx, dates[0], dates[cut - 1], "auto", workdir / "ground_truth.jsonl", seed)
    _run_pipeline(settings, ["score"], dates[cut:], "demo (with the champion)", ctx)
    rest = [s for s in STAGES if s not in prepare and s != "score"]
    results = _run_pipeline(settings, rest, dates, "demo", ctx)
    out.print(f"demo workdir: {workdir}")
    for result in results:
        if result.stage == "report" and result.details.get("report"):
            out.print(f"daily report: {result.details['report']}")


STAGES_BEFORE_SCORE = ("ingest", "validate", "normalize", "baselines")


def main() -> None:
    """Console entry point: known errors become one line and exit code 2."""
    from jobs.lake import SchemaMismatchError, TableNameError
    from jobs.pipeline import PipelineError
    from jobs.policy.schema import PolicyLoadError
    from jobs.train import TrainError

    known = (
        UsageError,
        ConfigError,
        PipelineError,
        SchemaMismatchError,
        TableNameError,
        TrainError,
        PolicyLoadError,
    )
    try:
        app(standalone_mode=False)
    except known as exc:
        fail(str(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        fail("aborted", 130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        format_message = getattr(exc, "format_message", None)
        if callable(format_message):
            fail(str(format_message()))
        raise


if __name__ == "__main__":
    main()
