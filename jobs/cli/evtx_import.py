"""`import-evtx`: Windows `.evtx` files into the raw layout ingest reads (docs/ingest.md,
"Importing EVTX files").

Exit codes: 0 every record of every file imported; 1 some records or files were skipped (one
error line each on stderr, the summary says how many and why); 2 bad usage (no such path, no
--workdir, outputs that would collide).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.table import Table

from jobs.cli.common import ConfigOpt, out, progress, report_error, settings
from jobs.core.errors import EXIT_FAILED, PipelineError, UsageError
from jobs.stages.ingest.evtx_import import (
    WINDOWS_SOURCE,
    EvtxFileImport,
    find_evtx_files,
    import_evtx_file,
    summarize,
)


def _local_raw_root(raw_root: str) -> Path:
    parts = urlsplit(raw_root)
    if parts.scheme == "file":
        return Path(parts.path)
    if parts.scheme and len(parts.scheme) > 1:  # (a one-letter scheme is a Windows drive)
        raise UsageError(
            f"import-evtx writes local files; paths.raw_root is {raw_root} (import into a local "
            "folder, then copy it to the object store)"
        )
    return Path(raw_root)


def _dates(result: EvtxFileImport) -> str:
    days = sorted(result.records_by_date)
    if not days:
        return ""
    if len(days) == 1:
        return days[0].isoformat()
    return f"{days[0]} .. {days[-1]} ({len(days)})"


def import_evtx(
    paths: Annotated[
        list[Path],
        typer.Argument(help=".evtx files, or folders searched recursively for *.evtx."),
    ],
    workdir: Annotated[
        Path,
        typer.Option(help="Write under this folder's raw root (paths.raw_root, default raw/)."),
    ],
    config: ConfigOpt = None,
) -> None:
    """Convert Windows .evtx files into <raw_root>/windows/<event date>/<file>.evtx.jsonl."""
    cfg = settings(config, workdir)
    raw_root = _local_raw_root(cfg.paths.raw_root)
    files = find_evtx_files(paths)
    if not files:
        out.print(
            f"import-evtx: no .evtx files in {', '.join(map(str, paths))}; nothing to do",
            highlight=False,
        )
        return
    results: list[EvtxFileImport] = []
    with progress() if len(files) > 1 else nullcontext() as bar:
        task = bar.add_task("import-evtx", total=len(files)) if bar is not None else None
        for path in files:
            result = import_evtx_file(path, raw_root)
            for problem in result.problems:
                report_error(problem.line(), EXIT_FAILED)
            results.append(result)
            if bar is not None and task is not None:
                bar.advance(task)
    table = Table(title=f"import-evtx into {raw_root / WINDOWS_SOURCE}")
    table.add_column("file")  # names are unique in one import (outputs are named after them)
    table.add_column("records", justify="right")
    table.add_column("skipped", justify="right")
    table.add_column("event dates (UTC)")
    for result in results:
        skipped = "file" if result.failed else f"{result.skipped_records:,}"
        table.add_row(result.path.name, f"{result.records:,}", skipped, _dates(result))
    out.print(table)
    summary = summarize(results)
    out.print(f"import-evtx: {summary.text()}", highlight=False)
    if not summary.ok:
        raise PipelineError(f"import-evtx: {summary.text()}")
