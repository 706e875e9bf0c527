"""Analyst decisions: approvals, rejections, overrides and verdicts on recommendations.

Analysts export their decisions as CSV or JSON lines (one decision a row). The file
is validated as a whole (any bad row: nothing is ingested, every problem is listed
with its line), merged into `ops.analyst_decisions` (keyed by a deterministic
decision_id, so re-ingesting a file changes nothing; this module is the table's one
writer), and the latest decision per recommendation sets its status (the feedback job,
`jobs.governance.feedback`, and the recommend stage both apply these rules):

    approve   pending_approval -> approved (other statuses unchanged)
    reject    any -> rejected
    override  any -> overridden, with `override_action` the action to enforce instead

The status is always computed from the engine's status (gold.decision_log) plus the
latest decision, so the recommend stage re-running a date gives the same status.
Verdicts (true_positive | false_positive) stay in ops.analyst_decisions as labels.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.core.errors import PipelineError
from jobs.core.lake import Lake
from jobs.core.tables import ANALYST_DECISIONS
from jobs.policy.vocabulary import Action

INPUT_COLUMNS = (
    "rec_id",
    "decision",
    "override_action",
    "verdict",
    "analyst",
    "reason",
    "decided_at",
)
MAX_ERRORS_SHOWN = 5


class FeedbackError(PipelineError):
    """An analyst decisions file that cannot be ingested; the message lists the bad lines."""


class AnalystDecisionIn(BaseModel):
    """One row of the analyst's file."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    rec_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    decision: Literal["approve", "reject", "override"]
    override_action: Action | None = None
    verdict: Literal["true_positive", "false_positive"] | None = None
    analyst: str = Field(min_length=2, max_length=200)
    reason: str | None = Field(default=None, max_length=2000)
    decided_at: datetime

    @field_validator("override_action", "verdict", "reason", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("decided_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-10-02T08:15:00Z")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _override_needs_action(self) -> AnalystDecisionIn:
        if self.decision == "override" and self.override_action is None:
            raise ValueError("override_action is required when decision is override")
        if self.decision != "override" and self.override_action is not None:
            raise ValueError("override_action is only allowed when decision is override")
        if self.decision in ("reject", "override") and not self.reason:
            raise ValueError(f"reason is required when decision is {self.decision}")
        return self

    @property
    def decision_id(self) -> str:
        key = f"{self.rec_id}|{self.decision}|{self.analyst}|{self.decided_at.isoformat()}"
        return hashlib.sha256(key.encode()).hexdigest()


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown column"
    elif first["type"] == "missing":
        message = "required"
    return f"{key}: {message}" if key else message


def _rows(path: Path) -> Iterable[tuple[int, dict[str, Any] | str]]:
    """(line number, row or a parse problem) from CSV or JSON lines, by file extension."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = [
            c
            for c in ("rec_id", "decision", "analyst", "decided_at")
            if c not in (reader.fieldnames or [])
        ]
        if missing:
            yield 1, f"header lacks column(s) {', '.join(missing)}"
            return
        for row in reader:
            if None in row:
                yield reader.line_num, "more values than header columns"
                continue
            yield reader.line_num, {k: v for k, v in row.items() if k is not None}
        return
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        yield 0, f"unsupported file type {path.suffix!r}; use .csv or .jsonl"
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"not valid JSON ({exc.msg})"
            continue
        yield number, value if isinstance(value, dict) else "each line must be a JSON object"


def parse_decisions(path: Path) -> list[AnalystDecisionIn]:
    """Validate the whole file; raise FeedbackError listing the bad lines (nothing partial)."""
    if not path.is_file():
        raise FeedbackError(f"analyst decisions file not found: {path}")
    good: list[AnalystDecisionIn] = []
    errors: list[str] = []
    for number, row in _rows(path):
        if isinstance(row, str):
            errors.append(f"line {number}: {row}")
            continue
        try:
            good.append(AnalystDecisionIn.model_validate(row))
        except ValidationError as exc:
            errors.append(f"line {number}: {_describe(exc)}")
    if not good and not errors:
        errors.append("no decisions in the file")
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = (
            f" (+{len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        )
        raise FeedbackError(f"{path}: {len(errors)} bad row(s): {shown}{more}")
    return good


# --- status from decisions (shared with the recommend stage) ----------------------------


def latest_decisions(decisions: DataFrame) -> DataFrame:
    """The latest decision per rec_id (ties broken by decision_id, so the choice is stable)."""
    order = Window.partitionBy("rec_id").orderBy(
        F.col("decided_at").desc(), F.col("decision_id").desc()
    )
    return (
        decisions.withColumn("_n", F.row_number().over(order))
        .where("_n = 1")
        .select(
            "rec_id",
            F.col("decision").alias("analyst_decision"),
            F.col("override_action").alias("analyst_override_action"),
        )
    )


def resolved_status(base: Column, decision: Column) -> Column:
    return (
        F.when(decision == "reject", F.lit("rejected"))
        .when(decision == "override", F.lit("overridden"))
        .when((decision == "approve") & (base == "pending_approval"), F.lit("approved"))
        .otherwise(base)
    )


def apply_analyst_decisions(recommendations: DataFrame, latest: DataFrame | None) -> DataFrame:
    """Set status / override_action from the latest decisions (`status` is the engine's)."""
    if latest is None:
        return recommendations.withColumn("override_action", F.lit(None).cast("string"))
    joined = recommendations.join(latest, "rec_id", "left")
    return (
        joined.withColumn("status", resolved_status(F.col("status"), F.col("analyst_decision")))
        .withColumn(
            "override_action",
            F.when(F.col("analyst_decision") == "override", F.col("analyst_override_action")).cast(
                "string"
            ),
        )
        .drop("analyst_decision", "analyst_override_action")
    )


# --- ops.analyst_decisions ----------------------------------------------------------------


def record_decisions(lake: Lake, rows: DataFrame) -> None:
    """MERGE decision rows (ANALYST_DECISIONS columns) on decision_id: new ones inserted,
    changed ones (verdict, reason, override, file) updated, the same file twice changes
    nothing."""
    (
        lake.for_update(ANALYST_DECISIONS)
        .alias("t")
        .merge(rows.alias("s"), "t.decision_id = s.decision_id AND t.run_date = s.run_date")
        .whenMatchedUpdateAll(
            condition=" OR ".join(
                f"NOT (t.{c} <=> s.{c})"
                for c in ("override_action", "verdict", "reason", "source_file")
            )
        )
        .whenNotMatchedInsertAll()
        .execute()
    )
