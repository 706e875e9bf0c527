"""Routing: each bronze row goes to quarantine (with the rule and reason), counts as a
duplicate of an earlier delivery, or becomes an event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.quality.suites import (
    PARSER_RULE,
    TYPE_CHECK_RULE,
    Suite,
    row_check,
)

EVENT = "event"
QUARANTINE = "quarantine"
DUPLICATE = "duplicate"


# Computed from `raw` before routing lets it go: the row's place among the records of one
# raw line (sources with several rows per line) and, for a suite without `meta.dedup`, the
# digest its event key is made of (`jobs.stages.normalize.mapping`).
RAW_HASH = "_raw_hash"
RAW_DIGEST = "_raw_sha256"


def route_rows(rows: DataFrame, suite: Suite, params: Mapping[str, Any]) -> DataFrame:
    """Adds `_route` (event | quarantine | duplicate), `_rule` and `_reason`.

    Precedence: parser, type_check, then the suite's row-level expectations in file order
    (the first that fails names the rule); de-duplication only among rows that passed: the
    first delivery by file and line is kept (within one line of a source with several rows
    per line, the smallest hash of the raw record).

    `raw` is kept only on quarantined rows (`silver.quarantine` shows it); the others carry
    a null, so the de-duplication's sort and the stage's checkpoint move typed columns, not
    every raw line once more.
    """
    rule = F.when(~(F.col("_parse_status") == "parsed"), F.lit(PARSER_RULE)).when(
        ~F.col("_candidate"), F.lit(TYPE_CHECK_RULE)
    )
    reason = F.when(
        ~(F.col("_parse_status") == "parsed"),
        F.coalesce(F.col("_parse_error"), F.lit("unparseable line")),
    ).when(~F.col("_candidate"), F.array_join(F.col("_cast_errors"), "; "))
    for r in suite.row_rules:
        check = row_check(r, params)
        rule = rule.when(check.unexpected, F.lit(r.name))
        reason = reason.when(check.unexpected, check.reason)
    key = suite.dedup_key
    routed = rows.select(
        "*",
        rule.alias("_rule"),
        F.xxhash64(F.col("raw")).alias(RAW_HASH),
        *([] if key else [F.sha2(F.coalesce(F.col("raw"), F.lit("")), 256).alias(RAW_DIGEST)]),
    ).withColumn("_reason", reason)
    passing = F.col("_rule").isNull()
    routed = routed.withColumn("raw", F.when(~passing, F.col("raw")))
    if key:
        order = Window.partitionBy("run_date", passing, *[F.col(c) for c in key]).orderBy(
            "_file", "_line", RAW_HASH
        )
        copy = passing & (F.row_number().over(order) > 1)
    else:
        copy = F.lit(False)
    route = F.when(~passing, F.lit(QUARANTINE)).when(copy, F.lit(DUPLICATE)).otherwise(F.lit(EVENT))
    return routed.withColumn("_route", route)


def quarantine_frame(routed: DataFrame) -> DataFrame:
    q = routed.where(F.col("_route") == QUARANTINE)
    return q.select(
        "run_date",
        "source",
        F.col("_rule").alias("rule"),
        F.coalesce(F.col("_reason"), F.lit("")).alias("reason"),
        "raw",
        F.col("_file").alias("bronze_file"),
        F.col("_line").alias("bronze_line"),
        F.col("_batch_id").alias("bronze_batch_id"),
    )
