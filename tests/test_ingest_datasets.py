"""Ingest of real public recordings (../shared/datasets): every data line, key fields parsed.

The recordings are read in place (symlinked into a temporary raw/ tree) or, for zip
archives, extracted into the temporary folder; nothing is copied into the project. The
tests skip when the datasets folder is absent.
"""

from __future__ import annotations

import gzip
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.core.context import RunContext, StageResult
from jobs.stages.ingest.stage import run_ingest
from tests.conftest import DATASETS, test_settings

pytestmark = pytest.mark.datasets

OTRF = "otrf-security-datasets/datasets/atomic"
LINKED = {
    # (source, date folder): recordings read in place
    ("zeek_conn", "2022-06-13"): "stratosphere-zeek/008-zeek-mixed/data/conn.log.labeled",
    ("zeek_conn", "2017-03-08"): "stratosphere-zeek/001-zeek-scenario-malicious/labeled-conn.log",
    ("zeek_conn", "2022-09-29"): "stratosphere-zeek/002-zeek-scenario-port-scanning/conn.log",
    ("zeek_dns", "2018-03-24"): "wrccdc2018-zeek/zeek-json/dns.json.gz",
    ("sshd", "2026-12-10"): "loghub-auth/OpenSSH/OpenSSH_2k.log",
    ("sshd", "2026-06-14"): "loghub-auth/Linux/Linux_2k.log",
}
EXTRACTED = {
    (
        "windows",
        "2020-10-22",
    ): f"{OTRF}/windows/lateral_movement/host/purplesharp_ad_playbook_I.zip",
    (
        "windows",
        "2020-09-22",
    ): f"{OTRF}/windows/lateral_movement/host/covenant_copy_smb_CreateRequest.zip",
    ("cloudtrail", "2020-09-14"): f"{OTRF}/aws/collection/ec2_proxy_s3_exfiltration.zip",
}


@dataclass
class Recordings:
    ctx: RunContext
    result: StageResult
    files: dict[tuple[str, str], Path]  # (source, date) -> the file as placed in raw/
    tables: dict[str, DataFrame]  # bronze without `raw`, cached: the tests query it often

    def rows(self, source: str, day: str) -> DataFrame:
        return self.tables[source].where(F.col("run_date") == date.fromisoformat(day))


@pytest.fixture(scope="module")
def recordings(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Recordings]:
    if not DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS} (set POLICYLAKE_DATASETS)")
    sources = sorted({source for source, _ in [*LINKED, *EXTRACTED]})  # no Okta recording
    settings = test_settings(tmp_path_factory.mktemp("recordings"), ingest={"sources": sources})
    raw = Path(settings.paths.raw_root)
    files: dict[tuple[str, str], Path] = {}
    for (source, day), relative in LINKED.items():
        folder = raw / source / day
        folder.mkdir(parents=True)
        target = DATASETS / relative
        (folder / target.name).symlink_to(target)
        files[(source, day)] = folder / target.name
    for (source, day), relative in EXTRACTED.items():
        folder = raw / source / day
        with zipfile.ZipFile(DATASETS / relative) as archive:
            (member,) = [m for m in archive.namelist() if m.endswith(".json")]
            files[(source, day)] = Path(archive.extract(member, folder))
    ctx = RunContext(spark, settings)
    days = sorted({date.fromisoformat(day) for _, day in files})
    result = run_ingest(ctx, days)
    tables = {s: ctx.lake.read(f"bronze.{s}").drop("raw").cache() for s in sources}
    yield Recordings(ctx, result, files, tables)
    for table in tables.values():
        table.unpersist()


def data_lines(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return sum(1 for line in f if not line.startswith(b"#"))


def test_every_data_line_of_every_recording_is_a_bronze_row(
    datasets: Path, recordings: Recordings
) -> None:
    log = {
        (r["source"], r["run_date"].isoformat()): r
        for r in recordings.ctx.lake.read("ops.ingest_log").collect()
    }
    assert set(log) == set(recordings.files)
    for key, path in recordings.files.items():
        want = data_lines(path)
        assert log[key]["rows"] == want, key
    unparseable = {k: v["unparseable"] for k, v in log.items() if v["unparseable"]}
    # only loghub's mixed /var/log/messages sample holds lines of other programs
    assert unparseable == {("sshd", "2026-06-14"): 1323}
    # a source is missing exactly on the dates of the other recordings
    missing = {tuple(m.split("@")) for m in recordings.result.details["missing"]}
    days = {day for _, day in recordings.files}
    sources = {source for source, _ in recordings.files}
    assert missing == {(s, d) for s in sources for d in days} - set(recordings.files)


def test_no_recording_has_cast_errors(datasets: Path, recordings: Recordings) -> None:
    for source in ("windows", "zeek_conn", "zeek_dns", "cloudtrail", "sshd"):
        bad = recordings.tables[source].where(F.col("_cast_errors").isNotNull())
        assert bad.count() == 0, bad.select("_file", "_line", "_cast_errors").limit(5).collect()


def test_loghub_openssh_brute_force(datasets: Path, recordings: Recordings) -> None:
    ssh = recordings.rows("sshd", "2026-12-10")
    failed = ssh.where((F.col("ssh_event") == "failed") & (F.col("auth_method") == "password"))
    assert failed.count() == 520  # including 2 "message repeated 5 times: [ Failed password ...]"
    assert failed.select("src_ip").distinct().count() == 23
    assert failed.where(F.col("src_ip") == "183.62.140.253").count() == 286
    assertDataFrameEqual(
        ssh.where(F.col("ssh_event") == "accepted").select("host", "user", "src_ip", "auth_method"),
        [Row(host="LabSZ", user="fztu", src_ip="119.137.62.142", auth_method="password")],
    )
    assert ssh.where(F.col("ssh_event") == "invalid_user").count() == 113
    assert ssh.where(F.col("ssh_event") == "break_in_attempt").count() == 85
    assert ssh.where(F.col("event_time_raw").isNull() | F.col("pid").isNull()).count() == 0


def test_loghub_linux_messages_keep_only_sshd_lines_as_events(
    datasets: Path, recordings: Recordings
) -> None:
    path = recordings.files[("sshd", "2026-06-14")]
    sshd = re.compile(rb"^\w{3} +\d+ [\d:]+ \S+ sshd\(pam_unix\)\[\d+\]: ")
    with open(path, "rb") as f:
        want = sum(1 for line in f if sshd.match(line))
    rows = recordings.rows("sshd", "2026-06-14")
    assert rows.where(F.col("_parse_status") == "parsed").count() == want
    failures = rows.where(F.col("ssh_event") == "pam_auth_failure")
    assert failures.count() == 489
    assert failures.where(F.col("src_ip").isNull()).count() == 0


def test_stratosphere_labelled_conn_keeps_labels(datasets: Path, recordings: Recordings) -> None:
    for day, want in {
        "2022-06-13": {("Malicious", "External-Attack-to-Device"): 4201, ("Background", ""): 60},
        "2017-03-08": {("Malicious", "CC"): 244, ("Benign", "Google"): 9, ("Background", ""): 739},
    }.items():
        counts = {
            (r["label"], r["detailed_label"]): r["count"]
            for r in recordings.rows("zeek_conn", day)
            .groupBy("label", "detailed_label")
            .count()
            .collect()
        }
        for key, n in want.items():
            assert counts[key] == n, (day, key)
    ctu = recordings.rows("zeek_conn", "2022-06-13")
    assert ctu.where(F.col("label") == "Benign").count() == 1402
    first = ctu.orderBy("_line").first()
    assert first is not None
    assert (first["_line"], first["event_time_raw"], first["orig_h"], first["resp_p"], first["sensor"]) == (
        9, "1655071198.444458", "147.32.81.167", 443, "conn",
    )  # fmt: skip


def test_stratosphere_json_conn_port_scan(datasets: Path, recordings: Recordings) -> None:
    scan = recordings.rows("zeek_conn", "2022-09-29")
    top = scan.groupBy("orig_h").count().orderBy(F.desc("count")).first()
    assert top is not None and top["orig_h"] == "172.16.1.11"
    # the epoch text as written, not re-spelled by a float conversion
    first = scan.where(F.col("_line") == 1).first()
    assert first is not None and first["event_time_raw"] == "1664462456.755299"
    assert scan.where(F.col("resp_p").isNull() | F.col("proto").isNull()).count() == 0


def test_wrccdc_dns_json_gz(datasets: Path, recordings: Recordings) -> None:
    dns = recordings.rows("zeek_dns", "2018-03-24")
    assert dns.where(F.col("_parse_status") != "parsed").count() == 0
    first = dns.where(F.col("_line") == 1).first()
    assert first is not None
    assert (first["query"], first["qtype_name"], first["answers"], first["event_time_raw"]) == (
        "ise.wrccdc.org", "A", ["ise.wrccdc.cpp.edu", "134.71.3.16"], "2018-03-24T17:15:20.865716Z",
    )  # fmt: skip
    assert dns.where(F.col("query").isNull()).count() < dns.count() * 0.01


def test_otrf_windows_password_spray(datasets: Path, recordings: Recordings) -> None:
    win = recordings.rows("windows", "2020-10-22")
    spray = win.where(F.col("event_id") == 4625).select(
        "hostname", "target_user_name", "status", "logon_type"
    )
    assert spray.count() == 7
    assert {r["hostname"] for r in spray.collect()} == {"WORKSTATION5.theshire.local"}
    assert win.where((F.col("event_id") == 4776) & (F.col("status") == "0xc000006a")).count() == 7
    assert win.where(F.col("event_time_raw").isNull() | F.col("channel").isNull()).count() == 0
    sysmon = win.where(
        (F.col("channel") == "Microsoft-Windows-Sysmon/Operational") & (F.col("event_id") == 1)
    )
    assert sysmon.where(F.col("image").isNull()).count() == 0


def test_otrf_cloudtrail_ec2_proxy_exfiltration(datasets: Path, recordings: Recordings) -> None:
    ct = recordings.rows("cloudtrail", "2020-09-14")
    assert ct.count() == 103
    assert ct.where(F.col("event_time_raw").isNull() | F.col("event_name").isNull()).count() == 0
    first = ct.where(F.col("_line") == 1).first()
    assert first is not None
    assert (first["event_name"], first["user_name"], first["identity_type"], first["event_time_raw"]) == (
        "DescribeInstanceTypes", "pedro", "IAMUser", "2020-09-14T00:44:23.000Z",
    )  # fmt: skip
    assert ct.where(F.col("event_source") == "s3.amazonaws.com").count() > 0
