"""`python -m tests.crash_hooks <policylake arguments>`: the `policylake` command line with
one table's commit held back, so a crash test can SIGKILL the stage at the worst moment.

`POLICYLAKE_TEST_PAUSE_BEFORE_COMMIT=silver.events` makes the write of that table produce
its data files in two tasks, the second of which sleeps `POLICYLAKE_TEST_PAUSE_SECONDS`
(default 300) before producing its rows: the first task's data file lands in the table
folder while the commit waits. Test code only: the product never reads these variables.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from pyspark.sql import DataFrame

from jobs.cli.app import main
from jobs.core.lake import Lake, resolve

PAUSE_BEFORE_COMMIT_ENV = "POLICYLAKE_TEST_PAUSE_BEFORE_COMMIT"
PAUSE_SECONDS_ENV = "POLICYLAKE_TEST_PAUSE_SECONDS"


def held_back(df: DataFrame, table: str, seconds: float) -> DataFrame:
    """`df` written by two tasks, the second of which waits `seconds` first."""
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


def install() -> None:
    wanted = {
        t.strip() for t in os.environ.get(PAUSE_BEFORE_COMMIT_ENV, "").split(",") if t.strip()
    }
    seconds = float(os.environ.get(PAUSE_SECONDS_ENV, "300"))
    original = Lake.replace_dates

    def replace_dates(
        self: Lake,
        df: DataFrame,
        table: Any,
        dates: Any,
        where: str | None = None,
        optimize_write: bool = True,
    ) -> None:
        name = resolve(table).name
        if name in wanted:
            # several write tasks, so one can finish its file while another waits
            df.sparkSession.conf.set("spark.databricks.delta.optimizeWrite.enabled", "false")
            df = held_back(df, name, seconds)
        original(self, df, table, dates, where, optimize_write)

    Lake.replace_dates = replace_dates  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    main(sys.argv[1:])
