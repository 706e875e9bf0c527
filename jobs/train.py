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
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs import model as risk_model
from jobs.config import Settings

__all__ = [
    "CHAMPION",
    "FEATURE_REFERENCE_ARTIFACT",
    "TrainResult",
    "feature_reference",
    "labels_from_decisions",
    "labels_from_ground_truth",
    "load_champion",
    "load_feature_reference",
    "read_ground_truth",
    "run_train",
    "split_holdout",
    "tracking_uri",
]

log = logging.getLogger(__name__)
CHAMPION = "champion"
POSITIVE_VERDICTS = ("true_positive", "malicious", "confirmed", "tp", "compromised")
NEGATIVE_VERDICTS = ("false_positive", "benign", "fp", "expected", "authorized")
# Types skops may load from models this job logged itself (the store is ours, not a download).
TRUSTED_TYPES = [
    "jobs.model.KindwiseIsolationForest",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
]
MAX_TRAIN_ROWS = 500_000
# The training feature distribution, logged with every run: the drift reference of
# gold.metrics_daily (docs/metrics.md). Values are binned at this many decimals.
FEATURE_REFERENCE_ARTIFACT = "feature_reference.json"
REFERENCE_DECIMALS = 3


class TrainError(RuntimeError):
    """Training cannot proceed (no scored sessions in the range, unreadable labels...)."""


# --- where MLflow lives ---------------------------------------------------------------------


def _local_store(settings: Settings) -> Path | None:
    uri = settings.paths.mlflow_uri
    if "://" in uri or uri.startswith(("databricks", "file:")):
        return None
    return Path(uri).resolve()


def tracking_uri(settings: Settings) -> str:
    folder = _local_store(settings)
    if folder is None:
        return settings.paths.mlflow_uri
    return f"sqlite:///{folder / 'mlflow.db'}"


def _client(settings: Settings, create: bool) -> Any:
    import mlflow
    from mlflow import MlflowClient

    folder = _local_store(settings)
    if folder is not None and create:
        folder.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(client: Any, settings: Settings) -> str:
    name = settings.scoring.experiment
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    folder = _local_store(settings)
    location = (folder / "artifacts").as_uri() if folder is not None else None
    return str(client.create_experiment(name, artifact_location=location))


def _champion_version(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def load_champion(settings: Settings) -> tuple[Any, str] | None:
    """(model, version) of `<model_name>@champion`, or None when there is none (yet).

    Never creates a store: scoring before the first `train` must not leave one behind.
    """
    folder = _local_store(settings)
    if folder is not None and not (folder / "mlflow.db").is_file():
        return None
    import mlflow.sklearn

    client = _client(settings, create=False)
    name = settings.scoring.model_name
    version = _champion_version(client, name)
    if version is None:
        return None
    features = (version.tags or {}).get("features")
    if features is not None and json.loads(features) != list(risk_model.FEATURES):
        log.warning(
            "champion %s v%s has another feature list; scoring without it", name, version.version
        )
        return None
    model = mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")
    return model, str(version.version)


def load_feature_reference(
    settings: Settings, version: str | None = None
) -> tuple[str, dict[str, Any]] | None:
    """(version, training feature distribution) of a registered version, default the champion.

    None when there is no store, no such version, or the version was trained before the
    distribution was logged. Never creates a store.
    """
    folder = _local_store(settings)
    if folder is not None and not (folder / "mlflow.db").is_file():
        return None
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client = _client(settings, create=False)
    name = settings.scoring.model_name
    try:
        found = (
            client.get_model_version(name, version)
            if version is not None
            else _champion_version(client, name)
        )
        if found is None or not (found.tags or {}).get("feature_reference") or not found.run_id:
            return None
        data = mlflow.artifacts.load_dict(f"runs:/{found.run_id}/{found.tags['feature_reference']}")
    except (MlflowException, OSError) as exc:
        log.warning("no feature reference for %s v%s: %s", name, version or CHAMPION, exc)
        return None
    return str(found.version), data


# --- drift reference (pure) ----------------------------------------------------------------


def _feature_bins(x: pd.DataFrame, bins: int) -> dict[str, dict[str, list[float]]]:
    features: dict[str, dict[str, list[float]]] = {}
    for name in x.columns:
        values = np.sort(np.round(x[name].to_numpy(dtype="float64"), REFERENCE_DECIMALS))
        n = len(values)
        if n == 0:
            continue
        # integer arithmetic: index of the first value with cumulative count >= k*n/bins
        positions = [(k * n + bins - 1) // bins - 1 for k in range(1, bins)]
        edges = np.unique(values[positions])
        counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
        features[str(name)] = {
            "edges": [float(e) for e in edges],
            "shares": [float(c) / n for c in counts],
        }
    return features


def feature_reference(
    x: pd.DataFrame, bins: int, start: date, end: date, weekend: np.ndarray | None = None
) -> dict[str, Any]:
    """Quantile bin edges and shares per feature of the training rows (the drift reference).

    Values are rounded to REFERENCE_DECIMALS (half to even); edge k of `bins` is the smallest
    value whose cumulative share reaches k/bins, duplicates dropped; bins are right-closed:
    (-inf, e1], (e1, e2], ..., (ek, inf). jobs/metrics.py bins the scored days the same way.
    `weekend` (a boolean per row) adds the weekday and weekend distributions separately.
    """
    out: dict[str, Any] = {
        "format": "policylake.feature_reference/v1",
        "bins": bins,
        "decimals": REFERENCE_DECIMALS,
        "rows": len(x),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "features": _feature_bins(x, bins),
    }
    if weekend is not None:
        out["day_types"] = {
            kind: {"rows": int(mask.sum()), "features": _feature_bins(x[mask], bins)}
            for kind, mask in (("weekday", ~weekend), ("weekend", weekend))
        }
    return out


# --- labels (pure) --------------------------------------------------------------------------


def read_ground_truth(path: Path) -> list[dict[str, Any]]:
    """The generator's ground_truth.jsonl: one injected scenario per line."""
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _ts(value: str) -> pd.Timestamp:
    return (
        pd.Timestamp(datetime.fromisoformat(value.replace("Z", "+00:00")))
        .tz_convert("UTC")
        .tz_localize(None)
    )


def labels_from_ground_truth(sessions: pd.DataFrame, scenarios: list[dict[str, Any]]) -> np.ndarray:
    """1 for sessions of a scenario's entity overlapping its [start, end], else 0.

    An IP scenario also claims the sign-in sessions coming from that IP.
    """
    labels = np.zeros(len(sessions), dtype="float64")
    start = pd.to_datetime(sessions["session_start"])
    end = pd.to_datetime(sessions["session_end"])
    for sc in scenarios:
        s, e = _ts(sc["start"]), _ts(sc["end"])
        same = (sessions["entity_type"] == sc["entity_type"]) & (
            sessions["entity_id"] == sc["entity_id"]
        )
        if sc["entity_type"] == "ip":
            same |= sessions["src_ip"] == sc["entity_id"]
        elif sc["entity_type"] in ("user", "service_account"):
            same |= sessions["user_id"] == sc["entity_id"]
        overlap = (start <= e) & (end >= s)
        labels[(same & overlap).to_numpy()] = 1.0
    return labels


def labels_from_decisions(sessions: pd.DataFrame, decisions: pd.DataFrame) -> np.ndarray:
    """Analyst verdicts on (run_date, target) label that target's sessions that day; others NaN."""
    labels = np.full(len(sessions), np.nan)
    if decisions.empty:
        return labels
    verdict = decisions["verdict"].astype(str).str.lower()
    value = np.where(
        verdict.isin(POSITIVE_VERDICTS), 1.0, np.where(verdict.isin(NEGATIVE_VERDICTS), 0.0, np.nan)
    )
    d = decisions.assign(_label=value).dropna(subset=["_label"])
    d = d.groupby(["run_date", "target_id"], as_index=False)["_label"].max()
    keyed = sessions[["run_date", "entity_id", "user_id"]].reset_index(drop=True)
    for column in ("entity_id", "user_id"):
        merged = keyed.merge(
            d.rename(columns={"target_id": column}), on=["run_date", column], how="left"
        )["_label"].to_numpy()
        labels = np.where(np.isnan(labels), merged, np.fmax(labels, np.nan_to_num(merged, nan=-1)))
    labels[labels < 0] = np.nan
    return labels


def split_holdout(labels: np.ndarray, share: float = 0.3, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out rows: a stratified share of the labelled rows."""
    rng = np.random.default_rng(seed)
    holdout = np.zeros(len(labels), dtype=bool)
    for value in (0.0, 1.0):
        idx = np.flatnonzero(labels == value)
        if len(idx) == 0:
            continue
        take = max(1, round(len(idx) * share)) if len(idx) > 1 else 0
        holdout[rng.choice(idx, size=take, replace=False)] = True
    return holdout


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
    from pyspark.sql import functions as F

    lake = ctx.lake
    if not lake.exists("gold.session_scores"):
        raise TrainError("gold.session_scores does not exist; run the score stage first")
    df = (
        lake.read("gold.session_scores")
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
    from pyspark.sql import functions as F

    lake = ctx.lake
    if not lake.exists("ops.analyst_decisions"):
        return pd.DataFrame(columns=["run_date", "target_id", "verdict"])
    df = lake.read("ops.analyst_decisions")
    needed = {"run_date", "target_id", "verdict"}
    if not needed <= set(df.columns):
        log.warning("ops.analyst_decisions lacks %s; ignoring it", sorted(needed - set(df.columns)))
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
    average precision wins) or one of `jobs.model.ESTIMATORS`. `params` override the chosen
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

    client = _client(settings, create=True)
    experiment_id = _experiment_id(client, settings)
    champion = _champion_version(client, cfg.model_name)
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
                weekend=(pd.to_datetime(sessions["run_date"]).dt.dayofweek >= 5).to_numpy()[
                    train_mask
                ],
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
    current = _champion_version(client, cfg.model_name)
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
