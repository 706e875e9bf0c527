"""The lake: where each catalogued table lives, and the only ways to write one.

Tables (`jobs.core.tables`) are stored at `<lake root>/<layer>/<name>`. A stage replaces
exactly the dates a run covers (`replace_dates`, one `replaceWhere` commit), so re-running
a date, or a range, never duplicates rows; MERGE-maintained tables are opened with
`for_update`. Both refuse a write from a module of the `jobs` package other than the
table's declared writer (or the data-subject erasure), so every table has one writer.

Upkeep (`optimize`, `vacuum`, `set_properties`, `relayout`) rewrites files, never rows: the
rows a reader sees are the same before and after, so no owner check applies and the lake-wide
maintenance job (`jobs.pipeline.maintenance`) may run them on every table
(docs/architecture.md, "One writer per table").
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from delta import exceptions as delta_exceptions
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from jobs.core.errors import PipelineError, SchemaMismatchError
from jobs.core.locks import local_root
from jobs.core.tables import ERASURE_MODULE, Table, table_named

TableRef = Table | str  # a catalogue entry, or its name (`silver.events`)

log = logging.getLogger(__name__)

# Commit conflicts are retried this many times in all (writes are idempotent replaceWhere).
COMMIT_ATTEMPTS = 5


class TableOwnershipError(PipelineError):
    """A module wrote a table the catalogue gives to another module."""


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


def conform(df: DataFrame, table: Table) -> DataFrame:
    """`df` with exactly `table`'s columns, in order, or a named error naming the table."""
    return require_columns(df, table.schema, table.name)


def resolve(table: TableRef) -> Table:
    """The catalogue entry of `table` (names are looked up; unknown names fail by name)."""
    return table if isinstance(table, Table) else table_named(table)


def _check_writer(table: Table) -> None:
    """Refuse a write to `table` from a `jobs` module that is not its declared writer.

    The caller is two frames up (this function, then the Lake method). Code outside the
    package (tests building fixtures, benchmarks) may write any table.
    """
    module = str(sys._getframe(2).f_globals.get("__name__", ""))
    if module.startswith("jobs.") and module not in (table.writer, ERASURE_MODULE):
        raise TableOwnershipError(
            f"{module} may not write {table.name}: its one writer is {table.writer} "
            "(jobs/core/tables.py); call the writer's function instead"
        )


class Lake:
    """The lake at `root` (a local folder or an object-store URI)."""

    def __init__(
        self, spark: SparkSession, root: str, table_properties: Mapping[str, str] | None = None
    ) -> None:
        self.spark = spark
        self.root = root
        # properties every table is created with (the retention settings), before its own
        self.table_properties = dict(table_properties or {})

    def _created_with(self, table: Table) -> dict[str, str]:
        """The properties a new `table` gets: the lake's, then the catalogue entry's own."""
        return {**self.table_properties, **table.properties}

    def path(self, table: TableRef) -> str:
        table = resolve(table)
        layer, _, name = table.name.partition(".")
        return f"{self.root.rstrip('/')}/{layer}/{name}"

    def exists(self, table: TableRef) -> bool:
        return bool(DeltaTable.isDeltaTable(self.spark, self.path(table)))

    def read(self, table: TableRef, version: int | None = None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.path(table))

    def read_dates(self, table: TableRef, dates: Iterable[date]) -> DataFrame:
        column = resolve(table).date_column
        if column is None:
            raise ValueError(f"{table} is not selected by date")
        return self.read(table).where(dates_predicate(column, dates))

    def version(self, table: TableRef) -> int:
        """The table's latest committed version (what a consumer polling by version sees)."""
        history = DeltaTable.forPath(self.spark, self.path(table)).history(1)
        return int(history.select("version").first()[0])  # type: ignore[index]

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

    # -- writes ------------------------------------------------------------------------

    def replace_dates(
        self,
        df: DataFrame,
        table: TableRef,
        dates: Iterable[date],
        where: str | None = None,
        optimize_write: bool = True,
    ) -> None:
        """Atomically replace the rows of `dates` in `table` with `df` (one Delta commit).

        Delta checks every written row matches the predicate, so a frame with rows of
        another date fails instead of silently widening the overwrite. `where` narrows the
        replaced rows further (`suite = 'ingest' AND source = 'idp'`; platform literals only).
        A commit that conflicts with another writer (two dates committing to a new table at
        once) is retried: the write is idempotent, so trying again is safe.

        Delta's optimized write (a shuffle by partition before the files are written, so a
        frame whose partitions each hold many dates still writes one file per date) is on by
        default (`spark.databricks.delta.optimizeWrite.enabled`, which a user's `spark.conf`
        may turn off). `optimize_write=False` skips it for a frame already laid out by date (raw
        files read split by split, each split one date folder's; a stage's result rows,
        `replace_rows`).
        """
        table = resolve(table)
        _check_writer(table)
        self._replace(df, table, dates, where, optimize_write)

    def replace_rows(
        self,
        rows: Iterable[Mapping[str, Any]],
        table: TableRef,
        dates: Iterable[date],
        where: str | None = None,
    ) -> None:
        """`replace_dates` with rows the stage built on the driver (its results, a log, a
        status per source; a few thousand at most): one file per date, without the
        optimized write's shuffle."""
        table = resolve(table)
        _check_writer(table)
        frame = self.spark.createDataFrame(
            [tuple(r[n] for n in table.column_names) for r in rows], table.schema
        )
        self._replace(conform(frame.coalesce(1), table), table, dates, where, False)

    def _replace(
        self,
        df: DataFrame,
        table: Table,
        dates: Iterable[date],
        where: str | None,
        optimize_write: bool,
    ) -> None:
        dates = list(dates)
        if table.date_column is None:
            raise ValueError(f"{table.name} is not replaced by date")
        predicate = dates_predicate(table.date_column, dates)
        if where:
            predicate = f"({predicate}) AND ({where})"

        def save() -> None:
            # A table written before its partitioning changed keeps its layout until
            # maintenance rewrites it: no partitionBy() for an unpartitioned entry
            writer = df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
            if not optimize_write:  # otherwise the session's setting decides (on by default)
                writer = writer.option("optimizeWrite", "false")
            if table.partition_by:
                writer = writer.partitionBy(*table.partition_by)
            if not self.exists(table):
                for key, value in self._created_with(table).items():
                    writer = writer.option(key, value)
            writer.save(self.path(table))

        commit_with_retry(save, f"{table.name} ({', '.join(d.isoformat() for d in sorted(dates))})")

    def overwrite(self, df: DataFrame, table: TableRef) -> None:
        """Replace the whole table with `df` in one commit (tables not replaced by date)."""
        table = resolve(table)
        _check_writer(table)
        writer = df.write.format("delta").mode("overwrite").partitionBy(*table.partition_by)
        if not self.exists(table):
            for key, value in self._created_with(table).items():
                writer = writer.option(key, value)
        writer.save(self.path(table))

    def for_update(self, table: TableRef) -> DeltaTable:
        """The table for a MERGE by its writer, created empty (schema, partitioning,
        properties from the catalogue) when it does not exist yet."""
        table = resolve(table)
        _check_writer(table)
        builder = DeltaTable.createIfNotExists(self.spark).location(self.path(table))
        builder = builder.addColumns(table.schema).partitionedBy(*table.partition_by)
        for key, value in self._created_with(table).items():
            builder = builder.property(key, value)
        builder.execute()
        return DeltaTable.forPath(self.spark, self.path(table))

    # -- upkeep: files, not rows (no owner check) -------------------------------------------

    def layout(self, table: TableRef) -> TableLayout:
        """Files, bytes, partition columns and properties of the table's latest version."""
        row = (
            DeltaTable.forPath(self.spark, self.path(table))
            .detail()
            .select("numFiles", "sizeInBytes", "partitionColumns", "properties")
            .first()
        )
        assert row is not None  # detail() is one row
        return TableLayout(
            int(row["numFiles"]),
            int(row["sizeInBytes"]),
            tuple(row["partitionColumns"] or ()),
            dict(row["properties"] or {}),
        )

    def _sql_path(self, table: TableRef) -> str:
        return "delta.`" + self.path(table).replace("`", "``") + "`"

    def set_properties(self, table: TableRef, properties: Mapping[str, str]) -> None:
        """Set table properties (retention) in one metadata commit."""
        if not properties:
            return
        pairs = ", ".join(
            f"'{k}' = '{v}'" for k, v in sorted(properties.items())
        )  # keys and values come from the settings' validated durations
        resolved = resolve(table)

        def alter() -> None:
            self.spark.sql(f"ALTER TABLE {self._sql_path(resolved)} SET TBLPROPERTIES ({pairs})")

        commit_with_retry(alter, f"{resolved.name} (properties)")

    def relayout(self, table: TableRef) -> None:
        """Rewrite the whole table with the catalogue's partitioning, in one commit: how a
        table written before its partitioning changed gets the new layout. The same rows;
        a concurrent writer makes the commit conflict (and retry) rather than lose rows."""
        resolved = resolve(table)

        def rewrite() -> None:
            self.read(resolved).write.format("delta").mode("overwrite").option(
                "overwriteSchema", "true"
            ).partitionBy(*resolved.partition_by).save(self.path(resolved))

        commit_with_retry(rewrite, f"{resolved.name} (relayout)")

    def optimize(self, table: TableRef) -> tuple[int, int]:
        """Compact small files (Delta OPTIMIZE, bin-packing per partition): (files added,
        files removed). A data-unchanged commit: readers and change feeds see no change."""
        resolved = resolve(table)
        found: list[tuple[int, int]] = []

        def compact() -> None:
            metrics = (
                DeltaTable.forPath(self.spark, self.path(resolved))
                .optimize()
                .executeCompaction()
                .select("metrics.numFilesAdded", "metrics.numFilesRemoved")
                .first()
            )
            found.append((int(metrics[0]), int(metrics[1])) if metrics is not None else (0, 0))

        commit_with_retry(compact, f"{resolved.name} (optimize)")
        return found[-1]

    def vacuum(self, table: TableRef) -> None:
        """Delete files no version within the table's `delta.deletedFileRetentionDuration`
        needs (Delta VACUUM with the table's own retention, never a shorter one)."""
        DeltaTable.forPath(self.spark, self.path(table)).vacuum()


@dataclass(frozen=True)
class TableLayout:
    """What upkeep looks at: the latest version's files and settings."""

    files: int
    size_bytes: int
    partition_columns: tuple[str, ...]
    properties: dict[str, str]


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
    return tuple(getattr(delta_exceptions, name) for name in _CONFLICTS)


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
