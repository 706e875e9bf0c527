"""`policylake train`: fit the session risk model, track it in MLflow, promote a champion.

The only module that talks to MLflow (rule 7). Training reads the `features` maps the score
stage wrote to gold.session_scores, so the model sees exactly what scoring will feed it.

Labels: analyst verdicts from ops.analyst_decisions (run_date, target_type, target_id,
verdict), and in the demo the generator's ground_truth.jsonl. With labels, a held-out split
decides: a supervised candidate competes with the IsolationForest, and the alias `champion`
moves to the new version only when its average precision on the held-out rows is at least
the current champion's on the same rows. Without labels the forest is registered, and
becomes champion only when there is none yet.

What the run records: the training and held-out rows as inputs (`mlflow.log_input`, with the
gold.session_scores version they were read at), the model as a `RiskScorer` whose pyfunc
`predict` is the risk score its signature declares, saved with skops; the sha256 of the model
file as a version tag (and its HMAC with POLICYLAKE_AUDIT_KEY when set: the score stage loads
nothing else, `jobs.model.registry`); and the promotion gate's comparison as two
evaluations (`mlflow.models.evaluate`), the candidate's and the champion's, of the same
held-out rows, each a nested run linked to its model.

A local `paths.mlflow_uri` folder becomes a SQLite tracking + registry store
(`<folder>/mlflow.db`, artifacts in `<folder>/artifacts`); MLflow 3's file store has no
model registry. A URI with a scheme (http://, sqlite://, databricks) is used as given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
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
    DIGEST_TAG,
    FEATURE_REFERENCE_ARTIFACT,
    MODEL_FILE,
    SIGNATURE_TAG,
    SKOPS,
    TRUSTED_TYPES,
    Champion,
    champion_of,
    champion_version,
    ensure_experiment,
    mlflow_client,
    model_digest,
    sign_digest,
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


def _read_sessions(ctx: Any, start: date, end: date) -> tuple[pd.DataFrame, int]:
    """The feature rows of the range, and the table version they were read at (logged as
    the training data's source)."""
    lake = ctx.lake
    if not lake.exists(SESSION_SCORES):
        raise TrainError(f"{SESSION_SCORES} does not exist; run the score stage first")
    version = lake.version(SESSION_SCORES)
    df = (
        lake.read(SESSION_SCORES, version=version)
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
    return df.toPandas().sort_values("session_id").reset_index(drop=True), version


def _log_evaluation(
    role: str,
    version: str,
    model_id: str | None,
    scores: np.ndarray,
    rows: pd.DataFrame,
    session_ids: pd.DataFrame,
    source: Any,
    floor: float,
) -> None:
    """One model's evaluation on the held-out rows, as a nested run linked to the model: the
    candidate's and the champion's are the promotion gate's comparison, on the same rows (the
    dataset digest is the sha256 of their session ids, so both name the same data)."""
    import mlflow
    import mlflow.models
    from mlflow.data.pandas_dataset import from_pandas

    same_rows = hashlib.sha256("\n".join(session_ids["session_id"]).encode()).hexdigest()
    data = from_pandas(
        rows.assign(risk_score=scores),
        source=source,
        targets="label",
        predictions="risk_score",
        name=f"{SESSION_SCORES.name} holdout",
        digest=same_rows[:32],
    )
    parent = mlflow.active_run()
    experiment = parent.info.experiment_id if parent is not None else None
    with mlflow.start_run(
        experiment_id=experiment, nested=True, run_name=f"evaluate {role} v{version}"
    ):
        mlflow.set_tags({"policylake.role": role, "policylake.model_version": version})
        mlflow.log_param("holdout_sha256", same_rows)
        mlflow.models.evaluate(  # type: ignore[no-untyped-call]
            data=data, model_type=None, extra_metrics=_holdout_metrics(floor), model_id=model_id
        )


def _holdout_metrics(floor: float) -> list[Any]:
    """The gate's metrics as MLflow metrics: those `jobs.model.estimators.evaluate` computes."""
    from mlflow.metrics import MetricValue
    from mlflow.models import make_metric

    def metric(key: str) -> Any:
        # MLflow passes arguments by these names
        def compute(predictions: pd.Series, targets: pd.Series, metrics: Any) -> MetricValue:
            values = risk_model.evaluate_scores(predictions.to_numpy(), targets.to_numpy(), floor)
            return MetricValue(aggregate_results={key: values.get(key, float("nan"))})

        return make_metric(eval_fn=compute, greater_is_better=True, name=key)  # type: ignore[no-untyped-call]

    return [
        metric(k)
        for k in (
            "average_precision",
            "roc_auc",
            "precision_at_threshold",
            "recall_at_threshold",
        )
    ]


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
    signing_key: bytes | None = None,
) -> TrainResult:
    """Train on the sessions scored between `start` and `end`; log, register, maybe promote.

    `estimator`: "auto" (the forest, plus gradient boosting when labels allow, best held-out
    average precision wins) or one of `jobs.model.estimators.ESTIMATORS`. `params` override the chosen
    estimator's hyperparameters. `signing_key` (the audit key) signs the registered model
    file's digest and checks the current champion's before it is compared.
    """
    import mlflow
    import mlflow.artifacts
    import mlflow.sklearn
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    settings: Settings = ctx.settings
    cfg = settings.scoring
    if estimator != "auto" and estimator not in risk_model.ESTIMATORS:
        raise TrainError(
            f"unknown estimator {estimator!r}; known: auto, {', '.join(risk_model.ESTIMATORS)}"
        )
    sessions, table_version = _read_sessions(ctx, start, end)
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
    # resolved once: the version compared with is the version the gate keeps or replaces
    current = champion_version(client, cfg.model_name)
    champion: Champion | None = None
    champion_metrics: dict[str, float] = {}
    if current is not None and has_both:
        found = champion_of(client, current, signing_key)  # refuses an untrusted file
        if isinstance(found, Champion):
            champion = found
            champion_metrics = risk_model.evaluate(
                champion.model, x[holdout], y_all[holdout], cfg.model_floor
            )

    scorer = risk_model.RiskScorer(fitted)
    sample = x.head(200)
    source = DeltaDatasetSource(
        path=ctx.lake.path(SESSION_SCORES), delta_table_version=table_version
    )
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
                "session_scores_version": table_version,
                **{
                    f"model__{k}": v
                    for k, v in fitted.get_params().items()
                    if isinstance(v, (int, float, str, bool))
                },
            }
        )
        training = x[train_mask].assign(label=labels[train_mask])
        mlflow.log_input(
            from_pandas(
                training, source=source, targets="label", name=f"{SESSION_SCORES.name} training"
            ),
            context="training",
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
        # the output is the risk score, named: what pyfunc `predict` returns (RiskScorer)
        signature = infer_signature(sample, pd.DataFrame({"risk_score": scorer.predict(sample)}))
        info = mlflow.sklearn.log_model(
            scorer,
            name="model",
            signature=signature,
            input_example=sample.head(5),
            registered_model_name=cfg.model_name,
            serialization_format=SKOPS,
            skops_trusted_types=TRUSTED_TYPES,
        )
        version = str(info.registered_model_version)
        run_id = run.info.run_id
        if has_both:
            holdout_rows = sessions.loc[holdout, ["session_id"]]
            evaluations = [("candidate", version, info.model_id, fitted)]
            if champion is not None:
                evaluations.append(
                    ("champion", champion.version, champion.model_id, champion.model)
                )
            for role, model_version, model_id, model in evaluations:
                _log_evaluation(
                    role,
                    model_version,
                    model_id,
                    risk_model.risk_scores(model, x[holdout]),
                    x[holdout].assign(label=y_all[holdout]),
                    holdout_rows,
                    source,
                    cfg.model_floor,
                )

    # What the score stage checks before it loads the file: its digest, signed with the key.
    with tempfile.TemporaryDirectory(prefix="policylake-model-") as tmp:
        stored = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{cfg.model_name}/{version}", dst_path=tmp
        )
        digest = model_digest(Path(stored) / MODEL_FILE)
    tags = {
        "features": json.dumps(list(risk_model.FEATURES)),
        "estimator": name,
        "average_precision": str(metrics.get("average_precision", "")),
        "feature_reference": FEATURE_REFERENCE_ARTIFACT,
        DIGEST_TAG: digest,
    }
    if signing_key is not None:
        tags[SIGNATURE_TAG] = sign_digest(signing_key, cfg.model_name, version, digest)
    for key, value in tags.items():
        client.set_model_version_tag(cfg.model_name, version, key, value)

    if current is None:
        promoted = True
    elif not has_both:
        promoted = False  # nothing to compare on: keep the champion
    else:
        promoted = metrics.get("average_precision", -1.0) >= champion_metrics.get(
            "average_precision", -1.0
        )
    if promoted:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, version)
    now = champion_version(client, cfg.model_name)
    return TrainResult(
        run_id=run_id,
        estimator=name,
        model_version=version,
        metrics=metrics,
        promoted=promoted,
        champion_version=str(now.version) if now is not None else None,
        champion_metrics=champion_metrics,
        label_source=",".join(sources) or "none",
    )
