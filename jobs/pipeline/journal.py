"""The stage journal: one small JSON file per (date, stage) beside the tables, recording each
stage's start, finish or failure, so a stage never reads what a killed or failed run of an
earlier stage left half-written (docs/reliability.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from jobs.core.lake import Lake

JOURNAL_DIR = "_stage_runs"
STARTED, FINISHED, FAILED = "started", "finished", "failed"
# Ingest is journalled per source (`ingest@idp`): the orchestrator runs the sources as
# separate tasks, and a later stage needs every configured source's ingest finished.
INGEST = "ingest"


def journal_key(stage: str, source: str | None = None) -> str:
    """The journal entry of a stage (of one source, for ingest)."""
    return f"{stage}@{source}" if source else stage


def journal_keys(stage: str, sources: Sequence[str]) -> list[str]:
    """The entries a run of `stage` records: one per source for ingest, else the stage."""
    return [journal_key(stage, s) for s in sources] if stage == INGEST else [stage]


def now() -> str:
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

    @property
    def rerun(self) -> str:
        """The command that runs this entry's stage again."""
        stage, _, source = self.stage.partition("@")
        only = f" --source {source}" if source else ""
        return f"policylake run --date {self.run_date.isoformat()} --stage {stage}{only}"

    def unfinished_message(self) -> str:
        """The one-line refusal for a stage that reads this run's tables."""
        day = self.run_date.isoformat()
        where = f" (pid {self.pid} on {self.host})" if self.pid else ""
        if self.status == FAILED:
            return (
                f"{self.stage} for {day} failed at {self.finished}{where}: {self.error}; "
                f"fix the cause and re-run it ({self.rerun})"
            )
        return (
            f"{self.stage} for {day} started at {self.started}{where} but never finished; "
            f"re-run it ({self.rerun})"
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
