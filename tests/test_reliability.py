"""Crash safety and concurrency: SIGKILL in the middle of a write, two runs at once.

A generated organisation (12 users, idp and sshd, plus a burst of failed ssh passwords so
the recommend stage has something to act on) is run undisturbed once: that lake is the
reference. The other lakes start from its raw files and must end up equal to it:

- `normalize` and `recommend` are started as real `policylake run` processes and SIGKILLed
  (the whole process group) while their data files are in the table folder but not yet
  committed (the opt-in hook `POLICYLAKE_TEST_PAUSE_BEFORE_COMMIT` holds the commit back);
  the next stage then refuses to read the half-written date, and re-running the stage gives
  the reference's rows: nothing partial, nothing duplicated, reconciliation balanced;
- two dates run at the same time both succeed and equal running them one after the other;
  two runs of the same date at the same time: one stops at once with a one-line message
  (or they serialize), and the lake equals one run.

The lock, the stage journal and the commit retry are also tested on their own (no JVM).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.core.context import RunContext, StageResult
from jobs.core.errors import PipelineError
from jobs.core.lake import Lake, commit_with_retry
from jobs.core.locks import lock_dates
from jobs.pipeline import runner as pipeline
from jobs.pipeline.journal import (
    FAILED,
    FINISHED,
    INGEST,
    STARTED,
    StageJournal,
    StageRun,
    journal_keys,
)
from jobs.pipeline.runner import check_upstream, run_stages
from tests.conftest import REPO_ROOT, small_data_env, test_settings
from tests.crash_hooks import PAUSE_BEFORE_COMMIT_ENV, PAUSE_SECONDS_ENV

D1, D4 = date(2026, 10, 1), date(2026, 10, 4)  # non-adjacent: neither is the other's history
SOURCES = ["idp", "sshd"]
POLICYLAKE = Path(sys.executable).parent / "policylake"
SILVER = ["silver.events", "silver.quarantine", "ops.reconciliation"]
UP_TO_NORMALIZE = ["ingest", "validate", "normalize"]
COMPARED = [
    "bronze.idp",
    "bronze.sshd",
    "ops.ingest_log",
    "ops.dq_results",
    "ops.source_status",
    *SILVER,
]


# ---------------------------------------------------------------------------------------
# The reference lake (undisturbed, in-process) and helpers
# ---------------------------------------------------------------------------------------


@dataclass
class Reference:
    workdir: Path
    ctx: RunContext
    crash_base: Path  # a copy of the workdir after ingest + validate of D1


def _brute_force_lines(reference_root: Path) -> bytes:
    """20 failed ssh passwords against one directory account within ten minutes."""
    with (reference_root / "identity_directory.csv").open(encoding="utf-8") as fh:
        account = next(csv.DictReader(fh))["sam_account"].split("\\")[-1]
    return b"".join(
        f"Oct  1 10:{i // 2:02d}:{i % 2 * 30:02d} web-01 sshd[{4000 + i}]: Failed password for "
        f"{account} from 203.0.113.77 port {50000 + i} ssh2\n".encode()
        for i in range(20)
    )


def _settings(workdir: Path) -> Any:
    return test_settings(workdir, ingest={"sources": SOURCES})


@pytest.fixture(scope="module")
def reference(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    from jobs.generate import generate_telemetry

    gen = tmp_path_factory.mktemp("reliability-gen")
    generate_telemetry(gen, D1, 4, 12, 7, workers=1)
    workdir = tmp_path_factory.mktemp("reliability-ref")
    for part in ("raw", "reference"):
        shutil.copytree(gen / part, workdir / part)
    for source in {p.name for p in (workdir / "raw").iterdir()} - set(SOURCES):
        shutil.rmtree(workdir / "raw" / source)
    (workdir / "raw" / "sshd" / D1.isoformat() / "auth.web-01.log").write_bytes(
        _brute_force_lines(workdir / "reference")
    )
    ctx = RunContext(spark, _settings(workdir))
    list(run_stages(ctx, ["ingest", "validate"], [D1]))
    crash_base = tmp_path_factory.mktemp("reliability-crash-base") / "w"
    shutil.copytree(workdir, crash_base)
    list(run_stages(ctx, ["normalize", "baselines", "score", "recommend"], [D1]))
    list(run_stages(ctx, UP_TO_NORMALIZE, [D4]))
    assert ctx.lake.read_dates("gold.policy_recommendations", [D1]).count() > 0
    return Reference(workdir, ctx, crash_base)


def portable(df: DataFrame) -> DataFrame:
    """File paths without the work directory (lakes in different folders hold the same rows)."""
    for name in ("_file", "bronze_file"):
        if name in df.columns:
            df = df.withColumn(name, F.regexp_replace(name, r"^.*/raw/", "raw/"))
    return df


def assert_tables_equal(
    lake: Lake, ref: Lake, tables: list[str], dates: list[date], where: str = ""
) -> None:
    for table in tables:
        ours, theirs = (
            portable(lake.read_dates(table, dates)),
            portable(ref.read_dates(table, dates)),
        )
        try:
            assertDataFrameEqual(ours, theirs, checkRowOrder=False)
        except AssertionError as exc:
            raise AssertionError(f"{where}{table} differs from the reference: {exc}") from None


def launch(
    workdir: Path, day: date, stages: list[str], log: Path, **env: str
) -> subprocess.Popen[bytes]:
    """`policylake run` in its own process group (killed as a whole), small local Spark."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("POLICYLAKE")}
    environ.update(
        POLICYLAKE__SPARK__MASTER="local[2]",
        POLICYLAKE__SPARK__SHUFFLE_PARTITIONS="2",
        POLICYLAKE__SPARK__DRIVER_MEMORY="1g",
        POLICYLAKE__INGEST__SOURCES=json.dumps(SOURCES),
        **small_data_env(),
        **env,
    )
    # the command line, with a table's commit held back when the test asks (tests/crash_hooks.py)
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), environ.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "tests.crash_hooks"]
    command += ["run", "--workdir", str(workdir), "--date", day.isoformat()]
    command += ["--stage", ",".join(stages)]
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=workdir, env=environ, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def committed_files(table_dir: Path) -> set[str]:
    """Data files some commit of the table's `_delta_log` added (relative, unquoted)."""
    out = set()
    for commit in sorted((table_dir / "_delta_log").glob("*.json")):
        for line in commit.read_text(encoding="utf-8").splitlines():
            action = json.loads(line)
            if "add" in action:
                out.add(unquote(action["add"]["path"]))
    return out


def uncommitted_files(table_dir: Path) -> list[str]:
    if not table_dir.is_dir():
        return []
    on_disk = {
        p.relative_to(table_dir).as_posix()
        for p in table_dir.rglob("*.parquet")
        if "_delta_log" not in p.parts
    }
    return sorted(on_disk - committed_files(table_dir))


def kill_when_written(proc: subprocess.Popen[bytes], table_dir: Path, log: Path) -> list[str]:
    """Watch the table folder; SIGKILL the process group once a data file is on disk that
    no commit references (the write is half done). Returns those files."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        orphans = uncommitted_files(table_dir)
        if orphans:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            return orphans
        if proc.poll() is not None:
            pytest.fail(
                f"the stage ended (rc {proc.returncode}) before writing: {log.read_text()[-3000:]}"
            )
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"no data file appeared in {table_dir}: {log.read_text()[-3000:]}")


def _live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are not zombies (a killed JVM whose parent died is
    reparented and may stay a zombie until init reaps it: it holds no files, runs nothing)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


def _group_is_gone(pgid: int, timeout: float = 30.0) -> bool:
    """Every process of the group has exited (zombies count as gone), within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if not _live_members(pgid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------
# 1. Crash safety: SIGKILL mid-write, refusal downstream, re-run = undisturbed run
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_mid_write_then_rerun_equals_an_undisturbed_run(
    spark: SparkSession, reference: Reference, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    work = tmp_path / "w"
    shutil.copytree(reference.crash_base, work)
    ctx = RunContext(spark, _settings(work))
    lake, ref = ctx.lake, reference.ctx.lake
    hold = {PAUSE_SECONDS_ENV: "900"}

    # normalize: killed while silver.events has data files but no commit
    log = tmp_path / "normalize.log"
    proc = launch(
        work, D1, ["normalize"], log, **{PAUSE_BEFORE_COMMIT_ENV: "silver.events"}, **hold
    )
    orphans = kill_when_written(proc, work / "lake" / "silver" / "events", log)
    assert proc.returncode == -signal.SIGKILL and _group_is_gone(proc.pid)
    assert orphans and uncommitted_files(work / "lake" / "silver" / "events") == orphans
    # readers see no half-written date: the table has no commit yet, or no D1 rows
    assert not lake.exists("silver.events") or lake.read_dates("silver.events", [D1]).count() == 0
    assert not lake.exists("silver.quarantine")
    run = StageJournal(lake).get("normalize", D1)
    assert run is not None and run.status == STARTED and run.pid == proc.pid

    with (
        caplog.at_level(logging.WARNING, logger="jobs.core.lake"),
        pytest.raises(PipelineError) as refused,
    ):
        list(run_stages(ctx, ["baselines"], [D1]))
    assert f"taking over the lock of pid {proc.pid}" in caplog.text  # the killed run's lock
    assert str(refused.value).startswith(
        f"baselines: normalize for 2026-10-01 started at {run.started} (pid {proc.pid} on "
    ), refused.value
    assert "but never finished; re-run it" in str(refused.value)
    assert not lake.exists("gold.entity_daily")  # nothing was read or written

    list(run_stages(ctx, ["normalize"], [D1]))
    assert_tables_equal(lake, ref, SILVER, [D1], "after the re-run of normalize: ")
    recon = lake.read_dates("ops.reconciliation", [D1]).collect()
    assert recon and all(r["balanced"] for r in recon)
    events = lake.read_dates("silver.events", [D1])
    assert events.select("event_uid").distinct().count() == events.count()  # no duplicates

    # recommend: killed while gold.decision_log is half written (recommendations not merged)
    list(run_stages(ctx, ["baselines", "score"], [D1]))
    log = tmp_path / "recommend.log"
    proc = launch(
        work, D1, ["recommend"], log, **{PAUSE_BEFORE_COMMIT_ENV: "gold.decision_log"}, **hold
    )
    orphans = kill_when_written(proc, work / "lake" / "gold" / "decision_log", log)
    assert orphans and _group_is_gone(proc.pid)
    assert not lake.exists("gold.policy_recommendations") or (
        lake.read_dates("gold.policy_recommendations", [D1]).count() == 0
    )
    with pytest.raises(
        PipelineError,
        match=r"export: recommend for 2026-10-01 started at .* but never finished; re-run it",
    ):
        list(run_stages(ctx, ["export"], [D1]))

    results = list(run_stages(ctx, ["recommend", "export"], [D1]))
    assert [r.stage for r in results] == ["recommend", "export"]
    tables = ["gold.policy_recommendations", "gold.decision_log", "gold.entity_risk"]
    assert_tables_equal(lake, ref, tables, [D1], "after the re-run of recommend: ")
    journal = StageJournal(lake)
    assert journal.unfinished(list(pipeline.STAGES), [D1]) == []


# ---------------------------------------------------------------------------------------
# 2. Concurrency: two dates at once; the same date twice at once
# ---------------------------------------------------------------------------------------


@dataclass
class Concurrent:
    workdir: Path
    outcomes: dict[str, tuple[int, str]]  # run name -> (exit code, output)


@pytest.fixture(scope="module")
def concurrent_runs(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> Concurrent:
    """Three `policylake run` processes started together on a fresh lake: D1, D1 again, D4."""
    base = tmp_path_factory.mktemp("concurrent")
    work = base / "w"
    work.mkdir()
    for part in ("raw", "reference"):
        shutil.copytree(reference.workdir / part, work / part)
    runs = {"d1": D1, "d1-again": D1, "d4": D4}
    procs = {
        name: launch(work, day, UP_TO_NORMALIZE, base / f"{name}.log") for name, day in runs.items()
    }
    outcomes = {}
    for name, proc in procs.items():
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        outcomes[name] = (proc.returncode, (base / f"{name}.log").read_text(errors="replace"))
    return Concurrent(work, outcomes)


def _run_window(lake: Lake, day: date) -> tuple[str, str]:
    journal = StageJournal(lake)
    ingests = [journal.get(key, day) for key in journal_keys(INGEST, SOURCES)]
    started = [run.started for run in ingests if run is not None]
    last = journal.get("normalize", day)
    assert started and last is not None and last.finished is not None
    return min(started), last.finished


@pytest.mark.slow
def test_two_dates_at_once_both_succeed_and_equal_sequential_runs(
    spark: SparkSession, reference: Reference, concurrent_runs: Concurrent
) -> None:
    rc, output = concurrent_runs.outcomes["d4"]
    assert rc == 0, output[-3000:]
    assert 0 in (concurrent_runs.outcomes["d1"][0], concurrent_runs.outcomes["d1-again"][0])
    lake = Lake(spark, str(concurrent_runs.workdir / "lake"))
    (start_1, end_1), (start_4, end_4) = _run_window(lake, D1), _run_window(lake, D4)
    one_d1_run = sorted(rc for rc, _ in (concurrent_runs.outcomes[n] for n in ("d1", "d1-again")))
    if one_d1_run == [0, 1]:  # (if the two D1 runs serialized, the journal shows the later)
        assert max(start_1, start_4) <= min(end_1, end_4), "the dates did not run at the same time"
    assert_tables_equal(lake, reference.ctx.lake, COMPARED, [D1, D4])


@pytest.mark.slow
def test_same_date_twice_at_once_one_stops_clearly_and_the_lake_equals_one_run(
    spark: SparkSession, reference: Reference, concurrent_runs: Concurrent
) -> None:
    (rc_a, out_a), (rc_b, out_b) = (concurrent_runs.outcomes[n] for n in ("d1", "d1-again"))
    if rc_a != 0 or rc_b != 0:  # one held the lock; the other stopped before any stage
        assert sorted([rc_a, rc_b]) == [0, 1], (out_a[-2000:], out_b[-2000:])
        loser = out_a if rc_a else out_b
        message = [line for line in loser.splitlines() if line.startswith("error:")]
        assert len(message) == 1, loser[-2000:]
        assert message[0].startswith("error: 2026-10-01 is being processed by another run (pid "), (
            message
        )
        assert "wait for it to finish and re-run" in message[0]
    lake = Lake(spark, str(concurrent_runs.workdir / "lake"))
    assert_tables_equal(lake, reference.ctx.lake, COMPARED, [D1])


# ---------------------------------------------------------------------------------------
# The lock, the journal and the commit retry on their own
# ---------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from datetime import date
from jobs.core.locks import lock_dates
locks = lock_dates(sys.argv[1], [date(2026, 10, 1)], "test holder")
print("locked", flush=True)
time.sleep(600)
"""


def test_date_lock_is_exclusive_names_its_holder_and_survives_a_killed_holder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = str(tmp_path / "lake")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, root], cwd=REPO_ROOT, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        with pytest.raises(PipelineError) as held:
            lock_dates(root, [D4, D1])
        assert str(held.value).startswith(
            f"2026-10-01 is being processed by another run (pid {holder.pid} on "
        ), held.value
        assert "wait for it to finish and re-run" in str(held.value)
        with lock_dates(root, [D4]) as other_date:  # all or none: D4 was released
            assert [d for d, _, _ in other_date.held] == [D4]
    finally:
        holder.kill()
        holder.wait()
    with caplog.at_level(logging.WARNING, logger="jobs.core.lake"):
        locks = lock_dates(root, [D1])
    assert locks.taken_over and f"pid {holder.pid}" in locks.taken_over[0]
    assert f"taking over the lock of pid {holder.pid}" in caplog.text
    lock_file = Path(root) / "_locks" / "2026-10-01.lock"
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    locks.release()
    assert lock_file.read_text() == ""  # a clean release leaves nothing to take over
    with lock_dates(root, [D1]) as again:
        assert again.taken_over == []


def test_object_store_lake_roots_are_not_locked_locally() -> None:
    with lock_dates("s3a://bucket/lake", [D1]) as locks:
        assert locks.held == []


def test_commit_conflicts_are_retried_then_reported_in_one_line() -> None:
    from delta.exceptions import ConcurrentAppendException

    calls: list[int] = []
    slept: list[float] = []

    def flaky(fail_times: int) -> Callable[[], None]:
        def commit() -> None:
            calls.append(1)
            if len(calls) <= fail_times:
                raise ConcurrentAppendException(
                    message="files were added to partition run_date=2026-10-01"
                )  # type: ignore[no-untyped-call]

        return commit

    commit_with_retry(flaky(2), "silver.events (2026-10-01)", sleep=slept.append)
    assert len(calls) == 3 and len(slept) == 2

    calls.clear()
    with pytest.raises(PipelineError) as final:
        commit_with_retry(flaky(99), "silver.events (2026-10-01)", attempts=3, sleep=slept.append)
    assert len(calls) == 3
    assert str(final.value).startswith(
        "silver.events (2026-10-01): the commit conflicted with concurrent writers 3 times "
        "(ConcurrentAppendException: files were added"
    ), final.value
    assert str(final.value).endswith("; re-run the stage")

    calls.clear()

    def broken() -> None:
        calls.append(1)
        raise ValueError("not a conflict")

    with pytest.raises(ValueError):
        commit_with_retry(broken, "t", sleep=slept.append)
    assert len(calls) == 1  # other errors are not retried


@pytest.fixture()
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[list[date]]]]:
    """Replace the stage functions with recorders (no Spark job), one of them failing."""
    ran: dict[str, list[list[date]]] = {}

    def stage(name: str) -> Callable[[RunContext, list[date]], StageResult]:
        def run(ctx: RunContext, dates: list[date]) -> StageResult:
            lock = Path(ctx.settings.paths.lake_root) / "_locks" / f"{dates[0].isoformat()}.lock"
            assert json.loads(lock.read_text())["pid"] == os.getpid()  # held while it runs
            ran.setdefault(name, []).append(list(dates))
            if name == "score" and os.environ.get("FAIL_SCORE"):
                raise PipelineError("score: the model registry is unreachable")
            return StageResult(stage=name, dates=list(dates))

        return run

    for name in pipeline.STAGES:
        monkeypatch.setitem(pipeline.STAGES, name, stage(name))
    yield ran


def test_run_stages_journal_refuses_to_read_a_failed_or_unfinished_stage(
    spark: SparkSession,
    tmp_path: Path,
    fake_stages: dict[str, list[list[date]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = RunContext(spark, test_settings(tmp_path, ingest={"reprocess_days": 0}))
    journal = StageJournal(ctx.lake)
    assert [r.stage for r in run_stages(ctx, ["baselines", "score"], [D1, D4])] == [
        "baselines",
        "score",
    ]
    assert {
        (r.stage, r.status) for r in [journal.get("score", D1), journal.get("score", D4)] if r
    } == {("score", FINISHED)}

    monkeypatch.setenv("FAIL_SCORE", "1")
    with pytest.raises(PipelineError, match="registry"):
        list(run_stages(ctx, ["score", "recommend"], [D1]))
    failed = journal.get("score", D1)
    assert failed is not None and failed.status == FAILED
    assert failed.error == "PipelineError: score: the model registry is unreachable"
    assert "recommend" not in fake_stages  # it never started
    with pytest.raises(PipelineError) as refused:
        list(run_stages(ctx, ["recommend"], [D4, D1]))
    assert str(refused.value) == (
        f"recommend: score for 2026-10-01 failed at {failed.finished} (pid {os.getpid()} on "
        f"{failed.host}): PipelineError: score: the model registry is unreachable; fix the cause "
        "and re-run it (policylake run --date 2026-10-01 --stage score)"
    )
    sources = ctx.settings.ingest.sources
    check_upstream(journal, "recommend", [D4], sources)  # D4 is fine
    check_upstream(journal, "score", [D1], sources)  # re-running the failed stage is allowed

    # ingest is journalled per source: one source's unfinished ingest stops what follows
    journal.record(
        StageRun("ingest@sshd", D4, STARTED, "2026-10-04T02:00:00+00:00", pid=1, host="h")
    )
    with pytest.raises(PipelineError) as unfinished:
        check_upstream(journal, "validate", [D4], sources)
    assert str(unfinished.value) == (
        "validate: ingest@sshd for 2026-10-04 started at 2026-10-04T02:00:00+00:00 (pid 1 on h) "
        "but never finished; re-run it (policylake run --date 2026-10-04 --stage ingest "
        "--source sshd)"
    )
    stage_runs = Path(ctx.settings.paths.lake_root) / "_stage_runs" / "2026-10-04"
    (stage_runs / "ingest@sshd.json").write_text(
        '{"status": "fini'  # a torn journal write counts as never finished
    )
    with pytest.raises(PipelineError, match="unreadable journal entry"):
        check_upstream(journal, "validate", [D4], sources)
