"""What every command shares: consoles, options, dates, settings, the run context, the
progress bar and the table of stage results."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from datetime import date
from pathlib import Path
from typing import Annotated, ParamSpec

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobs.cli.json_output import first_line
from jobs.core.config import Settings, load_rooted
from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PolicylakeError, UsageError
from jobs.core.spark import build_spark
from jobs.governance.audit import audit_key_for
from jobs.pipeline.runner import run_stages

P = ParamSpec("P")

# Human text and progress go to stderr, results to stdout.
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="policylake.yaml to use (default: ./policylake.yaml if present)."
    ),
]
WorkdirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Root relative paths here (like the demo; default: $POLICYLAKE_WORKDIR, else .)."
    ),
]


def command_group(name: str, help: str) -> typer.Typer:
    """A Typer app of commands (the CLI and each of its groups): help when run with no
    arguments, no shell-completion commands, errors without Rich tracebacks."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


def report_error(message: str, code: int) -> int:
    """One line on stderr; `code` back for the exit."""
    console.print(f"[bold red]error:[/] {escape(first_line(message))}", highlight=False)
    return code


def mapped(command: Callable[P, None]) -> Callable[P, None]:
    """`command` with every known error turned into one line on stderr and its exit code
    (`typer.Exit`), however the application is invoked (console script, spark-submit,
    typer's test runner)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except PolicylakeError as exc:
            raise typer.Exit(report_error(str(exc), exc.exit_code)) from None

    return run


def parse_date(value: str, option: str = "--date") -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        hint = (
            " (a run without a logical date? trigger it with one: airflow dags trigger -l YYYY-MM-DD)"
            if value.strip() in ("", "None")
            else ""
        )
        raise UsageError(f"{option} must be a date like 2026-10-01, got {value!r}{hint}") from None


def csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def settings(config: Path | None, workdir: Path | None = None) -> Settings:
    return load_rooted(config, workdir)


def context(settings: Settings) -> RunContext:
    """The run context: the Spark session (started here, never at import) and settings.

    `environment: prod` without POLICYLAKE_AUDIT_KEY stops here, before Spark starts."""
    audit_key_for(settings)
    return RunContext(spark=build_spark(settings), settings=settings)


def progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def run_pipeline(
    ctx: RunContext,
    stages: Sequence[str],
    dates: list[date],
    title: str,
    sources: Sequence[str] | None = None,
    after: Callable[[StageResult], None] | None = None,
) -> list[StageResult]:
    """Run stages with a progress bar, then print the table of what each did. `after` sees
    each stage's result as it completes; an error it raises stops the run there (the stages
    after it do not start, the dates' locks are released)."""
    results: list[StageResult] = []
    with progress() as bar, closing(run_stages(ctx, stages, dates, sources)) as runs:
        task = bar.add_task(title, total=len(stages))
        for result in runs:
            results.append(result)
            bar.update(task, advance=1, description=f"{title}: {result.stage} done")
            if after is not None:
                after(result)
    show_results(title, dates, results)
    return results


def show_results(title: str, dates: Sequence[date], results: Iterable[StageResult]) -> None:
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
