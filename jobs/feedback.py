"""Analyst decisions: approvals, rejections, overrides and verdicts on recommendations.

Analysts export their decisions as CSV or JSON lines (one decision a row). The file
is validated as a whole (any bad row: nothing is ingested, every problem is listed
with its line), merged into `ops.analyst_decisions` (keyed by a deterministic
decision_id, so re-ingesting a file changes nothing), and the latest decision per
recommendation sets its status in `gold.policy_recommendations`:

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

from jobs.lake import dates_predicate
from jobs.pipeline import PipelineError, RunContext, StageResult
from jobs.policy.vocabulary import Action
from jobs.schemas import ANALYST_DECISIONS

ANALYST_DECISIONS_TABLE = "ops.analyst_decisions"
RECOMMENDATIONS_TABLE = "gold.policy_recommendations"
DECISION_LOG_TABLE = "gold.decision_log"
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


# --- entry ----------------------------------------------------------------------------


def _ensure_table(ctx: RunContext) -> str:
    from delta.tables import DeltaTable

    path = ctx.lake.path(ANALYST_DECISIONS_TABLE)
    (
        DeltaTable.createIfNotExists(ctx.spark)
        .location(path)
        .addColumns(ANALYST_DECISIONS)
        .partitionedBy("run_date")
        .execute()
    )
    return path


def run_feedback(ctx: RunContext, path: Path | str) -> StageResult:
    """Ingest an analyst decisions file (CSV or JSON lines) and update recommendation statuses."""
    from delta.tables import DeltaTable

    path = Path(path)
    decisions = parse_decisions(path)
    lake, spark = ctx.lake, ctx.spark
    if not lake.exists(RECOMMENDATIONS_TABLE):
        raise FeedbackError(
            f"{RECOMMENDATIONS_TABLE} does not exist yet; run the recommend stage first"
        )
    wanted = spark.createDataFrame([(d.rec_id,) for d in decisions], "rec_id string").distinct()
    known = {
        r["rec_id"]: r
        for r in lake.read(RECOMMENDATIONS_TABLE)
        .join(wanted, "rec_id")
        .select("rec_id", "run_date", "target_type", "target_id", "action", "policy_id")
        .collect()  # at most one row per line of the analyst's file
    }
    unknown = [(i, d.rec_id) for i, d in enumerate(decisions) if d.rec_id not in known]
    if unknown:
        shown = ", ".join(f"row {i + 1}: {rid[:12]}..." for i, rid in unknown[:MAX_ERRORS_SHOWN])
        more = (
            f" (+{len(unknown) - MAX_ERRORS_SHOWN} more)" if len(unknown) > MAX_ERRORS_SHOWN else ""
        )
        raise FeedbackError(f"{path}: rec_id not found in {RECOMMENDATIONS_TABLE}: {shown}{more}")
    rows = spark.createDataFrame(
        [
            (
                d.decision_id,
                d.rec_id,
                known[d.rec_id]["run_date"],
                d.decision,
                d.override_action,
                d.verdict,
                d.analyst,
                d.reason,
                d.decided_at,
                known[d.rec_id]["target_type"],
                known[d.rec_id]["target_id"],
                known[d.rec_id]["action"],
                known[d.rec_id]["policy_id"],
                str(path),
            )
            for d in decisions
        ],
        ANALYST_DECISIONS,
    )
    dates = sorted({r["run_date"] for r in known.values()})

    (
        DeltaTable.forPath(spark, _ensure_table(ctx))
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

    # Re-derive the status of every recommendation these decisions touch: the engine's
    # status (decision log, owning policy) plus the latest decision of all time.
    touched = spark.createDataFrame(
        [(rid, r["run_date"], r["policy_id"]) for rid, r in known.items()],
        "rec_id string, run_date date, policy_id string",
    )
    history = lake.read(ANALYST_DECISIONS_TABLE).join(touched.select("rec_id"), "rec_id")
    updated = (
        lake.read(DECISION_LOG_TABLE)
        .where(dates_predicate("run_date", dates))
        .join(touched, ["rec_id", "run_date", "policy_id"])
        .join(latest_decisions(history), "rec_id")
        .select(
            "rec_id",
            "run_date",
            resolved_status(F.col("status"), F.col("analyst_decision")).alias("status"),
            F.when(F.col("analyst_decision") == "override", F.col("analyst_override_action"))
            .cast("string")
            .alias("override_action"),
        )
    )
    recs_table = DeltaTable.forPath(spark, lake.path(RECOMMENDATIONS_TABLE))
    before = recs_table.history(1).first()["version"]  # type: ignore[index]
    same = "t.status <=> s.status AND t.override_action <=> s.override_action"
    (
        recs_table.alias("t")
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
    last = recs_table.history(1).first()
    changed_recs = 0
    if (
        last is not None and last["version"] != before
    ):  # a MERGE that changes nothing may not commit
        changed_recs = int(last["operationMetrics"].get("numTargetRowsUpdated", 0))
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d.decision] = counts.get(d.decision, 0) + 1
        if d.verdict:
            counts[d.verdict] = counts.get(d.verdict, 0) + 1
    return StageResult(
        stage="feedback",
        dates=dates,
        rows={ANALYST_DECISIONS_TABLE: len(decisions), RECOMMENDATIONS_TABLE: changed_recs},
        details={"file": str(path), **counts},
    )
