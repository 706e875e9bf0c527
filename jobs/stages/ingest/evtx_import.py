"""EVTX import: Windows event log files (`.evtx`) into the raw layout the Windows parser reads.

Windows writes its event logs in the binary EVTX format; ingest reads JSON lines. This module
converts a file once, before ingest, into `<raw_root>/windows/<UTC event date>/<stem>.evtx.jsonl`:
one line per record, exactly the record's JSON as the `evtx` library (the parser behind
`evtx_dump`) renders it (`{"Event": {"#attributes": ..., "System": ..., "EventData": ...}}`),
nothing added or renamed, in the file's record order. A file whose records span several UTC
dates becomes one output file per date. It lives with ingest because it makes the ingest
stage's input and nothing else; it needs no Spark.

Nothing that goes wrong is hidden (docs/ingest.md, "Importing EVTX files"). The library
reports a record or chunk it cannot decode, but returns nothing and says nothing for a chunk
cut short, so the file and chunk headers are read here as well: every record id a chunk
header declares is either written or named by a problem, and each problem counts the records
it cost.
"""

from __future__ import annotations

import json
import os
import re
import struct
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO

from evtx import PyEvtxParser

from jobs.core.errors import UsageError

WINDOWS_SOURCE = "windows"
OUTPUT_SUFFIX = ".evtx.jsonl"

# Problem reasons (the summary counts skipped records and files by these)
NOT_EVTX = "not an EVTX file"
UNREADABLE = "unreadable"
TRUNCATED = "truncated"
CORRUPT_CHUNK = "corrupt chunk"
CORRUPT_RECORD = "corrupt record"
NO_EVENT_TIME = "no event time"

# The EVTX layout (libyal's "Windows XML Event Log (EVTX)" format notes): a 4 KiB file header,
# then 64 KiB chunks, each opening with a 512-byte header that declares its record ids.
FILE_MAGIC = b"ElfFile\x00"
CHUNK_MAGIC = b"ElfChnk\x00"
FILE_HEADER_SIZE = 4096
CHUNK_SIZE = 65536
CHUNK_HEADER_SIZE = 512
# A record is at least its 24-byte header and the 4-byte size copy: a bound on how many a
# chunk can hold, to tell a declared id range from a corrupt one.
MIN_RECORD_SIZE = 28
MAX_RECORDS_PER_CHUNK = (CHUNK_SIZE - CHUNK_HEADER_SIZE) // MIN_RECORD_SIZE

# How many dates of one input file keep an open output file at once
MAX_OPEN_DAYS = 64

_RECORD_NUMBER = re.compile(r"record number (\d+)")
_RECORD_IDS = re.compile(r"record IDs (\d+)\.\.(\d+)")
_CHUNK_NUMBER = re.compile(r"^Failed to parse chunk number (\d+)\b")


# ---------------------------------------------------------------------------------------
# What the file says about itself: file header and chunk headers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One 64 KiB chunk slot of the file and the record ids its header declares."""

    index: int
    size: int  # bytes present: CHUNK_SIZE unless the file is cut inside this chunk
    state: str  # "ok", "empty" (all zero: never used), "bad header", "bad ids"
    first_id: int = 0
    last_id: int = -1

    @property
    def declared(self) -> int:
        return self.last_id - self.first_id + 1 if self.state == "ok" else 0

    @property
    def cut(self) -> bool:
        return self.size < CHUNK_SIZE


@dataclass(frozen=True)
class Layout:
    size: int
    is_evtx: bool
    declared_chunks: int  # the file header's chunk count
    chunks: tuple[Chunk, ...]


def read_layout(stream: BinaryIO, size: int) -> Layout:
    """The file header's magic and chunk count, and each chunk slot's header."""
    head = stream.read(FILE_HEADER_SIZE)
    if not head.startswith(FILE_MAGIC):
        return Layout(size, False, 0, ())
    declared = struct.unpack_from("<H", head, 42)[0] if len(head) >= 44 else 0
    chunks: list[Chunk] = []
    offset = FILE_HEADER_SIZE
    while offset < size:
        stream.seek(offset)
        header = stream.read(CHUNK_HEADER_SIZE)
        present = min(CHUNK_SIZE, size - offset)
        index = len(chunks)
        if header.startswith(CHUNK_MAGIC) and len(header) >= 40:
            first_id, last_id = struct.unpack_from("<QQ", header, 24)
            if first_id <= last_id < first_id + MAX_RECORDS_PER_CHUNK:
                chunks.append(Chunk(index, present, "ok", first_id, last_id))
            else:
                chunks.append(Chunk(index, present, "bad ids"))
        elif not header.strip(b"\x00"):
            chunks.append(Chunk(index, present, "empty"))
        else:
            chunks.append(Chunk(index, present, "bad header"))
        offset += CHUNK_SIZE
    return Layout(size, True, declared, tuple(chunks))


class _Ledger:
    """For every record id each chunk header declares: not seen yet, written, or named by a
    problem (one byte per declared id). Ids normally rise through the file; where ranges of
    several chunks overlap (logs joined together), an id counts once per chunk declaring it."""

    UNSEEN, WRITTEN, NAMED = 0, 1, 2

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        # equal starts: the later chunk first, so that scanning back finds the earlier one first
        self._chunks = sorted(
            (c for c in chunks if c.state == "ok"), key=lambda c: (c.first_id, -c.index)
        )
        self._starts = [c.first_id for c in self._chunks]
        self._marks = {c.index: bytearray(c.declared) for c in self._chunks}

    def _mark(self, record_id: int, mark: int) -> int | None:
        """Mark the first unseen slot of `record_id`: 1 if one was, 0 if every chunk declaring
        it has it marked already, None if no chunk declares it."""
        at = bisect_right(self._starts, record_id) - 1
        declared = False
        # a chunk holds at most MAX_RECORDS_PER_CHUNK ids: no earlier start can reach this id
        while at >= 0 and self._starts[at] > record_id - MAX_RECORDS_PER_CHUNK:
            chunk = self._chunks[at]
            at -= 1
            if record_id > chunk.last_id:
                continue
            declared = True
            marks = self._marks[chunk.index]
            if marks[record_id - chunk.first_id] == self.UNSEEN:
                marks[record_id - chunk.first_id] = mark
                return 1
        return 0 if declared else None

    def written(self, record_id: int) -> None:
        self._mark(record_id, self.WRITTEN)

    def name(self, record_id: int) -> int:
        """Mark `record_id` as named by a problem; 1 if that problem is what cost it."""
        marked = self._mark(record_id, self.NAMED)
        return 1 if marked is None else marked  # undeclared: the problem's own record

    def unseen(self, chunk: Chunk) -> Iterator[tuple[int, int]]:
        """Ranges (first, last) of `chunk`'s declared ids neither written nor named; named."""
        marks = self._marks.get(chunk.index)
        if marks is None:
            return
        start = None
        for at, mark in enumerate(marks):
            if mark == self.UNSEEN:
                marks[at] = self.NAMED
                if start is None:
                    start = at
            elif start is not None:
                yield chunk.first_id + start, chunk.first_id + at - 1
                start = None
        if start is not None:
            yield chunk.first_id + start, chunk.last_id


# ---------------------------------------------------------------------------------------
# One record: its output line and its UTC event date
# ---------------------------------------------------------------------------------------


def _utc_date(text: object) -> date | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.strip().removesuffix(" UTC"))
    except ValueError:
        return None
    if moment.tzinfo is None:  # EVTX times are FILETIMEs: UTC
        return moment.date()
    return moment.astimezone(UTC).date()


def event_date(event: Any, record_timestamp: object) -> date | None:
    """The UTC date of `Event.System.TimeCreated.SystemTime`, the event's own time; else of
    the record header's timestamp (when it was written to the log)."""
    try:
        created = event["Event"]["System"]["TimeCreated"]["#attributes"]["SystemTime"]
    except (KeyError, TypeError):
        created = None
    return _utc_date(created) or _utc_date(record_timestamp)


def record_line(record: dict[str, Any]) -> tuple[date | None, str]:
    """(UTC event date, the line to write) of one `records_json()` item.

    The line is the library's JSON verbatim: compact, one line. Only if it ever contained a
    line break would it be re-serialized compactly.
    """
    data = record["data"]
    event = json.loads(data)  # ValueError: the caller counts the record as corrupt
    if not isinstance(event, dict) or not isinstance(event.get("Event"), dict):
        raise ValueError("not an evtx_dump record (no Event object)")
    if "\n" in data or "\r" in data:
        data = json.dumps(event, separators=(",", ":"))
    return event_date(event, record.get("timestamp")), data


# ---------------------------------------------------------------------------------------
# Files: problems, outputs, the import of one file
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvtxProblem:
    """Something that cost records (or the whole file), as one error line."""

    file: Path
    reason: str
    message: str
    records: int  # records it cost that nothing else accounts for

    def line(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class EvtxFileImport:
    path: Path
    outputs: dict[date, Path] = field(default_factory=dict)
    records_by_date: dict[date, int] = field(default_factory=dict)
    problems: list[EvtxProblem] = field(default_factory=list)
    failed: bool = False  # the file as a whole could not be read: nothing written

    @property
    def records(self) -> int:
        return sum(self.records_by_date.values())

    @property
    def skipped_records(self) -> int:
        return sum(p.records for p in self.problems)

    @property
    def ok(self) -> bool:
        return not self.problems


def output_name(path: Path) -> str:
    return f"{path.stem}{OUTPUT_SUFFIX}"


def output_path(raw_root: Path, day: date, path: Path) -> Path:
    return raw_root / WINDOWS_SOURCE / day.isoformat() / output_name(path)


def find_evtx_files(paths: Sequence[Path]) -> list[Path]:
    """The files to import: each file given, and every `*.evtx` under each folder given
    (recursively, in name order). Refuses what cannot be imported as asked."""
    found: dict[Path, Path] = {}
    for given in paths:
        if given.is_dir():
            inside = sorted(p for p in given.rglob("*") if p.suffix.lower() == ".evtx")
            candidates = [p for p in inside if p.is_file()]
        elif given.is_file():
            candidates = [given]
        else:
            raise UsageError(f"no such file or folder: {given}")
        for path in candidates:
            found.setdefault(path.resolve(), path)
    by_output: dict[str, Path] = {}
    for path in found.values():
        name = output_name(path)
        if name.startswith((".", "_")):
            raise UsageError(
                f"{path}: output {name} would be a hidden file that ingest never reads "
                "(names starting with '.' or '_'); rename the file"
            )
        if name in by_output:
            raise UsageError(
                f"{by_output[name]} and {path} would both write {name} (the output is named "
                "after the file name); rename one of them"
            )
        by_output[name] = path
    return list(found.values())


class _DayFiles:
    """The output files of one input file, written under temporary names and renamed into
    place only when the whole input file has been read."""

    def __init__(self, raw_root: Path, path: Path) -> None:
        self._raw_root = raw_root
        self._path = path
        self._temps: dict[date, Path] = {}
        self._open: dict[date, BinaryIO] = {}

    def _handle(self, day: date) -> BinaryIO:
        handle = self._open.pop(day, None)
        if handle is None:
            if len(self._open) >= MAX_OPEN_DAYS:  # close the least recently written
                oldest = next(iter(self._open))
                self._open.pop(oldest).close()
            temp = self._temps.get(day)
            if temp is None:
                final = output_path(self._raw_root, day, self._path)
                final.parent.mkdir(parents=True, exist_ok=True)
                # hidden: Spark's reader and the late-delivery listing skip it if left behind
                temp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
                self._temps[day] = temp
                handle = temp.open("wb")
            else:
                handle = temp.open("ab")
        self._open[day] = handle  # most recently written last
        return handle

    def write(self, day: date, line: str) -> None:
        self._handle(day).write(line.encode("utf-8") + b"\n")

    def commit(self) -> dict[date, Path]:
        for handle in self._open.values():
            handle.close()
        self._open.clear()
        done = {}
        for day, temp in sorted(self._temps.items()):
            with temp.open("rb+") as handle:
                os.fsync(handle.fileno())
            final = output_path(self._raw_root, day, self._path)
            os.replace(temp, final)
            done[day] = final
        self._temps.clear()
        return done

    def discard(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()
        for temp in self._temps.values():
            temp.unlink(missing_ok=True)
        self._temps.clear()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _truncation(layout: Layout) -> str | None:
    whole = sum(1 for c in layout.chunks if not c.cut)
    cut = [c for c in layout.chunks if c.cut and c.state != "empty"]
    if layout.size < FILE_HEADER_SIZE:
        return f"{layout.size:,} bytes, shorter than the {FILE_HEADER_SIZE:,}-byte file header"
    if cut:
        return (
            f"{layout.size:,} bytes: chunk {cut[0].index} has {cut[0].size:,} of "
            f"{CHUNK_SIZE:,} bytes"
        )
    if layout.declared_chunks > whole:
        return (
            f"{layout.size:,} bytes: the file header declares {layout.declared_chunks} "
            f"chunk(s), the file holds {whole}"
        )
    return None


def library_error(message: str) -> tuple[str, range]:
    """The reason and the record ids of an error the `evtx` library raised while reading."""
    if match := _RECORD_NUMBER.search(message):
        return CORRUPT_RECORD, range(int(match.group(1)), int(match.group(1)) + 1)
    if match := _RECORD_IDS.search(message):
        return CORRUPT_CHUNK, range(int(match.group(1)), int(match.group(2)) + 1)
    return (CORRUPT_CHUNK if "chunk" in message.lower() else CORRUPT_RECORD), range(0)


def _unread(layout: Layout, ledger: _Ledger) -> Iterator[tuple[str, str, int]]:
    """(reason, message, records) for the declared records nothing has accounted for: those
    of a chunk cut short (the library skips such a chunk without a word), then any other."""
    truncated = _truncation(layout)
    if truncated is not None:
        lost = [r for c in layout.chunks if c.cut for r in ledger.unseen(c)]
        ranges = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in lost)
        yield (
            TRUNCATED,
            f"truncated: {truncated}; "
            + (f"records {ranges} not read" if ranges else "its records not read"),
            sum(last - first + 1 for first, last in lost),
        )
    for chunk in layout.chunks:
        for first, last in ledger.unseen(chunk):
            span = f"records {first}..{last}" if first != last else f"record {first}"
            yield (
                CORRUPT_RECORD,
                f"chunk {chunk.index}: {span} not read (declared by the chunk header; the "
                "parser stopped inside the chunk)",
                last - first + 1,
            )


def import_evtx_file(path: Path, raw_root: Path, threads: int = 1) -> EvtxFileImport:
    """Convert one `.evtx` file into its per-date output files (replacing earlier ones).

    Records that cannot be read are skipped and named; the rest of the file is written. A
    file that cannot be read at all writes nothing.
    """
    result = EvtxFileImport(path)

    def problem(reason: str, message: str, records: int = 0) -> None:
        result.problems.append(EvtxProblem(path, reason, _one_line(message), records))

    try:
        with path.open("rb") as stream:
            layout = read_layout(stream, os.fstat(stream.fileno()).st_size)
        if not layout.is_evtx:
            problem(NOT_EVTX, f"{NOT_EVTX} (no {FILE_MAGIC[:7].decode()} signature at its start)")
            result.failed = True
            return result
        if layout.size < FILE_HEADER_SIZE:
            problem(TRUNCATED, f"truncated: {_truncation(layout)}")
            result.failed = True
            return result
        parser = PyEvtxParser(str(path), number_of_threads=threads)
    except (OSError, RuntimeError, ValueError) as exc:
        problem(UNREADABLE, f"{UNREADABLE}: {exc}")
        result.failed = True
        return result

    ledger = _Ledger(layout.chunks)
    # a chunk cut short is the truncation's to report, whatever its header looks like
    bad_chunks = {c.index for c in layout.chunks if c.state == "bad header" and not c.cut}
    for chunk in layout.chunks:
        if chunk.index in bad_chunks:
            problem(
                CORRUPT_CHUNK,
                f"chunk {chunk.index}: no valid chunk header; its records cannot be read or "
                "counted",
            )
        elif chunk.state == "bad ids" and not chunk.cut:
            problem(
                CORRUPT_CHUNK,
                f"chunk {chunk.index}: the chunk header declares no valid record id range; "
                "records missing from this chunk cannot be counted",
            )
    outputs = _DayFiles(raw_root, path)
    # a bound on errors: the library never reports more than one per record or chunk
    budget = layout.size // MIN_RECORD_SIZE + len(layout.chunks) + 1
    try:
        # the iterator raises RuntimeError for a record or chunk it cannot decode and goes on
        # with the next one when asked again (tests/test_evtx.py holds it to that)
        records = iter(parser.records_json())
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except (OSError, RuntimeError, ValueError) as exc:
                budget -= 1
                if budget < 0:
                    problem(CORRUPT_CHUNK, "too many errors; stopped reading the file")
                    break
                message = _one_line(str(exc))
                named = _CHUNK_NUMBER.match(message)
                if named and int(named.group(1)) in bad_chunks:
                    continue  # already reported from the chunk header
                reason, ids = library_error(message)
                problem(reason, message, sum(ledger.name(i) for i in ids))
                continue
            if not isinstance(record, dict):
                problem(CORRUPT_RECORD, f"the parser gave {type(record).__name__}, not a record", 1)
                continue
            record_id = int(record.get("event_record_id", 0))
            try:
                day, line = record_line(record)
            except (ValueError, TypeError) as exc:
                problem(
                    CORRUPT_RECORD,
                    f"record {record_id}: the parser's JSON is not a record ({exc})",
                    ledger.name(record_id),
                )
                continue
            if day is None:
                problem(
                    NO_EVENT_TIME,
                    f"record {record_id}: {NO_EVENT_TIME} (no System/TimeCreated and no "
                    "record timestamp)",
                    ledger.name(record_id),
                )
                continue
            outputs.write(day, line)
            ledger.written(record_id)
            result.records_by_date[day] = result.records_by_date.get(day, 0) + 1
        for reason, message, count in _unread(layout, ledger):
            problem(reason, message, count)
        result.outputs = outputs.commit()
    finally:
        outputs.discard()
    return result


# ---------------------------------------------------------------------------------------
# Many files: the summary
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvtxSummary:
    files: int
    files_imported: int
    records: int
    dates: int
    skipped_records: dict[str, int]  # by reason
    skipped_files: dict[str, int]  # by reason
    problems: int  # error lines

    @property
    def ok(self) -> bool:
        return self.problems == 0

    def text(self) -> str:
        def by_reason(counts: dict[str, int]) -> str:
            return ", ".join(f"{reason} {n:,}" for reason, n in sorted(counts.items()))

        skipped_records = sum(self.skipped_records.values())
        skipped_files = sum(self.skipped_files.values())
        text = (
            f"imported {self.files_imported:,} of {self.files:,} file(s): {self.records:,} "
            f"record(s) into {self.dates:,} date folder(s); skipped {skipped_records:,} "
            "record(s)"
        )
        if skipped_records:
            text += f" ({by_reason(self.skipped_records)})"
        text += f" and {skipped_files:,} file(s)"
        if skipped_files:
            text += f" ({by_reason(self.skipped_files)})"
        return text


def summarize(results: Sequence[EvtxFileImport]) -> EvtxSummary:
    skipped_records: dict[str, int] = {}
    skipped_files: dict[str, int] = {}
    for result in results:
        if result.failed:
            reason = result.problems[0].reason if result.problems else UNREADABLE
            skipped_files[reason] = skipped_files.get(reason, 0) + 1
        for p in result.problems:
            if p.records:
                skipped_records[p.reason] = skipped_records.get(p.reason, 0) + p.records
    return EvtxSummary(
        files=len(results),
        files_imported=sum(1 for r in results if not r.failed),
        records=sum(r.records for r in results),
        dates=len({d for r in results for d in r.outputs}),
        skipped_records=skipped_records,
        skipped_files=skipped_files,
        problems=sum(len(r.problems) for r in results),
    )
