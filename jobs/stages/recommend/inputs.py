"""What recommend (and `policy diff`, replaying a date) read besides entity risk: the sources
whose evidence is weak on each date. Unknown means weak (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from jobs.core.context import RunContext
from jobs.core.tables import MODEL_EVIDENCE, SOURCE_STATUS

# The source of the model's pseudo-signal (`model_score`) in gold.entity_risk.
MODEL_SOURCE = "model"
# ops.model_evidence statuses whose evidence stands (unless the model changed): scored with
# the checked champion, or no champion yet (signals alone, no model evidence to discount)
USABLE_MODEL_STATUSES = ("champion", "none")


def degraded_from_status(
    dates: Sequence[date], rows: Sequence[tuple[date, str, str]], configured: Sequence[str]
) -> dict[str, list[str]]:
    """Per date: the sources not `ok` in ops.source_status, plus every configured source the
    date has no row for (a date without any row: every configured source)."""
    seen: dict[date, dict[str, str]] = {d: {} for d in dates}
    for day, source, status in rows:
        seen.setdefault(day, {})[source] = status
    return {
        d.isoformat(): sorted(
            {s for s, status in seen[d].items() if status != "ok"}
            | {s for s in configured if s not in seen[d]}
        )
        for d in dates
    }


def model_degraded(dates: Sequence[date], runs: Mapping[date, Mapping[str, Any]]) -> dict[str, str]:
    """Per date whose model evidence is degraded, why: no record of which model scored it,
    a model that was refused, or a model other than the previous recorded date's (a new
    champion, or the champion gone). The first date a model scores counts as changed."""
    out: dict[str, str] = {}
    recorded = sorted(runs)
    for day in dates:
        run = runs.get(day)
        if run is None:
            out[day.isoformat()] = f"no record of the model that scored {day} ({MODEL_EVIDENCE})"
            continue
        if run["status"] not in USABLE_MODEL_STATUSES:
            out[day.isoformat()] = f"model {run['status']}: {run.get('reason') or 'no reason'}"
            continue
        earlier = [d for d in recorded if d < day]
        previous = runs[earlier[-1]] if earlier else None
        now = (run["status"], run["model_version"], run["model_digest"])
        if run["status"] == "champion" and previous is None:
            out[day.isoformat()] = f"model v{run['model_version']} scores for the first time"
        elif previous is not None and now != (
            previous["status"],
            previous["model_version"],
            previous["model_digest"],
        ):
            if run["status"] == "none":
                out[day.isoformat()] = (
                    f"model v{previous['model_version']} of {earlier[-1]} is gone"
                )
            else:
                out[day.isoformat()] = (
                    f"model changed since {earlier[-1]}: v{previous['model_version']} -> "
                    f"v{run['model_version']}"
                )
    return out


def degraded_sources_by_date(ctx: RunContext, dates: Sequence[date]) -> dict[str, list[str]]:
    """Sources whose evidence is degraded per date (ISO date -> sorted names): those
    ops.source_status marks degraded or missing, those it has no row for (a missing table:
    all of them), and `model` when the model evidence is degraded (`model_degraded`)."""
    lake = ctx.lake
    configured = ctx.settings.ingest.sources
    rows: list[tuple[date, str, str]] = []
    if lake.exists(SOURCE_STATUS):
        rows = [
            (r["run_date"], r["source"], r["status"])
            for r in lake.read_dates(SOURCE_STATUS, dates)
            .select("run_date", "source", "status")
            .collect()  # one row per date and source
        ]
    out = degraded_from_status(dates, rows, configured)
    runs: dict[date, dict[str, Any]] = {}
    if lake.exists(MODEL_EVIDENCE):
        last = max(dates)
        runs = {
            r["run_date"]: r.asDict()
            for r in lake.read(MODEL_EVIDENCE).where(f"run_date <= '{last.isoformat()}'").collect()
        }  # one row per scored date
    for day in model_degraded(dates, runs):
        out[day] = sorted({*out[day], MODEL_SOURCE})
    return out
