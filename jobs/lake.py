"""Delta tables of the lake: where each lives and how a stage replaces its dates.

Tables are named `<layer>.<name>` (`bronze.idp`, `silver.events`) and stored at
`<lake root>/<layer>/<name>`. Writes replace exactly the dates a run covers
(`replaceWhere`), so re-running a date, or a range, never duplicates rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

LAYERS = ("bronze", "silver", "gold", "ops")


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

    def replace_dates(
        self,
        df: DataFrame,
        table: str,
        dates: Iterable[date],
        column: str = "run_date",
        partition_by: tuple[str, ...] = ("run_date",),
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Atomically replace the rows of `dates` in `table` with `df` (one Delta commit).

        Delta checks every written row matches the predicate, so a frame with rows of
        another date fails instead of silently widening the overwrite.
        """
        dates = list(dates)
        writer = (
            df.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", dates_predicate(column, dates))
            .partitionBy(*partition_by)
        )
        if not self.exists(table):
            for key, value in (properties or {}).items():
                writer = writer.option(key, value)
        writer.save(self.path(table))
