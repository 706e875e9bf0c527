"""Benchmark: SigmaHQ's rules compiled and evaluated in one pass over real Windows events.

1. Coverage: every rule in ../shared/sigma/rules loaded and compiled with policylake's
   pipeline, then analysed by Spark; the share that compiles among the rules whose log source
   policylake ingests, and every failure with its reason.
2. Regression samples: the evtx_dump JSON of each sample in ../shared/sigma/regression_data,
   does its rule fire on it?
3. Evaluation: the OTRF Windows recordings (../shared/datasets/otrf-security-datasets, ~184k
   events) written once as Parquet, then `match_events` with 0 (the scan alone), 100, 500,
   1,000 and all the Windows rules, timed end to end (a `noop` write forces every row through
   every rule of its slot); plus a rule-by-rule run of 100 rules for comparison.

Until the Windows parser keeps every event data field (another branch), the events are
flattened here by a small stand-in (`flat_event`, `evtx_dump_event`): NXLog's flat keys and
evtx_dump's EventData/UserData become `event_data` by their Windows names, as the parser
will write them. Writes bench/results/detections.json.

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
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.core.config import load_settings
from jobs.core.spark import build_spark
from jobs.detections.compiler import CompiledRule, compile_rules
from jobs.detections.evaluate import match_events, match_events_per_rule, usable_rules
from jobs.detections.rules import load_rules

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POLICYLAKE_SHARED", ROOT.parent / "shared"))
SIGMA = SHARED / "sigma"
OTRF = SHARED / "datasets" / "otrf-security-datasets" / "datasets"
RESULTS = Path(__file__).resolve().parent / "results" / "detections.json"
SCHEMA = "source string, channel string, event_id int, provider string, event_data map<string,string>, hostname string"
_NXLOG_SYSTEM = {
    "@timestamp", "@version", "EventTime", "EventReceivedTime", "Hostname", "Channel", "EventID",
    "SourceName", "ProviderGuid", "Keywords", "Severity", "SeverityValue", "EventType",
    "EventTypeOrignal", "Opcode", "OpcodeValue", "RecordNumber", "ActivityID", "ProcessID",
    "ThreadID", "Task", "Version", "SourceModuleName", "SourceModuleType", "Category", "Domain",
    "AccountName", "UserID", "AccountType", "Message", "host", "port", "tags", "Level",
    "ExecutionProcessID", "ExecutionThreadID", "EventRecordID",
}  # fmt: skip


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def flat_event(doc: dict[str, Any]) -> tuple[Any, ...] | None:
    """An NXLog flat JSON event as detection columns (stand-in for the Windows parser)."""
    try:
        event_id = int(doc.get("EventID"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    data = {k: _text(v) for k, v in doc.items() if k not in _NXLOG_SYSTEM}
    return (
        "windows",
        doc.get("Channel"),
        event_id,
        doc.get("SourceName"),
        data,
        doc.get("Hostname"),
    )


def evtx_dump_event(doc: dict[str, Any]) -> tuple[Any, ...]:
    """An evtx_dump JSON event as detection columns (stand-in for the Windows parser)."""
    event = doc["Event"]
    system = event["System"]
    data: dict[str, str | None] = {}
    for part in ("EventData", "UserData"):
        block = event.get(part)
        if part == "UserData" and isinstance(block, dict) and len(block) == 1:
            inner = next(iter(block.values()))
            block = inner if isinstance(inner, dict) else block
        if isinstance(block, dict):
            data.update({k: _text(v) for k, v in block.items() if k != "#attributes"})
    event_id = system["EventID"]
    if isinstance(event_id, dict):
        event_id = event_id.get("#text")
    provider = (system.get("Provider") or {}).get("#attributes", {}).get("Name")
    return ("windows", system.get("Channel"), int(event_id), provider, data, system.get("Computer"))


def _json_docs(text: str) -> list[dict[str, Any]]:
    decoder, i, out = json.JSONDecoder(), 0, []
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text):
            doc, i = decoder.raw_decode(text, i)
            out.append(doc)
    return out


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
    rows, expected = [], {}
    for info in sorted((SIGMA / "regression_data" / "rules" / "windows").rglob("info.yml")):
        rule_id = str(yaml.safe_load(info.read_text())["rule_metadata"][0]["id"])
        for sample in info.parent.glob("*.json"):
            expected[sample.parent.name] = rule_id
            rows += [
                (*evtx_dump_event(d), sample.parent.name) for d in _json_docs(sample.read_text())
            ]
    frame = spark.createDataFrame(rows, SCHEMA + ", sample string")
    by_id = {r.rule.sigma_id: r for r in rules}
    wanted = [by_id[i] for i in set(expected.values()) if i in by_id]
    hits = {(r["sample"], r["rule"]) for r in match_events(frame, wanted, ["sample"]).collect()}
    missed = {
        s: rid
        for s, rid in expected.items()
        if rid not in by_id or (s, by_id[rid].slug) not in hits
    }
    return {
        "samples": len(expected),
        "fired": len(expected) - len(missed),
        "share": round((len(expected) - len(missed)) / len(expected), 4),
        "missed": [
            {"sample": s, "rule_id": rid, "compiled": rid in by_id}
            for s, rid in sorted(missed.items())
        ],
        "read_by": "stand-in evtx_dump flattener (the Windows parser does not keep event data yet)",
    }


def otrf_frame(spark: SparkSession, scratch: Path) -> DataFrame:
    rows = []
    for archive in sorted(OTRF.rglob("*.zip")):
        if "/windows/" not in str(archive):
            continue
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if not name.endswith(".json"):
                    continue
                for line in z.read(name).decode("utf-8", "replace").splitlines():
                    if line.strip():
                        try:
                            row = flat_event(json.loads(line))
                        except json.JSONDecodeError:
                            continue
                        if row is not None:
                            rows.append(row)
    path = scratch / "otrf.parquet"
    spark.createDataFrame(rows, SCHEMA).write.mode("overwrite").parquet(str(path))
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
        "read_by": "stand-in NXLog flattener (the Windows parser does not keep event data yet)",
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
