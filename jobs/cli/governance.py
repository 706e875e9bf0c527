"""Governance commands: `feedback` (analyst decisions), `verify` (the decision log's hash
chain), `forget` (a data subject's erasure) and `pseudonym resolve|of`.

Exit codes: 0 ok; 1 verification failed, a token unknown, a decisions file refused; 2 bad
input (one line). docs/audit.md (verify), docs/privacy.md (forget, pseudonyms),
docs/policies.md (feedback).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer
from pyspark.sql import functions as F
from rich.table import Table

from jobs.cli.common import (
    ConfigOpt,
    WorkdirOpt,
    context,
    mapped,
    out,
    parse_date,
    settings,
)
from jobs.core.errors import PipelineError, UsageError
from jobs.core.tables import PSEUDONYMS
from jobs.governance.audit import verify_chain
from jobs.governance.decision_files import analyst_decision_files, analyst_decisions_dir
from jobs.governance.decisions import parse_decisions
from jobs.governance.erasure import erase_user, plan_erasure, summary_rows
from jobs.governance.feedback import run_feedback
from jobs.governance.privacy import PREFIX, pseudonym_key, read_pseudonyms, token_of

pseudonym_app = typer.Typer(
    name="pseudonym",
    help="Resolve pseudonym tokens of the BI tables (authorized analysts; docs/privacy.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def feedback(
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", "-f", help="Analyst decisions, .csv or .jsonl (repeatable)."),
    ] = None,
    date_: Annotated[
        str | None,
        typer.Option(
            "--date",
            help="Instead of --file: every file in <raw_root>/analyst_decisions/<date>/ "
            "(the feedback DAG's drop folder).",
        ),
    ] = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Ingest analyst decisions (approve/reject/override, verdicts) and update statuses."""
    if bool(file) == (date_ is not None):
        raise UsageError("give --file (one or more) or --date, not both")
    cfg = settings(config, workdir)
    files = list(file or [])
    if date_ is not None:
        day = parse_date(date_).isoformat()
        files = analyst_decision_files(cfg.paths.raw_root, day)
        if not files:
            out.print(
                f"feedback: no analyst decision files in "
                f"{analyst_decisions_dir(cfg.paths.raw_root, day)}; nothing to do",
                highlight=False,
                soft_wrap=True,
            )
            return
    for path in files:  # every file must be valid before any is ingested
        parse_decisions(path)
    ctx = context(cfg)
    for path in files:
        result = run_feedback(ctx, path)
        rows = ", ".join(f"{k}={v}" for k, v in result.rows.items())
        details = ", ".join(f"{k}={v}" for k, v in result.details.items() if k != "file")
        out.print(f"feedback from {path}: {rows}; {details}", highlight=False, soft_wrap=True)


def verify(
    date_: Annotated[str, typer.Option("--date", help="Run date to verify, YYYY-MM-DD.")],
    workdir: WorkdirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check a day's decision log against its hash chain (rows, head, HMAC, previous-day link)."""
    day = parse_date(date_)
    ctx = context(settings(config, workdir))
    result = verify_chain(ctx, day)
    typer.echo(result.summary())
    if not result.ok:
        for line in result.details():
            typer.echo(f"  {line}")
        raise typer.Exit(1)


def forget(
    user: Annotated[str, typer.Option("--user", help="The user: canonical id or any alias.")],
    workdir: WorkdirOpt = None,
    config: ConfigOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="Who requested it (default: the OS user).")
    ] = None,
) -> None:
    """Erase one user from every table of the lake, vacuum, and record the erasure."""
    ctx = context(settings(config, workdir))
    plan = plan_erasure(ctx, user)
    subject = plan.subject
    where = "identity directory" if subject.in_directory else "not in the identity directory"
    typer.echo(
        f"subject: {len(subject.aliases)} spelling(s), {len(subject.tokens)} pseudonym "
        f"token(s) ({where})"
    )
    rows = summary_rows(plan)
    if not rows:
        typer.echo("nothing to erase: no table names this user")
        return
    table = Table(title="rows naming the user")
    table.add_column("table")
    table.add_column("deleted", justify="right")
    table.add_column("redacted", justify="right")
    for name, deleted, redacted in rows:
        table.add_row(name, f"{deleted:,}", f"{redacted:,}")
    out.print(table)
    if not yes:
        typer.confirm(
            "Erase these rows and vacuum the tables (older versions become unreadable)?",
            abort=True,
        )
    # with --yes the plan shown is applied at once; after a confirmation (a human pause)
    # every table is scanned again, so rows written meanwhile are erased too
    done = erase_user(ctx, user, by or getpass.getuser(), planned=plan if yes else None)
    deleted = sum(done.deleted.values())
    redacted = sum(done.redacted.values())
    typer.echo(
        f"erased: {deleted} row(s) deleted, {redacted} redacted in {len(done.tables)} table(s); "
        f"vacuumed {len(done.vacuumed)} table(s); audit chain re-recorded for "
        f"{len(done.rechained)} date(s); erasure {done.erasure_id} recorded in ops.erasures"
    )
    if done.chain_left_broken:
        typer.echo(
            "audit chain left as it was (it failed verify before the erasure): "
            + ", ".join(d.isoformat() for d in done.chain_left_broken)
        )
    if done.outside_files:
        typer.echo(
            f"{len(done.outside_files)} file(s) outside the lake still name the user "
            f"(regenerate or delete them): {', '.join(done.outside_files[:5])}"
        )
    typer.echo("raw/ landing files are not touched: delete the user's lines upstream too")


@pseudonym_app.command("resolve")
@mapped
def resolve(
    token: Annotated[str, typer.Argument(help="A token from a BI table, e.g. u_3f2a...")],
    workdir: WorkdirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The identifier behind a token (reads the restricted ops.pseudonyms)."""
    ctx = context(settings(config, workdir))
    mapping = read_pseudonyms(ctx.lake)
    if mapping is None:
        raise PipelineError(f"{PSEUDONYMS} does not exist: nothing was pseudonymized in this lake")
    found = (
        mapping.where(F.col("token") == token.strip())
        .groupBy("kind", "identifier")
        .agg(F.min("run_date").alias("first"), F.max("run_date").alias("last"))
        .collect()
    )
    if not found:
        typer.echo(f"{token}: unknown token")
        raise typer.Exit(1)
    for r in found:
        typer.echo(f"{token} -> {r['identifier']} ({r['kind']}; {r['first']} .. {r['last']})")


@pseudonym_app.command("of")
@mapped
def of(
    identifier: Annotated[str, typer.Argument(help="A canonical user, host or device id.")],
    kind: Annotated[
        str | None, typer.Option(help="user, host or device (default: all three).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """The token an identifier gets under the current key (needs the key in the environment)."""
    if kind is not None and kind not in PREFIX:
        raise UsageError(f"--kind must be one of {', '.join(PREFIX)}, got {kind!r}")
    key = pseudonym_key(settings(config).privacy)
    kinds = [kind] if kind else list(PREFIX)
    typer.echo(
        f"{identifier} -> "
        + ", ".join(f"{token_of(key, identifier.strip(), k)} ({k})" for k in kinds)
    )
