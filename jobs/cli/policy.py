"""`policylake policy lint|test|diff|schema`: policy-as-code tooling.

Exit codes: 0 ok, 1 a check failed (lint findings, failing inline cases, a stale schema),
2 bad input (a file that does not load, a bad date), always with a one-line reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from jobs.cli.common import (
    ConfigOpt,
    WorkdirOpt,
    command_group,
    console,
    context,
    mapped,
    out,
    parse_date,
    settings,
)
from jobs.cli.json_output import JsonOpt, first_line, json_command, record
from jobs.policy.lint import failed, lint_directory
from jobs.policy.schema import SCHEMA_FILE, render_json_schema, resolve_policies_dir
from jobs.policy.testing import run_cases
from jobs.stages.recommend.diff import diff_date

policy_app = command_group(
    "policy",
    "Policy-as-code tooling: lint, run inline tests, replay a date, export the JSON Schema.",
)

PoliciesOpt = Annotated[
    Path | None,
    typer.Option("--policies", "-p", help="Policy folder (default: ./policies)."),
]


@policy_app.command("lint")
@mapped
@json_command("policy-lint")
def lint_command(
    policies: PoliciesOpt = None,
    strict: Annotated[bool, typer.Option(help="Fail on warnings too.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Schema errors, unknown signals, unreachable tiers, conflicting policies."""
    directory = resolve_policies_dir(None, policies)
    findings = lint_directory(directory)
    style = {"error": "red", "warning": "yellow", "info": "cyan"}
    order = ("error", "warning", "info")
    findings = sorted(findings, key=lambda f: (order.index(f.severity), f.file, f.message))
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    record(
        policies=directory,
        strict=strict,
        counts=counts,
        findings=[
            {
                "severity": f.severity,
                "rule": f.rule,
                "file": f.file,
                "policy_id": f.policy_id,
                "message": f.message,
            }
            for f in findings
        ],
    )
    # One finding a line (like ruff), so CI logs stay greppable and nothing is truncated.
    for f in findings:
        out.print(
            f"[{style[f.severity]}]{f.severity}[/] {f.rule} {escape(f.file)}: {escape(f.message)}",
            highlight=False,
            soft_wrap=True,
        )
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items())
    if failed(findings, strict):
        console.print(f"[bold red]policy lint failed:[/] {summary}")
        raise typer.Exit(1)
    out.print(f"policy lint passed: {summary}")


@policy_app.command("test")
@mapped
@json_command("policy-test")
def test_command(policies: PoliciesOpt = None, json_: JsonOpt = False) -> None:
    """Run every policy file's inline `tests:` cases; non-zero exit on any failure."""
    directory = resolve_policies_dir(None, policies)
    results, errors = run_cases(directory)
    failures = sum(1 for r in results if not r.passed)
    record(
        policies=directory,
        counts={"passed": len(results) - failures, "failed": failures, "not_loaded": len(errors)},
        cases=[
            {
                "file": r.file,
                "policy_id": r.policy_id,
                "case": r.case,
                "expected": r.expected,
                "expected_tier": r.expected_tier,
                "got": r.got,
                "got_tier": r.got_tier,
                "passed": r.passed,
            }
            for r in results
        ],
        errors=[first_line(str(error)) for error in errors],
    )
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
    summary = (
        f"{len(results) - failures} passed, {failures} failed, {len(errors)} file(s) not loaded"
    )
    if failures or errors:
        console.print(f"[bold red]policy test failed:[/] {summary}")
        raise typer.Exit(1)
    out.print(f"policy test passed: {summary}")


@policy_app.command("diff")
@mapped
@json_command("policy-diff")
def diff_command(
    date_: Annotated[str, typer.Option("--date", help="The past run date to replay, YYYY-MM-DD.")],
    policies: Annotated[
        Path, typer.Option("--policies", "-p", help="Folder with the changed policies.")
    ],
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Changes to list.")] = 200,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Replay a date from the lake under changed policies; print recommendations that would change."""
    run_date = parse_date(date_)
    ctx = context(settings(config, workdir))
    result = diff_date(ctx, run_date, policies, limit=limit)
    record(
        run_date=run_date,
        policies=policies,
        entity_risk_version=result.entity_risk_version,
        basis=result.basis,
        changed=result.changed,
        counts=result.counts,
        limit=limit,
        changes=result.changes,
    )
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
@mapped
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
            console.print(
                f"[bold red]error:[/] {target} is out of date; run `policylake policy schema`"
            )
            raise typer.Exit(1)
        out.print(f"{target} is up to date")
        return
    target.write_text(text, encoding="utf-8")
    out.print(f"wrote {target}")
