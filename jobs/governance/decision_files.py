"""Where analyst decision files land: `<paths.raw_root>/analyst_decisions/<YYYY-MM-DD>/`.

Plain Python (no Spark), so the feedback DAG can look for files when a task runs without
paying for the engine.
"""

from __future__ import annotations

from pathlib import Path

from jobs.core.errors import ConfigError

# Where analyst decision files land: <paths.raw_root>/analyst_decisions/<YYYY-MM-DD>/.
ANALYST_DECISIONS_DIR = "analyst_decisions"
ANALYST_DECISION_SUFFIXES = (".csv", ".jsonl", ".json", ".ndjson")


def analyst_decisions_dir(raw_root: str, day: str) -> str:
    return f"{raw_root.rstrip('/')}/{ANALYST_DECISIONS_DIR}/{day}"


def analyst_decision_files(raw_root: str, day: str) -> list[Path]:
    """The analyst decision files of `day`, in name order (hidden and partial files skipped).

    `raw_root` must be a local or mounted folder: the files are read with Python, not Spark.
    """
    if "://" in raw_root:
        raise ConfigError(
            f"analyst decisions are read from a local or mounted folder; paths.raw_root is {raw_root!r}"
        )
    folder = Path(analyst_decisions_dir(raw_root, day))
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith((".", "_"))
        and p.suffix.lower() in ANALYST_DECISION_SUFFIXES
    )
