"""`policylake verify`, `policylake forget` and `policylake pseudonym resolve|of`.

Wiring (jobs/cli.py):  app.command("verify")(verify_command)
                       app.command("forget")(forget_command)
                       app.add_typer(pseudonym_app, name="pseudonym")
Exit codes: 0 ok; 1 verification failed / token unknown; 2 bad input (one line).
docs/audit.md (verify), docs/privacy.md (forget, pseudonyms).
"""

from __future__ import annotations

import getpass
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jobs.policy.cli import _context, _fail

console = Console(stderr=True)
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="policylake.yaml to use (default: ./policylake.yaml if present)."
    ),
]
WorkdirOpt = Annotated[Path | None, typer.Option(help="Root relative paths here (like the demo).")]

pseudonym_app = typer.Typer(
    name="pseudonym",
    help="Resolve pseudonym tokens of the BI tables (authorized analysts; docs/privacy.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def verify_command(
    date_: Annotated[str, typer.Option("--date", help="Run date to verify, YYYY-MM-DD.")],
    workdir: WorkdirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check a day's decision log against its hash chain (rows, head, HMAC, previous-day link)."""
    from jobs.audit import verify_chain
    from jobs.config import ConfigError

    try:
        day = date.fromisoformat(date_)
    except ValueError:
        _fail(f"--date must be a date like 2026-10-01, got {date_!r}")
    ctx = _context(config, workdir)
    try:
        result = verify_chain(ctx, day)
    except ConfigError as exc:
        _fail(str(exc))
    typer.echo(result.summary())
    if not result.ok:
        for line in result.details():
            typer.echo(f"  {line}")
        raise typer.Exit(1)


def forget_command(
    user: Annotated[str, typer.Option("--user", help="The user: canonical id or any alias.")],
    workdir: WorkdirOpt = None,
    config: ConfigOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="Who requested it (default: the OS user).")
    ] = None,
) -> None:
    """Erase one user from every table of the lake, vacuum, and record the erasure."""
    from jobs.config import ConfigError
    from jobs.erasure import ErasureError, erase_user, plan_erasure, summary_rows

    ctx = _context(config, workdir)
    try:
        plan = plan_erasure(ctx, user)
    except (ErasureError, ConfigError) as exc:
        _fail(str(exc))
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
    Console().print(table)
    if not yes:
        typer.confirm(
            "Erase these rows and vacuum the tables (older versions become unreadable)?",
            abort=True,
        )
    try:
        # with --yes the plan shown is applied at once; after a confirmation (a human pause)
        # every table is scanned again, so rows written meanwhile are erased too
        done = erase_user(ctx, user, by or getpass.getuser(), planned=plan if yes else None)
    except (ErasureError, ConfigError) as exc:
        _fail(str(exc))
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
def resolve_command(
    token: Annotated[str, typer.Argument(help="A token from a BI table, e.g. u_3f2a...")],
    workdir: WorkdirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The identifier behind a token (reads the restricted ops.pseudonyms)."""
    from pyspark.sql import functions as F

    from jobs.privacy import read_pseudonyms

    ctx = _context(config, workdir)
    mapping = read_pseudonyms(ctx.lake)
    if mapping is None:
        _fail("ops.pseudonyms does not exist: nothing was pseudonymized in this lake")
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
def of_command(
    identifier: Annotated[str, typer.Argument(help="A canonical user, host or device id.")],
    kind: Annotated[
        str | None, typer.Option(help="user, host or device (default: all three).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """The token an identifier gets under the current key (needs the key in the environment)."""
    from jobs.config import ConfigError, load_settings
    from jobs.privacy import PREFIX, pseudonym_key, token_of

    if kind is not None and kind not in PREFIX:
        _fail(f"--kind must be one of {', '.join(PREFIX)}, got {kind!r}")
    try:
        key = pseudonym_key(load_settings(config).privacy)
    except ConfigError as exc:
        _fail(str(exc))
    kinds = [kind] if kind else list(PREFIX)
    typer.echo(
        f"{identifier} -> "
        + ", ".join(f"{token_of(key, identifier.strip(), k)} ({k})" for k in kinds)
    )
