"""`policylake maintain`: compact and vacuum every table, with the configured retention."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table as RichTable

from jobs.cli.common import ConfigOpt, WorkdirOpt, console, context, out, settings
from jobs.core.errors import TableNameError, UsageError
from jobs.core.tables import table_named
from jobs.pipeline.maintenance import maintain as run_maintenance


def maintain(
    table: Annotated[
        list[str] | None,
        typer.Option(help="Only this table, e.g. silver.events (repeatable; default: all)."),
    ] = None,
    vacuum: Annotated[
        bool, typer.Option(help="VACUUM after compacting (with the tables' own retention).")
    ] = True,
    workdir: WorkdirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Set retention properties, compact small files and vacuum the lake's tables."""
    try:
        chosen = [table_named(name) for name in table] if table else None
    except TableNameError as exc:
        raise UsageError(f"--table: {exc}") from None
    cfg = settings(config, workdir)
    ctx = context(cfg)
    with console.status("maintaining") as status:
        done = run_maintenance(
            ctx, chosen, vacuum=vacuum, progress=lambda name: status.update(f"maintaining {name}")
        )
    report = RichTable(
        title=(
            f"maintained {len(done)} table(s); retention: log {cfg.maintenance.log_retention}, "
            f"deleted files {cfg.maintenance.deleted_file_retention}"
        )
    )
    for name in ("table", "files before", "files after", "MB", "changes"):
        report.add_column(name, justify="left" if name in ("table", "changes") else "right")
    for t in done:
        changes = [f"compacted {t.files_compacted}"] if t.files_compacted else []
        changes += ["repartitioned"] if t.relaid_out else []
        changes += ["retention set"] if t.properties_set else []
        changes += ["vacuumed"] if t.vacuumed else []
        report.add_row(
            t.table,
            str(t.files_before),
            str(t.files_after),
            f"{t.bytes_after / 1e6:.1f}",
            ", ".join(changes) or "-",
        )
    out.print(report)
