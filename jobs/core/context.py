"""What every stage receives and returns: the run context and the stage result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pyspark.sql import SparkSession

from jobs.core.config import Settings
from jobs.core.lake import Lake


@dataclass
class RunContext:
    """The Spark session and settings of one run; stages reach the lake through it."""

    spark: SparkSession
    settings: Settings
    # a reason to chain the decision log over days the lake lost (`run --accept-gap`),
    # logged in the audit anchor and the heads (docs/audit.md); None refuses such a gap
    accept_audit_gap: str | None = None

    @property
    def lake(self) -> Lake:
        return Lake(
            self.spark,
            self.settings.paths.lake_root,
            self.settings.maintenance.table_properties(),
        )


@dataclass
class StageResult:
    """What a stage did: rows written per table, details for the run summary, seconds."""

    stage: str
    dates: list[date]
    rows: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class PhaseClock:
    """Seconds per phase of a stage, for its result (where the time goes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self._last, 2)
        self._last = now
