"""What a benchmark run measures besides wall time: process memory and Spark's own metrics.

In local mode the driver and the executor are one JVM, so "driver and executor memory" is
that JVM's heap (reported by Spark itself through the REST API: the executor
`peakMemoryMetrics` and, per Spark stage, `peakExecutorMetrics`) plus the resident memory of
the processes involved, sampled with psutil: the JVM, the Python driver and the Python
workers the JVM forks for `mapInPandas` / pandas UDFs.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["MemorySampler", "SparkRest", "process_groups"]

MIB = 1024 * 1024


def _is_java(proc: psutil.Process) -> bool:
    try:
        return proc.name().startswith("java")
    except psutil.Error:
        return False


def process_groups(root: psutil.Process) -> dict[str, list[psutil.Process]]:
    """The Python driver (`root`), its JVM(s), and every Python process below a JVM."""
    groups: dict[str, list[psutil.Process]] = {
        "python_driver": [root],
        "jvm": [],
        "python_workers": [],
    }
    try:
        children = root.children(recursive=True)
    except psutil.Error:
        children = []
    jvms = [p for p in children if _is_java(p)]
    groups["jvm"] = jvms
    below_jvm: set[int] = set()
    for jvm in jvms:
        try:
            below_jvm |= {p.pid for p in jvm.children(recursive=True)}
        except psutil.Error:
            continue
    groups["python_workers"] = [p for p in children if p.pid in below_jvm]
    return groups


@dataclass
class _Window:
    peaks: dict[str, int] = field(default_factory=dict)
    samples: int = 0


class MemorySampler:
    """Samples RSS of the process groups every `interval` seconds in a daemon thread.

    `window(name)` opens a measurement window; peaks are kept per window and overall, so a
    stage's peak is the highest sample taken while it ran.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.root = psutil.Process()
        self._lock = threading.Lock()
        self._open: dict[str, _Window] = {}
        self.closed: dict[str, dict[str, Any]] = {}
        self.overall = _Window()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)
        self._cached: tuple[float, dict[str, list[psutil.Process]]] | None = None

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _groups(self) -> dict[str, list[psutil.Process]]:
        # re-walk the process tree every 2 s: Python workers come and go
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > 2.0:
            self._cached = (now, process_groups(self.root))
        return self._cached[1]

    def sample(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, procs in self._groups().items():
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
            out[name] = total
        out["total"] = sum(out.values())
        return out

    def _record(self, values: dict[str, int]) -> None:
        with self._lock:
            for window in (self.overall, *self._open.values()):
                window.samples += 1
                for k, v in values.items():
                    if v > window.peaks.get(k, 0):
                        window.peaks[k] = v

    def _run(self) -> None:
        while not self._stop.is_set():
            self._record(self.sample())
            self._stop.wait(self.interval)

    @contextmanager
    def window(self, name: str) -> Iterator[None]:
        with self._lock:
            self._open[name] = _Window()
        self._record(self.sample())
        try:
            yield
        finally:
            self._record(self.sample())
            with self._lock:
                w = self._open.pop(name)
            self.closed[name] = {
                "peak_rss_mib": {k: round(v / MIB, 1) for k, v in sorted(w.peaks.items())},
                "samples": w.samples,
            }

    def overall_peaks(self) -> dict[str, float]:
        return {k: round(v / MIB, 1) for k, v in sorted(self.overall.peaks.items())}


class SparkRest:
    """The running application's monitoring REST API (`<ui>/api/v1/applications/<id>/...`)."""

    def __init__(self, ui_url: str, app_id: str) -> None:
        self.base = f"{ui_url.rstrip('/')}/api/v1/applications/{app_id}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base}/{path.lstrip('/')}", timeout=60) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def executors(self) -> list[dict[str, Any]]:
        return list(self.get("allexecutors"))

    def jvm_peak_heap(self) -> dict[str, int]:
        """Executor id -> peak JVM heap used so far (`peakMemoryMetrics.JVMHeapMemory`)."""
        out = {}
        for e in self.executors():
            peak = e.get("peakMemoryMetrics") or {}
            out[str(e.get("id"))] = int(peak.get("JVMHeapMemory", 0))
        return out

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.get("jobs"))

    def stages(self) -> list[dict[str, Any]]:
        return list(self.get("stages?details=false"))

    def sql(self) -> list[dict[str, Any]]:
        """SQL executions with their plan (`planDescription`: explain in `formatted` mode)."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.get(f"sql?details=true&planDescription=true&offset={offset}&length=200")
            out.extend(page)
            if len(page) < 200:
                return out
            offset += 200


class RestRecorder:
    """Keeps every job, stage and SQL execution the REST API shows, captured after each step.

    The UI store keeps its default retention (1,000 jobs, stages and executions), so the
    monitoring does not grow the driver heap it measures; capturing after every step keeps
    what would later be evicted.
    """

    def __init__(self, rest: SparkRest) -> None:
        self.rest = rest
        self.jobs: dict[int, dict[str, Any]] = {}
        self.stages: dict[tuple[int, int], dict[str, Any]] = {}
        self.sql: dict[int, dict[str, Any]] = {}
        self.errors: list[str] = []

    def capture(self) -> None:
        try:
            for j in self.rest.jobs():
                self.jobs[int(j["jobId"])] = j
            for s in self.rest.stages():
                self.stages[(int(s["stageId"]), int(s.get("attemptId", 0)))] = s
            for q in self.rest.get("sql?details=false&offset=0&length=100000"):
                qid = int(q["id"])
                done = q.get("status") in ("COMPLETED", "FAILED")
                if qid in self.sql and self.sql[qid].get("_complete"):
                    continue
                full = self.rest.get(f"sql/{qid}?details=true&planDescription=true")
                full["_complete"] = done
                self.sql[qid] = full
        except Exception as exc:  # monitoring must never fail the benchmark
            self.errors.append(repr(exc)[:300])

    def all_jobs(self) -> list[dict[str, Any]]:
        return [self.jobs[k] for k in sorted(self.jobs)]

    def all_stages(self) -> list[dict[str, Any]]:
        return [self.stages[k] for k in sorted(self.stages)]

    def all_sql(self) -> list[dict[str, Any]]:
        return [self.sql[k] for k in sorted(self.sql)]
