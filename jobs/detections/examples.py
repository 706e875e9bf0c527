"""Run rules' inline examples (`tests:` in a rule file) through the real evaluation.

An example event is written as an analyst reads the event: for Windows, the System
properties `Channel`, `EventID`, `Provider_Name` (and `Computer`) and every other key an event
data field by its Windows name; for other sources, `silver.events` column names. Omitted
`Channel` / `EventID` default to the rule's first slot, so an example is about its fields.
All examples of all rules are evaluated together, in one `match_events` pass, as the nightly
run would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.types import (
    IntegerType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from jobs.detections.compiler import CompiledRule
from jobs.detections.evaluate import MATCH_COLUMN, match_events, usable_rules
from jobs.detections.rules import LoadFailure

__all__ = ["ExampleResult", "example_frame", "run_examples"]

_SYSTEM = {
    "Channel": "channel",
    "EventID": "event_id",
    "Provider_Name": "provider",
    "Computer": "hostname",
}
_WINDOWS_COLUMNS = ("source", "channel", "event_id", "provider", "hostname")


@dataclass(frozen=True)
class ExampleResult:
    rule: str  # slug
    example: str
    expect_match: bool
    matched: bool

    @property
    def passed(self) -> bool:
        return self.expect_match == self.matched


def _row(rule: CompiledRule, event: dict[str, Any]) -> dict[str, Any]:
    slot = rule.slots[0]
    row: dict[str, Any] = {"source": slot.source}
    if slot.source != "windows":
        row.update({k: None if v is None else str(v) for k, v in event.items()})
        return row
    data = {}
    for key, value in event.items():
        if key in _SYSTEM:
            row[_SYSTEM[key]] = value
        else:
            data[str(key)] = None if value is None else str(value)
    row.setdefault("channel", slot.channel)
    row.setdefault("event_id", slot.event_ids[0] if slot.event_ids else None)
    row["event_id"] = None if row["event_id"] is None else int(row["event_id"])
    row["event_data"] = data
    return row


def example_frame(spark: SparkSession, rules: Sequence[CompiledRule]) -> Any:
    """One row per example of `rules`, with `_case` = '<slug>\\t<index>'."""
    rows = []
    for rule in rules:
        for i, example in enumerate(rule.rule.examples):
            row = _row(rule, example.event)
            row["_case"] = f"{rule.slug}\t{i}"
            rows.append(row)
    extra = sorted({k for r in rows for k in r} - {*_WINDOWS_COLUMNS, "event_data", "_case"})
    schema = StructType(
        [
            StructField("_case", StringType()),
            StructField("source", StringType()),
            StructField("channel", StringType()),
            StructField("event_id", IntegerType()),
            StructField("provider", StringType()),
            StructField("hostname", StringType()),
            StructField("event_data", MapType(StringType(), StringType())),
            *[StructField(name, StringType()) for name in extra],
        ]
    )
    return spark.createDataFrame(
        [tuple(r.get(f.name) for f in schema.fields) for r in rows], schema
    )


def run_examples(
    spark: SparkSession, rules: Sequence[CompiledRule]
) -> tuple[list[ExampleResult], list[LoadFailure]]:
    """Every inline example of `rules` (did the rule match it as the example expects?), and the
    rules Spark could not evaluate."""
    with_examples = [r for r in rules if r.rule.examples]
    if not with_examples:
        return [], []
    frame = example_frame(spark, with_examples)
    usable = usable_rules(frame, with_examples)
    hits = {
        (row["_case"], row[MATCH_COLUMN])
        for row in match_events(
            frame, usable.rules, keep=["_case"]
        ).collect()  # examples: a few rows
    }
    results = []
    for rule in with_examples:
        for i, example in enumerate(rule.rule.examples):
            matched = (f"{rule.slug}\t{i}", rule.slug) in hits
            results.append(ExampleResult(rule.slug, example.name, example.expect_match, matched))
    return results, usable.failures
