"""The daily pipeline: stages in order, each over a range of dates in one Spark job.

A stage is a function `(ctx, dates) -> StageResult`. Running a range in bulk must give
what running each date in turn gives; every stage writes with `Lake.replace_dates`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from pyspark.sql import SparkSession

from jobs.config import Settings
from jobs.lake import Lake


class PipelineError(RuntimeError):
    """A stage refused to go on (bad input, a failed gate, a broken reconciliation)."""


@dataclass
class RunContext:
    spark: SparkSession
    settings: Settings

    @property
    def lake(self) -> Lake:
        return Lake(self.spark, self.settings.paths.lake_root)


@dataclass
class StageResult:
    stage: str
    dates: list[date]
    rows: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


StageFn = Callable[[RunContext, list[date]], StageResult]


def _ingest(ctx: RunContext, dates: list[date]) -> StageResult:
    from jobs.ingest import run_ingest

    return run_ingest(ctx, dates)


def _validate(ctx: RunContext, dates: list[date]) -> StageResult:
    from jobs.validate import run_validate

    return run_validate(ctx, dates)


def _normalize(ctx: RunContext, dates: list[date]) -> StageResult:
    from jobs.normalize import run_normalize

    return run_normalize(ctx, dates)


def _baselines(ctx: RunContext, dates: list[date]) -> StageResult:
    from jobs.baselines import run_baselines

    return run_baselines(ctx, dates)


def _score(ctx: RunContext, dates: list[date]) -> StageResult:
    from jobs.score import run_score

    result: StageResult = run_score(ctx, dates)
    return result


def _recommend(ctx: RunContext, dates: list[date]) -> StageResult:
    from jobs.recommend import run_recommend

    return run_recommend(ctx, dates)


def _export(ctx: RunContext, dates: list[date]) -> StageResult:
    from jobs.export import run_export

    rows = 0
    files = []
    for day in dates:
        exported = run_export(ctx, day)
        rows += exported.rows
        files.append(str(exported.manifest_file))
    return StageResult(
        stage="export",
        dates=list(dates),
        rows={"exported": rows},
        details={"manifests": files, "last_manifest": files[-1] if files else ""},
    )


# Order matters: later stages read what earlier ones wrote.
STAGES: dict[str, StageFn] = {
    "ingest": _ingest,
    "validate": _validate,
    "normalize": _normalize,
    "baselines": _baselines,
    "score": _score,
    "recommend": _recommend,
    "export": _export,
}


def date_range(start: date, end: date) -> list[date]:
    if end < start:
        raise PipelineError(f"--to {end} is before the start date {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def parse_stages(spec: str | None) -> list[str]:
    if not spec:
        return list(STAGES)
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise PipelineError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    return [s for s in STAGES if s in wanted]


def run_stages(ctx: RunContext, stages: Sequence[str], dates: list[date]) -> Iterator[StageResult]:
    """Run `stages` in pipeline order over `dates`, yielding each result as it completes."""
    for name in stages:
        started = time.perf_counter()
        result = STAGES[name](ctx, dates)
        result.seconds = time.perf_counter() - started
        yield result
