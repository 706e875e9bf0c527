"""Benchmark: SigmaHQ's rules compiled and evaluated in one pass over real Windows events.

1. Coverage: every rule in ../shared/sigma/rules loaded and compiled with policylake's
   pipeline, then analysed by Spark; the share that compiles among the rules whose log source
   policylake ingests, and every failure with its reason.
2. Regression samples: the evtx_dump JSON and the .evtx of each sample in
   ../shared/sigma/regression_data, does its rule fire on it?
3. Evaluation: the OTRF Windows recordings (../shared/datasets/otrf-security-datasets, ~184k
   events) written once as Parquet, then `match_events` with 0 (the scan alone), 100, 500,
   1,000 and all the Windows rules, timed end to end (a `noop` write forces every row through
   every rule of its slot); plus a rule-by-rule run of 100 rules for comparison.

Every event is read by the product's own code: the Windows parser (NXLog, Winlogbeat and
evtx_dump JSON), and for .evtx files import-evtx's converter first, exactly as
`policylake detections test --events` reads them. Writes bench/results/detections.json.

    PYTHONPATH=. .venv/bin/python bench/bench_detections.py
    PYTHONPATH=. .venv/bin/python bench/bench_detections.py --skip-eval     # coverage only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import zipfile
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.cli.detections import DETECTION_COLUMNS, windows_events
from jobs.core.config import load_settings
from jobs.core.spark import build_spark
from jobs.detections.compiler import CompiledRule, compile_rules
from jobs.detections.evaluate import match_events, match_events_per_rule, usable_rules
from jobs.detections.rules import load_rules
from jobs.stages.ingest.parsers.windows import parse_windows

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POLICYLAKE_SHARED", ROOT.parent / "shared"))
SIGMA = SHARED / "sigma"
OTRF = SHARED / "datasets" / "otrf-security-datasets" / "datasets"
LINES_DATE = date(2020, 1, 1)  # the parser needs a run date; detections do not read it
RESULTS = Path(__file__).resolve().parent / "results" / "detections.json"
SCHEMA = "source string, channel string, event_id int, provider string, event_data map<string,string>, hostname string"


def coverage(spark: SparkSession) -> tuple[dict[str, Any], list[CompiledRule]]:
    started = time.perf_counter()
    loaded = load_rules([SIGMA / "rules"])
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    compiled = compile_rules(loaded.rules)
    compile_s = time.perf_counter() - started
    frame = spark.createDataFrame([], SCHEMA).select(
        "*", *[F.lit(None).cast(t).alias(c) for c, t in _SILVER_EXTRA.items()]
    )
    started = time.perf_counter()
    usable = usable_rules(frame, compiled.rules)
    analyse_s = time.perf_counter() - started
    failures = [*loaded.failures, *compiled.failures, *usable.failures]
    ingested = [f for f in failures if f.ingested]
    not_ingested = [f for f in failures if not f.ingested]
    total = len(loaded.rules) + len(loaded.failures)
    in_scope = total - len(not_ingested)
    windows = [r for r in usable.rules if r.slots[0].source == "windows"]
    windows_total = sum(1 for p in (SIGMA / "rules" / "windows").rglob("*.yml"))
    result = {
        "rule_files": total,
        "not_ingested_log_source": len(not_ingested),
        "in_scope": in_scope,
        "compiled": len(usable.rules),
        "failed": len(ingested),
        "share_compiled": round(len(usable.rules) / in_scope, 4),
        "windows_rule_files": windows_total,
        "windows_compiled": len(windows),
        "windows_share_of_all": round(len(windows) / windows_total, 4),
        "load_seconds": round(load_s, 1),
        "compile_seconds": round(compile_s, 1),
        "spark_analysis_seconds": round(analyse_s, 1),
        "failures": sorted(
            ({"rule": str(f.path.relative_to(SIGMA)), "title": f.name, "reason": f.reason} for f in ingested),
            key=lambda d: d["rule"],
        ),
        "not_ingested": dict(Counter(f.reason for f in not_ingested).most_common()),
    }  # fmt: skip
    return result, windows


# silver.events columns the non-Windows rules read (for the analysis frame)
_SILVER_EXTRA = {
    "cloud_action": "string", "cloud_service": "string", "cloud_region": "string",
    "src_ip": "string", "src_port": "int", "dst_ip": "string", "dst_port": "int",
    "protocol": "string", "status_detail": "string", "user_name_raw": "string",
    "dns_query": "string", "dns_rcode": "string", "bytes_in": "long", "bytes_out": "long",
    "message": "string",
}  # fmt: skip


def regression(spark: SparkSession, rules: list[CompiledRule]) -> dict[str, Any]:
    """Each sample's JSON and .evtx, read as `detections test --events` reads them: does the
    sample's own rule fire on it?"""
    expected: dict[str, str] = {}
    for info in sorted((SIGMA / "regression_data" / "rules" / "windows").rglob("info.yml")):
        rule_id = str(yaml.safe_load(info.read_text())["rule_metadata"][0]["id"])
        for sample in [*info.parent.glob("*.json"), *info.parent.glob("*.evtx")]:
            expected[str(sample)] = rule_id
    frame = windows_events(spark, [Path(p) for p in expected], keep_file=True)
    by_id = {r.rule.sigma_id: r for r in rules}
    wanted = [by_id[i] for i in set(expected.values()) if i in by_id]
    hits = {(r["_file"], r["rule"]) for r in match_events(frame, wanted, ["_file"]).collect()}
    out: dict[str, Any] = {}
    for kind in ("json", "evtx"):
        mine = {s: rid for s, rid in expected.items() if s.endswith("." + kind)}
        missed = {
            s: rid
            for s, rid in mine.items()
            if rid not in by_id or (s, by_id[rid].slug) not in hits
        }
        out[kind] = {
            "samples": len(mine),
            "fired": len(mine) - len(missed),
            "share": round((len(mine) - len(missed)) / max(len(mine), 1), 4),
            "missed": [
                {"sample": Path(s).parent.name, "rule_id": rid, "compiled": rid in by_id}
                for s, rid in sorted(missed.items())
            ],
        }
    return out


def otrf_frame(spark: SparkSession, scratch: Path) -> DataFrame:
    """The OTRF Windows recordings through the Windows parser, kept as Parquet."""
    lines = []
    for archive in sorted(OTRF.rglob("*.zip")):
        if "/windows/" not in str(archive):
            continue
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name.endswith(".json"):
                    text = z.read(name).decode("utf-8", "replace")
                    lines += [
                        (LINES_DATE, "windows", name, n, "bench", line)
                        for n, line in enumerate(text.splitlines(), start=1)
                        if line.strip()
                    ]
    raw = spark.createDataFrame(
        lines,
        "run_date date, source string, _file string, _line long, _batch_id string, raw string",
    )
    parsed = parse_windows(raw).where(F.col("_parse_status") == "parsed")
    path = scratch / "otrf.parquet"
    parsed.select(*DETECTION_COLUMNS).write.mode("overwrite").parquet(str(path))
    return spark.read.parquet(str(path))


def _timed(frame: DataFrame) -> float:
    started = time.perf_counter()
    frame.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def evaluation(
    spark: SparkSession,
    rules: list[CompiledRule],
    scratch: Path,
    repeats: int,
    save: Any,
    counts: list[int],
) -> dict[str, Any]:
    events = otrf_frame(spark, scratch)
    n = events.count()
    usable = usable_rules(events, rules).rules
    runs: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "events": n,
        "rules": len(usable),
        "runs": runs,
        "read_by": "the Windows parser (jobs.stages.ingest.parsers.windows)",
    }
    for k in [k for k in counts if k < len(usable)] + [len(usable)]:
        times = []
        for _ in range(repeats):
            target = (
                events.select("source") if k == 0 else match_events(events, usable[:k], ["source"])
            )
            times.append(_timed(target))
        best = min(times)
        runs.append(
            {
                "rules": k,
                "seconds": round(best, 1),
                "seconds_per_million_events": round(best / n * 1e6, 1),
            }
        )
        print(f"  {k:>5} rules: {best:.1f} s ({best / n * 1e6:.1f} s per million)", flush=True)
        save(result)  # a partial result survives a stopped run
    naive = usable[:100]
    naive_s = min(_timed(match_events_per_rule(events, naive, ["source"])) for _ in range(repeats))
    result["rule_by_rule_100_rules_seconds"] = round(naive_s, 1)
    save(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--skip-eval",
        action="store_true",
        help="coverage and samples only (keeps the last evaluation)",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--rule-counts",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[0, 100, 500, 1000],
        help="rule counts to time before all of them",
    )
    args = parser.parse_args()
    settings = load_settings(None, environ={})
    spark = build_spark(settings)
    out: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "spark_master": settings.spark.master,
    }
    out["coverage"], windows = coverage(spark)
    c = out["coverage"]
    print(f"compiled {c['compiled']} of {c['in_scope']} in-scope rules ({c['share_compiled']:.1%}); "
          f"compile {c['compile_seconds']} s, Spark analysis {c['spark_analysis_seconds']} s", flush=True)  # fmt: skip
    out["regression_samples"] = regression(spark, windows)
    for kind in ("json", "evtx"):
        r = out["regression_samples"][kind]
        print(
            f"regression samples ({kind}): {r['fired']} of {r['samples']} fire ({r['share']:.1%})"
        )

    def save(evaluated: dict[str, Any] | None) -> None:
        if evaluated is not None:
            out["evaluation"] = evaluated
        RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    save(None)

    if not args.skip_eval:
        with tempfile.TemporaryDirectory() as scratch:
            out["evaluation"] = evaluation(
                spark, windows, Path(scratch), args.repeats, save, args.rule_counts
            )
    elif RESULTS.is_file():  # keep the last measured evaluation
        previous = json.loads(RESULTS.read_text(encoding="utf-8"))
        if "evaluation" in previous:
            out["evaluation"] = previous["evaluation"]
    RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
