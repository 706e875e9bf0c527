"""Export one day's recommendations as JSON lines plus a manifest, for consumers without Delta.

Layout under `out_dir` (default `paths.exports_dir`):

    <run_date>/policy_recommendations.jsonl   one recommendation a line, ordered by rec_id
    <run_date>/manifest.json                  run_date, table version, row count, sha256 of
                                              the .jsonl bytes, policy ids/versions/hashes

The data file is written first and the manifest last, each by rename, so a consumer
that sees a manifest sees a complete file whose checksum it can verify. The export
reads one Delta version (recorded in the manifest), so both files describe the same
snapshot, and the bytes depend only on the table: re-exporting gives the same checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PipelineError
from jobs.core.tables import DECISION_LOG, POLICY_RECOMMENDATIONS

DATA_FILE = "policy_recommendations.jsonl"
MANIFEST_FILE = "manifest.json"
FORMAT = "policylake.policy_recommendations/v1"


@dataclass(frozen=True)
class ExportResult:
    run_date: date
    data_file: Path
    manifest_file: Path
    rows: int
    sha256: str
    table_version: int


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")  # session time zone is UTC
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def recommendation_line(row: dict[str, Any]) -> str:
    """One JSON object in table column order; timestamps as UTC ISO 8601 with Z."""
    ordered = {f.name: _json_value(row.get(f.name)) for f in POLICY_RECOMMENDATIONS.schema.fields}
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))


def _replace_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def export_day(ctx: RunContext, run_date: date, out_dir: Path | str | None = None) -> ExportResult:
    """Write `<out_dir>/<run_date>/policy_recommendations.jsonl` and `manifest.json`."""
    lake = ctx.lake
    if not lake.exists(POLICY_RECOMMENDATIONS):
        raise PipelineError(
            f"export: {POLICY_RECOMMENDATIONS} does not exist; run the recommend stage first"
        )
    version = lake.version(POLICY_RECOMMENDATIONS)
    day = lake.read(POLICY_RECOMMENDATIONS, version=version).where(
        F.col("run_date") == F.lit(run_date)
    )

    target = (
        Path(out_dir if out_dir is not None else ctx.settings.paths.exports_dir)
        / run_date.isoformat()
    )
    target.mkdir(parents=True, exist_ok=True)
    data_file = target / DATA_FILE
    digest = hashlib.sha256()
    rows = 0

    def write_lines(handle: Any) -> None:
        nonlocal rows
        for row in day.orderBy("rec_id").toLocalIterator():
            line = (recommendation_line(row.asDict()) + "\n").encode("utf-8")
            handle.write(line)
            digest.update(line)
            rows += 1

    _replace_atomically(data_file, write_lines)

    policies: list[dict[str, Any]] = []
    if lake.exists(DECISION_LOG):
        policies = [
            {"id": r["policy_id"], "version": r["policy_version"], "sha256": r["policy_hash"]}
            for r in lake.read(DECISION_LOG)
            .where(F.col("run_date") == F.lit(run_date))
            .select("policy_id", "policy_version", "policy_hash")
            .distinct()
            .orderBy("policy_id", "policy_version", "policy_hash")
            .collect()
        ]
    statuses = {
        r["status"]: r["count"] for r in day.groupBy("status").count().orderBy("status").collect()
    }
    manifest = {
        "format": FORMAT,
        "run_date": run_date.isoformat(),
        "table": POLICY_RECOMMENDATIONS.name,
        "table_version": version,
        "file": DATA_FILE,
        "rows": rows,
        "sha256": digest.hexdigest(),
        "statuses": statuses,
        "policies": policies,
        "columns": [
            {"name": f.name, "type": f.dataType.simpleString()}
            for f in POLICY_RECOMMENDATIONS.schema.fields
        ],
    }
    manifest_file = target / MANIFEST_FILE
    _replace_atomically(
        manifest_file, lambda h: h.write((json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    )
    return ExportResult(run_date, data_file, manifest_file, rows, digest.hexdigest(), version)


def run_export(ctx: RunContext, dates: list[date]) -> StageResult:
    """The `export` stage: each date's files under `paths.exports_dir`."""
    exported = [export_day(ctx, day) for day in dates]
    files = [str(e.manifest_file) for e in exported]
    return StageResult(
        stage="export",
        dates=list(dates),
        rows={"exported": sum(e.rows for e in exported)},
        details={
            "manifests": files,
            "last_manifest": files[-1] if files else "",
            "exports": [
                {
                    "run_date": e.run_date.isoformat(),
                    "rows": e.rows,
                    "table_version": e.table_version,
                    "data_file": str(e.data_file),
                    "sha256": e.sha256,
                    "manifest": str(e.manifest_file),
                }
                for e in exported
            ],
        },
    )
