"""Table upkeep: retention properties, layout, compaction and VACUUM of every catalogue table.

`policylake maintain` and the weekly `policylake_maintenance` DAG run `maintain`. For each
table of the catalogue that exists, in one pass:

1. set `delta.logRetentionDuration` and `delta.deletedFileRetentionDuration` from the
   `maintenance` settings when they differ (one metadata commit);
2. rewrite it once with the catalogue's partitioning when it was written with another (the
   small ops and metrics tables stopped being partitioned by date);
3. compact small files (Delta OPTIMIZE: bin-packing within each partition);
4. VACUUM with the table's own retention, so files a Change Data Feed consumer may still need
   (inside the documented window) are kept.

Upkeep rewrites files, never rows (`Lake.optimize` and friends), so it is the one lake-wide
job that no table's "one writer" rule applies to (docs/architecture.md). Each step is its
own Delta commit, retried on a conflict with a concurrent writer; run it away from the
nightly run all the same (the DAG's default schedule is Saturday 03:00 UTC).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jobs.core.context import RunContext
from jobs.core.tables import CATALOGUE, Table

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TableUpkeep:
    """What maintenance did to one table."""

    table: str
    files_before: int
    files_after: int
    bytes_after: int
    files_compacted: int  # files OPTIMIZE replaced
    properties_set: tuple[str, ...]
    relaid_out: bool
    vacuumed: bool


def maintain(
    ctx: RunContext,
    tables: Sequence[Table] | None = None,
    vacuum: bool = True,
    progress: Progress | None = None,
) -> list[TableUpkeep]:
    """Upkeep of `tables` (default: the whole catalogue) that exist, in catalogue order."""
    lake = ctx.lake
    wanted = list(tables) if tables is not None else list(CATALOGUE.values())
    retention = ctx.settings.maintenance.table_properties()
    done: list[TableUpkeep] = []
    for table in wanted:
        if not lake.exists(table):
            continue
        if progress is not None:
            progress(table.name)
        before = lake.layout(table)
        changed = {k: v for k, v in retention.items() if before.properties.get(k) != v}
        lake.set_properties(table, changed)
        relaid = before.partition_columns != table.partition_by
        if relaid:
            lake.relayout(table)
        _, removed = lake.optimize(table)
        if vacuum:
            lake.vacuum(table)
        after = lake.layout(table)
        done.append(
            TableUpkeep(
                table.name,
                before.files,
                after.files,
                after.size_bytes,
                removed,
                tuple(sorted(changed)),
                relaid,
                vacuum,
            )
        )
    return done
