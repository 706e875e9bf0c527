"""The one writer of gold.policy_recommendations (Change Data Feed on): the nightly MERGE, the
status refresh after analyst decisions, and the withdrawal of a data subject's rows. Each
rewrites only rows that change, so CDF consumers see exactly what changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.core.lake import Lake, dates_predicate
from jobs.core.tables import POLICY_RECOMMENDATIONS

COLUMNS = POLICY_RECOMMENDATIONS.column_names


def merge_recommendations(lake: Lake, recs: DataFrame, dates: Sequence[date]) -> None:
    """MERGE the dates' recommendations: insert new, update changed, delete gone; untouched rows stay.

    The source holds only rows that differ from the table: new or changed ones, and ones
    that left the dates' result marked `_gone` (a `whenNotMatchedBySource` clause would
    make Delta rewrite every file of the dates). An unchanged re-run therefore rewrites
    no file and adds no version, so CDF consumers see nothing.
    """
    table = lake.for_update(POLICY_RECOMMENDATIONS)
    changed = " OR ".join(
        f"NOT (t.{c} <=> s.{c})" for c in COLUMNS if c not in ("rec_id", "run_date")
    )
    in_dates = dates_predicate("t.run_date", dates)
    current = lake.read_dates(POLICY_RECOMMENDATIONS, dates).select(*COLUMNS)
    # Only new, changed and withdrawn rows enter the MERGE: Delta rewrites every file holding
    # a row the source matches, so unchanged rows must not be in the source at all.
    changed_or_new = recs.select(*COLUMNS).exceptAll(current)
    gone = current.select("rec_id", "run_date").join(recs.select("rec_id"), "rec_id", "left_anti")
    source = changed_or_new.withColumn("_gone", F.lit(False)).unionByName(
        gone.withColumn("_gone", F.lit(True)), allowMissingColumns=True
    )
    values: dict[str, str | Column] = {c: f"s.{c}" for c in COLUMNS}
    (
        table.alias("t")
        .merge(source.alias("s"), f"t.rec_id = s.rec_id AND t.run_date = s.run_date AND {in_dates}")
        .whenMatchedDelete(condition="s._gone")
        .whenMatchedUpdate(condition=f"NOT s._gone AND ({changed})", set=values)
        .whenNotMatchedInsert(condition="NOT s._gone", values=values)
        .execute()
    )


def update_statuses(lake: Lake, updated: DataFrame, dates: Sequence[date]) -> int:
    """Set `status` and `override_action` of the recommendations in `updated` (rec_id,
    run_date, status, override_action) where they differ; the number of rows changed.

    Analyst decisions change what enforcement may act on at once, not at the next run.
    """
    table = lake.for_update(POLICY_RECOMMENDATIONS)
    before = lake.version(POLICY_RECOMMENDATIONS)
    same = "t.status <=> s.status AND t.override_action <=> s.override_action"
    (
        table.alias("t")
        .merge(
            updated.alias("s"),
            f"t.rec_id = s.rec_id AND t.run_date = s.run_date AND {dates_predicate('t.run_date', dates)}",
        )
        .whenMatchedUpdate(
            condition=f"NOT ({same})",
            set={"status": "s.status", "override_action": "s.override_action"},
        )
        .execute()
    )
    last = table.history(1).first()
    if last is None or last["version"] == before:  # a MERGE that changes nothing may not commit
        return 0
    return int(last["operationMetrics"].get("numTargetRowsUpdated", 0))


def withdraw_and_redact(lake: Lake, source: DataFrame) -> None:
    """A data subject's erasure: delete the rows `source` marks `_erase`, replace the others
    it holds (redacted text) by rec_id and run_date. CDF consumers see the deletes and the
    redactions, nothing else."""
    table = lake.for_update(POLICY_RECOMMENDATIONS)
    (
        table.alias("t")
        .merge(source.alias("s"), "t.rec_id = s.rec_id AND t.run_date = s.run_date")
        .whenMatchedDelete(condition="s._erase")
        .whenMatchedUpdate(condition="NOT s._erase", set={c: f"s.{c}" for c in COLUMNS})
        .execute()
    )
