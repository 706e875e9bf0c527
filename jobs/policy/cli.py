"""`policylake policy lint|test|diff|schema`, plus the `export` and `feedback` commands.

Wiring (jobs/cli.py):  app.add_typer(policy_app, name="policy")
                       app.command("export")(export_command)
                       app.command("feedback")(feedback_command)
Exit codes: 0 ok, 1 a check failed (lint findings, failing inline cases), 2 bad input
(a file that does not load, a bad date, a missing table), always with a one-line reason.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jobs.policy.schema import SCHEMA_FILE, render_json_schema, resolve_policies_dir

if TYPE_CHECKING:
    from jobs.pipeline import RunContext

policy_app = typer.Typer(
    name="policy",
    help="Policy-as-code tooling: lint, run inline tests, replay a date, export the JSON Schema.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

PoliciesOpt = Annotated[
    Path | None,
    typer.Option("--policies", "-p", help="Policy folder (default: ./policies)."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="policylake.yaml to use (default: ./policylake.yaml if present)."
    ),
]
WorkdirOpt = Annotated[Path | None, typer.Option(help="Root relative paths here (like the demo).")]


def _fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _date(value: str, option: str = "--date") -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"{option} must be a date like 2026-10-01, got {value!r}")


def _context(config: Path | None, workdir: Path | None) -> RunContext:
    from jobs.config import ConfigError, load_settings
    from jobs.pipeline import RunContext
    from jobs.spark import build_spark

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _fail(str(exc))
    if workdir is not None:
        settings = settings.with_workdir(workdir)
    return RunContext(spark=build_spark(settings), settings=settings)


@policy_app.command("lint")
def lint_command(
    policies: PoliciesOpt = None,
    strict: Annotated[bool, typer.Option(help="Fail on warnings too.")] = False,
) -> None:
    """Schema errors, unknown signals, unreachable tiers, conflicting policies."""
    from jobs.policy.lint import failed, lint_directory

    directory = resolve_policies_dir(None, policies)
    findings = lint_directory(directory)
    style = {"error": "red", "warning": "yellow", "info": "cyan"}
    order = ("error", "warning", "info")
    # One finding a line (like ruff), so CI logs stay greppable and nothing is truncated.
    for f in sorted(findings, key=lambda f: (order.index(f.severity), f.file, f.message)):
        out.print(
            f"[{style[f.severity]}]{f.severity}[/] {f.rule} {escape(f.file)}: {escape(f.message)}",
            highlight=False,
            soft_wrap=True,
        )
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items())
    if failed(findings, strict):
        console.print(f"[bold red]policy lint failed:[/] {summary}")
        raise typer.Exit(1)
    out.print(f"policy lint passed: {summary}")


@policy_app.command("test")
def test_command(policies: PoliciesOpt = None) -> None:
    """Run every policy file's inline `tests:` cases; non-zero exit on any failure."""
    from jobs.policy.testing import run_cases

    directory = resolve_policies_dir(None, policies)
    results, errors = run_cases(directory)
    table = Table(title=f"policy test: {directory}")
    for column in ("policy", "case", "expected", "got", "result"):
        table.add_column(column, overflow="fold")
    for r in results:
        expected = r.expected + (f" ({r.expected_tier})" if r.expected_tier else "")
        got = r.got + (f" ({r.got_tier})" if r.got_tier else "")
        table.add_row(
            r.policy_id,
            escape(r.case),
            expected,
            got,
            "[green]pass[/]" if r.passed else "[red]FAIL[/]",
        )
    out.print(table)
    for error in errors:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    failures = sum(1 for r in results if not r.passed)
    summary = (
        f"{len(results) - failures} passed, {failures} failed, {len(errors)} file(s) not loaded"
    )
    if failures or errors:
        console.print(f"[bold red]policy test failed:[/] {summary}")
        raise typer.Exit(1)
    out.print(f"policy test passed: {summary}")


@policy_app.command("diff")
def diff_command(
    date_: Annotated[str, typer.Option("--date", help="The past run date to replay, YYYY-MM-DD.")],
    policies: Annotated[
        Path, typer.Option("--policies", "-p", help="Folder with the changed policies.")
    ],
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Changes to list.")] = 200,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Replay a date from the lake under changed policies; print recommendations that would change."""
    from jobs.pipeline import PipelineError
    from jobs.policy.diff import diff_date

    run_date = _date(date_)
    ctx = _context(config, workdir)
    try:
        result = diff_date(ctx, run_date, policies, limit=limit)
    except PipelineError as exc:
        _fail(str(exc))
    out.print(
        f"policy diff {run_date} with {escape(str(policies))} "
        f"(gold.entity_risk version {result.entity_risk_version}, {result.basis})",
        highlight=False,
        soft_wrap=True,
    )
    for c in result.changes:  # one change a line, so the output greps and diffs well
        before = f"{c['old_action']}/{c['old_status']}" if c["old_action"] else "-"
        after = (
            f"{c['new_action']}/{c['new_status']} ({c['new_policy_id']})"
            if c["new_action"]
            else "-"
        )
        target = f"{c['target_type']} {c['target_id']}"
        out.print(
            f"{c['change']}: {target} [{c['domain']}] {before} -> {after}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items())) or "no changes"
    shown = f" (showing {len(result.changes)})" if result.changed > len(result.changes) else ""
    out.print(f"{result.changed} recommendation(s) would change{shown}: {counts}")


@policy_app.command("schema")
def schema_command(
    policies: PoliciesOpt = None,
    check: Annotated[
        bool, typer.Option(help="Fail if the committed schema is out of date.")
    ] = False,
) -> None:
    """Write policies/policy.schema.json from the pydantic models (or --check it is current)."""
    target = resolve_policies_dir(None, policies) / SCHEMA_FILE
    text = render_json_schema()
    if check:
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            _fail(f"{target} is out of date; run `policylake policy schema`", 1)
        out.print(f"{target} is up to date")
        return
    target.write_text(text, encoding="utf-8")
    out.print(f"wrote {target}")


def export_command(
    date_: Annotated[str, typer.Option("--date", help="Run date to export, YYYY-MM-DD.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder (default: paths.exports_dir).")
    ] = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Write a day's policy recommendations as JSON lines plus a manifest (rows, sha256)."""
    from jobs.export import run_export
    from jobs.pipeline import PipelineError

    run_date = _date(date_)
    ctx = _context(config, workdir)
    try:
        result = run_export(ctx, run_date, out_dir)
    except PipelineError as exc:
        _fail(str(exc))
    out.print(
        f"exported {result.rows} recommendation(s) for {run_date} (table version "
        f"{result.table_version}) to {result.data_file}; sha256 {result.sha256}; manifest {result.manifest_file}"
    )


def feedback_command(
    file: Annotated[Path, typer.Option("--file", "-f", help="Analyst decisions, .csv or .jsonl.")],
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Ingest analyst decisions (approve/reject/override, verdicts) and update statuses."""
    from jobs.feedback import run_feedback
    from jobs.pipeline import PipelineError

    ctx = _context(config, workdir)
    try:
        result = run_feedback(ctx, file)
    except PipelineError as exc:
        _fail(str(exc))
    rows = ", ".join(f"{k}={v}" for k, v in result.rows.items())
    details = ", ".join(f"{k}={v}" for k, v in result.details.items() if k != "file")
    out.print(f"feedback from {file}: {rows}; {details}")


def main() -> None:  # pragma: no cover - `python -m jobs.policy.cli` for local use
    policy_app()
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
