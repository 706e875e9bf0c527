"""Delta tables of the lake: where each lives and how a stage replaces its dates.

Tables are named `<layer>.<name>` (`bronze.idp`, `silver.events`) and stored at
`<lake root>/<layer>/<name>`. Writes replace exactly the dates a run covers
(`replaceWhere`), so re-running a date, or a range, never duplicates rows.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

LAYERS = ("bronze", "silver", "gold", "ops")

log = logging.getLogger(__name__)

# Test hook (docs/reliability.md): `POLICYLAKE_TEST_PAUSE_BEFORE_COMMIT=silver.events` makes
# `Lake.replace_dates` of that table hold its commit back after some data files are written,
# so a test can SIGKILL the stage at the worst moment. Unset (the default) it does nothing.
PAUSE_BEFORE_COMMIT_ENV = "POLICYLAKE_TEST_PAUSE_BEFORE_COMMIT"
PAUSE_SECONDS_ENV = "POLICYLAKE_TEST_PAUSE_SECONDS"

# Commit conflicts are retried this many times in all (writes are idempotent replaceWhere).
COMMIT_ATTEMPTS = 5


class TableNameError(ValueError):
    """A table name that is not `<layer>.<name>` with a known layer."""


class SchemaMismatchError(ValueError):
    """A frame entering or leaving a stage does not carry the declared columns."""


def table_path(lake_root: str, table: str) -> str:
    layer, _, name = table.partition(".")
    if layer not in LAYERS or not name or "/" in name or ".." in name:
        raise TableNameError(f"table must be <layer>.<name> with layer in {LAYERS}: {table!r}")
    return f"{lake_root.rstrip('/')}/{layer}/{name}"


def dates_predicate(column: str, dates: Iterable[date]) -> str:
    """A SQL predicate selecting exactly `dates` (ISO literals, never user text)."""
    values = sorted({d.isoformat() for d in dates})
    if not values:
        raise ValueError("no dates to select")
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def require_columns(df: DataFrame, schema: StructType, where: str) -> DataFrame:
    """Fail with a named error unless `df` has every column of `schema` with its type."""
    have = {f.name: f.dataType for f in df.schema.fields}
    missing = [f.name for f in schema.fields if f.name not in have]
    wrong = [
        f"{f.name} ({have[f.name].simpleString()} != {f.dataType.simpleString()})"
        for f in schema.fields
        if f.name in have and have[f.name] != f.dataType
    ]
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if wrong:
            parts.append(f"wrong type {', '.join(wrong)}")
        raise SchemaMismatchError(f"{where}: {'; '.join(parts)}")
    return df.select(*[f.name for f in schema.fields])


class Lake:
    """The lake at `root` (a local folder or an object-store URI)."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = root

    def path(self, table: str) -> str:
        return table_path(self.root, table)

    def exists(self, table: str) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, self.path(table)))

    def read(self, table: str, version: int | None = None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.path(table))

    def read_dates(self, table: str, dates: Iterable[date], column: str = "run_date") -> DataFrame:
        return self.read(table).where(dates_predicate(column, dates))

    # -- small files beside the tables (the stage journal): local folder or object store --

    def _hadoop(self, relative: str) -> tuple[Any, Any]:
        jvm: Any = self.spark._jvm  # type: ignore[attr-defined]
        path = jvm.org.apache.hadoop.fs.Path(f"{self.root.rstrip('/')}/{relative}")
        return path.getFileSystem(self.spark._jsc.hadoopConfiguration()), path  # type: ignore[attr-defined]

    def write_text(self, relative: str, text: str) -> None:
        """Write `<root>/<relative>` whole (atomically on a local folder: temp file + rename;
        an object-store PUT is atomic by itself)."""
        folder = local_root(self.root)
        if folder is not None:
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            temp.write_text(text, encoding="utf-8")
            os.replace(temp, target)
            return
        fs, path = self._hadoop(relative)
        stream = fs.create(path, True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def read_text(self, relative: str) -> str | None:
        """`<root>/<relative>` as text, or None when it does not exist."""
        folder = local_root(self.root)
        if folder is not None:
            try:
                return (folder / relative).read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
        fs, path = self._hadoop(relative)
        if not fs.exists(path):
            return None
        jvm: Any = self.spark._jvm  # type: ignore[attr-defined]
        stream = fs.open(path)
        try:
            return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def replace_dates(
        self,
        df: DataFrame,
        table: str,
        dates: Iterable[date],
        column: str = "run_date",
        partition_by: tuple[str, ...] = ("run_date",),
        properties: Mapping[str, str] | None = None,
        where: str | None = None,
    ) -> None:
        """Atomically replace the rows of `dates` in `table` with `df` (one Delta commit).

        Delta checks every written row matches the predicate, so a frame with rows of
        another date fails instead of silently widening the overwrite. `where` narrows the
        replaced rows further (`suite = 'ingest' AND source = 'idp'`; platform literals only).
        A commit that conflicts with another writer (two dates committing to a new table at
        once) is retried: the write is idempotent, so trying again is safe.
        """
        dates = list(dates)
        predicate = dates_predicate(column, dates)
        if where:
            predicate = f"({predicate}) AND ({where})"
        pause = os.environ.get(PAUSE_BEFORE_COMMIT_ENV, "")
        paused = table in {t.strip() for t in pause.split(",") if t.strip()}

        def save() -> None:
            frame = _pause_before_commit(df, table) if paused else df
            writer = (
                frame.write.format("delta")
                .mode("overwrite")
                .option("replaceWhere", predicate)
                .partitionBy(*partition_by)
            )
            if paused:  # several write tasks, so one can finish its file while another waits
                writer = writer.option("optimizeWrite", "false")
            if not self.exists(table):
                for key, value in (properties or {}).items():
                    writer = writer.option(key, value)
            writer.save(self.path(table))

        commit_with_retry(save, f"{table} ({', '.join(d.isoformat() for d in sorted(dates))})")


# ---------------------------------------------------------------------------------------
# Concurrent commits
# ---------------------------------------------------------------------------------------


_CONFLICTS = (
    "ConcurrentAppendException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentDeleteReadException",
    "ConcurrentTransactionException",
    "ConcurrentWriteException",
    "DeltaConcurrentModificationException",
    "MetadataChangedException",
    "ProtocolChangedException",
)


def _conflict_types() -> tuple[type[BaseException], ...]:
    from delta import exceptions

    return tuple(getattr(exceptions, name) for name in _CONFLICTS)


def is_commit_conflict(exc: BaseException) -> bool:
    """A Delta optimistic-concurrency conflict, or a table-creation race ("already exists")."""
    if isinstance(exc, _conflict_types()):
        return True
    text = str(exc)
    return "already exists" in text.lower() and "delta" in text.lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def commit_with_retry(
    commit: Callable[[], None],
    what: str,
    attempts: int = COMMIT_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Run `commit`, retrying Delta commit conflicts with a jittered backoff.

    Only conflicts are retried; any other error is raised at once. After the last attempt
    the stage stops with a one-line `PipelineError` naming the table and dates.
    """
    from jobs.pipeline import PipelineError

    for attempt in range(1, attempts + 1):
        try:
            commit()
            return
        except Exception as exc:
            if not is_commit_conflict(exc):
                raise
            if attempt == attempts:
                raise PipelineError(
                    f"{what}: the commit conflicted with concurrent writers {attempts} times "
                    f"({_first_line(exc)}); re-run the stage"
                ) from exc
            delay = min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning(
                "%s: concurrent commit (%s); retrying in %.1fs", what, type(exc).__name__, delay
            )
            sleep(delay)


def _pause_before_commit(df: DataFrame, table: str) -> DataFrame:
    """The test hook: two write tasks; the second sleeps before producing its rows, so the
    first one's data file lands in the table folder while the commit waits."""
    seconds = float(os.environ.get(PAUSE_SECONDS_ENV, "300"))
    print(
        f"{PAUSE_BEFORE_COMMIT_ENV}: writing {table}; its commit waits {seconds:g}s",
        file=sys.stderr,
        flush=True,
    )

    def hold_back(index: int, rows: Iterable[Any]) -> Iterable[Any]:
        if index == 1:
            time.sleep(seconds)
        return rows

    rdd = df.repartition(2).rdd.mapPartitionsWithIndex(hold_back)
    return df.sparkSession.createDataFrame(rdd, df.schema)


# ---------------------------------------------------------------------------------------
# Per-date run locks (local lake roots)
# ---------------------------------------------------------------------------------------


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
    if not info or info.get("unreadable"):
        return "an unknown process"
    return f"pid {info.get('pid')} on {info.get('host')} (started {info.get('started')})"


@dataclass
class DateLocks:
    """Exclusive locks on some dates of one lake, held by this process until `release`.

    Each date is `<lake root>/_locks/<date>.lock`, locked with `flock`: the kernel drops the
    lock when the holder dies (SIGKILL included), so a crashed run never blocks the next
    one. The file holds the holder's pid, host and start time while it is held and is
    emptied on a clean release; a non-empty file found unlocked is a run that died, and
    taking it over is reported.
    """

    held: list[tuple[date, int]] = field(default_factory=list)
    taken_over: list[str] = field(default_factory=list)

    def release(self) -> None:
        import fcntl

        while self.held:
            _, fd = self.held.pop()
            try:
                os.ftruncate(fd, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def __enter__(self) -> DateLocks:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def lock_dates(root: str, dates: Sequence[date], purpose: str = "") -> DateLocks:
    """Lock `dates` of the lake at `root` (in date order, all or none), or fail at once with
    a one-line `PipelineError` naming the run that holds one of them.

    Object-store roots are not locked here (see docs/reliability.md).
    """
    import fcntl

    from jobs.pipeline import PipelineError

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
    try:
        for day in sorted(set(dates)):
            path = folder / f"{day.isoformat()}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise PipelineError(
                    f"{day.isoformat()} is being processed by another run "
                    f"({_describe_holder(_holder(path))}; lock {path}); wait for it to finish "
                    "and re-run (runs of one date never overlap)"
                ) from None
            locks.held.append((day, fd))
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
