"""Export one day's recommendations as JSON lines plus a manifest, for consumers without Delta.

Layout under `out_dir` (default `paths.exports_dir`):

    <run_date>/policy_recommendations.<sha256[:16]>.jsonl   one recommendation a line,
                                              ordered by rec_id; named by its content
    <run_date>/manifest.json                  run_date, table and decision-log versions, the
                                              data file's name, row count, sha256 of its
                                              bytes, policy ids/versions/hashes
    <run_date>/policy_recommendations.jsonl   a copy of the data file, replaced last (for
                                              readers that predate `file` in the manifest)

The data file is written first and the manifest last, each by rename. The data file is
named by its checksum, so a re-export never replaces the bytes an earlier manifest names:
a consumer that read a manifest reads exactly the file it describes (the data files of
older manifests are removed once a newer manifest is in place, except the one before).
The export reads one version of each table (both recorded in the manifest: the policy
list comes from the pinned decision-log version, not from whatever is latest when the
manifest is written); it runs as a pipeline stage, under the date lock and the stage
journal. The bytes depend only on the table: re-exporting gives the same checksum.
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

DATA_FILE = "policy_recommendations.jsonl"  # the copy replaced last; `file` names the data
DATA_PREFIX = "policy_recommendations."
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


def data_file_name(sha256: str) -> str:
    """The data file's name: its content's digest, so no re-export overwrites it."""
    return f"{DATA_PREFIX}{sha256[:16]}.jsonl"


def _named_file(manifest: Path) -> str | None:
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8")).get("file") or "") or None
    except (OSError, ValueError):
        return None


def _remove_stale_data(target: Path, keep: set[str]) -> None:
    """Data files no manifest still names (the current one and the one before it stay)."""
    for path in target.glob(f"{DATA_PREFIX}*.jsonl"):
        if path.name != DATA_FILE and path.name not in keep:
            path.unlink(missing_ok=True)


def export_day(ctx: RunContext, run_date: date, out_dir: Path | str | None = None) -> ExportResult:
    """Write `<out_dir>/<run_date>/policy_recommendations.jsonl` and `manifest.json`."""
    lake = ctx.lake
    if not lake.exists(POLICY_RECOMMENDATIONS):
        raise PipelineError(
            f"export: {POLICY_RECOMMENDATIONS} does not exist; run the recommend stage first"
        )
    version = lake.version(POLICY_RECOMMENDATIONS)
    log_version = lake.version(DECISION_LOG) if lake.exists(DECISION_LOG) else None
    day = lake.read(POLICY_RECOMMENDATIONS, version=version).where(
        F.col("run_date") == F.lit(run_date)
    )

    target = (
        Path(out_dir if out_dir is not None else ctx.settings.paths.exports_dir)
        / run_date.isoformat()
    )
    target.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    rows = 0

    def write_lines(handle: Any) -> None:
        nonlocal rows
        for row in day.orderBy("rec_id").toLocalIterator():
            line = (recommendation_line(row.asDict()) + "\n").encode("utf-8")
            handle.write(line)
            digest.update(line)
            rows += 1

    staged = target / f".{DATA_PREFIX}staged.jsonl"
    _replace_atomically(staged, write_lines)
    data_file = target / data_file_name(digest.hexdigest())
    os.replace(staged, data_file)  # complete before any manifest names it

    policies: list[dict[str, Any]] = []
    if log_version is not None:
        policies = [
            {"id": r["policy_id"], "version": r["policy_version"], "sha256": r["policy_hash"]}
            for r in lake.read(DECISION_LOG, version=log_version)
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
        "decision_log_version": log_version,
        "file": data_file.name,
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
    previous = _named_file(manifest_file)
    _replace_atomically(
        manifest_file, lambda h: h.write((json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    )
    _replace_atomically(target / DATA_FILE, lambda h: h.write(data_file.read_bytes()))
    _remove_stale_data(target, {data_file.name, *([previous] if previous else [])})
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
