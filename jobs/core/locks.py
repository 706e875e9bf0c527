"""Per-date run locks of a local lake root: runs of one date never overlap.

Each date is `<lake root>/_locks/<date>.lock`, locked with `flock`; object-store roots are
not locked here (docs/reliability.md).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from jobs.core.errors import PipelineError

log = logging.getLogger(__name__)


def local_root(root: str) -> Path | None:
    """The folder of a local lake root (`lake`, `/data/lake`, `file:/data/lake`); None for an
    object store (`s3a://...`), where Airflow's max_active_runs=1 serializes runs."""
    if root.startswith("file:"):
        return Path(unquote(urlsplit(root).path))
    if "://" in root:
        return None
    return Path(root)


def _holder(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8").strip()
        return dict(json.loads(text)) if text else {}
    except (OSError, ValueError):
        return {"unreadable": True}


def _describe_holder(info: Mapping[str, Any]) -> str:
    if not info:
        return "per-source ingest runs, or an unknown process"
    if info.get("unreadable"):
        return "an unknown process"
    return f"pid {info.get('pid')} on {info.get('host')} (started {info.get('started')})"


@dataclass
class DateLocks:
    """Locks on some dates of one lake, held by this process until `release`.

    Each date is `<lake root>/_locks/<date>.lock`, locked with `flock`: the kernel drops the
    lock when the holder dies (SIGKILL included), so a crashed run never blocks the next
    one. An exclusive holder writes its pid, host and start time into the file and empties
    it on a clean release; a non-empty file found unlocked is a run that died, and taking
    it over is reported. Shared holders (the orchestrator's per-source ingest tasks, which
    run side by side) leave the file alone and each hold an exclusive lock of their own part
    (`<date>.<part>.lock`).
    """

    held: list[tuple[date, int, bool]] = field(default_factory=list)  # (date, fd, owns the file)
    taken_over: list[str] = field(default_factory=list)

    def release(self) -> None:
        while self.held:
            _, fd, owner = self.held.pop()
            try:
                if owner:
                    os.ftruncate(fd, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def __enter__(self) -> DateLocks:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def lock_dates(
    root: str,
    dates: Sequence[date],
    purpose: str = "",
    *,
    shared: bool = False,
    part: str | None = None,
) -> DateLocks:
    """Lock `dates` of the lake at `root` (in date order, all or none), or fail at once with
    a one-line `PipelineError` naming the run that holds one of them.

    `shared` takes the dates' locks shared: any number of shared holders, never beside an
    exclusive one. `part` locks `<date>.<part>.lock` instead (exclusive), e.g. one source's
    ingest under a shared date lock. Object-store roots are not locked here (see
    docs/reliability.md).
    """
    locks = DateLocks()
    folder = local_root(root)
    if folder is None:
        return locks
    folder = folder / "_locks"
    folder.mkdir(parents=True, exist_ok=True)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "purpose": purpose,
    }
    suffix = f".{part}.lock" if part else ".lock"
    try:
        for day in sorted(set(dates)):
            path = folder / f"{day.isoformat()}{suffix}"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                what = f"{day.isoformat()} ({part})" if part else day.isoformat()
                raise PipelineError(
                    f"{what} is being processed by another run "
                    f"({_describe_holder(_holder(path))}; lock {path}); wait for it to finish "
                    "and re-run (runs of one date never overlap)"
                ) from None
            locks.held.append((day, fd, not shared))
            if shared:
                continue
            previous = _holder(path)
            if previous:
                note = (
                    f"{day.isoformat()}: taking over the lock of {_describe_holder(previous)}, "
                    "which ended without releasing it (killed?); its stages are re-checked"
                )
                locks.taken_over.append(note)
                log.warning("%s", note)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({**me, "date": day.isoformat()}).encode(), 0)
            os.fsync(fd)
    except BaseException:
        locks.release()
        raise
    return locks
