"""Governance commands: `feedback` (analyst decisions), `analyst keygen|sign` (their signing
keys), `verify` (the decision log's hash chain), `forget` (a data subject's erasure) and
`pseudonym resolve|of`.

Exit codes: 0 ok; 1 verification failed, a token unknown, a decisions file refused; 2 bad
input (one line). docs/audit.md (verify), docs/privacy.md (forget, pseudonyms),
docs/policies.md (feedback).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyspark.sql import functions as F
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
from jobs.cli.json_output import JsonOpt, json_command, record
from jobs.core.errors import PipelineError, UsageError
from jobs.core.tables import PSEUDONYMS, REFUSED_DECISIONS
from jobs.governance.audit import (
    TrailResult,
    VerifyResult,
    anchor_unanchored,
    chained_dates,
    verify_dates,
    verify_trail,
)
from jobs.governance.decision_files import analyst_decision_files, analyst_decisions_dir
from jobs.governance.decisions import (
    check_decision_folders,
    load_analyst_registry,
    parse_decisions,
    public_key_text,
    render_decisions,
    sign_decision,
)
from jobs.governance.erasure import (
    VACUUM_RETENTION_HOURS,
    erase_user,
    plan_erasure,
    summary_rows,
)
from jobs.governance.feedback import run_feedback
from jobs.governance.privacy import PREFIX, pseudonym_key, read_pseudonyms, token_of

analyst_app = command_group(
    "analyst", "Analysts' signing keys and signed decision files (docs/policies.md)."
)
pseudonym_app = command_group(
    "pseudonym", "Resolve pseudonym tokens of the BI tables (authorized analysts; docs/privacy.md)."
)


def feedback(
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", "-f", help="Signed analyst decisions, .csv or .jsonl (repeatable)."),
    ] = None,
    date_: Annotated[
        str | None,
        typer.Option(
            "--date",
            help="Instead of --file: every file in <paths.analyst_decisions>/<date>/ "
            "(the feedback DAG's drop folder).",
        ),
    ] = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Ingest signed analyst decisions (approve/reject/override, verdicts) and update statuses.

    Each decision must be signed by a key in the operator's registry (paths.analyst_keys),
    dated between its recommendation and now, and within the guardrails; others are
    refused and recorded in ops.refused_decisions (docs/policies.md)."""
    if bool(file) == (date_ is not None):
        raise UsageError("give --file (one or more) or --date, not both")
    cfg = settings(config, workdir)
    check_decision_folders(cfg.paths)
    files = list(file or [])
    day = parse_date(date_) if date_ is not None else None
    if day is not None:
        files = analyst_decision_files(cfg.paths.analyst_decisions, day.isoformat())
        if not files:
            out.print(
                f"feedback: no analyst decision files in "
                f"{analyst_decisions_dir(cfg.paths.analyst_decisions, day.isoformat())}; "
                "nothing to do",
                highlight=False,
                soft_wrap=True,
            )
            return
    for path in files:  # every file must be valid before any is ingested
        parse_decisions(path)
    load_analyst_registry(cfg.paths)  # no registry, nothing to authenticate with: stop now
    ctx = context(cfg)
    for path in files:
        result = run_feedback(ctx, path, run_date=day)
        rows = ", ".join(f"{k}={v}" for k, v in result.rows.items())
        details = ", ".join(
            f"{k}={v}"
            for k, v in result.details.items()
            if k not in ("file", "refused", "refused_rules")
        )
        out.print(f"feedback from {path}: {rows}; {details}", highlight=False, soft_wrap=True)
        if result.details.get("refused"):
            rules = ", ".join(
                f"{k}={v}" for k, v in sorted(result.details["refused_rules"].items())
            )
            console.print(
                f"feedback: refused {result.details['refused']} decision(s) from {path} "
                f"({rules}); see {REFUSED_DECISIONS.name}",
                highlight=False,
                soft_wrap=True,
            )


# --- analysts' keys and signed files ------------------------------------------------------------


@analyst_app.command("keygen")
@mapped
def keygen(
    analyst: Annotated[str, typer.Option(help="The analyst id decision files name.")],
    out_file: Annotated[
        Path, typer.Option("--out", help="Private key to write (PEM, mode 0600): keep it private.")
    ],
) -> None:
    """Make an analyst's Ed25519 signing key; print the entry for the operator's registry."""
    if out_file.exists() or out_file.is_symlink():
        raise UsageError(f"{out_file} exists: refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    typer.echo("# add to the analyst key registry (paths.analyst_keys), under analysts:")
    typer.echo(f"  - id: {analyst}")
    typer.echo(f"    public_key: {public_key_text(key.public_key())}")


@analyst_app.command("sign")
@mapped
def sign(
    file: Annotated[Path, typer.Option("--file", "-f", help="Decisions to sign, .csv or .jsonl.")],
    key: Annotated[Path, typer.Option(help="The analyst's private key (from `analyst keygen`).")],
    analyst: Annotated[str, typer.Option(help="Who signs: every row must name this analyst.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Signed file (default: <name>.signed<suffix>).")
    ] = None,
) -> None:
    """Sign each decision of a file with the analyst's key (adds the `signature` column)."""
    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise UsageError(f"{key}: not an Ed25519 private key")
    rows = parse_decisions(file)
    others = sorted({d.analyst for d in rows if d.analyst.lower() != analyst.strip().lower()})
    if others:
        raise UsageError(f"{file}: rows of other analysts ({', '.join(others)}): not signed")
    target = out_file or file.with_name(f"{file.stem}.signed{file.suffix}")
    signed = [d.model_copy(update={"signature": sign_decision(loaded, d)}) for d in rows]
    target.write_text(render_decisions(signed, target.suffix), encoding="utf-8")
    typer.echo(f"signed {len(signed)} decision(s) into {target}")


def verdict_fields(result: VerifyResult) -> dict[str, Any]:
    """A date's verdict as `verify --json` shows it (every changed row, not the first few)."""
    return {
        "run_date": result.run_date,
        "ok": result.ok,
        "summary": result.summary(),
        "rows": result.rows,
        "head": result.head,
        "hmac": result.hmac,
        "changes": [
            {"kind": c.kind, "position": c.position, "rec_id": c.rec_id, "policy_id": c.policy_id}
            for c in result.changes
        ],
        "problems": result.problems,
        "unchecked": result.unchecked,
    }


def trail_fields(trail: TrailResult) -> dict[str, Any]:
    return {
        "ok": trail.ok,
        "summary": trail.summary(),
        "days": trail.days,
        "anchored": trail.anchored,
        "problems": trail.problems,
        "unchecked": trail.unchecked,
        "notes": trail.notes,
    }


@json_command("verify")
def verify(
    date_: Annotated[
        str | None, typer.Option("--date", help="Run date to verify, YYYY-MM-DD.")
    ] = None,
    all_dates: Annotated[
        bool, typer.Option("--all", help="Every chained date (and every date the anchor has).")
    ] = False,
    anchor_reason: Annotated[
        str | None,
        typer.Option(
            "--anchor-unanchored",
            metavar="REASON",
            help="First add to the audit anchor the chained days it lacks (a lake chained "
            "before the anchor was configured), each only if it passes every other check; "
            "REASON (who, why) is recorded with them.",
        ),
    ] = None,
    workdir: WorkdirOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check decision logs against their hash chain (rows, order, head, HMAC, previous-day
    link, the anchor's copy of the head) and the trail against the anchor (deleted days, a
    truncated tail). Exit 1 on any difference, and on an unsigned or unchecked head."""
    if (date_ is None) == (not all_dates):
        raise UsageError("give --date or --all")
    if anchor_reason is not None and not anchor_reason.strip():
        raise UsageError("--anchor-unanchored needs a reason (who, and why)")
    cfg = settings(config, workdir)
    ctx = context(cfg)
    refused = False
    record(anchor=None)  # without --anchor-unanchored
    if anchor_reason is not None:
        backfill = anchor_unanchored(ctx, anchor_reason)
        for day in backfill.anchored:
            typer.echo(f"anchored {day.isoformat()}: it passed every other check")
        for day, why in sorted(backfill.refused.items()):
            typer.echo(f"not anchored {day.isoformat()}: {why}")
        if not backfill.anchored and not backfill.refused:
            typer.echo("nothing to anchor: every chained day is in the audit anchor")
        refused = bool(backfill.refused)
        record(anchor={"anchored": backfill.anchored, "refused": backfill.refused})
    if all_dates:
        days = sorted(chained_dates(ctx))
        if not days:
            raise PipelineError(f"verify: no chained date in {cfg.paths.lake_root}")
    else:
        days = [parse_date(str(date_))]
    failed = False
    verdicts = sorted(verify_dates(ctx, days).items())
    record(dates=[verdict_fields(result) for _, result in verdicts])
    for _, result in verdicts:
        typer.echo(result.summary())
        if not result.ok:
            failed = True
            for line in result.details():
                typer.echo(f"  {line}")
    trail = verify_trail(ctx)
    record(trail=trail_fields(trail))
    typer.echo(trail.summary())
    if failed or refused or not trail.ok:
        raise typer.Exit(1)


def forget(
    user: Annotated[str, typer.Option("--user", help="The user: canonical id or any alias.")],
    workdir: WorkdirOpt = None,
    config: ConfigOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="Who requested it (default: the OS user).")
    ] = None,
    not_in_directory: Annotated[
        bool,
        typer.Option(
            "--not-in-directory",
            help="Erase an identifier the identity directory does not know (a typo otherwise "
            "erases a stranger's mentions).",
        ),
    ] = False,
) -> None:
    """Erase one user from every table of the lake (their rows deleted, lines naming them
    redacted), vacuum, and record the erasure. Shared and system accounts are refused."""
    ctx = context(settings(config, workdir))
    plan = plan_erasure(ctx, user, allow_unknown=not_in_directory)
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
    done = erase_user(
        ctx,
        user,
        by or getpass.getuser(),
        planned=plan if yes else None,
        allow_unknown=not_in_directory,
    )
    deleted = sum(done.deleted.values())
    redacted = sum(done.redacted.values())
    typer.echo(
        f"erased: {deleted} row(s) deleted, {redacted} redacted in {len(done.tables)} table(s); "
        f"vacuumed {len(done.vacuumed)} table(s); audit chain re-recorded for "
        f"{len(done.rechained)} date(s); erasure {done.erasure_id} recorded in ops.erasures"
    )
    if done.resync_below:
        typer.echo(
            f"vacuumed with {VACUUM_RETENTION_HOURS:g} hours retention: Change Data Feed "
            "consumers whose cursor is below "
            + ", ".join(f"{t} version {v}" for t, v in sorted(done.resync_below.items()))
            + " must resync from a snapshot (docs/privacy.md)"
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
