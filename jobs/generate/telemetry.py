"""`generate_telemetry`: the whole synthetic data set, deterministic for a seed.

The parent builds the organisation and plans the scenarios; workers then write one
(source, shard) stream each over all dates (in parallel, in any order: every stream draws
from its own seeded random streams per date). The parent finally writes the reference
files, ground truth, dirty-row list and the manifest that accounts for every line.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue as queue_module
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from jobs.core.config import SOURCES
from jobs.generate.activity import DayContext
from jobs.generate.cloudtrail import CloudTrailEmitter
from jobs.generate.feeds import shards
from jobs.generate.idp import IdpEmitter
from jobs.generate.messiness import DIRTY_KINDS, RATES
from jobs.generate.organisation import Organisation, build_organisation, write_reference
from jobs.generate.scenarios import Scenario, learning_days, plan_scenarios
from jobs.generate.seeding import IdFactory, derive_rng
from jobs.generate.sshd import SshdEmitter
from jobs.generate.stream import Entry, FileStat, SourceEmitter, write_stream_day
from jobs.generate.windows import WindowsEmitter
from jobs.generate.zeek import ConnEmitter, DnsEmitter
from jobs.reference.geo import default_resolver

__all__ = ["GenerationSummary", "generate_telemetry", "make_emitter"]

Progress = Callable[[str, int, int], None]
# biggest streams first so a small pool finishes together
_TASK_ORDER = {"zeek_conn": 0, "windows": 1, "zeek_dns": 2, "idp": 3, "cloudtrail": 4, "sshd": 5}
MANIFEST_VERSION = 1


@dataclass
class GenerationSummary:
    """What a run wrote (line counts are physical lines, Zeek header/footer included)."""

    out: Path
    lines: dict[tuple[str, str], int]
    event_lines: dict[tuple[str, str], int]
    total_lines: int
    total_events: int
    scenarios: int
    dirty_rows: int
    elapsed_seconds: float
    files: list[FileStat] = field(default_factory=list)

    def lines_by_source(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (source, _), n in sorted(self.lines.items()):
            out[source] = out.get(source, 0) + n
        return out


def make_emitter(source: str, shard: str, org: Organisation) -> SourceEmitter:
    if source == "idp":
        return IdpEmitter(shard, org)
    if source == "windows":
        return WindowsEmitter(shard, org)
    if source == "zeek_conn":
        return ConnEmitter(shard, org)
    if source == "zeek_dns":
        return DnsEmitter(shard, org)
    if source == "cloudtrail":
        return CloudTrailEmitter(shard, org)
    if source == "sshd":
        return SshdEmitter(shard, org)
    raise KeyError(source)


@dataclass
class _Job:
    out: Path
    org: Organisation
    start: date
    days: int
    seed: int
    scale: float
    # (source, shard) -> day index -> [(ts, spec)]
    scenario_events: dict[tuple[str, str], dict[int, list[tuple[int, dict[str, object]]]]]


_JOB: _Job | None = None
_QUEUE: Any = None


def _init_worker(job: _Job, queue: Any) -> None:
    global _JOB, _QUEUE
    _JOB = job
    _QUEUE = queue
    if queue is not None:
        # A forked worker inherits the parent's signal handlers (an Airflow task runner
        # installs its own); a SIGTERM sent to a worker must end it.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_shard(task: tuple[str, str]) -> tuple[list[FileStat], list[dict[str, object]]]:
    """Write every date folder of one (source, shard), carrying late lines day to day."""
    job = _JOB
    assert job is not None
    source, shard = task
    emitter = make_emitter(source, shard, job.org)
    resolver = default_resolver()
    stats: list[FileStat] = []
    dirty: list[dict[str, object]] = []
    carried: list[Entry] = []
    planned = job.scenario_events.get(task, {})
    for index in range(job.days):
        day = job.start + timedelta(days=index)
        key = day.isoformat()
        ctx = DayContext(
            org=job.org,
            day=day,
            day_index=index,
            days=job.days,
            seed=job.seed,
            scale=job.scale,
            rng=derive_rng(job.seed, source, shard, key, "events"),
            ids=IdFactory(derive_rng(job.seed, source, shard, key, "ids")),
            resolver=resolver,
        )
        day_stats, day_dirty, carried = write_stream_day(
            job.out,
            emitter,
            ctx,
            derive_rng(job.seed, source, shard, key, "dirt"),
            carried,
            planned.get(index, []),
        )
        stats.extend(day_stats)
        dirty.extend(day_dirty)
        if _QUEUE is not None:
            _QUEUE.put(1)
    return stats, dirty


def _route(
    scenarios: list[Scenario], start: date
) -> dict[tuple[str, str], dict[int, list[tuple[int, dict[str, object]]]]]:
    routed: dict[tuple[str, str], dict[int, list[tuple[int, dict[str, object]]]]] = {}
    base = (start - date(1970, 1, 1)).days
    for scenario in scenarios:
        for ev in scenario.events:
            day_index = ev.ts_us // 86_400_000_000 - base
            routed.setdefault((ev.source, ev.shard), {}).setdefault(day_index, []).append(
                (ev.ts_us, ev.spec)
            )
    for per_day in routed.values():
        for events in per_day.values():
            events.sort(key=lambda e: e[0])
    return routed


def _clean(out: Path) -> None:
    """Remove what an earlier run wrote here, so stale files never mix with this run's."""
    for source in SOURCES:
        shutil.rmtree(out / "raw" / source, ignore_errors=True)
    for name in ("ground_truth.jsonl", "dirty_rows.jsonl", "generator_manifest.json"):
        (out / name).unlink(missing_ok=True)


def generate_telemetry(
    out: Path,
    start: date,
    days: int,
    users: int,
    seed: int,
    events_per_user: float = 1.0,
    progress: Progress | None = None,
    *,
    workers: int | None = None,
) -> GenerationSummary:
    """Write raw telemetry, reference files, ground truth, dirty rows and the manifest.

    Same arguments, same bytes (whatever `workers` is). `events_per_user` scales the daily
    volume: 1.0 is about 100 events per person on a working day across all sources.
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    if users < 1:
        raise ValueError("users must be >= 1")
    if not events_per_user > 0:
        raise ValueError("events_per_user must be > 0")
    began = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clean(out)
    report = progress or (lambda _what, _done, _total: None)

    report("organisation", 0, 1)
    resolver = default_resolver()
    org = build_organisation(users, seed, start, resolver)
    scenarios = plan_scenarios(org, start, days, seed, events_per_user, resolver)
    report("organisation", 1, 1)

    job = _Job(out, org, start, days, seed, events_per_user, _route(scenarios, start))
    tasks = sorted(
        ((s, sh) for s in SOURCES for sh in shards(s)), key=lambda t: (_TASK_ORDER[t[0]], t[1])
    )
    total_units = len(tasks) * days
    n_workers = workers if workers is not None else min(len(tasks), os.cpu_count() or 1)
    results: list[tuple[list[FileStat], list[dict[str, object]]]] = []
    report("telemetry", 0, total_units)
    if n_workers <= 1:
        _init_worker(job, None)
        for k, task in enumerate(tasks):
            results.append(_run_shard(task))
            report("telemetry", (k + 1) * days, total_units)
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        mp = multiprocessing.get_context(method)
        ticks = mp.Queue()
        done = 0
        with mp.Pool(n_workers, initializer=_init_worker, initargs=(job, ticks)) as pool:
            pending = pool.map_async(_run_shard, tasks, chunksize=1)
            while True:
                try:
                    done += ticks.get(timeout=0.2)
                    report("telemetry", done, total_units)
                except queue_module.Empty:
                    if pending.ready():
                        break
            results = pending.get()
            pool.close()  # workers exit on their own; leaving the block must not need SIGTERM
            pool.join()
        report("telemetry", total_units, total_units)

    report("reference", 0, 1)
    reference = write_reference(org, out)
    files = sorted(
        (s for stats, _ in results for s in stats), key=lambda s: (s.source, s.date, s.file)
    )
    dirty = sorted(
        (row for _, rows in results for row in rows),
        key=lambda r: (str(r["source"]), str(r["date"]), str(r["file"]), int(r["line"])),  # type: ignore[call-overload]
    )
    with (out / "ground_truth.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for scenario in scenarios:
            fh.write(json.dumps(scenario.ground_truth(), sort_keys=False) + "\n")
    with (out / "dirty_rows.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for row in dirty:
            fh.write(json.dumps(row) + "\n")
    by_kind = {k: sum(1 for r in dirty if r["kind"] == k) for k in DIRTY_KINDS}
    manifest = {
        "generator": "policylake.generate",
        "manifest_version": MANIFEST_VERSION,
        "parameters": {
            "start": start.isoformat(),
            "days": days,
            "users": users,
            "seed": seed,
            "events_per_user": events_per_user,
        },
        "learning_days": learning_days(days),
        "organisation": {
            "accounts": len(org.accounts),
            "humans": sum(1 for a in org.accounts if a.account_type in ("human", "admin")),
            "admins": sum(1 for a in org.accounts if a.account_type == "admin"),
            "service_accounts": sum(1 for a in org.accounts if a.account_type == "service"),
            "break_glass": sum(1 for a in org.accounts if a.account_type == "break_glass"),
            "assets": len(org.assets),
        },
        "dirty_rates": RATES,
        "files": [
            {
                "source": s.source,
                "date": s.date,
                "file": s.file,
                "path": f"raw/{s.source}/{s.date}/{s.file}",
                "lines": s.lines,
                "header_lines": s.header_lines,
                "footer_lines": s.footer_lines,
                "event_lines": s.event_lines,
                "events": s.events,
            }
            for s in files
        ],
        "reference": {
            name: {"rows": rows, "lines": rows + 1} for name, rows in sorted(reference.items())
        },
        "ground_truth": {"path": "ground_truth.jsonl", "lines": len(scenarios)},
        "dirty_rows": {"path": "dirty_rows.jsonl", "lines": len(dirty), "by_kind": by_kind},
        "totals": {
            "lines": sum(s.lines for s in files),
            "event_lines": sum(s.event_lines for s in files),
            "events": sum(s.events for s in files),
        },
    }
    (out / "generator_manifest.json").write_text(
        json.dumps(manifest, indent=2) + "\n", encoding="utf-8"
    )
    report("reference", 1, 1)

    lines: dict[tuple[str, str], int] = {}
    event_lines: dict[tuple[str, str], int] = {}
    for s in files:
        lines[(s.source, s.date)] = lines.get((s.source, s.date), 0) + s.lines
        event_lines[(s.source, s.date)] = event_lines.get((s.source, s.date), 0) + s.event_lines
    return GenerationSummary(
        out=out,
        lines=lines,
        event_lines=event_lines,
        total_lines=sum(lines.values()),
        total_events=sum(s.events for s in files),
        scenarios=len(scenarios),
        dirty_rows=len(dirty),
        elapsed_seconds=time.perf_counter() - began,
        files=files,
    )
