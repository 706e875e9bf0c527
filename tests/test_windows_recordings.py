"""Real Windows recordings (OTRF, ../shared/datasets) through ingest, validate and normalize,
as one range of days in one lake: at most 1% of each recording is quarantined, the source
is ok, every event of every channel reaches silver with its event data, and what policylake
has no mapping for yet is counted, not dropped. Skips when the datasets folder is absent.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.core.context import RunContext
from jobs.stages.ingest.stage import run_ingest
from jobs.stages.normalize.stage import run_normalize
from jobs.stages.validate.stage import run_validate
from tests.bronze_frames import write_reference
from tests.conftest import DATASETS, test_settings

pytestmark = pytest.mark.datasets

OTRF = "otrf-security-datasets/datasets/atomic/windows"
RECORDINGS = (
    # LSASS dump over RDP: Sysmon 10/7/11/12/13, Security, PowerShell; NXLog with record numbers
    "credential_access/host/rdp_interactive_taskmanager_lsass_dump.zip",
    # a PowerShell export: TimeCreated, no @timestamp, no record numbers, log clearing (1102)
    "credential_access/host/cmd_psexec_lsa_secrets_dump.zip",
    # Winlogbeat 6.x: computer_name, log_name, event_data / user_data
    "privilege_escalation/host/empire_invoke_runas.tar.gz",
)


def _lines(path: Path) -> bytes:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            (member,) = [m for m in archive.namelist() if m.endswith(".json")]
            return archive.read(member)
    with tarfile.open(path) as archive:
        (member,) = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".json")]
        handle = archive.extractfile(member)
        assert handle is not None
        return handle.read()


def _day(text: bytes) -> date:
    """The recording's date, from its first event (each lasts a few minutes)."""
    first = json.loads(text.split(b"\n", 1)[0])
    return date.fromisoformat(str(first.get("@timestamp") or first["TimeCreated"])[:10])


@dataclass
class Lake:
    ctx: RunContext
    days: dict[str, date]  # recording -> its date folder


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    if not DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS} (set POLICYLAKE_DATASETS)")
    settings = test_settings(tmp_path_factory.mktemp("windows"), ingest={"sources": ["windows"]})
    write_reference(settings.paths.reference_root)
    days = {}
    for recording in RECORDINGS:
        text = _lines(DATASETS / OTRF / recording)
        days[recording] = _day(text)
        folder = Path(settings.paths.raw_root) / "windows" / days[recording].isoformat()
        folder.mkdir(parents=True)
        (folder / f"{Path(recording).name.split('.')[0]}.json").write_bytes(text)
    assert len(set(days.values())) == len(days)
    ctx = RunContext(spark, settings)
    dates = sorted(days.values())
    run_ingest(ctx, dates)
    run_validate(ctx, dates)
    run_normalize(ctx, dates)
    return Lake(ctx, days)


def test_each_recording_is_kept_whole_and_the_source_is_ok(lake: Lake) -> None:
    tables = lake.ctx.lake
    recon = {r["run_date"]: r for r in tables.read("ops.reconciliation").collect()}
    status = {r["run_date"]: r for r in tables.read("ops.source_status").collect()}
    for recording, day in lake.days.items():
        r = recon[day]
        assert r["balanced"] and r["raw_rows"] > 0, recording
        assert r["quarantined"] <= 0.01 * r["raw_rows"], (
            recording,
            r["quarantined"],
            r["raw_rows"],
        )
        assert status[day]["status"] == "ok", (recording, status[day]["reasons"])


def test_every_channel_reaches_silver_with_its_event_data(lake: Lake) -> None:
    tables = lake.ctx.lake
    bronze = tables.read("bronze.windows").where(F.col("_parse_status") == "parsed")
    silver = tables.read("silver.events")
    channels = {r["channel"] for r in bronze.select("channel").distinct().collect()}
    assert {"Security", "Microsoft-Windows-Sysmon/Operational"} <= channels
    # every channel and event id of bronze is in silver, unmapped ones included
    pairs = bronze.select("run_date", "channel", "event_id").distinct()
    assert pairs.join(silver, ["run_date", "channel", "event_id"], "left_anti").count() == 0
    # event data travels whole: bronze and silver hold the same map for each line
    lost = (
        bronze.select("_file", "_line", "event_data")
        .join(
            silver.select(
                F.col("bronze_file").alias("_file"),
                F.col("bronze_line").alias("_line"),
                F.col("event_data").alias("silver_data"),
            ),
            ["_file", "_line"],
        )
        .where(~(F.to_json("event_data") == F.to_json("silver_data")))
    )
    assert lost.count() == 0
    classes = {r["class_name"] for r in silver.select("class_name").distinct().collect()}
    assert {"process", "module", "registry", "authentication", "other"} <= classes
    # the LSASS access that recording is about is there, its details in event_data
    lsass = silver.where(
        (F.col("class_name") == "process")
        & (F.col("activity_name") == "access")
        & F.lower(F.col("event_data")["TargetImage"]).endswith("\\lsass.exe")
    )
    assert lsass.count() > 0


def test_unmapped_events_are_counted_per_day_and_never_fail(lake: Lake) -> None:
    dq = lake.ctx.lake.read("ops.dq_results")
    unmapped = dq.where(F.col("expectation").endswith("(class_name)[unmapped]")).collect()
    assert {r["run_date"] for r in unmapped} == set(lake.days.values())
    silver = lake.ctx.lake.read("silver.events")
    for r in unmapped:
        other = silver.where(
            (F.col("run_date") == r["run_date"]) & (F.col("class_name") == "other")
        )
        assert r["success"] and not r["critical"]
        assert r["unexpected_count"] == other.count() > 0
        assert 0 < json.loads(r["details"])["unexpected_percent"] < 100
    skew = dq.where(F.col("expectation") == "clock_skew").collect()
    # one source only: nothing to compare a clock with, so nothing is claimed
    assert {r["run_date"] for r in skew} == set(lake.days.values())
    assert all(r["success"] and json.loads(r["details"])["skew_minutes"] is None for r in skew)
