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

import os
import socket
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack
from datetime import date, timedelta

from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PipelineError, UsageError
from jobs.core.locks import lock_dates
from jobs.core.spark import fit_to_input
from jobs.pipeline.journal import (
    FAILED,
    FINISHED,
    INGEST,
    STARTED,
    StageJournal,
    StageRun,
    journal_keys,
    now,
)
from jobs.stages.baselines.stage import run_baselines
from jobs.stages.export.stage import run_export
from jobs.stages.ingest.files import raw_listing
from jobs.stages.ingest.stage import late_deliveries, run_ingest
from jobs.stages.metrics.stage import run_metrics
from jobs.stages.normalize.stage import run_normalize
from jobs.stages.recommend.stage import run_recommend
from jobs.stages.report.stage import run_report
from jobs.stages.score.stage import run_score
from jobs.stages.validate.stage import run_validate

StageFn = Callable[[RunContext, list[date]], StageResult]


# Order matters: later stages read what earlier ones wrote.
STAGES: dict[str, StageFn] = {
    "ingest": run_ingest,
    "validate": run_validate,
    "normalize": run_normalize,
    "baselines": run_baselines,
    "score": run_score,
    "recommend": run_recommend,
    "export": run_export,
    "metrics": run_metrics,
    "report": run_report,
}


def date_range(start: date, end: date) -> list[date]:
    if end < start:
        raise UsageError(f"--to {end} is before the start date {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def parse_stages(spec: str | None) -> list[str]:
    if not spec:
        return list(STAGES)
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise UsageError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    return [s for s in STAGES if s in wanted]


def check_upstream(
    journal: StageJournal, stage: str, dates: Sequence[date], sources: Sequence[str]
) -> None:
    """Refuse to run `stage` when an earlier stage of one of `dates` is half done (for
    ingest: the ingest of any configured source)."""
    earlier = list(STAGES)[: list(STAGES).index(stage)]
    keys = [key for name in earlier for key in journal_keys(name, sources)]
    broken = journal.unfinished(keys, dates)
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
    if INGEST not in stages or window <= 0 or not dates:
        return {}
    first = min(dates)
    keys = journal_keys(INGEST, ctx.settings.ingest.sources)
    runs = {
        first - timedelta(days=i): [journal.get(k, first - timedelta(days=i)) for k in keys]
        for i in range(window, 0, -1)
    }
    # a date whose ingest is running (another run holds it) or broke is not a late delivery:
    # it has to be re-run anyway, and check_upstream says so
    candidates = [
        d for d, found in runs.items() if all(r is None or r.status == FINISHED for r in found)
    ]
    ingested = [d for d in candidates if any(r is not None for r in runs[d])]
    return late_deliveries(ctx, candidates, ingested)


def _run_stage(
    ctx: RunContext, name: str, dates: list[date], sources: Sequence[str]
) -> StageResult:
    if name == INGEST and list(sources) != list(ctx.settings.ingest.sources):
        return run_ingest(ctx, dates, sources=sources)  # some sources (per-source tasks)
    return STAGES[name](ctx, dates)


def raw_input_bytes(ctx: RunContext, dates: Sequence[date]) -> int | None:
    """Bytes of the raw files of `dates`, all configured sources (what ingest reads, and
    what every later stage's work grows with); None when none are there (not delivered,
    or past the raw folder's retention): the size is then unknown."""
    total = 0
    for source in ctx.settings.ingest.sources:
        listing = raw_listing(ctx.spark, ctx.settings.paths.raw_root, source, dates)
        total += sum(size for files in listing.values() for _, size in files)
    return total or None


def _run_batch(
    ctx: RunContext,
    journal: StageJournal,
    stages: Sequence[str],
    dates: list[date],
    sources: Sequence[str],
) -> Iterator[StageResult]:
    pid, host = os.getpid(), socket.gethostname()
    input_bytes = raw_input_bytes(ctx, dates)
    small = fit_to_input(ctx.spark, ctx.settings, input_bytes)
    for name in stages:
        check_upstream(journal, name, dates, ctx.settings.ingest.sources)
        keys = journal_keys(name, sources)
        began = now()
        for day in dates:
            for key in keys:
                journal.record(StageRun(key, day, STARTED, began, pid=pid, host=host))
        started = time.perf_counter()
        try:
            result = _run_stage(ctx, name, dates, sources)
        except BaseException as exc:
            failed = now()
            try:
                for day in dates:
                    for key in keys:
                        journal.record(
                            StageRun(key, day, FAILED, began, failed, _error_line(exc), pid, host)
                        )
            except Exception:  # the journal must not hide the stage's own error
                pass
            raise
        result.seconds = time.perf_counter() - started
        result.details.setdefault(
            "spark_input",
            f"{'small' if small else 'large'} ({(input_bytes or 0) / 2**20:.1f} MiB raw)"
            if input_bytes is not None
            else "unknown (no raw files)",
        )
        done = now()
        for day in dates:
            for key in keys:
                journal.record(StageRun(key, day, FINISHED, began, done, pid=pid, host=host))
        yield result


def run_stages(
    ctx: RunContext,
    stages: Sequence[str],
    dates: list[date],
    sources: Sequence[str] | None = None,
) -> Generator[StageResult]:
    """Run `stages` in pipeline order over `dates`, yielding each result as it completes.

    The dates are locked for the whole run (a second run of one of them fails at once with
    a one-line message). Earlier dates with late raw files are run first, with a notice.

    `sources` restricts a run of the ingest stage alone to some configured sources (the
    orchestrator's per-source tasks): the dates are then locked shared, each source's part
    exclusively, so the sources of one date ingest side by side but never beside a whole
    run of that date; late deliveries are left to the orchestrator's own re-runs.
    """
    journal = StageJournal(ctx.lake)
    root = ctx.settings.paths.lake_root
    purpose = f"stages {','.join(stages)}"
    if sources is not None:
        if list(stages) != [INGEST]:
            raise UsageError("--source applies to the ingest stage alone")
        configured = ctx.settings.ingest.sources
        chosen = [s for s in configured if s in sources]
        with ExitStack() as held:
            held.enter_context(lock_dates(root, dates, purpose, shared=True))
            for source in chosen:
                held.enter_context(lock_dates(root, dates, purpose, part=f"{INGEST}-{source}"))
            yield from _run_batch(ctx, journal, stages, dates, chosen)
        return
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
                yield from _run_batch(
                    ctx, journal, stages, sorted(late), ctx.settings.ingest.sources
                )
            yield from _run_batch(ctx, journal, stages, dates, ctx.settings.ingest.sources)
