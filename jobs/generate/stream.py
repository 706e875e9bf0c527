"""Writes one shard of one source over all dates: time order, dirt, files, bookkeeping.

Sources produce entries (sort key, sequence, file, line, kind, event key); this engine keeps
them in time order with a small pending window, spoils a share of benign lines, moves late
ones to the next day's folder, and counts every line it writes so the manifest and
`dirty_rows.jsonl` account for each line of each file.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from jobs.generate.activity import DayContext, Entry
from jobs.generate.clock import US_PER_HOUR, day_start_us
from jobs.generate.messiness import RATES, break_timestamp, drop_timestamp, truncate

__all__ = [
    "BENIGN",
    "LATE",
    "SCENARIO",
    "UNSPOILED",
    "DayFiles",
    "Entry",
    "FileStat",
    "SourceEmitter",
    "write_stream_day",
]

# entry kinds
SCENARIO = 0  # injected attack: never spoiled
UNSPOILED = 0  # benign but never spoiled (e.g. a CloudTrail Records line of several events)
BENIGN = 1  # normal activity: may be spoiled, duplicated or delivered late
LATE = 2  # a benign line of the previous day delivered into this folder


class SourceEmitter(Protocol):
    source: str
    shard: str

    def files_for_day(self, ctx: DayContext) -> list[str]: ...

    def header(self, file: str, ctx: DayContext) -> list[str]: ...

    def footer(self, file: str, ctx: DayContext) -> list[str]: ...

    def benign(self, ctx: DayContext) -> Iterator[tuple[list[Entry], int]]: ...

    def scenario(self, ctx: DayContext, ts_us: int, spec: dict[str, object]) -> list[Entry]: ...


@dataclass
class FileStat:
    source: str
    date: str
    file: str
    lines: int = 0
    header_lines: int = 0
    footer_lines: int = 0
    event_lines: int = 0
    events: int = 0


@dataclass
class _OpenFile:
    handle: IO[str]
    stat: FileStat
    dups: list[tuple[int, int, str, int]] = field(default_factory=list)  # due, seq, line, of


class DayFiles:
    """The files of one (source, date) folder, with line counters and dirty-row records."""

    def __init__(self, out: Path, source: str, day: date, emitter: SourceEmitter, ctx: DayContext):
        self.dir = out / "raw" / source / day.isoformat()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.source = source
        self.day = day.isoformat()
        self.emitter = emitter
        self.ctx = ctx
        self.files: dict[str, _OpenFile] = {}
        self.dirty: list[dict[str, object]] = []
        self._dup_seq = 0
        self._dup_keys: dict[tuple[str, int], str] = {}
        for name in emitter.files_for_day(ctx):
            self._open(name)

    def _open(self, name: str) -> _OpenFile:
        f = self.files.get(name)
        if f is None:
            handle = (self.dir / name).open("w", encoding="utf-8", newline="\n", buffering=1 << 20)
            f = _OpenFile(handle, FileStat(self.source, self.day, name))
            self.files[name] = f
            header = self.emitter.header(name, self.ctx)
            for text in header:
                handle.write(text + "\n")
            f.stat.lines += len(header)
            f.stat.header_lines += len(header)
        return f

    def write(self, name: str, line: str) -> int:
        """Write one event line; returns its 1-based line number in the file."""
        f = self._open(name)
        events = line.count('"eventID"') if line.startswith('{"Records"') else 1
        f.handle.write(line + "\n")
        f.stat.lines += 1
        f.stat.event_lines += 1
        f.stat.events += events
        number = f.stat.lines
        while f.dups and f.dups[0][0] <= number:
            _, _, text, of = heapq.heappop(f.dups)
            self._write_dup(f, name, text, of)
        return number

    def _write_dup(self, f: _OpenFile, name: str, text: str, of: int) -> None:
        f.handle.write(text + "\n")
        f.stat.lines += 1
        f.stat.event_lines += 1
        f.stat.events += 1
        self.record(name, f.stat.lines, "duplicate", self._dup_keys.pop((name, of)), of_line=of)

    def schedule_duplicate(self, name: str, line: str, of: int, after: int, event_key: str) -> None:
        """Deliver `line` again `after` lines later (an at-least-once shipper re-sending)."""
        f = self._open(name)
        self._dup_seq += 1
        self._dup_keys[(name, of)] = event_key
        heapq.heappush(f.dups, (of + after, self._dup_seq, line, of))

    def record(self, name: str, line: int, kind: str, event_key: str, **extra: object) -> None:
        row: dict[str, object] = {
            "source": self.source,
            "date": self.day,
            "file": name,
            "line": line,
            "kind": kind,
            "event_key": event_key,
        }
        row.update(extra)
        self.dirty.append(row)

    def close(self) -> list[FileStat]:
        stats = []
        for name in sorted(self.files):
            f = self.files[name]
            while f.dups:
                _, _, text, of = heapq.heappop(f.dups)
                self._write_dup(f, name, text, of)
            footer = self.emitter.footer(name, self.ctx)
            for text in footer:
                f.handle.write(text + "\n")
            f.stat.lines += len(footer)
            f.stat.footer_lines += len(footer)
            f.handle.close()
            stats.append(f.stat)
        return stats


class _Dirt:
    """Decides, line by line, whether a benign line is spoiled (pre-drawn in blocks)."""

    def __init__(self, rng: np.random.Generator, allow_late: bool) -> None:
        self.rng = rng
        self.allow_late = allow_late
        self._u = np.zeros(0)
        self._aux = np.zeros(0)
        self._i = 0
        edges = []
        acc = 0.0
        for kind in ("late", "missing_timestamp", "bad_timestamp", "malformed", "duplicate"):
            acc += RATES[kind]
            edges.append((acc, kind))
        self.edges = edges

    def draw(self) -> tuple[str | None, float]:
        if self._i >= len(self._u):
            self._u = self.rng.random(8192)
            self._aux = self.rng.random(8192)
            self._i = 0
        u = float(self._u[self._i])
        aux = float(self._aux[self._i])
        self._i += 1
        for edge, kind in self.edges:
            if u < edge:
                if kind == "late" and not self.allow_late:
                    return None, aux
                return kind, aux
        return None, aux


def _emit(files: DayFiles, dirt: _Dirt, entry: Entry, late_out: list[Entry]) -> None:
    _, _, name, line, kind, key = entry
    if kind == SCENARIO:
        files.write(name, line)
        return
    if kind == LATE:
        number = files.write(name, line)
        files.record(name, number, "late", key)
        return
    spoil, aux = dirt.draw()
    if spoil is None:
        files.write(name, line)
    elif spoil == "late":
        late_out.append(entry)
    elif spoil == "missing_timestamp":
        number = files.write(name, drop_timestamp(files.source, name, line))
        files.record(name, number, spoil, key)
    elif spoil == "bad_timestamp":
        number = files.write(name, break_timestamp(files.source, name, line, int(aux * 1000)))
        files.record(name, number, spoil, key)
    elif spoil == "malformed":
        number = files.write(name, truncate(files.source, name, line, aux))
        files.record(name, number, spoil, key)
    else:  # duplicate
        number = files.write(name, line)
        files.schedule_duplicate(name, line, number, 1 + int(aux * 200), key)


def write_stream_day(
    out: Path,
    emitter: SourceEmitter,
    ctx: DayContext,
    dirt_rng: np.random.Generator,
    carried: list[Entry],
    scenario_events: Iterable[tuple[int, dict[str, object]]],
) -> tuple[list[FileStat], list[dict[str, object]], list[Entry]]:
    """Write one date folder of one shard.

    `carried` holds what the previous day handed over: lines made late (delivered here as
    LATE) and follow-up events of yesterday's activity that fall after midnight (written
    here as ordinary lines). Returns file stats, dirty rows and what to hand to tomorrow.
    """
    files = DayFiles(out, emitter.source, ctx.day, emitter, ctx)
    dirt = _Dirt(dirt_rng, allow_late=ctx.day_index < ctx.days - 1)
    handover: list[Entry] = []
    start = day_start_us(ctx.day)
    end = start + 24 * US_PER_HOUR
    pending: list[Entry] = []
    late = [e for e in carried if e[0] < start]
    # late lines arrive during the first two hours of the next day's files
    arrivals = dirt_rng.integers(0, 2 * US_PER_HOUR, size=len(late)).tolist() if late else []
    for entry, arrival in zip(late, arrivals, strict=True):
        pending.append((start + arrival, ctx.next_seq(), entry[2], entry[3], LATE, entry[5]))
    pending.extend(e for e in carried if e[0] >= start)
    for ts, spec in scenario_events:
        pending.extend(emitter.scenario(ctx, ts, spec))

    def flush(entries: list[Entry]) -> None:
        for entry in entries:
            if entry[0] >= end:  # after midnight: tomorrow's file (dropped after the last day)
                if ctx.day_index < ctx.days - 1:
                    handover.append(entry)
            elif entry[0] < start and entry[4] == BENIGN:
                # a lead-in of today's activity stamped before midnight (a mistyped password
                # just before a 00:00:20 sign-in): it is yesterday's event, arriving today
                _emit(files, dirt, (*entry[:4], LATE, entry[5]), handover)
            else:
                _emit(files, dirt, entry, handover)

    for batch, watermark in emitter.benign(ctx):
        pending.extend(batch)
        pending.sort()
        cut = bisect_left(pending, (watermark,))
        flush(pending[:cut])
        del pending[:cut]
    pending.sort()
    flush(pending)
    stats = files.close()
    return stats, files.dirty, handover
