"""Table upkeep on a generated lake: retention properties, the small tables' layout,
compaction and VACUUM; rows unchanged; the documented consumer's Change Data Feed cursor works
inside the retention window and resynchronises outside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from jobs.core.context import RunContext
from jobs.core.tables import CATALOGUE, POLICY_RECOMMENDATIONS, SOURCE_STATUS
from jobs.pipeline.maintenance import maintain
from tests.conftest import test_settings
from tests.test_recommend import consumer_example

DAYS = [date(2026, 10, 1) + timedelta(days=i) for i in range(3)]
STAGES = ["ingest", "validate", "normalize", "baselines", "score", "recommend"]


@dataclass
class GeneratedLake:
    ctx: RunContext
    workdir: Path
    cursor: int  # gold.policy_recommendations' version after the first day: a consumer's cursor
    versions: dict[str, int]  # every table's version before maintenance


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeneratedLake]:
    """Three generated days of 12 people, run night by night (one commit per table and night,
    as in production); ops.source_status is then rewritten partitioned by date, as a lake
    written before the small tables stopped being partitioned."""
    from jobs import generate
    from jobs.pipeline.runner import run_stages

    work = tmp_path_factory.mktemp("maintenance")
    generate.generate_telemetry(work, DAYS[0], days=len(DAYS), users=12, seed=11, workers=1)
    ctx = RunContext(spark, test_settings(work, ingest={"sources": ["idp", "sshd"]}))
    cursor = -1
    for day in DAYS:
        list(run_stages(ctx, STAGES, [day]))
        if cursor < 0:
            cursor = ctx.lake.version(POLICY_RECOMMENDATIONS)
    old = ctx.lake.read(SOURCE_STATUS)
    old.write.format("delta").mode("overwrite").option("overwriteSchema", "true").partitionBy(
        "run_date"
    ).save(ctx.lake.path(SOURCE_STATUS))
    versions = {t.name: ctx.lake.version(t) for t in CATALOGUE.values() if ctx.lake.exists(t)}
    yield GeneratedLake(ctx, work, cursor, versions)


def _consumer(lake_root: str, cursor: int, tmp_path: Path) -> dict[str, Any]:
    script = tmp_path / "consumer.py"
    script.write_text(consumer_example())
    env = {**os.environ, "POLICYLAKE_LAKE": lake_root, "POLICYLAKE_LAST_SEEN_VERSION": str(cursor)}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, check=False
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_maintenance_compacts_keeps_rows_and_cursors_inside_the_window(
    lake: GeneratedLake, tmp_path: Path
) -> None:
    ctx = lake.ctx
    before = _consumer(ctx.settings.paths.lake_root, lake.cursor, tmp_path)
    assert before["resynced"] is False and before["change_rows"] > 0
    tables = [t for t in CATALOGUE.values() if ctx.lake.exists(t)]
    files_before = {t.name: ctx.lake.layout(t).files for t in tables}
    for t in tables:  # created with the retention settings: no window before the first upkeep
        created = ctx.lake.layout(t).properties
        assert created.get("delta.deletedFileRetentionDuration") == "interval 7 days", t.name
        assert created.get("delta.logRetentionDuration") == "interval 30 days", t.name

    done = {u.table: u for u in maintain(ctx)}

    assert set(done) == {t.name for t in tables}
    for t in tables:
        layout = ctx.lake.layout(t)
        # every table reads the rows it had (time travel to the version before maintenance)
        assertDataFrameEqual(ctx.lake.read(t), ctx.lake.read(t, version=lake.versions[t.name]))
        assert layout.partition_columns == t.partition_by, t.name
        assert layout.properties["delta.logRetentionDuration"] == "interval 30 days"
        assert layout.properties["delta.deletedFileRetentionDuration"] == "interval 7 days"
        assert done[t.name].files_after == layout.files <= files_before[t.name], t.name
        if not t.partition_by:  # one small file per night, compacted into one
            assert layout.files == 1, t.name
    assert done[SOURCE_STATUS.name].relaid_out
    assert not done[POLICY_RECOMMENDATIONS.name].relaid_out
    assert sum(u.files_after for u in done.values()) < sum(files_before.values())
    small = [t.name for t in tables if not t.partition_by]
    assert sum(files_before[n] for n in small) >= 3 * len(small)  # a file per night at least

    # the consumer's cursor of the first night is well inside the 7-day window: same changes
    after = _consumer(ctx.settings.paths.lake_root, lake.cursor, tmp_path)
    assert after["resynced"] is False
    assert (after["change_rows"], after["inserted_rec_ids"]) == (
        before["change_rows"],
        before["inserted_rec_ids"],
    )
    assert after["to_enforce"] == before["to_enforce"]


def test_a_cursor_outside_the_window_resynchronises_from_a_snapshot(
    lake: GeneratedLake, tmp_path: Path
) -> None:
    """Runs after the test above. A short window, then maintenance vacuums with it: the
    first night's cursor is now outside it, and the consumer takes a snapshot instead."""
    short = test_settings(
        lake.workdir,
        ingest={"sources": ["idp", "sshd"]},
        maintenance={"log_retention": "1 second", "deleted_file_retention": "1 second"},
    )
    ctx = RunContext(lake.ctx.spark, short)
    snapshot = _consumer(short.paths.lake_root, lake.cursor, tmp_path)
    time.sleep(2)
    done = maintain(ctx, [POLICY_RECOMMENDATIONS])
    assert done[0].properties_set == (
        "delta.deletedFileRetentionDuration",
        "delta.logRetentionDuration",
    )
    expired = _consumer(short.paths.lake_root, lake.cursor, tmp_path)
    assert expired["resynced"] is True and expired["change_rows"] == 0
    assert expired["to_enforce"] == snapshot["to_enforce"]  # the whole state, from the table
    assert expired["cursor"] == ctx.lake.version(POLICY_RECOMMENDATIONS)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"DELETED_FILE_RETENTION": "a week"}, "must look like 30 days"),
        ({"LOG_RETENTION": "2 days", "DELETED_FILE_RETENTION": "7 days"}, "must not exceed"),
        ({"SCHEDULE": "weekly"}, "five-field cron"),
    ],
)
def test_retention_and_schedule_settings_are_checked(
    overrides: dict[str, str], problem: str
) -> None:
    from jobs.core.config import load_settings
    from jobs.core.errors import ConfigError

    environ = {f"POLICYLAKE__MAINTENANCE__{k}": v for k, v in overrides.items()}
    with pytest.raises(ConfigError, match=problem):
        load_settings(None, environ=environ)
    ok = load_settings(None, environ={"POLICYLAKE__MAINTENANCE__DELETED_FILE_RETENTION": "2 Weeks"})
    assert ok.maintenance.table_properties() == {
        "delta.logRetentionDuration": "interval 30 days",
        "delta.deletedFileRetentionDuration": "interval 2 weeks",
    }
