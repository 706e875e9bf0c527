"""`policylake train`: fit the session risk model, track it in MLflow, promote a champion.

The only module that talks to MLflow (rule 7). Training reads the `features` maps the score
stage wrote to gold.session_scores, so the model sees exactly what scoring will feed it.

Labels: analyst verdicts from ops.analyst_decisions (run_date, target_type, target_id,
verdict), and in the demo the generator's ground_truth.jsonl. With labels, a held-out split
decides: a supervised candidate competes with the IsolationForest, and the alias `champion`
moves to the new version only when its average precision on the held-out rows is at least
the current champion's on the same rows. Without labels the forest is registered, and
becomes champion only when there is none yet.

A local `paths.mlflow_uri` folder becomes a SQLite tracking + registry store
(`<folder>/mlflow.db`, artifacts in `<folder>/artifacts`); MLflow 3's file store has no
model registry. A URI with a scheme (http://, sqlite://, databricks) is used as given.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from jobs.core.config import Settings
from jobs.core.errors import PipelineError
from jobs.core.tables import ANALYST_DECISIONS, SESSION_SCORES
from jobs.features.calendar import WEEKEND, day_type
from jobs.model import estimators as risk_model
from jobs.model.drift_reference import feature_reference
from jobs.model.labels import (
    labels_from_decisions,
    labels_from_ground_truth,
    read_ground_truth,
    split_holdout,
)
from jobs.model.registry import (
    CHAMPION,
    FEATURE_REFERENCE_ARTIFACT,
    TRUSTED_TYPES,
    champion_version,
    ensure_experiment,
    load_champion,
    mlflow_client,
)

log = logging.getLogger(__name__)
MAX_TRAIN_ROWS = 500_000


class TrainError(PipelineError):
    """Training cannot proceed (no scored sessions in the range, unreadable labels...)."""


# --- the entry ------------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_id: str
    estimator: str
    model_version: str
    metrics: dict[str, float]
    promoted: bool
    champion_version: str | None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    label_source: str = "none"


def _read_sessions(ctx: Any, start: date, end: date) -> pd.DataFrame:
    lake = ctx.lake
    if not lake.exists(SESSION_SCORES):
        raise TrainError(f"{SESSION_SCORES} does not exist; run the score stage first")
    df = (
        lake.read(SESSION_SCORES)
        .where((F.col("run_date") >= F.lit(start)) & (F.col("run_date") <= F.lit(end)))
        .select(
            "run_date",
            "session_id",
            "session_kind",
            "entity_type",
            "entity_id",
            "user_id",
            "src_ip",
            "session_start",
            "session_end",
            *[F.col("features")[n].alias(n) for n in risk_model.FEATURES],
        )
    )
    total = df.count()
    if total == 0:
        raise TrainError(f"no scored sessions between {start} and {end}")
    if total > MAX_TRAIN_ROWS:
        df = df.sample(fraction=MAX_TRAIN_ROWS / total, seed=0)
    # Training data (feature rows, not events) is what the driver fits on.
    return df.toPandas().sort_values("session_id").reset_index(drop=True)


def _read_decisions(ctx: Any, start: date, end: date) -> pd.DataFrame:
    lake = ctx.lake
    if not lake.exists(ANALYST_DECISIONS):
        return pd.DataFrame(columns=["run_date", "target_id", "verdict"])
    df = lake.read(ANALYST_DECISIONS)
    needed = {"run_date", "target_id", "verdict"}
    if not needed <= set(df.columns):
        log.warning(
            "%s lacks %s; ignoring it", ANALYST_DECISIONS.name, sorted(needed - set(df.columns))
        )
        return pd.DataFrame(columns=sorted(needed))
    return (
        df.where(
            (F.col("run_date") >= F.lit(start))
            & (F.col("run_date") <= F.lit(end))
            & F.col("verdict").isNotNull()
        )
        .select("run_date", "target_id", "verdict")
        .toPandas()
    )


def run_train(
    ctx: Any,
    start: date,
    end: date,
    estimator: str = "auto",
    ground_truth: Path | None = None,
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> TrainResult:
    """Train on the sessions scored between `start` and `end`; log, register, maybe promote.

    `estimator`: "auto" (the forest, plus gradient boosting when labels allow, best held-out
    average precision wins) or one of `jobs.model.estimators.ESTIMATORS`. `params` override the chosen
    estimator's hyperparameters.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    settings: Settings = ctx.settings
    cfg = settings.scoring
    if estimator != "auto" and estimator not in risk_model.ESTIMATORS:
        raise TrainError(
            f"unknown estimator {estimator!r}; known: auto, {', '.join(risk_model.ESTIMATORS)}"
        )
    sessions = _read_sessions(ctx, start, end)
    x = sessions[list(risk_model.FEATURES)].astype("float64").fillna(0.0)

    labels = labels_from_decisions(sessions, _read_decisions(ctx, start, end))
    sources = ["analyst_decisions"] if not np.isnan(labels).all() else []
    if ground_truth is not None:
        truth = labels_from_ground_truth(sessions, read_ground_truth(ground_truth))
        labels = np.where(np.isnan(labels), truth, labels)
        sources.append("ground_truth")
    labelled = ~np.isnan(labels)
    has_both = labelled.any() and len(np.unique(labels[labelled])) == 2
    holdout = split_holdout(labels, seed=seed) if has_both else np.zeros(len(labels), dtype=bool)
    train_mask = ~holdout
    y_all = np.nan_to_num(labels, nan=0.0).astype("int64")

    wanted = [estimator] if estimator != "auto" else ["isolation_forest"]
    train_labelled = train_mask & labelled
    positives = int(y_all[train_labelled].sum())
    if (
        estimator == "auto"
        and has_both
        and positives >= 5
        and (train_labelled.sum() - positives) >= 5
    ):
        wanted.append("gradient_boosting")
    candidates: list[tuple[str, Any, dict[str, float]]] = []
    for name in wanted:
        est = risk_model.make_estimator(name, random_state=seed, **(params or {}))
        if risk_model.is_supervised(est):
            if not has_both:
                raise TrainError(f"{name} needs labelled sessions of both classes")
            fitted = risk_model.train(est, x[train_labelled], y_all[train_labelled])
        else:
            fitted = risk_model.train(est, x[train_mask])
        metrics = (
            risk_model.evaluate(fitted, x[holdout], y_all[holdout], cfg.model_floor)
            if has_both
            else {}
        )
        candidates.append((name, fitted, metrics))
    name, fitted, metrics = max(candidates, key=lambda c: c[2].get("average_precision", -1.0))

    client = mlflow_client(settings, create=True)
    experiment_id = ensure_experiment(client, settings)
    champion = champion_version(client, cfg.model_name)
    champion_metrics: dict[str, float] = {}
    if champion is not None and has_both:
        loaded = load_champion(settings)
        if loaded is not None:
            champion_metrics = risk_model.evaluate(
                loaded[0], x[holdout], y_all[holdout], cfg.model_floor
            )

    sample = x.head(200)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name} {start}..{end}") as run:
        mlflow.log_params(
            {
                "estimator": name,
                "candidates": ",".join(c[0] for c in candidates),
                "start": start.isoformat(),
                "end": end.isoformat(),
                "rows": len(x),
                "train_rows": int(train_mask.sum()),
                "holdout_rows": int(holdout.sum()),
                "labelled_rows": int(labelled.sum()),
                "positives": int(y_all[labelled].sum()),
                "label_source": ",".join(sources) or "none",
                "seed": seed,
                **{
                    f"model__{k}": v
                    for k, v in fitted.get_params().items()
                    if isinstance(v, (int, float, str, bool))
                },
            }
        )
        mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
        for cand, _, cand_metrics in candidates:
            if "average_precision" in cand_metrics:
                mlflow.log_metric(
                    f"candidate_{cand}_average_precision", cand_metrics["average_precision"]
                )
        if champion_metrics:
            mlflow.log_metrics({f"champion_holdout_{k}": v for k, v in champion_metrics.items()})
        mlflow.log_dict({"features": list(risk_model.FEATURES)}, "features.json")
        mlflow.log_dict(
            feature_reference(
                x[train_mask],
                settings.metrics.psi_bins,
                start,
                end,
                weekend=(
                    pd.to_datetime(sessions["run_date"]).dt.date.map(day_type) == WEEKEND
                ).to_numpy()[train_mask],
            ),
            FEATURE_REFERENCE_ARTIFACT,
        )
        signature = infer_signature(sample, risk_model.risk_scores(fitted, sample))
        info = mlflow.sklearn.log_model(
            fitted,
            name="model",
            signature=signature,
            input_example=sample.head(5),
            registered_model_name=cfg.model_name,
            skops_trusted_types=TRUSTED_TYPES,
        )
        version = str(info.registered_model_version)
        run_id = run.info.run_id

    for key, value in {
        "features": json.dumps(list(risk_model.FEATURES)),
        "estimator": name,
        "average_precision": str(metrics.get("average_precision", "")),
        "feature_reference": FEATURE_REFERENCE_ARTIFACT,
    }.items():
        client.set_model_version_tag(cfg.model_name, version, key, value)

    if champion is None:
        promoted = True
    elif not has_both:
        promoted = False  # nothing to compare on: keep the champion
    else:
        promoted = metrics.get("average_precision", -1.0) >= champion_metrics.get(
            "average_precision", -1.0
        )
    if promoted:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, version)
    current = champion_version(client, cfg.model_name)
    return TrainResult(
        run_id=run_id,
        estimator=name,
        model_version=version,
        metrics=metrics,
        promoted=promoted,
        champion_version=str(current.version) if current is not None else None,
        champion_metrics=champion_metrics,
        label_source=",".join(sources) or "none",
    )
