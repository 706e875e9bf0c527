"""The two maintained EVTX parsers on the shared samples: `evtx` (Rust, pyevtx-rs; what
`evtx_dump` is built on) and `python-evtx` (pure Python). docs/benchmarks.md, "EVTX parsers".

Each variant runs in its own fresh process over every file of a collection, several times:
records read, seconds (best and median pass), records per second (median pass), errors
raised, and peak memory (the process's max RSS, and its increase over the RSS after the
imports). Output is consumed the way a converter would (each record's JSON or XML string).
The record id and EventID sequences of both libraries are compared file by file, and damaged
copies of one real file (built in a temporary folder) show what each does with bad input.
The samples are read in place, never copied.

    .venv/bin/python bench/evtx_parsers.py                 # writes bench/results/evtx_parsers.json
    .venv/bin/python bench/evtx_parsers.py --repeat 5 --datasets DIR --sigma DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "evtx_parsers.json"
SHARED = REPO.parent / "shared"
ATTACK_SAMPLES = "evtx-attack-samples"
SIGMA_SAMPLES = "sigma-regression"
DAMAGED_FROM = ("Lateral Movement", "LM_5145_Remote_FileCopy.evtx")  # 10 chunks, 869 records
LARGE = "large-file"
LARGE_COPIES = 20  # x 10 chunks: 13.1 MB, 17,380 records
FILE_HEADER, CHUNK = 4096, 65536

# name -> what it does per file
VARIANTS = {
    "evtx-json": "evtx PyEvtxParser(path, number_of_threads=1).records_json()",
    "evtx-json-all-cores": "evtx PyEvtxParser(path) (number_of_threads=0: the library decides)",
    "evtx-xml": "evtx PyEvtxParser(path, number_of_threads=1).records() (XML, as python-evtx)",
    "python-evtx-xml": "python-evtx Evtx.Evtx.Evtx(path).records(), record.xml() each",
    "import-evtx": "policylake's importer (evtx-json + event date + writes) into a temp folder",
}
_XML_EVENT_ID = re.compile(r"<EventID[^>]*>(\d+)</EventID>")


# ---------------------------------------------------------------------------------------
# Worker: one variant over a list of files, in its own process
# ---------------------------------------------------------------------------------------


def _max_rss_mib() -> float:
    """The process's peak resident set (Linux `VmHWM`). Not `getrusage`'s `ru_maxrss`: Linux
    carries that over from the parent across fork and exec, so every worker would report the
    driver's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise SystemExit("no VmHWM in /proc/self/status (Linux only)")


def _json_event_id(data: str) -> int | None:
    event_id = json.loads(data)["Event"]["System"].get("EventID")
    if isinstance(event_id, dict):  # with Qualifiers: {"#attributes": ..., "#text": n}
        event_id = event_id.get("#text")
    return int(event_id) if event_id is not None else None


def _read_evtx(path: Path, threads: int, xml: bool, detail: bool) -> dict[str, Any]:
    from evtx import PyEvtxParser

    ids: list[int] = []
    event_ids: list[int | None] = []
    errors: list[str] = []
    try:
        parser = PyEvtxParser(str(path), number_of_threads=threads)
        records = iter(parser.records() if xml else parser.records_json())
    except Exception as exc:  # the benchmark records what each library raises
        return {"records": 0, "file_error": f"{type(exc).__name__}: {exc}"[:300], "errors": []}
    while True:
        try:
            record = next(records)
        except StopIteration:
            break
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
            continue
        data = record["data"]
        ids.append(int(record["event_record_id"]))
        if detail and xml:
            match = _XML_EVENT_ID.search(data)
            event_ids.append(int(match.group(1)) if match else None)
        elif detail:
            event_ids.append(_json_event_id(data))
    return {"records": len(ids), "ids": ids, "event_ids": event_ids, "errors": errors}


def _read_python_evtx(path: Path, detail: bool) -> dict[str, Any]:
    import Evtx.Evtx as python_evtx

    ids: list[int] = []
    event_ids: list[int | None] = []
    errors: list[str] = []
    try:
        with python_evtx.Evtx(str(path)) as log:
            for record in log.records():
                try:
                    xml = record.xml()
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    continue
                ids.append(int(record.record_num()))
                if detail:
                    match = _XML_EVENT_ID.search(xml)
                    event_ids.append(int(match.group(1)) if match else None)
    except Exception as exc:
        return {
            "records": len(ids),
            "ids": ids,
            "event_ids": event_ids,
            "errors": errors,
            "file_error": f"{type(exc).__name__}: {exc}"[:300],
        }
    return {"records": len(ids), "ids": ids, "event_ids": event_ids, "errors": errors}


def _read_import(path: Path, out: Path) -> dict[str, Any]:
    from jobs.stages.ingest.evtx_import import import_evtx_file

    result = import_evtx_file(path, out)
    return {
        "records": result.records,
        "errors": [p.line() for p in result.problems],
        **({"file_error": result.problems[0].line()} if result.failed else {}),
    }


def _read(variant: str, path: Path, detail: bool, out: Path) -> dict[str, Any]:
    if variant == "evtx-json":
        return _read_evtx(path, 1, False, detail)
    if variant == "evtx-json-all-cores":
        return _read_evtx(path, 0, False, detail)
    if variant == "evtx-xml":
        return _read_evtx(path, 1, True, detail)
    if variant == "python-evtx-xml":
        return _read_python_evtx(path, detail)
    if variant == "import-evtx":
        return _read_import(path, out)
    raise SystemExit(f"unknown variant {variant}")


def worker(variant: str, files: list[Path], repeat: int) -> dict[str, Any]:
    if variant.startswith("evtx") or variant == "import-evtx":
        import evtx  # noqa: F401  (imports first: the baseline RSS includes them)
    if variant == "import-evtx":
        import jobs.stages.ingest.evtx_import  # noqa: F401
    if variant.startswith("python-evtx"):
        import Evtx.Evtx  # noqa: F401
    baseline = _max_rss_mib()
    seconds = []
    first: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="evtx-bench-") as scratch:
        for attempt in range(repeat):
            detail = attempt == 0  # the first pass also keeps EventIDs (not timed apart)
            start = time.perf_counter()
            per_file = {str(f): _read(variant, f, detail, Path(scratch)) for f in files}
            elapsed = time.perf_counter() - start
            if attempt == 0:
                first = per_file
            else:
                seconds.append(elapsed)
    if not seconds:  # one pass only: the detailed pass is the timing
        seconds = [elapsed]
    return {
        "per_file": first,
        "seconds": seconds,
        "baseline_rss_mib": round(baseline, 1),
        "peak_rss_mib": round(_max_rss_mib(), 1),
    }


# ---------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------


def _run_worker(variant: str, files: list[Path], repeat: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump([str(f) for f in files], handle)
        listing = handle.name
    try:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                variant,
                "--files",
                listing,
                "--repeat",
                str(repeat),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
    finally:
        os.unlink(listing)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _collections(datasets: Path, sigma: Path) -> dict[str, list[Path]]:
    found = {}
    attack = datasets / ATTACK_SAMPLES
    if attack.is_dir():
        found[ATTACK_SAMPLES] = sorted(attack.rglob("*.evtx"))
    regression = sigma / "regression_data"
    if regression.is_dir():
        found[SIGMA_SAMPLES] = sorted(regression.rglob("*.evtx"))
    return found


def _large_file(datasets: Path, folder: Path) -> Path:
    """One larger log from real chunks: the sample's 10 chunks `LARGE_COPIES` times, record ids
    renumbered (chunk and record headers) so that they rise through the file as in a real log.
    The samples are all small (at most 1.1 MB), which measures per-file overhead rather than
    per-record cost."""
    data = (datasets / ATTACK_SAMPLES).joinpath(*DAMAGED_FROM).read_bytes()
    chunks = 10
    header = bytearray(data[:FILE_HEADER])
    struct.pack_into("<QH", header, 16, chunks * LARGE_COPIES - 1, 0)
    struct.pack_into("<H", header, 42, chunks * LARGE_COPIES)
    out = bytearray(header)
    next_id = 1
    for _ in range(LARGE_COPIES):
        for index in range(chunks):
            chunk = bytearray(data[FILE_HEADER + index * CHUNK : FILE_HEADER + (index + 1) * CHUNK])
            free = struct.unpack_from("<I", chunk, 48)[0]
            offset, first = 512, next_id
            while offset < free:
                size = struct.unpack_from("<I", chunk, offset + 4)[0]
                struct.pack_into("<Q", chunk, offset + 8, next_id)
                next_id += 1
                offset += size
            struct.pack_into("<QQQQ", chunk, 8, first, next_id - 1, first, next_id - 1)
            out += chunk
    struct.pack_into("<Q", out, 24, next_id)  # the file header's next record id
    path = folder / "large.evtx"
    path.write_bytes(bytes(out))
    return path


def _damaged(datasets: Path, folder: Path) -> dict[str, Path]:
    """Damaged copies of one real file: what each library does with bad input."""
    data = (datasets / ATTACK_SAMPLES).joinpath(*DAMAGED_FROM).read_bytes()
    chunk = 4096 + 3 * 65536  # chunk 3
    flipped = bytearray(data)
    for at in range(chunk + 512 + 24 + 40, chunk + 512 + 24 + 80):  # first record's BinXML
        flipped[at] ^= 0xFF
    no_magic = bytearray(data)
    no_magic[chunk + 512] = 0  # first record header of chunk 3
    cases = {
        "text_named_evtx": b"not an event log\n" * 500,
        "empty": b"",
        "truncated_mid_chunk_3": data[: chunk + 32768],
        "record_bytes_flipped_chunk_3": bytes(flipped),
        "record_header_broken_chunk_3": bytes(no_magic),
    }
    paths = {}
    for name, content in cases.items():
        path = folder / f"{name}.evtx"
        path.write_bytes(content)
        paths[name] = path
    return paths


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    per_file = run["per_file"]
    records = sum(f["records"] for f in per_file.values())
    median = statistics.median(run["seconds"])
    return {
        "files": len(per_file),
        "records": records,
        "files_failed": sum(1 for f in per_file.values() if "file_error" in f),
        "record_errors": sum(len(f["errors"]) for f in per_file.values()),
        "seconds_best": round(min(run["seconds"]), 4),
        "seconds_median": round(median, 4),
        "records_per_second": round(records / median) if median else None,
        "passes_timed": len(run["seconds"]),
    }


def _agreement(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    differ = {"records": [], "record_ids": [], "event_ids": []}
    for path, left in a["per_file"].items():
        right = b["per_file"][path]
        name = Path(path).name
        if left["records"] != right["records"]:
            differ["records"].append(f"{name}: {left['records']} vs {right['records']}")
        if left.get("ids") != right.get("ids"):
            differ["record_ids"].append(name)
        if left.get("event_ids") != right.get("event_ids"):
            differ["event_ids"].append(name)
    return {"files_compared": len(a["per_file"]), "differ": differ}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per variant (+1)")
    parser.add_argument(
        "--datasets",
        type=Path,
        default=Path(os.environ.get("POLICYLAKE_DATASETS", SHARED / "datasets")),
    )
    parser.add_argument(
        "--sigma", type=Path, default=Path(os.environ.get("POLICYLAKE_SIGMA", SHARED / "sigma"))
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.worker:
        files = [Path(f) for f in json.loads(Path(args.files).read_text())]
        print(json.dumps(worker(args.worker, files, args.repeat)))
        return

    collections = _collections(args.datasets, args.sigma)
    if not collections:
        raise SystemExit(f"no samples under {args.datasets} or {args.sigma}")
    report: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "evtx": metadata.version("evtx"),
            "python-evtx": metadata.version("python-evtx"),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "method": (
            "each variant in a fresh process over every file of a collection: one detailed "
            "pass (record ids and EventIDs kept, for the agreement), then --repeat timed "
            "passes (python-evtx on the large file: the one detailed pass, timed); records per "
            "second = records / median pass; peak RSS = the worker's VmHWM at the end; "
            "baseline = its VmHWM after importing the library; the machine is shared, see "
            "the load averages"
        ),
        "variants": VARIANTS,
        "collections": {},
        "results": {},
        "agreement": {},
        "damaged": {},
    }
    scratch = tempfile.TemporaryDirectory(prefix="evtx-large-")
    if ATTACK_SAMPLES in collections:
        collections[LARGE] = [_large_file(args.datasets, Path(scratch.name))]
    for name, files in collections.items():
        report["collections"][name] = {
            "files": len(files),
            "bytes": sum(f.stat().st_size for f in files),
        }
        runs = {}
        for variant in VARIANTS:
            print(f"{name}: {variant} ...", file=sys.stderr, flush=True)
            # python-evtx reads ~100 records a second: one pass of the large file, timed
            repeat = 1 if name == LARGE and variant.startswith("python-evtx") else args.repeat + 1
            runs[variant] = _run_worker(variant, files, repeat)
            report["results"].setdefault(variant, {})[name] = {
                **_summary(runs[variant]),
                "baseline_rss_mib": runs[variant]["baseline_rss_mib"],
                "peak_rss_mib": runs[variant]["peak_rss_mib"],
            }
        report["agreement"][name] = {
            "evtx-json vs python-evtx-xml": _agreement(runs["evtx-json"], runs["python-evtx-xml"]),
            "evtx-json vs evtx-xml": _agreement(runs["evtx-json"], runs["evtx-xml"]),
        }
    scratch.cleanup()
    if ATTACK_SAMPLES in collections:
        with tempfile.TemporaryDirectory(prefix="evtx-damaged-") as folder:
            cases = _damaged(args.datasets, Path(folder))
            for variant in ("evtx-json", "python-evtx-xml", "import-evtx"):
                run = _run_worker(variant, list(cases.values()), 1)
                report["damaged"][variant] = {
                    case: {
                        "records": run["per_file"][str(path)]["records"],
                        "file_error": run["per_file"][str(path)].get("file_error"),
                        "errors": len(run["per_file"][str(path)]["errors"]),
                        "first_error": (run["per_file"][str(path)]["errors"] or [None])[0],
                    }
                    for case, path in cases.items()
                }
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
