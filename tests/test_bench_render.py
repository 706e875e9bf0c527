"""The benchmark's verdicts: `bench.render.evaluate` turns measured runs into met / missed
targets. No Spark: the run records are built here the way `bench/spark_run.py` and
`bench/duckdb_reference.py` write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.render import REPO, evaluate, write_outputs

TARGETS = {
    "pipeline_10m_seconds": 300.0,
    "spark_over_duckdb": 3.0,
    "cost_per_event_10m_over_1m": 1.2,
    "baseline_90d_over_30d": 1.3,
}
STEPS = ("normalize_zeek_conn", "entity_daily", "baselines", "signals")


def _scale(
    events: int, stage_seconds: dict[str, float], spark_s: float, duck_s: float, heap: float
) -> dict[str, Any]:
    groups: dict[str, Any] = {
        f"stage:{name}": {"status": "ok", "wall_s": s, "memory": {"peak_rss_mib": {"jvm": 900}}}
        for name, s in stage_seconds.items()
    }
    groups |= {f"compare:{step}": {"status": "ok", "wall_s": spark_s} for step in STEPS}
    return {
        "load_average": {"before_day": [0.1, 0.1, 0.1], "after_day": [1.9, 1.5, 1.0]},
        "day": {
            "events": {"event_lines": events},
            "stages_run": list(stage_seconds),
            "group_order": list(groups),
            "groups": groups,
            "rest_summary": {f"stage:{n}": {"peak_jvm_heap_mib": heap} for n in stage_seconds},
            "scan_floor": [{"seconds": 4.0, "lines": events, "bytes": 2**20}, None],
            "spark_conf": {"spark.driver.memory": "2g"},
        },
        "duckdb": {
            "agree": True,
            "checks": [{"what": "entity_daily", "agree": True}],
            "steps": {step: {"seconds": duck_s} for step in STEPS},
        },
    }


def _run(**scales: dict[str, Any]) -> dict[str, Any]:
    return {
        "generated_at": "2026-12-02T00:00:00+00:00",
        "command": "python -m bench.run_bench",
        "machine": {"cpus": 2, "cpu_model": "test", "memory_gib": 24.0},
        "versions": {"pyspark": "4.2.0", "delta-spark": "4.4.0", "duckdb": "1"},
        "settings": {"driver_memory": "2g"},
        "targets": TARGETS,
        "scales": scales,
        "baselines_bench": {
            "ratio_90d_over_30d": {"1x": 0.7, "10x": 1.5},
            "file": "bench/results/baselines.json",
        },
    }


def _verdicts(run: dict[str, Any]) -> dict[str, tuple[str, bool | None]]:
    return {t["target"]: (t["measured"], t["met"]) for t in run["target_results"]}


def test_targets_are_measured_against_their_limits() -> None:
    run = _run(
        **{
            "1": _scale(1_000_000, {"ingest": 40.0, "normalize": 60.0}, 9.0, 3.0, 800.0),
            "10": _scale(10_000_000, {"ingest": 250.0, "normalize": 350.0}, 60.0, 30.0, 1500.0),
        }
    )
    evaluate(run)
    verdicts = _verdicts(run)
    # 600 s for 10 M events against 300 s
    assert verdicts["10 M events, one day, whole daily pipeline"] == ("600 s", False)
    # the ratios come from the largest scale: 60 / 30 = 2x, met (at 1 M it would be 3x)
    for step in STEPS:
        measured, met = verdicts[f"{step} Spark / DuckDB at 10 M"]
        assert measured.startswith("2.00x") and met is True
    assert not any(k.endswith("Spark / DuckDB at 1 M") for k in verdicts)
    # 60 us/event at 10 M vs 100 us/event at 1 M: 0.6x
    assert verdicts["cost per event at 10 M / at 1 M"][1] is True
    assert verdicts["cost per event at 10 M / at 1 M"][0].startswith("0.60x")
    # the worst window ratio counts
    assert verdicts["baselines: add a day with a 90-day vs a 30-day window"][1] is False
    assert run["derived"]["10"]["pipeline_over_scan_floor"] == 150.0
    assert run["agree"] is True


def test_a_failed_stage_or_disagreement_is_never_met(tmp_path: Path) -> None:
    small = _scale(1_000_000, {"ingest": 40.0, "normalize": 60.0}, 9.0, 3.0, 800.0)
    big = _scale(10_000_000, {"ingest": 100.0, "normalize": 100.0}, 60.0, 30.0, 1500.0)
    big["day"]["groups"]["stage:normalize"]["status"] = "failed"
    big["duckdb"]["agree"] = False
    big["duckdb"]["checks"] = [{"what": "baselines", "agree": False}]
    big["day"]["event_log_dir"] = f"file:{REPO}/bench/scratch/eventlogs"
    run = _run(**{"1": small, "10": big})
    evaluate(run)
    verdicts = _verdicts(run)
    # fast enough, but a stage failed: not met
    assert verdicts["10 M events, one day, whole daily pipeline"] == ("200 s", False)
    heap = verdicts["the driver never holds the events: every stage on a 2 GiB driver heap"]
    assert heap[1] is False and "INCOMPLETE" in heap[0]
    assert run["agree"] is False
    assert "DISAGREE on baselines" in "\n".join(run["summary_lines"])
    write_outputs(run, tmp_path)
    assert "| 10 M events, one day, whole daily pipeline | <= 300 s | 200 s | **no** |" in (
        tmp_path / "pipeline.md"
    ).read_text(encoding="utf-8")
    # the results are committed: no path of the machine that ran them
    profile = (tmp_path / "profile.md").read_text(encoding="utf-8")
    assert "Event log: `file:bench/scratch/eventlogs`" in profile
    for name in ("pipeline.json", "pipeline.md", "profile.md"):
        assert str(REPO) not in (tmp_path / name).read_text(encoding="utf-8"), name


def test_a_single_scale_run_says_what_it_could_not_measure(tmp_path: Path) -> None:
    run = _run(**{"1": _scale(1_000_000, {"ingest": 40.0}, 9.0, 3.0, 800.0)})
    run["scales_requested"] = ["1", "10"]
    evaluate(run)
    verdicts = _verdicts(run)
    assert verdicts["10 M events, one day, whole daily pipeline"] == ("not run", None)
    assert verdicts["cost per event at 10 M / at 1 M"] == ("needs scales 1 and 10", None)
    measured, met = verdicts["normalize_zeek_conn Spark / DuckDB at 1 M"]
    assert measured.startswith("3.00x") and met is True
    write_outputs(run, tmp_path)
    assert "scale 10 of this run did not finish" in (tmp_path / "pipeline.md").read_text(
        encoding="utf-8"
    )
    # the findings on top of profile.md: the folder's own findings.md, else the shared file
    profile = (tmp_path / "profile.md").read_text(encoding="utf-8")
    assert profile.startswith("# Profile of the benchmark run\n\n## Findings")
    (tmp_path / "findings.md").write_text("## Findings at 10 M\n\nThe score plan bounds it.\n")
    write_outputs(run, tmp_path)
    profile = (tmp_path / "profile.md").read_text(encoding="utf-8")
    assert profile.startswith("# Profile of the benchmark run\n\n## Findings at 10 M\n\nThe score")
