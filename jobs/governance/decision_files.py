"""Where analyst decision files land: `<paths.analyst_decisions>/<YYYY-MM-DD>/`, a local folder
of their own (not under `paths.raw_root`, which log shippers write to).

Plain Python (no Spark), so the feedback DAG can look for files when a task runs without
paying for the engine. A symbolic link (the folder, the day's folder, or a file in it) is
refused: decisions are read where they were dropped, never from wherever a link points.
"""

from __future__ import annotations

from pathlib import Path

from jobs.core.errors import ConfigError, PipelineError

ANALYST_DECISION_SUFFIXES = (".csv", ".jsonl", ".json", ".ndjson")


def analyst_decisions_dir(root: str, day: str) -> str:
    """The drop folder of `day` under `root` (`paths.analyst_decisions`)."""
    return f"{root.rstrip('/')}/{day}"


def analyst_decision_files(root: str, day: str) -> list[Path]:
    """The analyst decision files of `day`, in name order (hidden and partial files skipped).

    `root` (`paths.analyst_decisions`) must be a local or mounted folder: the files are read
    with Python, not Spark. A symbolic link stops the listing with a one-line error naming it.
    """
    if "://" in root:
        raise ConfigError(
            f"analyst decisions are read from a local or mounted folder; "
            f"paths.analyst_decisions is {root!r}"
        )
    folder = Path(analyst_decisions_dir(root, day))
    for path in (Path(root), folder):
        if path.is_symlink():
            raise PipelineError(
                f"{path} is a symbolic link: analyst decisions are read only from the drop "
                "folder itself"
            )
    if not folder.is_dir():
        return []
    entries = [p for p in folder.iterdir() if not p.name.startswith((".", "_"))]
    links = sorted(p.name for p in entries if p.is_symlink())
    if links:
        raise PipelineError(
            f"{folder}: symbolic link(s) refused: {', '.join(links)} (drop the files themselves)"
        )
    return sorted(
        p for p in entries if p.is_file() and p.suffix.lower() in ANALYST_DECISION_SUFFIXES
    )
