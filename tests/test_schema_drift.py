"""Schema drift and gaps: new, missing and retyped fields, a source missing for a day, and
files that arrive a day late.

Hand-written Okta lines and Zeek conn TSV files (with a header that gained `orig_asn`
and lost `proto`) go through ingest, validate and normalize. What must hold:

- every drift is one `schema_drift` row per source and date in ops.dq_results (suite
  `ingest`) naming the new, missing and retyped top-level fields, and a one-line message
  in the stage result; rows that only carry new fields are still events;
- a changed type lands in silver.quarantine (`type_check`) with the cast error as reason;
- a source that delivered nothing is a failed `delivery` row and `missing` in
  ops.source_status, with the reason;
- a file added to yesterday's folder after it was ingested is noticed when today runs
  (`ingest.reprocess_days`), yesterday is re-run first with a one-line notice, and the
  lake equals running both days with the file in place from the start.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.core.context import RunContext, StageResult
from jobs.core.lake import Lake
from jobs.pipeline import runner as pipeline
from jobs.pipeline.runner import StageJournal, run_stages
from jobs.stages.ingest.parsers.zeek import ZEEK_DEFAULT_FIELDS
from jobs.stages.ingest.stage import late_deliveries
from tests.bronze_frames import write_reference
from tests.conftest import test_settings

D1, D2, D3 = date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)
STAGES = ["ingest", "validate", "normalize"]


def okta(n: int, day: date, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "uuid": f"a1b2c3d4-{n:04d}-11ef-8f4b-{day.day:012d}",
        "published": f"{day.isoformat()}T08:{n % 60:02d}:01.000Z",
        "eventType": "user.session.start",
        "version": "0",
        "severity": "INFO",
        "displayMessage": "User login to Okta",
        "actor": {"id": "00u1abcdEFGH2345ijkl", "type": "User", "alternateId": "jane.doe@corp.example"},
        "client": {"ipAddress": "10.0.0.5", "userAgent": {"rawUserAgent": "Mozilla/5.0"}},
        "outcome": {"result": "SUCCESS"},
        "debugContext": {"debugData": {}},
    }  # fmt: skip
    record.update(changes)
    return {k: v for k, v in record.items() if v is not None}


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


CONN = {
    "ts": "1790841601.123456", "uid": "CHLXQF2OBY4onAR0Ug", "id.orig_h": "10.20.0.15",
    "id.orig_p": "62771", "id.resp_h": "10.0.0.10", "id.resp_p": "443", "proto": "tcp",
    "service": "ssl", "duration": "1.1", "orig_bytes": "1596", "resp_bytes": "4039",
    "conn_state": "SF", "local_orig": "T", "local_resp": "F", "missed_bytes": "0",
    "history": "ShADdaFf", "orig_pkts": "14", "orig_ip_bytes": "1016", "resp_pkts": "16",
    "resp_ip_bytes": "1226", "tunnel_parents": "(empty)", "orig_asn": "64496",
}  # fmt: skip


def zeek_tsv(fields: list[str], rows: list[dict[str, str]]) -> bytes:
    head = ["#separator \\x09", "#path\tconn", "\t".join(["#fields", *fields])]
    body = ["\t".join(r[f] for f in fields) for r in rows]
    return b"".join(x.encode() + b"\n" for x in [*head, *body, "#close\t2026-10-02-00-00-00"])


def _ts(day: date, i: int) -> str:
    return f"{1790812800 + (day - D1).days * 86400 + 3600 + i}.000001"


def write_tree(raw: Path) -> None:
    def put(source: str, day: date, name: str, data: bytes) -> None:
        folder = raw / source / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)

    d1 = [okta(i, D1) for i in range(10)]
    d1 += [okta(i, D1, riskScore=7, threatSuspected=True) for i in range(10, 13)]
    d1 += [okta(i, D1, actor="jane.doe") for i in range(13, 15)]  # object -> string
    put("idp", D1, "okta_system_log.jsonl", jsonl(d1))
    # D2: no idp folder at all. D3: the vendor renamed `published` to `eventTime`.
    d3 = [okta(i, D3, published=None, eventTime=f"{D3.isoformat()}T09:00:00Z") for i in range(4)]
    put("idp", D3, "okta_system_log.jsonl", jsonl(d3))

    drifted = [f for f in ZEEK_DEFAULT_FIELDS["zeek_conn"] if f != "proto"] + ["orig_asn"]
    rows = [{**CONN, "uid": f"Cd1row{i:04d}", "ts": _ts(D1, i)} for i in range(5)]
    rows[4]["id.orig_p"] = "abc"  # a port that is not a number
    put("zeek_conn", D1, "conn.sensor01.log", zeek_tsv(drifted, rows))
    plain = list(ZEEK_DEFAULT_FIELDS["zeek_conn"])
    rows2 = [{**CONN, "uid": f"Cd2row{i:04d}", "ts": _ts(D2, i)} for i in range(3)]
    put("zeek_conn", D2, "conn.sensor01.log", zeek_tsv(plain, rows2))
    # D3: nothing from Zeek


@dataclass
class Drift:
    ctx: RunContext
    results: dict[str, StageResult]


@pytest.fixture(scope="module")
def drift(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Drift:
    settings = test_settings(
        tmp_path_factory.mktemp("drift"), ingest={"sources": ["idp", "zeek_conn"]}
    )
    write_reference(settings.paths.reference_root)
    write_tree(Path(settings.paths.raw_root))
    ctx = RunContext(spark, settings)
    results = {r.stage: r for r in run_stages(ctx, STAGES, [D1, D2, D3])}
    return Drift(ctx, results)


def _checks(lake: Lake, expectation: str) -> list[Row]:
    rows = (
        lake.read("ops.dq_results")
        .where((F.col("suite") == "ingest") & (F.col("expectation") == expectation))
        .collect()
    )
    return sorted(rows, key=lambda r: (r["source"], r["run_date"]))


def test_schema_drift_rows_name_new_missing_and_retyped_fields(drift: Drift) -> None:
    got = [
        (r["source"], r["run_date"], r["success"], r["unexpected_count"], r["element_count"],
         r["critical"], {k: v for k, v in json.loads(r["details"]).items() if k != "message"})
        for r in _checks(drift.ctx.lake, "schema_drift")
    ]  # fmt: skip
    none: dict[str, int] = {}
    assert got == [
        ("idp", D1, False, 3, 15, False,
         {"new_fields": {"riskScore": 3, "threatSuspected": 3}, "missing_fields": [],
          "type_changes": {"actor": 2}, "rows": 15}),
        ("idp", D3, False, 2, 4, False,
         {"new_fields": {"eventTime": 4}, "missing_fields": ["published"], "type_changes": none,
          "rows": 4}),
        ("zeek_conn", D1, False, 3, 5, False,
         {"new_fields": {"orig_asn": 5}, "missing_fields": ["proto"],
          "type_changes": {"orig_p": 1}, "rows": 5}),
        ("zeek_conn", D2, True, 0, 3, False,
         {"new_fields": none, "missing_fields": [], "type_changes": none, "rows": 3}),
    ]  # fmt: skip
    assert drift.results["ingest"].details["schema_drift"] == (
        "idp 2026-10-01: new field(s) riskScore (3 rows), threatSuspected (3 rows); "
        "changed type actor (2 rows); "
        "idp 2026-10-03: new field(s) eventTime (4 rows); missing field(s) published "
        "(in none of 4 rows); "
        "zeek_conn 2026-10-01: new field(s) orig_asn (5 rows); missing field(s) proto "
        "(in none of 5 rows); changed type orig_p (1 row)"
    )


def test_changed_types_are_quarantined_with_the_cast_error_and_new_fields_still_flow(
    drift: Drift,
) -> None:
    lake = drift.ctx.lake
    quarantine = lake.read_dates("silver.quarantine", [D1]).where(F.col("rule") == "type_check")
    assertDataFrameEqual(
        quarantine.select("source", "bronze_line", "reason"),
        [
            Row(source="idp", bronze_line=14, reason="actor: 'jane.doe' is not an object"),
            Row(source="idp", bronze_line=15, reason="actor: 'jane.doe' is not an object"),
            Row(source="zeek_conn", bronze_line=8, reason="orig_p: 'abc' is not int"),
        ],
    )
    events = lake.read_dates("silver.events", [D1])
    # the rows with extra fields are events; Zeek rows without `proto` have no protocol
    assert events.where(F.col("source") == "idp").count() == 13
    assert [r["protocol"] for r in events.where(F.col("source") == "zeek_conn").collect()] == [
        None
    ] * 4


def test_a_missing_source_is_a_failed_delivery_and_missing_status(drift: Drift) -> None:
    lake = drift.ctx.lake
    delivery = [
        (r["source"], r["run_date"], r["success"], json.loads(r["details"]).get("reason"))
        for r in _checks(lake, "delivery")
    ]
    assert delivery == [
        ("idp", D1, True, None),
        ("idp", D2, False, "no idp data delivered for 2026-10-02"),
        ("idp", D3, True, None),
        ("zeek_conn", D1, True, None),
        ("zeek_conn", D2, True, None),
        ("zeek_conn", D3, False, "no zeek_conn data delivered for 2026-10-03"),
    ]
    status = {
        (r["source"], r["run_date"]): (r["status"], r["reasons"])
        for r in lake.read("ops.source_status").collect()
    }
    assert status[("idp", D2)] == ("missing", ["no idp data delivered for 2026-10-02"])
    assert status[("zeek_conn", D3)] == ("missing", ["no zeek_conn data delivered for 2026-10-03"])
    # renamed timestamp: every row fails the event_time check, so the day is degraded
    assert status[("idp", D3)][0] == "degraded"
    assert drift.results["ingest"].details["missing"] == ["idp@2026-10-02", "zeek_conn@2026-10-03"]


# ---------------------------------------------------------------------------------------
# Late delivery: the reprocessing window
# ---------------------------------------------------------------------------------------


def _late_tree(raw: Path, with_late_file: bool) -> None:
    for day, name, records in (
        (D1, "okta_system_log.jsonl", [okta(i, D1) for i in range(6)]),
        (D2, "okta_system_log.jsonl", [okta(i, D2) for i in range(5)]),
    ):
        folder = raw / "idp" / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(jsonl(records))
    if with_late_file:  # the collector's second file for D1, delivered during D2
        late = [okta(i, D1, published=f"{D1.isoformat()}T23:{i:02d}:00Z") for i in range(50, 53)]
        (raw / "idp" / D1.isoformat() / "okta_late.jsonl").write_bytes(jsonl(late))


LATE_TABLES = [
    "bronze.idp",
    "ops.ingest_log",
    "ops.dq_results",
    "ops.source_status",
    "ops.reconciliation",
    "silver.events",
    "silver.quarantine",
]


def test_a_late_file_is_picked_up_by_the_next_run_and_equals_running_again(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = test_settings(tmp_path / "late", ingest={"sources": ["idp"]})
    assert settings.ingest.reprocess_days == 1
    write_reference(settings.paths.reference_root)
    raw = Path(settings.paths.raw_root)
    _late_tree(raw, with_late_file=False)
    ctx = RunContext(spark, settings)
    list(run_stages(ctx, STAGES, [D1]))
    list(run_stages(ctx, STAGES, [D2]))
    assert late_deliveries(ctx, [D1]) == {}  # nothing changed since

    _late_tree(raw, with_late_file=True)
    assert late_deliveries(ctx, [D1]) == {D1: ["idp: new file okta_late.jsonl"]}
    off = RunContext(
        spark,
        settings.model_copy(
            update={"ingest": settings.ingest.model_copy(update={"reprocess_days": 0})}
        ),
    )
    assert pipeline._late_dates(off, StageJournal(off.lake), STAGES, [D2]) == {}
    capsys.readouterr()
    results = [(r.stage, r.dates) for r in run_stages(ctx, STAGES, [D2])]
    notice = [x for x in capsys.readouterr().err.splitlines() if x.startswith("late delivery")]
    assert notice == [
        "late delivery for 2026-10-01 (idp: new file okta_late.jsonl): "
        "re-running 2026-10-01 before 2026-10-02"
    ]
    assert results == [(s, [D1]) for s in STAGES] + [(s, [D2]) for s in STAGES]
    assert late_deliveries(ctx, [D1]) == {}  # picked up: the log matches the folder again
    assert ctx.lake.read_dates("silver.events", [D1]).count() == 9

    fresh = test_settings(tmp_path / "fresh", ingest={"sources": ["idp"]})
    write_reference(fresh.paths.reference_root)
    shutil.copytree(raw, fresh.paths.raw_root, dirs_exist_ok=True)
    again = RunContext(spark, fresh)
    list(run_stages(again, STAGES, [D1, D2]))
    for table in LATE_TABLES:
        assertDataFrameEqual(
            portable(ctx.lake, table), portable(again.lake, table), checkRowOrder=False
        )


def portable(lake: Lake, table: str) -> Any:
    """The table's D1/D2 rows, file paths without the work directory."""
    df = lake.read_dates(table, [D1, D2])
    for name in ("_file", "bronze_file"):
        if name in df.columns:
            df = df.withColumn(name, F.regexp_replace(name, r"^.*/raw/", "raw/"))
    return df
