"""EVTX import (`policylake import-evtx`, jobs/stages/ingest/evtx_import.py) on the real samples
in ../shared, read in place: every file imports as the `evtx` library reads it, split by UTC
event date; corrupt, cut and damaged copies (built in tmp) lose only what is damaged, and say
so; the same file gives the same bytes; the command's exit codes and one-line errors."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import struct
from collections import defaultdict
from datetime import date
from pathlib import Path

import pytest
from evtx import PyEvtxParser

from jobs.core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from jobs.stages.ingest.evtx_import import (
    CHUNK_SIZE,
    CORRUPT_CHUNK,
    CORRUPT_RECORD,
    FILE_HEADER_SIZE,
    NOT_EVTX,
    TRUNCATED,
    event_date,
    find_evtx_files,
    import_evtx_file,
    output_path,
)
from tests.conftest import run_command

ATTACK_SAMPLES = "evtx-attack-samples"
# a one-chunk file of 55 records on one day and a ten-chunk file (869 records)
ONE_CHUNK = ("Credential Access", "ACL_ForcePwd_SPNAdd_User_Computer_Accounts.evtx")
TEN_CHUNKS = ("Lateral Movement", "LM_5145_Remote_FileCopy.evtx")


@pytest.fixture()
def attack_samples(datasets: Path) -> Path:
    folder = datasets / ATTACK_SAMPLES
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory, no POLICYLAKE_* settings from the caller."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("POLICYLAKE__") or name in ("POLICYLAKE_CONFIG", "POLICYLAKE_WORKDIR"):
            monkeypatch.delenv(name)
    return tmp_path


def _library(path: Path) -> list[dict[str, object]]:
    return list(PyEvtxParser(str(path)).records_json())


def _expected_by_date(path: Path) -> dict[date, list[str]]:
    """What the library gives, grouped here by the UTC date of TimeCreated/SystemTime (every
    sample spells it `...Z`, so the date is its first ten characters)."""
    by_date: dict[date, list[str]] = defaultdict(list)
    for record in _library(path):
        data = str(record["data"])
        system_time = json.loads(data)["Event"]["System"]["TimeCreated"]["#attributes"]
        assert system_time["SystemTime"].endswith("Z")
        by_date[date.fromisoformat(system_time["SystemTime"][:10])].append(data)
    return dict(by_date)


def _outputs(raw_root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(raw_root.rglob("*")) if p.is_file()}


def _check_imports_as_the_library_reads(files: list[Path], raw_root: Path) -> int:
    """Import each file; its outputs hold exactly the library's JSON, one record a line, in
    order, split by UTC event date. Returns the number of records."""
    records = 0
    expected_outputs: set[Path] = set()
    for path in files:
        result = import_evtx_file(path, raw_root)
        assert result.ok, [p.line() for p in result.problems]
        expected = _expected_by_date(path)
        assert result.records == sum(len(v) for v in expected.values()), path
        assert set(result.outputs) == set(expected), path
        for day, lines in expected.items():
            out = output_path(raw_root, day, path)
            assert result.outputs[day] == out
            assert out.read_text(encoding="utf-8") == "".join(f"{line}\n" for line in lines), out
            expected_outputs.add(out)
        records += result.records
    # nothing else written: no other file, no temporary left behind
    assert set(_outputs(raw_root)) == expected_outputs
    return records


# ---------------------------------------------------------------------------------------
# Every shared EVTX file imports
# ---------------------------------------------------------------------------------------


def test_every_attack_sample_imports_as_the_library_reads_it(
    attack_samples: Path, tmp_path: Path
) -> None:
    files = find_evtx_files([attack_samples])
    with (attack_samples / "index.csv").open(encoding="utf-8") as handle:
        index = list(csv.DictReader(handle))
    assert len(files) == len(index) > 0
    records = _check_imports_as_the_library_reads(files, tmp_path / "raw")
    # the inventory was made with another parser (python-evtx): same records, same dates
    assert records == sum(int(row["records"]) for row in index)
    several_dates = 0
    for row in index:
        path = attack_samples / row["tactic_folder"] / row["file"]
        written = sorted(
            date.fromisoformat(p.parent.name)
            for p in (tmp_path / "raw" / "windows").glob(f"*/{path.stem}.evtx.jsonl")
        )
        lines = sum(
            len(p.read_bytes().splitlines())
            for p in (tmp_path / "raw" / "windows").glob(f"*/{path.stem}.evtx.jsonl")
        )
        assert lines == int(row["records"]), row["file"]
        assert written[0].isoformat() == row["first_time_utc"][:10], row["file"]
        assert written[-1].isoformat() == row["last_time_utc"][:10], row["file"]
        several_dates += len(written) > 1
    assert several_dates >= 1  # the split is exercised


def test_every_sigma_regression_sample_imports_as_the_library_reads_it(
    sigma: Path, tmp_path: Path
) -> None:
    folder = sigma / "regression_data"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    files = find_evtx_files([folder])
    assert files
    assert _check_imports_as_the_library_reads(files, tmp_path / "raw") >= len(files)


def test_reimporting_gives_the_same_bytes(attack_samples: Path, tmp_path: Path) -> None:
    files = find_evtx_files([attack_samples])
    for path in files:
        import_evtx_file(path, tmp_path / "raw")
    first = _outputs(tmp_path / "raw")
    digest = {p: hashlib.sha256(b).hexdigest() for p, b in first.items()}
    for path in files:
        import_evtx_file(path, tmp_path / "raw")
    again = _outputs(tmp_path / "raw")
    assert {p: hashlib.sha256(b).hexdigest() for p, b in again.items()} == digest
    for path in files:  # and into another root, with the library using every core
        import_evtx_file(path, tmp_path / "other", threads=0)
    other = _outputs(tmp_path / "other")
    assert {p.relative_to(tmp_path / "other"): b for p, b in other.items()} == {
        p.relative_to(tmp_path / "raw"): b for p, b in first.items()
    }


# ---------------------------------------------------------------------------------------
# Damaged files: built in tmp from a real one
# ---------------------------------------------------------------------------------------


def _records_of_chunk(data: bytes, chunk: int) -> list[tuple[int, int, int]]:
    """(offset, size, record id) of each record of `chunk`, walking the record headers."""
    base = FILE_HEADER_SIZE + chunk * CHUNK_SIZE
    free = struct.unpack_from("<I", data, base + 48)[0]  # free space: where records end
    found, offset = [], base + 512
    while offset < base + free:
        magic, size, record_id = struct.unpack_from("<IIQ", data, offset)
        assert magic == 0x2A2A and size >= 28, (chunk, offset)
        found.append((offset, size, record_id))
        offset += size
    return found


def _copy(attack_samples: Path, tmp_path: Path, sample: tuple[str, str]) -> tuple[Path, bytes]:
    source = attack_samples.joinpath(*sample)
    return tmp_path / "in" / source.name, source.read_bytes()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_file_that_is_not_evtx_is_skipped_whole(attack_samples: Path, tmp_path: Path) -> None:
    path, data = _copy(attack_samples, tmp_path, ONE_CHUNK)
    text = _write(tmp_path / "in" / "notes.evtx", b"not an event log\n" * 500)
    flipped = _write(path, bytes(b ^ 0xFF for b in data[:8]) + data[8:])
    empty = _write(tmp_path / "in" / "empty.evtx", b"")
    for bad in (text, flipped, empty):
        result = import_evtx_file(bad, tmp_path / "raw")
        assert result.failed and result.records == 0
        assert [(p.reason, p.file) for p in result.problems] == [(NOT_EVTX, bad)]
    assert not (tmp_path / "raw").exists()


def test_a_truncated_file_imports_its_whole_chunks_and_counts_the_rest(
    attack_samples: Path, tmp_path: Path
) -> None:
    path, data = _copy(attack_samples, tmp_path, TEN_CHUNKS)
    complete = _expected_by_date(attack_samples.joinpath(*TEN_CHUNKS))
    lines = [line for day in sorted(complete) for line in complete[day]]
    assert len(lines) == 869
    in_chunk_3 = len(_records_of_chunk(data, 3))
    # cut in the middle of chunk 3: chunks 0-2 are whole, chunk 3 and the rest are lost
    cut = _write(path, data[: FILE_HEADER_SIZE + 3 * CHUNK_SIZE + CHUNK_SIZE // 2])
    result = import_evtx_file(cut, tmp_path / "raw")
    whole = sum(len(_records_of_chunk(data, c)) for c in range(3))
    assert not result.failed
    assert result.records == whole
    written = [
        line
        for day in sorted(result.outputs)
        for line in result.outputs[day].read_text(encoding="utf-8").splitlines()
    ]
    assert written == lines[:whole]
    [problem] = result.problems
    assert problem.reason == TRUNCATED
    assert problem.records == in_chunk_3  # what chunk 3's header declares
    first_lost = whole + 1
    assert f"records {first_lost}..{first_lost + in_chunk_3 - 1} not read" in problem.line()
    assert problem.line().startswith(f"{cut}: truncated: ")
    assert "\n" not in problem.line()
    # cut at a chunk boundary: the file header still declares ten chunks
    cut = _write(path, data[: FILE_HEADER_SIZE + 2 * CHUNK_SIZE])
    result = import_evtx_file(cut, tmp_path / "raw2")
    assert result.records == sum(len(_records_of_chunk(data, c)) for c in range(2))
    assert [p.reason for p in result.problems] == [TRUNCATED]
    assert "the file header declares 10 chunk(s), the file holds 2" in result.problems[0].line()
    # cut inside the file header: nothing can be read
    result = import_evtx_file(_write(path, data[:1000]), tmp_path / "raw3")
    assert result.failed and [p.reason for p in result.problems] == [TRUNCATED]
    assert not (tmp_path / "raw3").exists()


def test_a_corrupt_record_is_skipped_by_number_and_the_rest_imports(
    attack_samples: Path, tmp_path: Path
) -> None:
    path, data = _copy(attack_samples, tmp_path, ONE_CHUNK)
    lines = [str(r["data"]) for r in _library(attack_samples.joinpath(*ONE_CHUNK))]
    offset, _, record_id = _records_of_chunk(data, 0)[10]
    damaged = bytearray(data)
    for at in range(offset + 24 + 40, offset + 24 + 80):  # inside the record's BinXML
        damaged[at] ^= 0xFF
    result = import_evtx_file(_write(path, bytes(damaged)), tmp_path / "raw")
    assert not result.failed
    [problem] = result.problems
    assert problem.reason == CORRUPT_RECORD and problem.records == 1
    assert problem.line().startswith(f"{path}: ")
    assert f"record number {record_id}" in problem.line()
    written = [
        line
        for day in sorted(result.outputs)
        for line in result.outputs[day].read_text(encoding="utf-8").splitlines()
    ]
    assert written == lines[:10] + lines[11:]  # the records after it are still read


def test_a_broken_record_header_costs_the_rest_of_its_chunk_only(
    attack_samples: Path, tmp_path: Path
) -> None:
    path, data = _copy(attack_samples, tmp_path, TEN_CHUNKS)
    lines = [str(r["data"]) for r in _library(attack_samples.joinpath(*TEN_CHUNKS))]
    chunk_1 = _records_of_chunk(data, 1)
    offset, _, record_id = chunk_1[5]
    damaged = bytearray(data)
    damaged[offset] = 0  # the record magic: the library stops reading this chunk, silently
    result = import_evtx_file(_write(path, bytes(damaged)), tmp_path / "raw")
    lost = len(chunk_1) - 5
    assert result.records == len(lines) - lost
    assert result.skipped_records == lost
    assert {p.reason for p in result.problems} == {CORRUPT_RECORD}
    last_id = chunk_1[-1][2]
    assert any(
        f"chunk 1: records {record_id}..{last_id} not read" in p.line() for p in result.problems
    )
    written = [
        line
        for day in sorted(result.outputs)
        for line in result.outputs[day].read_text(encoding="utf-8").splitlines()
    ]
    first = len(_records_of_chunk(data, 0)) + 5
    assert written == lines[:first] + lines[first + lost :]


def test_chunks_declaring_the_same_record_ids_all_import(
    attack_samples: Path, tmp_path: Path
) -> None:
    """Two logs joined into one file (the same chunks twice): every record id is declared
    twice, read twice and written twice; nothing is reported missing."""
    path, data = _copy(attack_samples, tmp_path, TEN_CHUNKS)
    header = bytearray(data[:FILE_HEADER_SIZE])
    struct.pack_into("<H", header, 42, 20)  # chunk count
    chunks = data[FILE_HEADER_SIZE : FILE_HEADER_SIZE + 10 * CHUNK_SIZE]
    joined = _write(path, bytes(header) + chunks + chunks)
    result = import_evtx_file(joined, tmp_path / "raw")
    assert result.ok, [p.line() for p in result.problems]
    assert result.records == 2 * 869
    for day, lines in _expected_by_date(joined).items():
        assert result.outputs[day].read_text(encoding="utf-8").splitlines() == lines


def test_a_chunk_with_a_broken_header_is_named(attack_samples: Path, tmp_path: Path) -> None:
    path, data = _copy(attack_samples, tmp_path, TEN_CHUNKS)
    start = FILE_HEADER_SIZE + 4 * CHUNK_SIZE
    damaged = bytearray(data)
    damaged[start : start + 8] = b"XXXXXXXX"  # no chunk signature: the library skips the chunk
    result = import_evtx_file(_write(path, bytes(damaged)), tmp_path / "raw")
    assert result.records == 869 - len(_records_of_chunk(data, 4))
    [problem] = result.problems
    assert problem.reason == CORRUPT_CHUNK
    assert "chunk 4: no valid chunk header" in problem.line()
    # a nonsense record id range: the library still reads the chunk, the check is reported
    damaged = bytearray(data)
    struct.pack_into("<QQ", damaged, start + 24, 10**12, 5)
    result = import_evtx_file(_write(path, bytes(damaged)), tmp_path / "raw2")
    assert result.records == 869
    [problem] = result.problems
    assert problem.reason == CORRUPT_CHUNK and problem.records == 0
    assert "chunk 4: the chunk header declares no valid record id range" in problem.line()


# ---------------------------------------------------------------------------------------
# Event dates, the files found, the outputs refused
# ---------------------------------------------------------------------------------------


def _event(system_time: str | None) -> dict[str, object]:
    created = {} if system_time is None else {"#attributes": {"SystemTime": system_time}}
    return {"Event": {"System": {"TimeCreated": created}}}


def test_the_event_date_is_the_utc_date_of_time_created() -> None:
    header = "2020-01-05T10:00:00.000000Z UTC"
    assert event_date(_event("2020-01-01T23:59:59.999999Z"), header) == date(2020, 1, 1)
    assert event_date(_event("2020-01-02T00:30:00+02:00"), header) == date(2020, 1, 1)
    assert event_date(_event("2020-01-01T22:00:00-03:00"), header) == date(2020, 1, 2)
    # without TimeCreated (or an unreadable one) the record header's time stands in
    assert event_date(_event(None), header) == date(2020, 1, 5)
    assert event_date(_event("yesterday"), header) == date(2020, 1, 5)
    assert event_date({"Event": {}}, None) is None


def test_files_are_found_in_folders_and_collisions_are_refused(tmp_path: Path) -> None:
    a = _write(tmp_path / "a" / "Security.evtx", b"")
    b = _write(tmp_path / "a" / "deep" / "Sysmon.EVTX", b"")
    _write(tmp_path / "a" / "notes.txt", b"")
    assert find_evtx_files([tmp_path / "a", a]) == [a, b]  # once each, in name order
    with pytest.raises(UsageError, match="no such file or folder"):
        find_evtx_files([tmp_path / "missing"])
    _write(tmp_path / "b" / "Security.evtx", b"")
    with pytest.raises(UsageError, match=r"would both write Security\.evtx\.jsonl"):
        find_evtx_files([tmp_path / "a", tmp_path / "b"])
    _write(tmp_path / "c" / "_hidden.evtx", b"")
    with pytest.raises(UsageError, match="hidden file that ingest never reads"):
        find_evtx_files([tmp_path / "c"])


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------


_run = run_command


def _errors(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_import_evtx_command_imports_every_sample(
    attack_samples: Path, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (attack_samples / "index.csv").open(encoding="utf-8") as handle:
        records = sum(int(row["records"]) for row in csv.DictReader(handle))
    code, out, err = _run(capsys, "import-evtx", str(attack_samples), "--workdir", "w")
    assert code == EXIT_OK, err
    assert _errors(err) == []
    assert f"imported 85 of 85 file(s): {records:,} record(s)" in out
    assert "skipped 0 record(s) and 0 file(s)" in out
    written = sum(
        len(p.read_bytes().splitlines()) for p in (env / "w" / "raw" / "windows").rglob("*.jsonl")
    )
    assert written == records


def test_import_evtx_command_exits_1_naming_each_problem(
    attack_samples: Path, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data = _copy(attack_samples, env, TEN_CHUNKS)
    _write(path, data[: FILE_HEADER_SIZE + 3 * CHUNK_SIZE + 100])
    _write(env / "in" / "notes.evtx", b"hello\n")
    good = attack_samples.joinpath(*ONE_CHUNK)
    code, out, err = _run(capsys, "import-evtx", str(env / "in"), str(good), "--workdir", "w")
    assert code == EXIT_FAILED
    errors = _errors(err)
    assert len(errors) == 3, err  # one line per problem, then the summary
    assert errors[0].startswith(f"error: {env / 'in' / 'LM_5145_Remote_FileCopy.evtx'}: truncated")
    assert (
        errors[1]
        == f"error: {env / 'in' / 'notes.evtx'}: {NOT_EVTX} (no ElfFile signature at its start)"
    )
    whole = sum(len(_records_of_chunk(data, c)) for c in range(3))
    lost = len(_records_of_chunk(data, 3))
    dates = len(list((env / "w" / "raw" / "windows").iterdir()))
    summary = (
        f"imported 2 of 3 file(s): {whole + 55:,} record(s) into {dates} date folder(s); skipped "
        f"{lost} record(s) (truncated {lost}) and 1 file(s) (not an EVTX file 1)"
    )
    assert errors[2] == f"error: import-evtx: {summary}"
    assert f"import-evtx: {summary}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["import-evtx", "missing.evtx", "--workdir", "w"], "no such file or folder: missing.evtx"),
        (["import-evtx", "in"], "Missing option '--workdir'"),
        (["import-evtx", "--workdir", "w"], "Missing argument"),
    ],
)
def test_import_evtx_bad_usage_exits_2_with_one_line(
    env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (env / "in").mkdir()
    code, _, err = _run(capsys, *argv)
    assert code == EXIT_USAGE
    [line] = err.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not (env / "w").exists()


def test_import_evtx_of_a_folder_without_evtx_files_is_a_clean_no_op(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (env / "in").mkdir()
    code, out, err = _run(capsys, "import-evtx", "in", "--workdir", "w")
    assert code == EXIT_OK and not _errors(err)
    assert "no .evtx files in in; nothing to do" in out
    assert not (env / "w").exists()
