"""Flow/host risk of the pipeline on labelled Stratosphere Zeek flows (real traffic).

For each capture (008, 010: a benign Windows host attacked from the internet for 24 h;
001: an NjRAT-infected host, first 1,000 flows) this runs the real stages on the vendor
file, unchanged: ingest -> validate -> normalize -> baselines -> score, then `train`
(unsupervised: no labels are read) and score again with the champion. Each flow then gets
the risk of the entity that sent it (the asset when the sender is a local host, else its
IP) on that day, and is compared with the capture's per-flow label (Malicious vs Benign;
Background flows are unlabelled traffic and are left out).

Nothing is tuned here: thresholds are the defaults of `ScoringSettings`. The site
configuration a real deployment has is derived from the capture itself: the hosts Zeek
marks local (`local_orig` / `local_resp`) become the asset inventory (workstations) and
internal ranges, as Zeek's `Site::local_nets` says. The datasets are read in place
(symlinked into a temporary raw/ folder), never copied into the repository.

    .venv/bin/python bench/stratosphere_eval.py            # writes bench/results/stratosphere.json
    .venv/bin/python bench/stratosphere_eval.py --datasets 008,010
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATASETS = REPO.parent / "shared" / "datasets" / "stratosphere-zeek"
CAPTURES = {
    "008": "008-zeek-mixed/data/conn.log.labeled",
    "010": "010-zeek-mixed/data/conn.log.labeled",
    "001": "001-zeek-scenario-malicious/labeled-conn.log",
}
RESULTS = REPO / "bench" / "results" / "stratosphere.json"


def zeek_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    fields: list[str] = []
    rows: list[list[str]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line.startswith("#fields"):
                fields = line.split("\t")[1:]
            elif line and not line.startswith("#"):
                rows.append(line.split("\t"))
    return fields, rows


def site_of(path: Path) -> tuple[date, list[str]]:
    """The run date (UTC day of the last flow) and the hosts Zeek marks local."""
    fields, rows = zeek_rows(path)
    at = {name: i for i, name in enumerate(fields)}
    last = max(float(r[at["ts"]]) for r in rows)
    local = set()
    for r in rows:
        if r[at["local_orig"]] == "T":
            local.add(r[at["id.orig_h"]])
        if r[at["local_resp"]] == "T":
            local.add(r[at["id.resp_h"]])
    return datetime.fromtimestamp(last, UTC).date(), sorted(local)


def write_site(work: Path, local_hosts: list[str]) -> None:
    """Reference files of the lab site: its local hosts as workstations and internal ranges."""
    ref = work / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    from jobs.reference.files import ASSET_INVENTORY, IDENTITY_DIRECTORY, NETWORK_RANGES

    with (ref / "identity_directory.csv").open("w", newline="") as fh:
        csv.writer(fh).writerow(IDENTITY_DIRECTORY.fieldNames())
    with (ref / "asset_inventory.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(ASSET_INVENTORY.fieldNames())
        for ip in local_hosts:
            name = "lab-" + ip.replace(".", "-").replace(":", "-")
            w.writerow(
                [name, f"{name}.lab", ip, "workstation", "Windows", "medium", "", "", "lab", "UTC"]
            )
    with (ref / "network_ranges.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(NETWORK_RANGES.fieldNames())
        for ip in local_hosts:
            w.writerow([f"{ip}/{128 if ':' in ip else 32}", "internal", "lab", "CZ"])


def flow_scores(ctx: Any, run_date: date) -> list[tuple[str, int, float]]:
    """(label, sender risk, sender model score) per labelled flow, from the lake."""
    from pyspark.sql import functions as F

    lake = ctx.lake
    bronze = lake.read_dates("bronze.zeek_conn", [run_date]).select(
        F.col("_file").alias("bronze_file"), F.col("_line").alias("bronze_line"), "label"
    )
    events = lake.read_dates("silver.events", [run_date]).select(
        "bronze_file",
        "bronze_line",
        F.when(F.col("device_id").isNotNull(), F.lit("host"))
        .otherwise(F.lit("ip"))
        .alias("entity_type"),
        F.coalesce("device_id", "src_ip").alias("entity_id"),
    )
    risk = lake.read_dates("gold.entity_risk", [run_date]).select(
        "entity_type", "entity_id", "risk"
    )
    model = (
        lake.read_dates("gold.session_scores", [run_date])
        .where(F.col("session_kind") == "network")
        .select("entity_type", "entity_id", F.col("model_score"))
    )
    joined = (
        bronze.join(events, ["bronze_file", "bronze_line"], "left")
        .join(risk, ["entity_type", "entity_id"], "left")
        .join(model, ["entity_type", "entity_id"], "left")
        .select(
            "label",
            F.coalesce("risk", F.lit(0)).alias("risk"),
            F.coalesce("model_score", F.lit(0.0)).alias("model_score"),
        )
    )
    # labels and two numbers per flow (a few thousand rows): what the metrics need
    return [(r.label, int(r.risk), float(r.model_score)) for r in joined.collect()]


def metrics(rows: list[tuple[str, int, float]], high: int, medium: int) -> dict[str, Any]:
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score

    labelled = [
        (1 if lab == "Malicious" else 0, risk, m)
        for lab, risk, m in rows
        if lab in ("Malicious", "Benign")
    ]
    y = np.array([r[0] for r in labelled])
    risk = np.array([r[1] for r in labelled], dtype=float)
    # the model score breaks ties inside a risk value (it is part of the risk already)
    ranked = risk + np.array([r[2] for r in labelled]) * 1e-3
    out: dict[str, Any] = {
        "flows": len(rows),
        "labelled_flows": len(labelled),
        "malicious": int(y.sum()),
        "benign": int(len(y) - y.sum()),
        "background_excluded": sum(1 for r in rows if r[0] not in ("Malicious", "Benign")),
    }
    if len(set(y.tolist())) < 2:
        out["note"] = "one class only: ROC-AUC undefined"
        return out
    out["roc_auc"] = round(float(roc_auc_score(y, ranked)), 4)
    out["average_precision"] = round(float(average_precision_score(y, ranked)), 4)
    for name, cut in (("high", high), ("medium", medium)):
        flagged = risk >= cut
        tp = int((flagged & (y == 1)).sum())
        out[f"at_{name}_band"] = {
            "threshold": cut,
            "flagged": int(flagged.sum()),
            "precision": round(tp / flagged.sum(), 4) if flagged.sum() else None,
            "recall": round(tp / y.sum(), 4),
        }
    return out


def run_capture(spark: Any, name: str, source: Path, work: Path) -> dict[str, Any]:
    from jobs.core.config import load_settings
    from jobs.core.context import RunContext
    from jobs.model.train import run_train
    from jobs.pipeline.runner import run_stages
    from jobs.stages.score.stage import run_score

    run_date, local_hosts = site_of(source)
    folder = work / "raw" / "zeek_conn" / run_date.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"conn.{name}.log").symlink_to(source)
    write_site(work, local_hosts)
    base = load_settings(None, environ={}).model_dump()
    base["ingest"]["sources"] = ["zeek_conn"]
    from jobs.core.config import Settings

    settings = Settings.model_validate(base).with_workdir(work)
    ctx = RunContext(spark=spark, settings=settings)
    started = time.perf_counter()
    stages = {}
    for result in run_stages(ctx, ["ingest", "validate", "normalize", "baselines"], [run_date]):
        stages[result.stage] = result.rows
    signals_only = run_score(ctx, [run_date])
    flows_signals = flow_scores(ctx, run_date)
    trained = run_train(ctx, run_date, run_date, estimator="isolation_forest")
    with_model = run_score(ctx, [run_date])
    flows_model = flow_scores(ctx, run_date)
    cfg = settings.scoring
    top = (
        ctx.lake.read_dates("gold.entity_risk", [run_date])
        .orderBy("risk", ascending=False)
        .select("entity_type", "entity_id", "risk", "reasons")
        .limit(5)
        .collect()
    )
    return {
        "capture": CAPTURES[name],
        "run_date": run_date.isoformat(),
        "local_hosts": local_hosts,
        "stage_rows": {**stages, "score": signals_only.rows},
        "signals_only": metrics(flows_signals, cfg.band_high, cfg.band_medium),
        "with_model": {
            "model_version": with_model.details.get("model_version"),
            "model_label_source": trained.label_source,
            **metrics(flows_model, cfg.band_high, cfg.band_medium),
        },
        "top_entities": [
            {
                "entity": f"{r.entity_type}:{r.entity_id}",
                "risk": r.risk,
                "reasons": list(r.reasons)[:2],
            }
            for r in top
        ],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets", default="008,010,001", help="captures to run (comma-separated)"
    )
    parser.add_argument("--root", type=Path, default=DATASETS, help="the stratosphere-zeek folder")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the temporary lakes")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"datasets not found at {args.root}", file=sys.stderr)
        return 2

    from jobs.core.config import load_settings
    from jobs.core.spark import build_spark

    base = load_settings(None, environ={}).model_dump()
    base["spark"].update(master="local[2]", shuffle_partitions=4)
    from jobs.core.config import Settings

    tmp = Path(tempfile.mkdtemp(prefix="policylake-strato-"))
    spark = build_spark(Settings.model_validate(base).with_workdir(tmp))
    spark.sparkContext.setLogLevel("ERROR")
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": (
            "real stages on the unchanged Zeek file; per flow, the risk of the sending entity "
            "(local asset or source IP) that day; Malicious=1, Benign=0, Background excluded; "
            "default thresholds; model = unsupervised IsolationForest trained on the capture "
            "itself by `train` (no labels)"
        ),
        "captures": {},
    }
    try:
        for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            source = args.root / CAPTURES[name]
            print(f"{name}: {source}", flush=True)
            results["captures"][name] = run_capture(spark, name, source, tmp / name)
            print(json.dumps(results["captures"][name], indent=2, default=str), flush=True)
    finally:
        spark.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
