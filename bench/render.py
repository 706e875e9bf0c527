"""Turn a benchmark run into targets, `pipeline.json`, `pipeline.md` and `profile.md`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["evaluate", "write_outputs"]

COMPARED = {
    "normalize_zeek_conn": "normalize zeek_conn (raw files -> silver rows; Spark: ingest + normalize)",
    "entity_daily": "gold.entity_daily (silver -> entity-day aggregates)",
    "baselines": "gold.baselines (the windows; Spark incremental, DuckDB full recompute)",
    "signals": "3 signals (new country, first-time host, exfiltration)",
}
REPO = Path(__file__).resolve().parent.parent
FINDINGS = REPO / "bench" / "profile_findings.md"


def _scale_label(key: str) -> str:
    s = float(key)
    events = s * 1_000_000
    return f"{events / 1e6:g} M" if events >= 1e6 else f"{events / 1e3:g} k"


def _stage_rows(scale: dict[str, Any]) -> list[dict[str, Any]]:
    day = scale["day"]
    events = int(day["events"]["event_lines"])
    rows = []
    for name in day["stages_run"]:
        g = day["groups"].get(f"stage:{name}", {})
        rest = day["rest_summary"].get(f"stage:{name}", {})
        rss = (g.get("memory") or {}).get("peak_rss_mib", {})
        wall = float(g.get("wall_s") or 0)
        rows.append(
            {
                "stage": name,
                "status": g.get("status"),
                "error": g.get("error"),
                "wall_s": wall,
                "events_per_s": round(events / wall) if wall > 0 else None,
                "us_per_event": round(wall / events * 1e6, 2) if events else None,
                "peak_jvm_heap_mib": rest.get("peak_jvm_heap_mib"),
                "jvm_heap_peak_so_far_mib": g.get("jvm_peak_heap_so_far_mib"),
                "peak_rss_jvm_mib": rss.get("jvm"),
                "peak_rss_python_driver_mib": rss.get("python_driver"),
                "peak_rss_python_workers_mib": rss.get("python_workers"),
                "seconds_in_jobs": rest.get("seconds_in_jobs"),
                "seconds_outside_jobs": rest.get("seconds_outside_jobs"),
                "spark_jobs": rest.get("spark_jobs"),
                "spark_stages": rest.get("spark_stages"),
                "tasks": rest.get("tasks"),
                "executor_run_s": rest.get("executor_run_s"),
                "jvm_gc_s": rest.get("jvm_gc_s"),
                "input_mib": rest.get("input_mib"),
                "shuffle_write_mib": rest.get("shuffle_write_mib"),
                "spill_disk_mib": rest.get("spill_disk_mib"),
            }
        )
    return rows


def _comparisons(scale: dict[str, Any]) -> list[dict[str, Any]]:
    day, duck = scale["day"], scale.get("duckdb") or {}
    out = []
    for step, label in COMPARED.items():
        g = day["groups"].get(f"compare:{step}", {})
        spark_s = g.get("wall_s") if g.get("status") == "ok" else None
        duck_s = ((duck.get("steps") or {}).get(step) or {}).get("seconds")
        out.append(
            {
                "step": step,
                "label": label,
                "spark_s": spark_s,
                "duckdb_s": duck_s,
                "ratio": round(spark_s / duck_s, 2) if spark_s and duck_s else None,
                "spark_detail": (day.get("compare") or {}).get(step),
            }
        )
    return out


def evaluate(run: dict[str, Any]) -> None:
    """Derive per-scale tables, the targets (measured vs limit) and the agreement flag."""
    targets = run["targets"]
    agree = True
    per_scale: dict[str, dict[str, Any]] = {}
    for key, scale in run["scales"].items():
        if "day" not in scale:
            agree = False
            continue
        rows = _stage_rows(scale)
        events = int(scale["day"]["events"]["event_lines"])
        total = sum(r["wall_s"] for r in rows)
        floors = [f for f in scale["day"]["scan_floor"] if f]
        floor = min((f["seconds"] for f in floors), default=None)
        duck = scale.get("duckdb") or {}
        agree = agree and bool(duck.get("agree"))
        per_scale[key] = {
            "events": events,
            "stages": rows,
            "pipeline_s": round(total, 2),
            "pipeline_events_per_s": round(events / total) if total else None,
            "us_per_event": round(total / events * 1e6, 3) if events else None,
            "complete": all(r["status"] == "ok" for r in rows),
            "scan_floor_s": floor,
            "scan_floor_lines": floors[0]["lines"] if floors else None,
            "scan_floor_mib": round(floors[0]["bytes"] / 2**20, 1) if floors else None,
            "pipeline_over_scan_floor": round(total / floor, 1) if floor else None,
            "comparisons": _comparisons(scale),
            "agreement": duck.get("checks", []),
            "max_jvm_heap_mib": max((r["peak_jvm_heap_mib"] or 0 for r in rows), default=None),
            "max_rss_jvm_mib": max((r["peak_rss_jvm_mib"] or 0 for r in rows), default=None),
            "driver_memory": scale["day"]["spark_conf"].get("spark.driver.memory"),
            "load_average": scale.get("load_average"),
        }
    run["derived"] = per_scale

    def metric(key: str) -> dict[str, Any] | None:
        return per_scale.get(key)

    big, small = metric("10"), metric("1")
    result = []
    result.append(
        {
            "target": "10 M events, one day, whole daily pipeline",
            "limit": f"<= {targets['pipeline_10m_seconds']:.0f} s",
            "measured": f"{big['pipeline_s']:.0f} s" if big else "not run",
            "met": (big["pipeline_s"] <= targets["pipeline_10m_seconds"] and big["complete"])
            if big
            else None,
            "by": f"{big['pipeline_s'] / targets['pipeline_10m_seconds']:.2f}x the limit"
            if big
            else None,
        }
    )
    for key in [k for k in ("10", "1") if k in per_scale] or list(per_scale)[-1:]:
        for c in per_scale[key]["comparisons"]:
            ratio = c["ratio"]
            result.append(
                {
                    "target": f"{c['step']} Spark / DuckDB at {_scale_label(key)}",
                    "limit": f"<= {targets['spark_over_duckdb']:g}x",
                    "measured": f"{ratio:.2f}x ({c['spark_s']:.1f} s / {c['duckdb_s']:.1f} s)"
                    if ratio
                    else "n/a",
                    "met": ratio <= targets["spark_over_duckdb"] if ratio else None,
                    "by": f"{ratio / targets['spark_over_duckdb']:.2f}x the limit"
                    if ratio
                    else None,
                }
            )
        break
    if big and small:
        ratio = big["us_per_event"] / small["us_per_event"]
        result.append(
            {
                "target": "cost per event at 10 M / at 1 M",
                "limit": f"<= {targets['cost_per_event_10m_over_1m']:g}x",
                "measured": f"{ratio:.2f}x ({big['us_per_event']:.1f} vs {small['us_per_event']:.1f} µs/event)",
                "met": ratio <= targets["cost_per_event_10m_over_1m"],
                "by": f"{ratio / targets['cost_per_event_10m_over_1m']:.2f}x the limit",
            }
        )
    else:
        result.append({"target": "cost per event at 10 M / at 1 M", "limit": f"<= {targets['cost_per_event_10m_over_1m']:g}x",
                       "measured": "needs scales 1 and 10", "met": None, "by": None})  # fmt: skip
    bb = run.get("baselines_bench")
    if bb:
        ratios = bb.get("ratio_90d_over_30d") or {}
        worst = max(ratios.values()) if ratios else None
        result.append(
            {
                "target": "baselines: add a day with a 90-day vs a 30-day window",
                "limit": f"<= {targets['baseline_90d_over_30d']:g}x",
                "measured": ", ".join(f"{k}: {v:.2f}x" for k, v in ratios.items())
                + f" ({bb['file']}, {bb.get('generated_at', '')})",
                "met": worst <= targets["baseline_90d_over_30d"] if worst is not None else None,
                "by": f"{worst / targets['baseline_90d_over_30d']:.2f}x the limit"
                if worst
                else None,
            }
        )
    heap = [
        (k, v["driver_memory"], v["max_jvm_heap_mib"], v["complete"]) for k, v in per_scale.items()
    ]
    result.append(
        {
            "target": "the driver never holds the events: every stage on a 2 GiB driver heap",
            "limit": "spark.driver.memory=2g, all stages complete",
            "measured": "; ".join(
                f"{_scale_label(k)}: {m}, peak heap {h:.0f} MiB{'' if ok else ', INCOMPLETE'}"
                for k, m, h, ok in heap
            ),
            "met": all(m == "2g" and ok for _, m, _, ok in heap) if heap else None,
            "by": None,
        }
    )
    run["target_results"] = result
    run["agree"] = agree and bool(per_scale)
    lines = [
        f"{'met' if t['met'] else ('n/a' if t['met'] is None else 'MISSED'):>6}  {t['target']}: {t['measured']} (limit {t['limit']})"
        for t in result
    ]
    for key, s in per_scale.items():
        bad = [c["what"] for c in s["agreement"] if not c["agree"]]
        lines.append(
            f"{_scale_label(key)}: Spark and DuckDB {'agree' if not bad else 'DISAGREE on ' + '; '.join(bad)}"
        )
    run["summary_lines"] = lines


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _mark(met: bool | None) -> str:
    return "yes" if met else ("–" if met is None else "**no**")


def pipeline_md(run: dict[str, Any]) -> str:
    d = run["derived"]
    keys = list(d)
    m = run["machine"]
    out = [
        "<!-- generated by bench/run_bench.py; paste into README.md -->",
        f"Measured {run['generated_at']} on {m['cpus']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB RAM, `local[*]`, driver heap {run['settings']['driver_memory']}; "
        f"PySpark {run['versions']['pyspark']}, Delta {run['versions']['delta-spark']}, "
        f"DuckDB {run['versions']['duckdb']}. Load average during the runs: "
        + ", ".join(
            f"{_scale_label(k)} {d[k]['load_average'].get('before_day')} → {d[k]['load_average'].get('after_day')}"
            for k in keys
        )
        + f". Command: `{run['command']}`.",
        "",
        "| target | limit | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    missing = [k for k in run.get("scales_requested", []) if k not in run["scales"]]
    if missing:  # written after each finished scale of a run that did not get further
        out[3:3] = [
            f"**Partial results**: scale {', '.join(missing)} of this run did not finish; "
            "each scale's figures are complete.",
            "",
        ]
    for t in run["target_results"]:
        out.append(f"| {t['target']} | {t['limit']} | {t['measured']} | {_mark(t['met'])} |")
    out += [
        "",
        "| stage | "
        + " | ".join(f"{_scale_label(k)}: s | events/s | heap MiB | RSS MiB" for k in keys)
        + " |",
    ]
    out.append("| --- |" + " ---: | ---: | ---: | ---: |" * len(keys))
    names = [r["stage"] for r in d[keys[0]]["stages"]] if keys else []
    for name in names:
        cells = []
        for k in keys:
            r = next((x for x in d[k]["stages"] if x["stage"] == name), None)
            if r is None:
                cells.append("– | – | – | –")
                continue
            rss = (
                (r["peak_rss_jvm_mib"] or 0)
                + (r["peak_rss_python_driver_mib"] or 0)
                + (r["peak_rss_python_workers_mib"] or 0)
            )
            wall = _fmt(r["wall_s"]) if r["status"] == "ok" else f"failed ({_fmt(r['wall_s'])})"
            cells.append(
                f"{wall} | {_fmt(r['events_per_s'])} | {_fmt(r['peak_jvm_heap_mib'], 0)} | {_fmt(rss, 0)}"
            )
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for k in keys:
        cells.append(
            f"**{_fmt(d[k]['pipeline_s'])}** | {_fmt(d[k]['pipeline_events_per_s'])} | {_fmt(d[k]['max_jvm_heap_mib'], 0)} | –"
        )
    out.append("| **whole day** | " + " | ".join(cells) + " |")
    cells = [
        f"{_fmt(d[k]['scan_floor_s'])} | {_fmt(round(d[k]['events'] / d[k]['scan_floor_s']) if d[k]['scan_floor_s'] else None)} | – | –"
        for k in keys
    ]
    out.append("| scan floor (read + count all raw lines) | " + " | ".join(cells) + " |")
    out += [
        "",
        "| compared step | "
        + " | ".join(f"{_scale_label(k)}: Spark s | DuckDB s | Spark/DuckDB" for k in keys)
        + " | agree |",
    ]
    out.append("| --- |" + " ---: | ---: | ---: |" * len(keys) + " --- |")
    for step, label in COMPARED.items():
        cells = []
        for k in keys:
            c = next(x for x in d[k]["comparisons"] if x["step"] == step)
            cells.append(f"{_fmt(c['spark_s'])} | {_fmt(c['duckdb_s'])} | {_fmt(c['ratio'], 2)}")
        agree = all(c["agree"] for k in keys for c in d[k]["agreement"])
        out.append(f"| {label} | " + " | ".join(cells) + f" | {'yes' if agree else '**no**'} |")
    out += [
        "",
        "Events = event lines of the benchmarked day (all six sources). Heap = the JVM's peak used "
        "heap over the stage's Spark stages (REST `peakExecutorMetrics`); RSS = peak resident memory "
        "of the JVM + Python driver + Python workers (psutil). Agreement: exact, both ways "
        "(`EXCEPT ALL`), see docs/benchmarks.md.",
    ]
    return "\n".join(out) + "\n"


def findings_file(results: Path) -> Path:
    """The hand-written findings of a results folder (`findings.md` in it), else the default."""
    own = results / "findings.md"
    return own if own.is_file() else FINDINGS


def profile_md(run: dict[str, Any], findings: Path = FINDINGS) -> str:
    out = ["# Profile of the benchmark run", ""]
    if findings.is_file():
        out += [findings.read_text(encoding="utf-8").strip(), ""]
    out += [
        "## Measured breakdown (generated)",
        "",
        f"Run {run['generated_at']}, command `{run['command']}`. Per stage: wall time, the part spent "
        "inside Spark jobs (union of job intervals from the REST API) and outside them (driver: "
        "analysis and planning, Delta log / snapshot / commit, Great Expectations, Python), executor "
        "task time, GC, input, shuffle, spill.",
    ]
    for key, scale in run["scales"].items():
        if "day" not in scale:
            out += [
                "",
                f"### {_scale_label(key)}: failed",
                "",
                "```",
                str(scale.get("error", ""))[:2000],
                "```",
            ]
            continue
        d = run["derived"][key]
        out += ["", f"### {_scale_label(key)} events ({d['events']:,} event lines)", ""]
        out.append(
            "| stage | wall s | in jobs s | outside jobs s | jobs | stages | tasks | executor s | GC s | input MiB | shuffle write MiB | spill MiB |"
        )
        out.append(
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        )
        day = scale["day"]
        groups = [
            g for g in day["group_order"] if g.startswith(("stage:", "compare:", "scan_floor"))
        ]
        for g in groups:
            r = day["rest_summary"].get(g, {})
            w = day["groups"][g]["wall_s"]
            out.append(
                f"| {g} | {_fmt(w)} | {_fmt(r.get('seconds_in_jobs'))} | {_fmt(r.get('seconds_outside_jobs'))} | "
                f"{_fmt(r.get('spark_jobs'))} | {_fmt(r.get('spark_stages'))} | {_fmt(r.get('tasks'))} | "
                f"{_fmt(r.get('executor_run_s'))} | {_fmt(r.get('jvm_gc_s'))} | {_fmt(r.get('input_mib'))} | "
                f"{_fmt(r.get('shuffle_write_mib'))} | {_fmt(r.get('spill_disk_mib'))} |"
            )
        stages = sorted(d["stages"], key=lambda r: -r["wall_s"])
        for r in stages[:3]:
            g = f"stage:{r['stage']}"
            rest = day["rest_summary"].get(g, {})
            out += ["", f"#### {r['stage']}: {r['wall_s']:.1f} s — top Spark jobs", ""]
            out.append("| job | s | stages | tasks | description |")
            out.append("| ---: | ---: | ---: | ---: | --- |")
            for j in rest.get("top_jobs", [])[:6]:
                desc = (
                    (j.get("description") or j.get("name") or "")
                    .replace("|", "/")
                    .replace("\n", " ")
                )
                out.append(
                    f"| {j['job_id']} | {_fmt(j['seconds'])} | {j['stages']} | {j['tasks']} | {desc[:110]} |"
                )
            queries = day.get("top_queries", {}).get(g, [])
            if queries:
                out += [
                    "",
                    'Slowest SQL executions (plans: `explain(mode="formatted")` as the UI records them):',
                    "",
                ]
                for q in queries:
                    ops = ", ".join(f"{k} x{v}" for k, v in list(q["operators"].items())[:10])
                    out.append(
                        f"- SQL {q['id']}: {q['duration_s']:.1f} s, {q['jobs']} jobs; operators: {ops}; plan: `{Path(q['plan_file']).relative_to(Path(q['plan_file']).parents[2])}`"
                    )
        out += ["", f"Event log: `{day.get('event_log_dir')}` (application `{day.get('app_id')}`)."]
    return "\n".join(out) + "\n"


def _repo_relative(text: str) -> str:
    """Paths inside the checkout relative to it, the home folder as `~`: results are committed."""
    text = text.replace(f"{REPO}/", "").replace(str(REPO), ".")
    return text.replace(str(Path.home()), "~")


def write_outputs(run: dict[str, Any], results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / "pipeline.json").write_text(
        _repo_relative(json.dumps(run, indent=2, default=str)) + "\n", encoding="utf-8"
    )
    if run["derived"]:
        (results / "pipeline.md").write_text(_repo_relative(pipeline_md(run)), encoding="utf-8")
    profile = profile_md(run, findings_file(results))
    (results / "profile.md").write_text(_repo_relative(profile), encoding="utf-8")


def main() -> None:
    """Re-render `pipeline.md` / `profile.md` from a `pipeline.json` (e.g. after editing the
    findings in `findings.md` beside it, or `bench/profile_findings.md`)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "pipeline_json", type=Path, nargs="?", default=Path("bench/results/pipeline.json")
    )
    args = parser.parse_args()
    run = json.loads(args.pipeline_json.read_text(encoding="utf-8"))
    evaluate(run)
    write_outputs(run, args.pipeline_json.parent)
    print("\n".join(run["summary_lines"]))


if __name__ == "__main__":
    main()
