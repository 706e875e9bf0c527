"""Model evidence: which model scored a date (version and file digest), or why none did, and
whether that changed since the date before. One row per date in ops.model_evidence, what the
guardrails read to discount model evidence (docs/scoring.md, "Model evidence").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

CHAMPION = "champion"  # scored with the checked champion
NONE = "none"  # the registry answered: no champion yet
INCOMPATIBLE = "incompatible"  # the champion was trained on another feature list
UNAVAILABLE = "unavailable"  # the registry could not be reached; signals alone (configured)


@dataclass(frozen=True)
class ModelUse:
    """What the score stage scored a run's dates with."""

    model_name: str
    status: str
    reason: str
    version: str | None = None
    digest: str | None = None
    signed: bool | None = None


def evidence_rows(
    use: ModelUse, dates: Sequence[date], previous: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """One row per date (in date order): `use`, compared with the row before it. `previous` is
    the latest row recorded before the first date (None: no earlier date); each later date of
    the run is compared with the one before it, so a range changes at most on its first date."""
    rows: list[dict[str, Any]] = []
    before = previous
    for day in sorted(dates):
        prev_version = before.get("model_version") if before else None
        prev_digest = before.get("model_digest") if before else None
        changed = (use.version, use.digest) != (prev_version, prev_digest)
        row = {
            "run_date": day,
            "model_name": use.model_name,
            "status": use.status,
            "model_version": use.version,
            "model_digest": use.digest,
            "signed": use.signed,
            "previous_date": before.get("run_date") if before else None,
            "previous_version": prev_version,
            "previous_digest": prev_digest,
            "changed": changed,
            "degraded": use.status != CHAMPION or changed,
            "reason": use.reason,
        }
        rows.append(row)
        before = row
    return rows
