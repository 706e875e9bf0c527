"""The daily pipeline: stages in order, each over a range of dates in one Spark job.

A stage is a function `(ctx, dates) -> StageResult`. Running a range in bulk must give
what running each date in turn gives; every stage writes with `Lake.replace_dates`.

`run_stages` also makes runs safe to crash and to start twice (docs/reliability.md): it
locks the dates it runs, records each stage's start and finish per date in the stage
journal (`<lake root>/_stage_runs/<date>/<stage>.json`), refuses to start a stage when an
earlier stage of one of its dates started but never finished (a killed or failed run left
its tables half-written), and re-runs earlier dates whose raw files changed since they
were ingested (late deliveries, `ingest.reprocess_days`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pyspark.sql import SparkSession

from jobs.config import Settings
from jobs.lake import Lake, lock_dates


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


def _metrics(ctx: RunContext, dates: list[date]) -> StageResult:
    from jobs.metrics import run_metrics

    return run_metrics(ctx, dates)


def _report(ctx: RunContext, dates: list[date]) -> StageResult:
    from jobs.report import run_report

    return run_report(ctx, dates)


# Order matters: later stages read what earlier ones wrote.
STAGES: dict[str, StageFn] = {
    "ingest": _ingest,
    "validate": _validate,
    "normalize": _normalize,
    "baselines": _baselines,
    "score": _score,
    "recommend": _recommend,
    "export": _export,
    "metrics": _metrics,
    "report": _report,
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


# ---------------------------------------------------------------------------------------
# The stage journal: one small JSON file per (date, stage), beside the tables
# ---------------------------------------------------------------------------------------

JOURNAL_DIR = "_stage_runs"
STARTED, FINISHED, FAILED = "started", "finished", "failed"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StageRun:
    """The last run of one stage for one date, as the journal records it."""

    stage: str
    run_date: date
    status: str  # started | finished | failed
    started: str
    finished: str | None = None
    error: str | None = None
    pid: int | None = None
    host: str | None = None

    def unfinished_message(self) -> str:
        """The one-line refusal for a stage that reads this run's tables."""
        day = self.run_date.isoformat()
        where = f" (pid {self.pid} on {self.host})" if self.pid else ""
        if self.status == FAILED:
            return (
                f"{self.stage} for {day} failed at {self.finished}{where}: {self.error}; "
                f"fix the cause and re-run {self.stage} for {day}"
            )
        return (
            f"{self.stage} for {day} started at {self.started}{where} but never finished; "
            f"re-run it (policylake run --date {day} --stage {self.stage})"
        )


class StageJournal:
    """Start, finish or failure of every stage per date; lives at `<lake>/_stage_runs/`.

    Files, not a Delta table: recording costs no Spark job, and a stage's own tables are
    never touched by the bookkeeping of another.
    """

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    @staticmethod
    def _relative(stage: str, day: date) -> str:
        return f"{JOURNAL_DIR}/{day.isoformat()}/{stage}.json"

    def record(self, run: StageRun) -> None:
        body = {
            "stage": run.stage,
            "run_date": run.run_date.isoformat(),
            "status": run.status,
            "started": run.started,
            "finished": run.finished,
            "error": run.error,
            "pid": run.pid,
            "host": run.host,
        }
        self.lake.write_text(self._relative(run.stage, run.run_date), json.dumps(body) + "\n")

    def get(self, stage: str, day: date) -> StageRun | None:
        text = self.lake.read_text(self._relative(stage, day))
        if text is None:
            return None
        try:
            body: Mapping[str, Any] = json.loads(text)
            return StageRun(
                stage=stage,
                run_date=day,
                status=str(body["status"]),
                started=str(body.get("started")),
                finished=body.get("finished"),
                error=body.get("error"),
                pid=body.get("pid"),
                host=body.get("host"),
            )
        except (ValueError, KeyError, TypeError):  # a torn write: treat as never finished
            return StageRun(stage, day, STARTED, "(unreadable journal entry)")

    def unfinished(self, stages: Sequence[str], dates: Sequence[date]) -> list[StageRun]:
        found = [self.get(s, d) for d in sorted(set(dates)) for s in stages]
        return [r for r in found if r is not None and r.status != FINISHED]


def check_upstream(journal: StageJournal, stage: str, dates: Sequence[date]) -> None:
    """Refuse to run `stage` when an earlier stage of one of `dates` is half done."""
    earlier = list(STAGES)[: list(STAGES).index(stage)]
    broken = journal.unfinished(earlier, dates)
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise PipelineError(f"{stage}: {broken[0].unfinished_message()}{more}")


def _error_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


def _late_dates(
    ctx: RunContext, journal: StageJournal, stages: Sequence[str], dates: Sequence[date]
) -> dict[date, list[str]]:
    """Earlier dates inside `ingest.reprocess_days` whose raw files changed since ingest."""
    window = ctx.settings.ingest.reprocess_days
    if "ingest" not in stages or window <= 0 or not dates:
        return {}
    from jobs.ingest import late_deliveries

    first = min(dates)
    runs = {
        first - timedelta(days=i): journal.get("ingest", first - timedelta(days=i))
        for i in range(window, 0, -1)
    }
    # a date whose ingest is running (another run holds it) or broke is not a late delivery:
    # it has to be re-run anyway, and check_upstream says so
    candidates = [d for d, r in runs.items() if r is None or r.status == FINISHED]
    ingested = [d for d in candidates if runs[d] is not None]
    return late_deliveries(ctx, candidates, ingested)


def _run_batch(
    ctx: RunContext, journal: StageJournal, stages: Sequence[str], dates: list[date]
) -> Iterator[StageResult]:
    pid, host = os.getpid(), socket.gethostname()
    for name in stages:
        check_upstream(journal, name, dates)
        began = _now()
        for day in dates:
            journal.record(StageRun(name, day, STARTED, began, pid=pid, host=host))
        started = time.perf_counter()
        try:
            result = STAGES[name](ctx, dates)
        except BaseException as exc:
            failed = _now()
            for day in dates:
                try:
                    journal.record(
                        StageRun(name, day, FAILED, began, failed, _error_line(exc), pid, host)
                    )
                except Exception:  # the journal must not hide the stage's own error
                    break
            raise
        result.seconds = time.perf_counter() - started
        done = _now()
        for day in dates:
            journal.record(StageRun(name, day, FINISHED, began, done, pid=pid, host=host))
        yield result


def run_stages(ctx: RunContext, stages: Sequence[str], dates: list[date]) -> Iterator[StageResult]:
    """Run `stages` in pipeline order over `dates`, yielding each result as it completes.

    The dates are locked for the whole run (a second run of one of them fails at once with
    a one-line message). Earlier dates with late raw files are run first, with a notice.
    """
    journal = StageJournal(ctx.lake)
    root = ctx.settings.paths.lake_root
    purpose = f"stages {','.join(stages)}"
    with lock_dates(root, dates, purpose):
        late = _late_dates(ctx, journal, stages, dates)
        with lock_dates(root, list(late), purpose):
            if late:
                for day, reasons in sorted(late.items()):
                    print(
                        f"late delivery for {day.isoformat()} ({'; '.join(reasons)}): "
                        f"re-running {day.isoformat()} before {min(dates).isoformat()}",
                        file=sys.stderr,
                        flush=True,
                    )
                yield from _run_batch(ctx, journal, stages, sorted(late))
            yield from _run_batch(ctx, journal, stages, dates)
